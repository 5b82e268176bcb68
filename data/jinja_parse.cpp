// Jinja lexer + parser: source -> AST. Mirrors jinja2 3.x's lexer (whitespace control with
// trim_blocks + lstrip_blocks, raw blocks, comments, bracket balancing inside tags) and its
// recursive-descent expression grammar (same precedence and associativity).
#include <algorithm>
#include <charconv>
#include <cstring>
#include <set>

#include "data/jinja_ast.h"
#include "data/jinja_util.h"

namespace ft::jinja {
namespace {

enum class Tok : uint8_t { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, Str, Int, Float, Op, End };

struct Token {
  Tok t;
  std::string s;  // Text, Name, Str (decoded), Op
  int64_t i = 0;
  double f = 0;
  int line = 0;
};

const std::set<std::string, std::less<>> kFilters = {
    "abs", "capitalize", "count", "d", "default", "dictsort", "first", "float", "indent", "int",
    "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr",
    "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title",
    "tojson", "trim", "unique", "upper"};
const std::set<std::string, std::less<>> kTests = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number",
    "string", "mapping", "iterable", "sequence", "callable", "sameas", "escaped", "lower", "upper",
    "even", "odd", "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le",
    "<=", "gt", "greaterthan", ">", "ge", ">=", "in"};

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

class Parser {
 public:
  Parser(std::vector<Token> toks, const std::string& name) : t_(std::move(toks)), name_(name) {}

  Body parse() {
    std::string end;
    Body b = body({}, &end);
    return b;
  }

 private:
  std::vector<Token> t_;
  size_t p_ = 0;
  std::string name_;
  int loop_depth_ = 0;
  // Nesting depth of the construct being parsed, i.e. its depth in the AST: the parser, the
  // renderer and the AST's destructor recurse on it, so it is bounded (jinja2 stops at Python's
  // recursion limit). Chains (a + b + c, x|f|g, x.a.b) nest one level per link.
  static constexpr int kMaxDepth = 256;
  int depth_ = 0;
  struct Nest {  // restores depth_ when the construct is parsed
    Parser& p;
    int saved;
    explicit Nest(Parser& q) : p(q), saved(q.depth_) {}
    ~Nest() { p.depth_ = saved; }
  };
  void deeper() {
    if (++depth_ > kMaxDepth) fail(cat("expressions or blocks nest more than ", kMaxDepth, " levels deep"));
  }

