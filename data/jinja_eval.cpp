// Jinja evaluator: walks the AST with jinja2's scoping rules (a for-loop iteration is a fresh
// scope over the enclosing one; if/else is not a scope; namespace() objects are shared and
// mutable) and Python value semantics. The HF globals (raise_exception, strftime_now, range,
// namespace, dict) live here; filters and tests in jinja_filters.cpp, value operations in
// jinja_ops.cpp, string functions and str methods in jinja_strings.cpp.
#include <algorithm>
#include <cstdint>
#include <ctime>
#include <functional>
#include <unordered_map>

#include "data/jinja_ast.h"
#include "data/jinja_ops.h"
#include "data/jinja_util.h"

namespace ft::jinja {
namespace {

// Namespaces are the only mutable values, so `set ns.attr = v` is where a value could come to
// contain itself (a reference cycle: never freed, endless to print) or nest without bound (a loop
// wrapping ns.x = [ns.x]; printing, comparing and freeing recurse on it). Returns v's height;
// fails when `ns` is reachable from v or v nests more than kMaxValueDepth levels.
constexpr int kMaxValueDepth = 256;
int height(const Value& v, const Dict* ns, std::unordered_map<const void*, int>& memo, int depth) {
  const void* node = v.t == T::List ? static_cast<const void*>(v.list.get())
                     : v.t == T::Dict ? static_cast<const void*>(v.dict.get())
                     : v.t == T::Func ? static_cast<const void*>(v.self.get()) : nullptr;
  if (!node) return 0;
  if (v.t == T::Dict && v.dict.get() == ns) fail("cannot store a namespace inside itself");
  if (auto it = memo.find(node); it != memo.end()) return it->second;
  if (depth >= kMaxValueDepth) fail(cat("a namespace value may nest at most ", kMaxValueDepth, " levels of lists / dicts"));
  int h = 0;
  if (v.t == T::List)
    for (const Value& x : v.list->v) h = std::max(h, height(x, ns, memo, depth + 1));
  else if (v.t == T::Dict)
    for (const auto& [k, x] : v.dict->v) h = std::max(h, height(x, ns, memo, depth + 1));
  else
    h = height(*v.self, ns, memo, depth + 1);
  return memo[node] = h + 1;
}

// ---------------------------------------------------------------- the renderer

class Renderer {
 public:
  Renderer(const std::string& name, const std::optional<std::tm>& now) : name_(name), now_(now) {}

  std::string out;
  std::vector<std::pair<size_t, size_t>> gen;
  std::vector<KwArgs> frames;

  void exec(const Body& body) {
    for (const auto& n : body) {
      exec(*n);
      if (flow_ != Flow::Normal) return;
    }
  }

 private:
  enum class Flow { Normal, Break, Continue };
  const std::string& name_;
  const std::optional<std::tm>& now_;
  Flow flow_ = Flow::Normal;
  int capture_ = 0;

  // ---- variables
  Value lookup(const std::string& n) const {
    for (auto f = frames.rbegin(); f != frames.rend(); ++f)
      for (auto it = f->rbegin(); it != f->rend(); ++it)
        if (it->first == n) return it->second;
    return Value::undef("'" + n + "' is undefined");
  }
  void assign(const std::string& n, Value v) {
    for (auto& [k, x] : frames.back())
      if (k == n) {
        x = std::move(v);
        return;
      }
    frames.back().emplace_back(n, std::move(v));
  }
  void unpack(const std::vector<std::string>& names, const Value& v) {
    if (names.size() == 1) return assign(names[0], v);
    std::vector<Value> items = iterate(v);
    if (items.size() != names.size())
      fail(cat("cannot unpack ", items.size(), " values into ", names.size(), " names"));
    for (size_t k = 0; k < names.size(); ++k) assign(names[k], items[k]);
  }

