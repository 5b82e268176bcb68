// Jinja lexer: source -> tokens. Mirrors jinja2 3.x's lexer (whitespace control with trim_blocks +
// lstrip_blocks, raw blocks, comments, bracket balancing inside tags).
#include <algorithm>
#include <charconv>
#include <cstring>

#include "autograd/error.h"
#include "data/jinja_lex.h"
#include "data/jinja_util.h"

namespace ft::jinja {
namespace {

class Lexer {
 public:
  Lexer(const std::string& src, const std::string& name) : name_(name) {
    // jinja2: normalise \r\n and \r to \n, then drop one trailing newline (keep_trailing_newline=False).
    src_.reserve(src.size());
    for (size_t k = 0; k < src.size(); ++k) {
      if (src[k] == '\r') {
        src_ += '\n';
        if (k + 1 < src.size() && src[k + 1] == '\n') ++k;
      } else {
        src_ += src[k];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    for (size_t k = 0; k < src_.size(); ++k)
      if (src_[k] == '\n') nl_.push_back(k);
  }

  std::vector<Token> run() {
    const size_t n = src_.size();
    while (pos_ < n) {
      size_t t = pos_;
      while ((t = src_.find('{', t)) != std::string::npos &&
             (t + 1 >= n || !std::strchr("{%#", src_[t + 1])))
        ++t;
      if (t == std::string::npos) {
        emit_text(src_.substr(pos_));
        break;
      }
      const char kind = src_[t + 1];
      const char sign = t + 2 < n && (src_[t + 2] == '-' || src_[t + 2] == '+') ? src_[t + 2] : 0;
      size_t raw_body = 0;
      const bool raw = kind == '%' && match_raw_begin(t, &raw_body);
      emit_text(strip_before(src_.substr(pos_, t - pos_), sign, kind != '{'));
      if (raw) {
        lex_raw(raw_body);
      } else if (kind == '#') {
        lex_comment(t + 2 + (sign ? 1 : 0));
      } else {
        pos_ = t + 2 + (sign ? 1 : 0);
        lex_tag(kind == '%');
      }
    }
    out_.push_back(Token{Tok::End, {}, 0, 0, line_at(src_.size())});
    return std::move(out_);
  }

 private:
  std::string name_, src_;
  std::vector<size_t> nl_;
  std::vector<Token> out_;
  size_t pos_ = 0;
  bool line_starting_ = true;

  int line_at(size_t p) const { return int(std::lower_bound(nl_.begin(), nl_.end(), p) - nl_.begin()) + 1; }
  [[noreturn]] void fail(size_t p, const std::string& msg) const {
    throw Error(cat("chat template '", name_, "' line ", line_at(p), ": ", msg));
  }
  bool at(size_t p, std::string_view s) const { return src_.compare(p, s.size(), s) == 0; }
  void emit_text(std::string s) {
    if (!s.empty()) out_.push_back(Token{Tok::Text, std::move(s), 0, 0, line_at(pos_)});
  }
  // Whitespace before a tag: '-' strips all of it; otherwise (lstrip_blocks, block and comment
  // tags only, not with '+') spaces/tabs between the line start and the tag go.
  std::string strip_before(std::string text, char sign, bool lstrip) const {
    if (sign == '-') {
      text.resize(py_rstrip_len(text));
    } else if (sign != '+' && lstrip) {
      const size_t nlp = text.rfind('\n');
      const size_t l = nlp == std::string::npos ? 0 : nlp + 1;
      if ((l > 0 || line_starting_) && l < text.size() && py_rstrip_len(text.substr(l)) == 0) text.resize(l);
    }
    return text;
  }
  // After "-%}" / "-}}" / "-#}": skip all whitespace. Records whether a newline ended the match.
  void skip_ws_after() {
    const size_t e = pos_ + py_lstrip_len(std::string_view(src_).substr(pos_));
    line_starting_ = e > pos_ && src_[e - 1] == '\n';
    pos_ = e;
  }
  // "%}" (+ one newline: trim_blocks), "-%}" (+ all whitespace), "+%}" (nothing).
  void end_block_tag(size_t p) {
    if (src_[p] == '-') {
      pos_ = p + 3;
      skip_ws_after();
    } else if (src_[p] == '+') {
      pos_ = p + 3;
      line_starting_ = false;
    } else {
      pos_ = p + 2;
      line_starting_ = pos_ < src_.size() && src_[pos_] == '\n';
      if (line_starting_) ++pos_;
    }
  }
  size_t skip_spaces(size_t p) const { return p + py_lstrip_len(std::string_view(src_).substr(p)); }
  bool match_raw_begin(size_t t, size_t* body) const {
    size_t p = skip_spaces(t + 2 + (src_[t + 2] == '-' || src_[t + 2] == '+'));
    if (!at(p, "raw")) return false;
    p = skip_spaces(p + 3);
    if (at(p, "-%}")) *body = skip_spaces(p + 3);
    else if (at(p, "%}")) *body = p + 2;
    else return false;
    return true;
  }
  void lex_raw(size_t body) {
    line_starting_ = body > 0 && src_[body - 1] == '\n';
    for (size_t q = body; (q = src_.find("{%", q)) != std::string::npos; ++q) {
      const char sign = q + 2 < src_.size() && (src_[q + 2] == '-' || src_[q + 2] == '+') ? src_[q + 2] : 0;
      size_t p = skip_spaces(q + 2 + (sign ? 1 : 0));
      if (!at(p, "endraw")) continue;
      p = skip_spaces(p + 6);
      if (!at(p, "%}") && !at(p, "-%}") && !at(p, "+%}")) continue;
      pos_ = body;
      emit_text(strip_before(src_.substr(body, q - body), sign, true));
      end_block_tag(p);
      return;
    }
    fail(body, "missing end of raw directive ({% endraw %})");
  }
  void lex_comment(size_t cs) {
    size_t q = src_.find("#}", cs);
    if (q == std::string::npos) fail(cs, "missing end of comment tag");
    if (q > cs && (src_[q - 1] == '-' || src_[q - 1] == '+')) --q;
    end_block_tag(q);
  }
  void lex_tag(bool block) {
    const size_t start = pos_;
    out_.push_back(Token{block ? Tok::BlockBegin : Tok::VarBegin, {}, 0, 0, line_at(start)});
    std::string balance;
    for (;;) {
      if (pos_ >= src_.size()) fail(start, block ? "missing '%}' at end of tag" : "missing '}}' at end of tag");
      if (balance.empty()) {
        if (block && (at(pos_, "%}") || at(pos_, "-%}") || at(pos_, "+%}"))) {
          out_.push_back(Token{Tok::BlockEnd, {}, 0, 0, line_at(pos_)});
          end_block_tag(pos_);
          return;
        }
        if (!block && (at(pos_, "}}") || at(pos_, "-}}"))) {
          out_.push_back(Token{Tok::VarEnd, {}, 0, 0, line_at(pos_)});
          if (src_[pos_] == '-') {
            pos_ += 3;
            skip_ws_after();
          } else {
            pos_ += 2;
            line_starting_ = false;
          }
          return;
        }
      }
      const size_t ws = py_lstrip_len(std::string_view(src_).substr(pos_));
      if (ws) {
        pos_ += ws;
        continue;
      }
      lex_token(balance);
    }
  }
  size_t digits(size_t p, bool (*ok)(char)) const {  // (_?d)* style runs: '_' only between digits
    while (p < src_.size() && (ok(src_[p]) || (src_[p] == '_' && p + 1 < src_.size() && ok(src_[p + 1])))) ++p;
    return p;
  }
  void lex_token(std::string& balance) {
    const char c = src_[pos_];
    const int line = line_at(pos_);
    auto dec = [](char ch) { return ch >= '0' && ch <= '9'; };
    if (dec(c)) {
      // float first (jinja's float_re: not right after '.'), then integer literals.
      size_t p = digits(pos_, dec);
      bool is_float = false;
      if (pos_ == 0 || src_[pos_ - 1] != '.') {
        size_t q = p;
        if (q + 1 < src_.size() && src_[q] == '.' && dec(src_[q + 1])) {
          q = digits(q + 1, dec);
          is_float = true;
        }
        if (q < src_.size() && (src_[q] == 'e' || src_[q] == 'E')) {
          size_t r = q + 1;
          if (r < src_.size() && (src_[r] == '+' || src_[r] == '-')) ++r;
          if (r < src_.size() && dec(src_[r])) {
            q = digits(r, dec);
            is_float = true;
          }
        }
        if (is_float) p = q;
      }
      if (is_float) {
        std::string s = src_.substr(pos_, p - pos_);
        s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
        out_.push_back(Token{Tok::Float, {}, 0, std::strtod(s.c_str(), nullptr), line});
        pos_ = p;
        return;
      }
      int base = 10;
      size_t b = pos_;
      if (c == '0' && pos_ + 1 < src_.size() && std::strchr("bBoOxX", src_[pos_ + 1])) {
        const char k = char(src_[pos_ + 1] | 0x20);
        base = k == 'b' ? 2 : k == 'o' ? 8 : 16;
        b = pos_ + 2;
        if (b < src_.size() && src_[b] == '_') ++b;
        p = digits(b, base == 2 ? +[](char ch) { return ch == '0' || ch == '1'; }
                      : base == 8 ? +[](char ch) { return ch >= '0' && ch <= '7'; }
                                  : +[](char ch) { return bool(std::isxdigit((unsigned char)ch)); });
        if (p == b) fail(pos_, "invalid integer literal");
      } else if (c == '0') {
        p = digits(pos_, [](char ch) { return ch == '0'; });
      }
      std::string s = src_.substr(b, p - b);
      s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
      int64_t v = 0;
      auto r = std::from_chars(s.data(), s.data() + s.size(), v, base);
      if (r.ec != std::errc()) fail(pos_, "integer literal '" + s + "' is out of range");
      out_.push_back(Token{Tok::Int, {}, v, 0, line});
      pos_ = p;
      return;
    }
    if (std::isalpha((unsigned char)c) || c == '_') {
      size_t p = pos_;
      while (p < src_.size() && (std::isalnum((unsigned char)src_[p]) || src_[p] == '_')) ++p;
      out_.push_back(Token{Tok::Name, src_.substr(pos_, p - pos_), 0, 0, line});
      pos_ = p;
      return;
    }
    if (c == '\'' || c == '"') {
      size_t p = pos_ + 1;
      while (p < src_.size() && src_[p] != c) p += src_[p] == '\\' ? 2 : 1;
      if (p >= src_.size()) fail(pos_, "unterminated string literal");
      std::string v;
      try {
        v = py_unescape(std::string_view(src_).substr(pos_ + 1, p - pos_ - 1));
      } catch (const Error& e) {
        fail(pos_, e.what());
      }
      out_.push_back(Token{Tok::Str, std::move(v), 0, 0, line});
      pos_ = p + 1;
      return;
    }
    static const char* two[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : two)
      if (at(pos_, op)) {
        out_.push_back(Token{Tok::Op, op, 0, 0, line});
        pos_ += 2;
        return;
      }
    if (!std::strchr("+-/*%~[](){}><=.:|,;", c) || c == 0) fail(pos_, cat("unexpected character '", c, "' in tag"));
    if (c == '(' || c == '[' || c == '{') balance += c == '(' ? ')' : c == '[' ? ']' : '}';
    if (c == ')' || c == ']' || c == '}') {
      if (balance.empty() || balance.back() != c) fail(pos_, cat("unexpected '", c, "'"));
      balance.pop_back();
    }
    out_.push_back(Token{Tok::Op, std::string(1, c), 0, 0, line});
    ++pos_;
  }
};

}  // namespace

std::vector<Token> lex_template(const std::string& source, const std::string& name) {
  return Lexer(source, name).run();
}

}  // namespace ft::jinja
