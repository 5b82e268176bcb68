#pragma once
// Crash-safe file replacement, the one copy every writer uses (safetensors, training states, JSON
// and text files): the new content goes to "<path>.tmp", which is flushed and fsync'd, then renamed
// over <path> and the directory fsync'd. A reader sees either the previous complete file or the new
// complete one, never a partial one; on any failure the .tmp is removed and <path> is unchanged.
#include <functional>
#include <string>

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

}  // namespace ft