  // ---- statements
  void exec(const Node& n) {
    try {
      run(n);
    } catch (Fail& f) {
      const std::string what = cat("chat template '", name_, "' line ", n.line, ": ", f.msg);
      if (f.raised) throw RaisedError(what, f.msg);
      throw Error(what);
    } catch (const RaisedError&) {
      throw;
    } catch (const Error& e) {  // from value helpers (JSON, UTF-8): add the location once
      const std::string w = e.what();
      if (w.rfind("chat template '", 0) == 0) throw;
      throw Error(cat("chat template '", name_, "' line ", n.line, ": ", w));
    }
  }
  void run(const Node& n) {
    spend(1);
    switch (n.k) {
      case Node::K::Text: return emit(n.text);
      case Node::K::Out: {
        const Value v = eval(*n.expr);
        return emit(v.t == T::Str ? v.s : to_str(v));
      }
      case Node::K::If:
        for (const auto& [cond, body] : n.branches)
          if (!cond || truthy(eval(*cond))) return exec(body);
        return;
      case Node::K::For: return run_for(n);
      case Node::K::Set: {
        Value v = eval(*n.expr);
        if (!n.ns_attr) return unpack(n.targets, v);
        const Value ns = lookup(n.targets[0]);
        if (ns.t != T::Dict || ns.dict->kind != Dict::Namespace) {
          need_defined(ns);
          fail("cannot assign attribute on non-namespace object");
        }
        std::unordered_map<const void*, int> memo;
        if (height(v, ns.dict.get(), memo, 0) + 1 > kMaxValueDepth)
          fail(cat("a namespace value may nest at most ", kMaxValueDepth, " levels of lists / dicts"));
        ns.dict->set(n.targets[1], std::move(v));
        return;
      }
      case Node::K::SetBlock: {
        std::string saved = std::move(out);
        out.clear();
        ++capture_;
        exec(n.body);
        --capture_;
        std::swap(saved, out);
        return assign(n.targets[0], Value::str(std::move(saved)));
      }
      case Node::K::Break: flow_ = Flow::Break; return;
      case Node::K::Continue: flow_ = Flow::Continue; return;
      case Node::K::Generation: {
        if (capture_) fail("{% generation %} inside a block set is not supported");
        const size_t start = out.size();
        exec(n.body);
        gen.emplace_back(start, out.size());
        return;
      }
    }
  }
  void emit(const std::string& text) {
    check_string_size(out.size() + text.size(), "the rendered text");
    out += text;
  }
  void run_for(const Node& n) {
    std::vector<Value> items = iterate(eval(*n.expr));
    if (n.cond) {
      std::vector<Value> kept;
      frames.emplace_back();
      for (auto& it : items) {
        unpack(n.targets, it);
        if (truthy(eval(*n.cond))) kept.push_back(std::move(it));
      }
      frames.pop_back();
      items = std::move(kept);
    }
    if (items.empty()) {
      frames.emplace_back();
      exec(n.else_body);
      frames.pop_back();
      return;
    }
    const int64_t len = int64_t(items.size());
    for (int64_t k = 0; k < len; ++k) {
      spend(4);  // the loop object
      Value loop = Value::make_dict(Dict::Loop);
      auto& d = loop.dict->v;
      d.reserve(11);
      d.emplace_back("index", Value::integer(k + 1));
      d.emplace_back("index0", Value::integer(k));
      d.emplace_back("revindex", Value::integer(len - k));
      d.emplace_back("revindex0", Value::integer(len - k - 1));
      d.emplace_back("first", Value::boolean(k == 0));
      d.emplace_back("last", Value::boolean(k == len - 1));
      d.emplace_back("length", Value::integer(len));
      d.emplace_back("depth", Value::integer(1));
      d.emplace_back("depth0", Value::integer(0));
      if (k > 0) d.emplace_back("previtem", items[size_t(k - 1)]);
      if (k + 1 < len) d.emplace_back("nextitem", items[size_t(k + 1)]);
      frames.emplace_back();
      frames.back().emplace_back("loop", std::move(loop));
      unpack(n.targets, items[size_t(k)]);
      exec(n.body);
      frames.pop_back();
      if (flow_ == Flow::Break) {
        flow_ = Flow::Normal;
        break;
      }
      flow_ = Flow::Normal;
    }
  }

