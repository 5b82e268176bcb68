#include "autograd/file_io.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fcntl.h>
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

}  // namespace ft
