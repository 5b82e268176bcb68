#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdlib.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_targets.h"

namespace ft::fuzz {

namespace {
struct Scratch {
  std::string dir;
  Scratch() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ft_fuzz_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("fuzz: cannot create a scratch directory in " + tmpl);
    dir = tmpl;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};
}  // namespace

const std::string& scratch_dir() {
  static Scratch s;
  return s.dir;
}

std::string write_scratch(const std::string& name, const void* data, size_t size) {
  std::string path = scratch_dir() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), std::streamsize(size));
  f.close();
  if (!f) throw std::runtime_error("fuzz: cannot write " + path);
  return path;
}

}  // namespace ft::fuzz
