#pragma once
// Internal: UTF-8 and Python string helpers used by the jinja engine (jinja_value.cpp).
#include <string>
#include <string_view>
#include <vector>

namespace ft::jinja {

bool py_isspace(char32_t c);                       // Python str.isspace() for one code point
std::u32string utf8_decode(std::string_view s);    // invalid UTF-8 -> ft::Error
std::string utf8_encode(std::u32string_view s);
void utf8_append(std::string& out, char32_t c);
size_t py_lstrip_len(std::string_view s);          // bytes of leading Unicode whitespace
size_t py_rstrip_len(std::string_view s);          // length after removing trailing whitespace
std::string py_unescape(std::string_view body);    // a string literal's body, as Python's unicode-escape
std::string py_float_repr(double x);               // Python repr(float)
std::string py_str_repr(std::string_view s);       // Python repr(str)

}  // namespace ft::jinja