  const Token& cur() const { return t_[p_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  [[noreturn]] void fail(const std::string& msg, int line = 0) const {
    throw Error(cat("chat template '", name_, "' line ", line ? line : cur().line, ": ", msg));
  }
  static std::string describe(const Token& t) {
    switch (t.t) {
      case Tok::Name: return "'" + t.s + "'";
      case Tok::Op: return "'" + t.s + "'";
      case Tok::Str: return "string literal";
      case Tok::Int: case Tok::Float: return "number";
      case Tok::BlockEnd: return "end of statement block";
      case Tok::VarEnd: return "end of print statement";
      case Tok::End: return "end of template";
      default: return "template text";
    }
  }
  bool is_op(const char* op) const { return cur().t == Tok::Op && cur().s == op; }
  bool is_name(const char* n) const { return cur().t == Tok::Name && cur().s == n; }
  bool skip_op(const char* op) { return is_op(op) ? (++p_, true) : false; }
  bool skip_name(const char* n) { return is_name(n) ? (++p_, true) : false; }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(cat("expected '", op, "', got ", describe(cur())));
  }
  void expect(Tok t, const char* what) {
    if (cur().t != t) fail(cat("expected ", what, ", got ", describe(cur())));
    ++p_;
  }
  std::string expect_name() {
    if (cur().t != Tok::Name) fail("expected a name, got " + describe(cur()));
    return t_[p_++].s;
  }
  ExprP mk(Expr::K k, int line) {
    auto e = std::make_unique<Expr>();
    e->k = k;
    e->line = line;
    return e;
  }

  // ---- statements ----
  // Parses nodes until a block tag whose name is in `ends`; leaves the cursor on that name.
  Body body(const std::vector<std::string>& ends, std::string* found) {
    Body out;
    for (;;) {
      const Token& tk = cur();
      if (tk.t == Tok::End) {
        if (ends.empty()) return out;
        std::string list;
        for (auto& e : ends) list += (list.empty() ? "'" : " or '") + e + "'";
        fail("unexpected end of template; expected " + list);
      }
      auto n = std::make_unique<Node>();
      n->line = tk.line;
      if (tk.t == Tok::Text) {
        n->k = Node::K::Text;
        n->text = tk.s;
        ++p_;
      } else if (tk.t == Tok::VarBegin) {
        ++p_;
        n->k = Node::K::Out;
        n->expr = tuple();
        expect(Tok::VarEnd, "'}}'");
      } else if (tk.t == Tok::BlockBegin) {
        const Token& nm = peek();
        if (nm.t != Tok::Name) fail("expected a statement name after '{%', got " + describe(nm), nm.line);
        if (std::find(ends.begin(), ends.end(), nm.s) != ends.end()) {
          ++p_;
          *found = nm.s;
          return out;
        }
        ++p_;
        n = statement();
      } else {
        fail("unexpected " + describe(tk));
      }
      out.push_back(std::move(n));
    }
  }
  void end_tag(const char* name) {  // cursor on the end name
    ++p_;
    expect(Tok::BlockEnd, cat("'%}' after '", name, "'").c_str());
  }
  std::unique_ptr<Node> statement() {
    Nest nest(*this);
    deeper();
    const Token& kw = cur();
    auto n = std::make_unique<Node>();
    n->line = kw.line;
    const std::string k = kw.s;
    ++p_;
    std::string found;
    if (k == "for") {
      n->k = Node::K::For;
      n->targets = assign_names(/*in_for=*/true);
      if (!skip_name("in")) fail("expected 'in' in for loop, got " + describe(cur()));
      n->expr = tuple(false, false, {"recursive"});
      if (skip_name("if")) n->cond = expression();
      if (is_name("recursive")) fail("unsupported construct: recursive for loops");
      expect(Tok::BlockEnd, "'%}'");
      ++loop_depth_;
      n->body = body({"endfor", "else"}, &found);
      --loop_depth_;
      if (found == "else") {
        end_tag("else");
        n->else_body = body({"endfor"}, &found);
      }
      end_tag("endfor");
    } else if (k == "if") {
      n->k = Node::K::If;
      ExprP c = tuple(false, false);
      for (;;) {
        expect(Tok::BlockEnd, "'%}'");
        Body b = body({"elif", "else", "endif"}, &found);
        n->branches.emplace_back(std::move(c), std::move(b));
        ++p_;
        if (found == "elif") {
          c = tuple(false, false);
        } else if (found == "else") {
          expect(Tok::BlockEnd, "'%}' after 'else'");
          n->branches.emplace_back(nullptr, body({"endif"}, &found));
          end_tag("endif");
          break;
        } else {
          expect(Tok::BlockEnd, "'%}' after 'endif'");
          break;
        }
      }
    } else if (k == "set") {
      if (cur().t == Tok::Name && peek().t == Tok::Op && peek().s == ".") {
        n->ns_attr = true;
        n->targets.push_back(t_[p_].s);
        p_ += 2;
        n->targets.push_back(expect_name());
      } else {
        n->targets = assign_names(false);
      }
      if (skip_op("=")) {
        n->k = Node::K::Set;
        n->expr = tuple();
        expect(Tok::BlockEnd, "'%}'");
      } else {
        if (is_op("|")) fail("unsupported construct: filtered block set ({% set x | filter %})");
        if (n->ns_attr || n->targets.size() != 1) fail("a block set ({% set x %}...{% endset %}) needs one plain name");
        expect(Tok::BlockEnd, "'=' or '%}'");
        n->k = Node::K::SetBlock;
        n->body = body({"endset"}, &found);
        end_tag("endset");
      }
    } else if (k == "break" || k == "continue") {
      if (!loop_depth_) fail("'" + k + "' outside of a for loop");
      n->k = k == "break" ? Node::K::Break : Node::K::Continue;
      expect(Tok::BlockEnd, "'%}'");
    } else if (k == "generation") {
      n->k = Node::K::Generation;
      expect(Tok::BlockEnd, "'%}'");
      n->body = body({"endgeneration"}, &found);
      end_tag("endgeneration");
    } else if (k == "macro" || k == "call" || k == "filter" || k == "with" || k == "include" ||
               k == "import" || k == "from" || k == "extends" || k == "block" || k == "do" ||
               k == "autoescape" || k == "trans") {
      fail("unsupported construct: {% " + k + " %} (not needed by chat templates so far)", kw.line);
    } else {
      fail("unknown tag '" + k + "'", kw.line);
    }
    return n;
  }
  // for/set targets: a name or a comma list of names, optionally in parentheses.
  std::vector<std::string> assign_names(bool in_for) {
    std::vector<std::string> names;
    const bool paren = skip_op("(");
    for (;;) {
      names.push_back(expect_name());
      if (!skip_op(",")) break;
      if ((in_for && is_name("in")) || is_op("=") || is_op(")")) break;
    }
    if (paren) expect_op(")");
    return names;
  }

  // ---- expressions (same structure as jinja2.parser) ----
  bool tuple_end(const std::vector<std::string>& extra) const {
    const Token& c = cur();
    if (c.t == Tok::VarEnd || c.t == Tok::BlockEnd || c.t == Tok::End || (c.t == Tok::Op && c.s == ")")) return true;
    return c.t == Tok::Name && std::find(extra.begin(), extra.end(), c.s) != extra.end();
  }
  ExprP tuple(bool with_cond = true, bool explicit_paren = false, const std::vector<std::string>& extra = {}) {
    const int line = cur().line;
    std::vector<ExprP> items;
    bool is_tuple = false;
    for (;;) {
      if (!items.empty()) expect_op(",");
      if (tuple_end(extra)) break;
      items.push_back(expression(with_cond));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_paren) fail("expected an expression, got " + describe(cur()));
    }
    auto e = mk(Expr::K::Tuple, line);
    e->a = std::move(items);
    return e;
  }
  ExprP expression(bool with_cond = true) { return with_cond ? condexpr() : or_(); }
  ExprP condexpr() {
    Nest nest(*this);
    deeper();
    ExprP e = or_();
    while (is_name("if")) {
      deeper();
      const int line = cur().line;
      ++p_;
      auto c = mk(Expr::K::Cond, line);
      ExprP test = or_();
      ExprP other = skip_name("else") ? condexpr() : nullptr;
      c->a.push_back(std::move(test));
      c->a.push_back(std::move(e));
      c->a.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }
  ExprP binary_chain(Expr::K k, const char* word, ExprP (Parser::*next)()) {
    Nest nest(*this);
    ExprP e = (this->*next)();
    while (is_name(word)) {
      deeper();
      auto b = mk(k, cur().line);
      ++p_;
      b->a.push_back(std::move(e));
      b->a.push_back((this->*next)());
      e = std::move(b);
    }
    return e;
  }
  ExprP or_() { return binary_chain(Expr::K::Or, "or", &Parser::and_); }
  ExprP and_() { return binary_chain(Expr::K::And, "and", &Parser::not_); }
  ExprP not_() {
    if (is_name("not")) {
      Nest nest(*this);
      deeper();
      auto e = mk(Expr::K::Not, cur().line);
      ++p_;
      e->a.push_back(not_());
      return e;
    }
    return compare();
  }
  ExprP compare() {
    const int line = cur().line;
    ExprP e = math1();
    std::unique_ptr<Expr> cmp;
    for (;;) {
      std::string op;
      if (cur().t == Tok::Op && (cur().s == "==" || cur().s == "!=" || cur().s == "<" || cur().s == "<=" ||
                                 cur().s == ">" || cur().s == ">=")) {
        op = cur().s;
        ++p_;
      } else if (is_name("in")) {
        op = "in";
        ++p_;
      } else if (is_name("not") && peek().t == Tok::Name && peek().s == "in") {
        op = "not in";
        p_ += 2;
      } else {
        break;
      }
      if (!cmp) {
        cmp = mk(Expr::K::Cmp, line);
        cmp->a.push_back(std::move(e));
      }
      cmp->ops.push_back(op);
      cmp->a.push_back(math1());
    }
    return cmp ? std::move(cmp) : std::move(e);
  }
  ExprP bin(ExprP l, const std::string& op, ExprP r, int line) {
    auto b = mk(Expr::K::Bin, line);
    b->name = op;
    b->a.push_back(std::move(l));
    b->a.push_back(std::move(r));
    return b;
  }
  ExprP math1() {
    Nest nest(*this);
    ExprP e = concat();
    while (is_op("+") || is_op("-")) {
      deeper();
      const Token op = t_[p_++];
      e = bin(std::move(e), op.s, concat(), op.line);
    }
    return e;
  }
  ExprP concat() {
    ExprP e = math2();
    if (!is_op("~")) return e;
    auto c = mk(Expr::K::Concat, cur().line);
    c->a.push_back(std::move(e));
    while (skip_op("~")) c->a.push_back(math2());
    return c;
  }
  ExprP math2() {
    Nest nest(*this);
    ExprP e = pow_();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      deeper();
      const Token op = t_[p_++];
      e = bin(std::move(e), op.s, pow_(), op.line);
    }
    return e;
  }
  ExprP pow_() {
    Nest nest(*this);
    ExprP e = unary(true);
    while (is_op("**")) {
      deeper();
      const int line = t_[p_++].line;
      e = bin(std::move(e), "**", unary(true), line);
    }
    return e;
  }
  ExprP unary(bool with_filter) {
    Nest nest(*this);
    ExprP e;
    if (is_op("-") || is_op("+")) {
      deeper();
      e = mk(is_op("-") ? Expr::K::Neg : Expr::K::Pos, cur().line);
      ++p_;
      e->a.push_back(unary(false));
    } else {
      e = primary();
    }
    e = postfix(std::move(e));
    if (with_filter) e = filter_expr(std::move(e));
    return e;
  }
  ExprP primary() {
    const Token& tk = cur();
    auto e = mk(Expr::K::Const, tk.line);
    if (tk.t == Tok::Name) {
      ++p_;
      if (tk.s == "true" || tk.s == "True") e->val = Value::boolean(true);
      else if (tk.s == "false" || tk.s == "False") e->val = Value::boolean(false);
      else if (tk.s == "none" || tk.s == "None") e->val = Value::none();
      else {
        e->k = Expr::K::Name;
        e->name = tk.s;
      }
    } else if (tk.t == Tok::Str) {
      std::string s;
      while (cur().t == Tok::Str) s += t_[p_++].s;  // adjacent literals concatenate
      e->val = Value::str(std::move(s));
    } else if (tk.t == Tok::Int) {
      e->val = Value::integer(tk.i);
      ++p_;
    } else if (tk.t == Tok::Float) {
      e->val = Value::real(tk.f);
      ++p_;
    } else if (is_op("(")) {
      ++p_;
      e = tuple(true, true);
      expect_op(")");
    } else if (is_op("[")) {
      ++p_;
      e->k = Expr::K::List;
      while (!is_op("]")) {
        if (!e->a.empty()) expect_op(",");
        if (is_op("]")) break;
        e->a.push_back(expression());
      }
      ++p_;
    } else if (is_op("{")) {
      ++p_;
      e->k = Expr::K::Dict;
      while (!is_op("}")) {
        if (!e->a.empty()) expect_op(",");
        if (is_op("}")) break;
        e->a.push_back(expression());
        expect_op(":");
        e->a.push_back(expression());
      }
      ++p_;
    } else {
      fail("unexpected " + describe(tk));
    }
    return e;
  }
  ExprP postfix(ExprP e) {
    Nest nest(*this);
    for (;; deeper()) {
      if (is_op(".")) {
        const int line = t_[p_++].line;
        if (cur().t == Tok::Name) {
          auto a = mk(Expr::K::Attr, line);
          a->name = t_[p_++].s;
          a->a.push_back(std::move(e));
          e = std::move(a);
        } else if (cur().t == Tok::Int) {
          auto a = mk(Expr::K::Item, line);
          a->a.push_back(std::move(e));
          auto c = mk(Expr::K::Const, line);
          c->val = Value::integer(t_[p_++].i);
          a->a.push_back(std::move(c));
          e = std::move(a);
        } else {
          fail("expected name or number after '.'");
        }
      } else if (is_op("[")) {
        const int line = t_[p_++].line;
        std::vector<ExprP> args;
        while (!is_op("]")) {
          if (!args.empty()) expect_op(",");
          args.push_back(subscribed());
        }
        ++p_;
        if (args.empty()) fail("expected subscript expression");
        auto a = mk(Expr::K::Item, line);
        a->a.push_back(std::move(e));
        if (args.size() == 1) {
          a->a.push_back(std::move(args[0]));
        } else {
          auto t = mk(Expr::K::Tuple, line);
          t->a = std::move(args);
          a->a.push_back(std::move(t));
        }
        e = std::move(a);
      } else if (is_op("(")) {
        e = call(std::move(e));
      } else {
        return e;
      }
    }
  }
  ExprP subscribed() {
    const int line = cur().line;
    std::vector<ExprP> parts;
    if (is_op(":")) {
      ++p_;
      parts.push_back(nullptr);
    } else {
      ExprP x = expression();
      if (!is_op(":")) return x;
      ++p_;
      parts.push_back(std::move(x));
    }
    parts.push_back(is_op(":") || is_op("]") || is_op(",") ? nullptr : expression());
    if (skip_op(":")) parts.push_back(is_op("]") || is_op(",") ? nullptr : expression());
    else parts.push_back(nullptr);
    auto s = mk(Expr::K::Slice, line);
    s->a = std::move(parts);
    return s;
  }
  void call_args(Expr& e) {
    expect_op("(");
    for (bool first = true; !is_op(")"); first = false) {
      if (!first) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**")) fail("unsupported construct: *args / **kwargs in calls");
      if (cur().t == Tok::Name && peek().t == Tok::Op && peek().s == "=") {
        std::string key = t_[p_].s;
        p_ += 2;
        e.kw.emplace_back(std::move(key), expression());
      } else {
        if (!e.kw.empty()) fail("positional argument after keyword argument");
        e.a.push_back(expression());
      }
    }
    ++p_;
  }
  ExprP call(ExprP callee) {
    auto c = mk(Expr::K::Call, cur().line);
    c->a.push_back(std::move(callee));
    call_args(*c);
    return c;
  }
  std::string dotted_name() {
    std::string n = expect_name();
    while (skip_op(".")) n += "." + expect_name();
    return n;
  }
  ExprP filter_expr(ExprP e) {
    Nest nest(*this);
    for (;; deeper()) {
      if (is_op("|")) {
        while (skip_op("|")) {
          deeper();
          const int line = cur().line;
          auto f = mk(Expr::K::Filter, line);
          f->name = dotted_name();
          if (!kFilters.count(f->name)) fail("unsupported construct: filter '" + f->name + "'", line);
          f->a.push_back(std::move(e));
          if (is_op("(")) call_args(*f);
          e = std::move(f);
        }
      } else if (is_name("is")) {
        const int line = t_[p_++].line;
        const bool neg = skip_name("not");
        auto t = mk(Expr::K::Test, line);
        t->name = dotted_name();
        if (!kTests.count(t->name)) fail("unsupported construct: test '" + t->name + "'", line);
        t->a.push_back(std::move(e));
        const Token& c = cur();
        if (is_op("(")) {
          call_args(*t);
        } else if ((c.t == Tok::Name || c.t == Tok::Str || c.t == Tok::Int || c.t == Tok::Float || is_op("[") ||
                    is_op("{")) &&
                   !(c.t == Tok::Name && (c.s == "else" || c.s == "or" || c.s == "and"))) {
          if (is_name("is")) fail("you cannot chain multiple tests with 'is'");
          t->a.push_back(postfix(primary()));
        }
        if (neg) {
          auto n = mk(Expr::K::Not, line);
          n->a.push_back(std::move(t));
          e = std::move(n);
        } else {
          e = std::move(t);
        }
      } else if (is_op("(")) {
        e = call(std::move(e));
      } else {
        return e;
      }
    }
  }
};

}  // namespace

Body parse_template(const std::string& source, const std::string& name) {
  return Parser(Lexer(source, name).run(), name).parse();
}

}  // namespace ft::jinja
