#pragma once
// Internal: the Jinja lexer (jinja_lex.cpp), whose tokens the parser (jinja_parse.cpp) reads.
#include <cstdint>
#include <string>
#include <vector>

namespace ft::jinja {

enum class Tok : uint8_t { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, Str, Int, Float, Op, End };

struct Token {
  Tok t;
  std::string s;  // Text, Name, Str (decoded), Op
  int64_t i = 0;
  double f = 0;
  int line = 0;
};

// Source -> tokens, as jinja2 3.x's lexer; the last token is Tok::End. Errors name the template line.
std::vector<Token> lex_template(const std::string& source, const std::string& name);

}  // namespace ft::jinja
