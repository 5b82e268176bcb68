// Jinja parser: tokens (jinja_lex.cpp) -> AST. jinja2 3.x's recursive-descent expression grammar
// (same precedence and associativity); filters and tests are checked against the evaluator's tables.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "data/jinja_ast.h"
#include "data/jinja_lex.h"
#include "data/jinja_util.h"

namespace ft::jinja {
namespace {

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
          if (!is_filter(f->name)) fail("unsupported construct: filter '" + f->name + "'", line);
          f->a.push_back(std::move(e));
          if (is_op("(")) call_args(*f);
          e = std::move(f);
        }
      } else if (is_name("is")) {
        const int line = t_[p_++].line;
        const bool neg = skip_name("not");
        auto t = mk(Expr::K::Test, line);
        t->name = dotted_name();
        if (!is_test(t->name)) fail("unsupported construct: test '" + t->name + "'", line);
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
  return Parser(lex_template(source, name), name).parse();
}

}  // namespace ft::jinja
