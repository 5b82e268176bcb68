#pragma once
// ft::Error: every user-facing failure. Messages name the op/file/tensor and say what to do.
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <cstdint>

namespace ft {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace ft

#define FT_CHECK(cond, ...) \
  do { if (!(cond)) throw ::ft::Error(::ft::cat(__VA_ARGS__)); } while (0)