  // ---- expressions
  // A copy of a string costs its length.
  static Value charged(Value v) {
    if (v.t == T::Str) charge_bytes(v.s.size());
    return v;
  }
  Value eval(const Expr& e) {
    spend(1);
    switch (e.k) {
      case Expr::K::Const: return charged(e.val);
      case Expr::K::Name: return charged(lookup(e.name));
      case Expr::K::Attr: return charged(getattr(eval(*e.a[0]), e.name));
      case Expr::K::Item: {
        const Value obj = eval(*e.a[0]);
        const Expr& key = *e.a[1];
        if (key.k == Expr::K::Slice) {
          auto part = [&](int k) { return key.a[k] ? eval(*key.a[k]) : Value::none(); };
          return slice(obj, part(0), part(1), part(2));
        }
        return charged(getitem(obj, eval(key)));
      }
      case Expr::K::Slice: fail("slice outside of a subscript");
      case Expr::K::Call: {
        const Value f = eval(*e.a[0]);
        std::vector<Value> args;
        for (size_t k = 1; k < e.a.size(); ++k) args.push_back(eval(*e.a[k]));
        return call(f, args, eval_kw(e));
      }
      case Expr::K::Filter: {
        Value v = eval(*e.a[0]);
        std::vector<Value> args;
        for (size_t k = 1; k < e.a.size(); ++k) args.push_back(eval(*e.a[k]));
        return apply_filter(e.name, v, args, eval_kw(e));
      }
      case Expr::K::Test: {
        const Value v = eval(*e.a[0]);
        std::vector<Value> args;
        for (size_t k = 1; k < e.a.size(); ++k) args.push_back(eval(*e.a[k]));
        if (!e.kw.empty()) fail("keyword arguments to tests are not supported");
        return Value::boolean(apply_test(e.name, v, args));
      }
      case Expr::K::Not: return Value::boolean(!truthy(eval(*e.a[0])));
      case Expr::K::Neg: case Expr::K::Pos: {
        const Value v = eval(*e.a[0]);
        need_defined(v);
        if (!v.is_num()) fail(cat("bad operand type for unary ", e.k == Expr::K::Neg ? "-" : "+", ": '", type_name(v), "'"));
        if (e.k == Expr::K::Pos) return v.t == T::Float ? v : Value::integer(v.i);
        if (v.t == T::Float) return Value::real(-v.f);
        if (v.i == INT64_MIN) fail("integer overflow in unary '-'");
        return Value::integer(-v.i);
      }
      case Expr::K::Bin: return arith(e.name, eval(*e.a[0]), eval(*e.a[1]));
      case Expr::K::Cmp: {
        Value l = eval(*e.a[0]);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value r = eval(*e.a[k + 1]);
          const std::string& op = e.ops[k];
          bool ok;
          if (op == "==") ok = equal(l, r);
          else if (op == "!=") ok = !equal(l, r);
          else if (op == "in") ok = contains(r, l);
          else if (op == "not in") ok = !contains(r, l);
          else {
            const int c = compare(l, r);
            ok = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
          }
          if (!ok) return Value::boolean(false);
          l = std::move(r);
        }
        return Value::boolean(true);
      }
      case Expr::K::And: {
        Value l = eval(*e.a[0]);
        return truthy(l) ? eval(*e.a[1]) : l;
      }
      case Expr::K::Or: {
        Value l = eval(*e.a[0]);
        return truthy(l) ? l : eval(*e.a[1]);
      }
      case Expr::K::Cond:
        if (truthy(eval(*e.a[0]))) return eval(*e.a[1]);
        return e.a[2] ? eval(*e.a[2]) : Value::undef("the conditional expression had no else branch");
      case Expr::K::List: case Expr::K::Tuple: {
        std::vector<Value> v;
        v.reserve(e.a.size());
        for (const auto& x : e.a) v.push_back(eval(*x));
        return Value::make_list(std::move(v), e.k == Expr::K::Tuple ? List::Tuple : List::Plain);
      }
      case Expr::K::Dict: {
        Value d = Value::make_dict();
        for (size_t k = 0; k < e.a.size(); k += 2) {
          const Value key = eval(*e.a[k]);
          if (key.t != T::Str) fail(cat("dict literal keys must be strings, got ", type_name(key)));
          d.dict->set(key.s, eval(*e.a[k + 1]));
        }
        return d;
      }
      case Expr::K::Concat: {
        // Operands first, then the size check, then one allocation: no copy beyond the result.
        std::vector<Value> parts;
        size_t n = 0;
        for (const auto& x : e.a) {
          parts.push_back(eval(*x));
          if (parts.back().t != T::Str) {
            std::string text = to_str(parts.back());
            parts.back() = Value();
            parts.back().t = T::Str;
            parts.back().s = std::move(text);
          }
          n += parts.back().s.size();
          check_string_size(n, "the '~' result");
        }
        std::string s;
        s.reserve(n);
        for (const Value& v : parts) s += v.s;
        return Value::str(std::move(s));
      }
    }
    fail("internal: unknown expression");
  }
  KwArgs eval_kw(const Expr& e) {
    KwArgs kw;
    for (const auto& [k, x] : e.kw) kw.emplace_back(k, eval(*x));
    return kw;
  }

