#include "autograd/json_file.h"

#include "autograd/error.h"
#include "autograd/file_io.h"

namespace ft {

bool json_too_deep(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_str) {
      if (c == '\\') ++i;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

namespace {
template <class J>
J parse_limited(std::string_view text, const std::string& source) {
  FT_CHECK(!json_too_deep(text), source, ": JSON nests more than ", kMaxJsonDepth, " levels deep");
  try {
    return J::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(source, ": invalid JSON: ", e.what()));
  }
}
}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  return parse_limited<nlohmann::json>(text, source);
}
nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& source) {
  return parse_limited<nlohmann::ordered_json>(text, source);
}
nlohmann::json read_json_file(const std::string& path) { return parse_json(read_file_bytes(path), path); }
nlohmann::ordered_json read_ordered_json_file(const std::string& path) {
  return parse_ordered_json(read_file_bytes(path), path);
}

}  // namespace ft
