#pragma once
// UTF-8 and Unicode helpers for the tokenizers (internal to data/).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ft::uni {

// Length of the first UTF-8 character of s (1 for an invalid lead byte); s must not be empty.
inline size_t char_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
}
// Decodes the character at s[i] (valid UTF-8 assumed) and advances i.
uint32_t next_cp(std::string_view s, size_t& i);
void append_cp(std::string& out, uint32_t cp);

// Byte offset of the first invalid UTF-8 sequence, or npos when s is valid.
size_t find_invalid(std::string_view s);
// Bytes -> UTF-8, each maximal invalid subpart replaced by U+FFFD (as Rust/Python do).
std::string lossy(std::string_view bytes);

bool is_whitespace(uint32_t cp);  // Unicode White_Space (Rust char::is_whitespace)

// Unicode Normalization Form C. Text whose code points are all below U+0300 is returned as is.
std::string nfc(std::string_view s);

}  // namespace ft::uni