  // ---- calls: globals, str/dict methods, loop.cycle
  Value call(const Value& f, const std::vector<Value>& args, const KwArgs& kw) {
    if (f.t != T::Func) {
      need_defined(f);
      fail(cat("'", type_name(f), "' object is not callable"));
    }
    const std::string& n = f.s;
    auto no_kw = [&] {
      if (!kw.empty()) fail(n + "() takes no keyword arguments");
    };
    if (!f.self) {
      if (n == "raise_exception") {
        auto a = bind(n, {"message"}, args, kw);
        throw Fail{a[0] ? to_str(*a[0]) : "", true};
      }
      if (n == "strftime_now") {
        auto a = bind(n, {"format"}, args, kw);
        if (!a[0]) fail("strftime_now() missing argument 'format'");
        std::tm tm{};
        if (now_) {
          tm = *now_;
        } else {
          const std::time_t t = std::time(nullptr);
          localtime_r(&t, &tm);
        }
        char buf[512];
        const std::string& fmt = as_str(*a[0], "strftime_now format");
        const size_t len = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
        if (len == 0 && !fmt.empty()) fail("strftime_now(): result too long or empty");
        return Value::str(std::string(buf, len));
      }
      if (n == "namespace" || n == "dict") {
        Value d = Value::make_dict(n == "namespace" ? Dict::Namespace : Dict::Plain);
        for (const auto& a : args) {
          if (a.t != T::Dict || a.dict->kind != Dict::Plain) fail(n + "() positional argument must be a dict");
          for (const auto& [k, v] : a.dict->v) d.dict->set(k, v);
        }
        if (args.size() > 1) fail(n + "() takes at most one positional argument");
        for (const auto& [k, v] : kw) d.dict->set(k, v);
        return d;
      }
      if (n == "range") {
        no_kw();
        if (args.empty() || args.size() > 3) fail("range() takes 1 to 3 arguments");
        int64_t start = 0, stop, step = 1;
        if (args.size() == 1) {
          stop = as_int(args[0], "range() argument");
        } else {
          start = as_int(args[0], "range() argument");
          stop = as_int(args[1], "range() argument");
          if (args.size() == 3) step = as_int(args[2], "range() argument");
        }
        if (step == 0) fail("range() arg 3 must not be zero");
        std::vector<Value> v;
        for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
          if (v.size() >= 100000) fail("range too big, maximum size for range is 100000");
          v.push_back(Value::integer(k));
        }
        return Value::make_list(std::move(v), List::Range);
      }
      fail("unknown function " + n);
    }
    const Value& self = *f.self;
    if (n == "loop.cycle") {
      no_kw();
      if (args.empty()) fail("no items for cycling given");
      return args[size_t(self.dict->find("index0")->i % int64_t(args.size()))];
    }
    if (n.rfind("dict.", 0) == 0) return dict_method(n.substr(5), self, args, kw);
    if (n.rfind("str.", 0) == 0) return str_method(n.substr(4), self.s, args, kw);
    fail(n + "() is not supported (templates render in an immutable sandbox)");
  }
};

}  // namespace

Template::Template(const std::string& source, std::string name) : name_(std::move(name)) {
  auto body = std::make_shared<Body>(parse_template(source, name_));
  std::function<bool(const Body&)> has_gen = [&](const Body& b) {
    for (const auto& n : b) {
      if (n->k == Node::K::Generation) return true;
      if (has_gen(n->body) || has_gen(n->else_body)) return true;
      for (const auto& br : n->branches)
        if (has_gen(br.second)) return true;
    }
    return false;
  };
  has_generation_ = has_gen(*body);
  body_ = std::move(body);
}

Template::Output Template::render(const std::vector<std::pair<std::string, Value>>& vars,
                                  const std::optional<std::tm>& now) const {
  RenderBudget budget;
  Renderer r(name_, now);
  r.frames.emplace_back();
  for (const char* f : {"range", "namespace", "dict", "raise_exception", "strftime_now"})
    r.frames.back().emplace_back(f, Value::func(f));
  for (const auto& kv : vars) r.frames.back().push_back(kv);
  r.frames.emplace_back();  // the template's own top-level `set`s
  r.exec(*body_);
  return {std::move(r.out), std::move(r.gen)};
}

}  // namespace ft::jinja
