#pragma once
// Deeply nested JSON (a few hundred KB of '[' suffice) overflows the stack wherever a parsed value
// is copied, dumped or walked recursively (nlohmann's copy constructor and dump() recurse), so the
// loaders of user-supplied JSON check the nesting before parsing.
#include <string_view>

namespace ft {

// Real config / tokenizer / dataset files nest well under this.
constexpr int kMaxJsonDepth = 128;

// True when `text` (JSON) nests arrays/objects more than max_depth levels deep; brackets inside
// strings do not count.
inline bool json_too_deep(std::string_view text, int max_depth = kMaxJsonDepth) {
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

}  // namespace ft
