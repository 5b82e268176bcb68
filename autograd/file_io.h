#pragma once
// Crash-safe file replacement, the one copy every writer uses (safetensors, training states, JSON
// and text files): the new content goes to "<path>.tmp", which is flushed and fsync'd, then renamed
// over <path> and the directory fsync'd. A reader sees either the previous complete file or the new
// complete one, never a partial one; on any failure the .tmp is removed and <path> is unchanged.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ft {

// fsync a file or directory by path (best effort: errors are ignored).
void fsync_path(const std::string& path);

// Replaces `path` atomically: write(tmp) creates and fills tmp ("<path>.tmp", closed when it returns);
// then fsync, rename, directory fsync. Whatever write throws propagates after tmp is removed.
void replace_file_atomic(const std::string& path, const std::function<void(const std::string& tmp)>& write);

// Atomically replaces `path` with `content`.
void write_file_atomic(const std::string& path, const std::string& content);

// The whole file as bytes; throws ft::Error "<path>: cannot read (missing file?)".
std::string read_file_bytes(const std::string& path);

// A model file's bytes, read-only: the file mapped into memory (pages load as they are touched), or
// bytes the caller hands over (fuzzers, tests). The one copy of open/fstat/mmap behind the
// safetensors and GGUF readers. Move-only; unmaps when destroyed.
class FileImage {
 public:
  FileImage() = default;
  // Maps `path` (an empty file maps to nothing); throws "<path>: cannot open: ..." / "not a regular
  // file" / "mmap failed: ...".
  static FileImage map(const std::string& path);
  static FileImage own(std::vector<uint8_t> bytes);
  FileImage(FileImage&& o) noexcept;
  FileImage& operator=(FileImage&& o) noexcept;
  FileImage(const FileImage&) = delete;
  FileImage& operator=(const FileImage&) = delete;
  ~FileImage();

  const uint8_t* data() const { return base_; }
  size_t size() const { return size_; }
  // Drops the whole pages inside [p, p + n) from memory (a mapped file only; a read-only private
  // mapping has no dirty pages, so touching them again re-reads the file).
  void release(const void* p, size_t n) const;

 private:
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> owned_;
};

}  // namespace ft
