#include "autograd/file_io.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"

namespace ft {

namespace fs = std::filesystem;

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void replace_file_atomic(const std::string& path, const std::function<void(const std::string& tmp)>& write) {
  const std::string tmp = path + ".tmp";
  try {
    write(tmp);
    int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    FT_CHECK(fd >= 0, "cannot reopen '", tmp, "' to fsync it: ", std::strerror(errno));
    const bool synced = ::fsync(fd) == 0;
    const std::string why = synced ? "" : std::strerror(errno);
    ::close(fd);
    FT_CHECK(synced, "'", tmp, "': fsync failed (", why, "); '", path, "' was left unchanged");
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(cat("cannot rename '", tmp, "' to '", path, "': ", ec.message()));
  }
  fsync_path(fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string());
}

void write_file_atomic(const std::string& path, const std::string& content) {
  replace_file_atomic(path, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    FT_CHECK(f.good(), "cannot write '", tmp, "': check that the directory exists and is writable");
    f.write(content.data(), std::streamsize(content.size()));
    f.flush();
    FT_CHECK(f.good(), "writing '", tmp, "' failed (disk full?); '", path, "' was left unchanged");
  });
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FT_CHECK(in, path, ": cannot read (missing file?)");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

FileImage FileImage::map(const std::string& path) {
  FileImage f;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FT_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(cat(path, ": not a regular file"));
  }
  const size_t size = size_t(st.st_size);
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string e = std::strerror(errno);
      ::close(fd);
      throw Error(cat(path, ": mmap failed: ", e));
    }
    f.base_ = static_cast<const uint8_t*>(p);
    f.size_ = size;
    f.mapped_ = true;
  }
  ::close(fd);
  return f;
}

FileImage FileImage::own(std::vector<uint8_t> bytes) {
  FileImage f;
  f.owned_ = std::move(bytes);
  f.base_ = f.owned_.data();
  f.size_ = f.owned_.size();
  return f;
}

FileImage::FileImage(FileImage&& o) noexcept { *this = std::move(o); }

FileImage& FileImage::operator=(FileImage&& o) noexcept {
  if (this == &o) return *this;
  if (mapped_) ::munmap(const_cast<uint8_t*>(base_), size_);
  // a moved vector keeps its buffer, so base_ stays valid for owned bytes too
  owned_ = std::move(o.owned_);
  base_ = o.base_, size_ = o.size_, mapped_ = o.mapped_;
  o.base_ = nullptr, o.size_ = 0, o.mapped_ = false;
  return *this;
}

FileImage::~FileImage() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

void FileImage::release(const void* p, size_t n) const {
  if (!mapped_ || n == 0) return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
}

}  // namespace ft
