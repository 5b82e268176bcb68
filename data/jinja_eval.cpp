// Jinja evaluator: walks the AST with jinja2's scoping rules (a for-loop iteration is a fresh
// scope over the enclosing one; if/else is not a scope; namespace() objects are shared and
// mutable) and Python value semantics. Filters, tests, str/dict methods and the HF globals
// (raise_exception, strftime_now) live here.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "data/jinja_ast.h"
#include "data/jinja_util.h"

namespace ft::jinja {
namespace {

// A failure inside evaluation; exec() adds the template name and line.
struct Fail {
  std::string msg;
  bool raised = false;  // from raise_exception()
};
[[noreturn]] void fail(std::string msg) { throw Fail{std::move(msg)}; }

using T = Value::T;
using KwArgs = std::vector<std::pair<std::string, Value>>;

std::string undef_msg(const Value& v) { return v.s.empty() ? "value is undefined" : v.s; }

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
void need_defined(const Value& v) {
  if (v.is_undef()) fail(undef_msg(v));
}

// ---------------------------------------------------------------- text helpers

// Case mapping is ASCII-only; a cased non-ASCII letter is an error rather than a wrong result.
bool cased_non_ascii(char32_t c) {
  return c == 0xb5 || (c >= 0xc0 && c <= 0x24f && c != 0xd7 && c != 0xf7) || (c >= 0x370 && c <= 0x58f) ||
         (c >= 0x10a0 && c <= 0x10ff) || (c >= 0x13a0 && c <= 0x13ff) || (c >= 0x1c80 && c <= 0x1cbf) ||
         (c >= 0x1d00 && c <= 0x1fff) || (c >= 0x2100 && c <= 0x218f) || (c >= 0x24b6 && c <= 0x24e9) ||
         (c >= 0x2c00 && c <= 0x2d2f) || (c >= 0xa640 && c <= 0xa7ff) || (c >= 0xab70 && c <= 0xabbf) ||
         (c >= 0xfb00 && c <= 0xfb06) || (c >= 0xff21 && c <= 0xff5a) || (c >= 0x10400 && c <= 0x104ff) ||
         (c >= 0x10c80 && c <= 0x10cff) || (c >= 0x118a0 && c <= 0x118df) || (c >= 0x16e40 && c <= 0x16e9f) ||
         (c >= 0x1e900 && c <= 0x1e95f);
}
bool is_cased(char32_t c) { return (c < 0x80 && std::isalpha(int(c))) || cased_non_ascii(c); }
char32_t cp_case(char32_t c, bool upper) {
  if (c < 0x80) return char32_t(upper ? std::toupper(int(c)) : std::tolower(int(c)));
  if (cased_non_ascii(c)) fail("upper/lower/title/capitalize of non-ASCII letters is not supported");
  return c;
}
std::string str_case(const std::string& s, bool upper) {
  std::u32string u = utf8_decode(s);
  for (auto& c : u) c = cp_case(c, upper);
  return utf8_encode(u);
}
std::string py_title(const std::string& s) {  // str.title()
  std::u32string u = utf8_decode(s);
  bool prev_cased = false;
  for (auto& c : u) {
    c = cp_case(c, !prev_cased);
    prev_cased = is_cased(c);
  }
  return utf8_encode(u);
}
std::string py_capitalize(const std::string& s) {
  std::u32string u = utf8_decode(s);
  for (size_t k = 0; k < u.size(); ++k) u[k] = cp_case(u[k], k == 0);
  return utf8_encode(u);
}
std::string jinja_title(const std::string& s) {  // the title filter: words split at [-\s({\[<]+
  std::u32string u = utf8_decode(s);
  bool start = true;
  for (auto& c : u) {
    const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
    if (!sep) c = cp_case(c, start);
    start = sep;
  }
  return utf8_encode(u);
}
// std::string::find (and a scan against a set of characters) costs up to |text|·|pattern|: charge
// that product before searching, so a long pattern in a long text is a budget error, not a hang.
void charge_search(size_t text, size_t pattern) { spend(int64_t((text >> 8) + 1) * int64_t((pattern >> 8) + 1)); }

std::string strip(const std::string& s, const Value* chars, bool left, bool right) {
  std::u32string set;
  const bool ws = !chars || chars->t == T::None || chars->is_undef();
  if (!ws) {
    if (chars->t != T::Str) fail("strip arg must be None or str");
    charge_search(s.size(), chars->s.size());  // before decoding anything
    set = utf8_decode(chars->s);
  }
  std::u32string u = utf8_decode(s);
  auto drop = [&](char32_t c) { return ws ? py_isspace(c) : set.find(c) != std::u32string::npos; };
  size_t b = 0, e = u.size();
  if (left)
    while (b < e && drop(u[b])) ++b;
  if (right)
    while (e > b && drop(u[e - 1])) --e;
  return utf8_encode(u.substr(b, e - b));
}
std::vector<std::string> split_ws(const std::string& s, int64_t maxsplit, bool from_right) {
  std::u32string u = utf8_decode(s);
  std::vector<std::u32string> parts;
  if (!from_right) {
    size_t i = 0;
    while (i < u.size()) {
      while (i < u.size() && py_isspace(u[i])) ++i;
      if (i == u.size()) break;
      if (maxsplit >= 0 && int64_t(parts.size()) == maxsplit) {
        size_t e = u.size();
        while (e > i && py_isspace(u[e - 1])) --e;
        parts.push_back(u.substr(i, e - i));
        break;
      }
      size_t j = i;
      while (j < u.size() && !py_isspace(u[j])) ++j;
      parts.push_back(u.substr(i, j - i));
      check_list_size(parts.size(), "split()'s result");
      i = j;
    }
  } else {
    size_t i = u.size();
    while (i > 0) {
      while (i > 0 && py_isspace(u[i - 1])) --i;
      if (i == 0) break;
      if (maxsplit >= 0 && int64_t(parts.size()) == maxsplit) {
        size_t b = 0;
        while (b < i && py_isspace(u[b])) ++b;
        parts.push_back(u.substr(b, i - b));
        break;
      }
      size_t j = i;
      while (j > 0 && !py_isspace(u[j - 1])) --j;
      parts.push_back(u.substr(j, i - j));
      check_list_size(parts.size(), "split()'s result");
      i = j;
    }
    std::reverse(parts.begin(), parts.end());
  }
  std::vector<std::string> out;
  for (auto& p : parts) out.push_back(utf8_encode(p));
  return out;
}
std::vector<std::string> split_sep(const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right) {
  if (sep.empty()) fail("empty separator");
  charge_search(s.size(), sep.size());
  std::vector<std::string> out;
  if (!from_right) {
    size_t b = 0, p;
    while ((maxsplit < 0 || int64_t(out.size()) < maxsplit) && (p = s.find(sep, b)) != std::string::npos) {
      out.push_back(s.substr(b, p - b));
      check_list_size(out.size(), "split()'s result");
      b = p + sep.size();
    }
    out.push_back(s.substr(b));
  } else {
    size_t e = s.size();
    while (maxsplit < 0 || int64_t(out.size()) < maxsplit) {
      if (e < sep.size()) break;
      const size_t p = s.rfind(sep, e - sep.size());
      if (p == std::string::npos) break;
      out.push_back(s.substr(p + sep.size(), e - p - sep.size()));
      check_list_size(out.size(), "split()'s result");
      e = p;
    }
    out.push_back(s.substr(0, e));
    std::reverse(out.begin(), out.end());
  }
  return out;
}
std::vector<std::string> splitlines(const std::string& s, bool keepends) {
  std::u32string u = utf8_decode(s);
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    const char32_t c = u[i];
    if (c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1e) || c == 0x85 || c == 0x2028 ||
        c == 0x2029) {
      size_t e = i + 1;
      if (c == '\r' && e < u.size() && u[e] == '\n') ++e;
      out.push_back(utf8_encode(u.substr(b, (keepends ? e : i) - b)));
      check_list_size(out.size(), "splitlines()'s result");
      b = e;
      i = e - 1;
    }
  }
  if (b < u.size()) out.push_back(utf8_encode(u.substr(b)));
  return out;
}
std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  charge_search(s.size(), from.size());
  if (from.empty()) {  // Python inserts `to` around every character
    std::u32string u = utf8_decode(s);
    std::string out;
    int64_t n = 0;
    for (size_t k = 0; k <= u.size(); ++k) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
        check_string_size(out.size(), "replace()'s result");
      }
      if (k < u.size()) utf8_append(out, u[k]);
    }
    return out;
  }
  std::string out;
  size_t b = 0, p;
  int64_t n = 0;
  while ((count < 0 || n < count) && (p = s.find(from, b)) != std::string::npos) {
    out.append(s, b, p - b);
    out += to;
    check_string_size(out.size(), "replace()'s result");
    b = p + from.size();
    ++n;
  }
  out.append(s, b, std::string::npos);
  return out;
}
int64_t cp_len(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

// ---------------------------------------------------------------- value helpers

int64_t as_int(const Value& v, const char* what) {
  if (v.t == T::Int || v.t == T::Bool) return v.i;
  need_defined(v);
  fail(cat(what, " must be an integer, got ", type_name(v)));
}
const std::string& as_str(const Value& v, const char* what) {
  if (v.t != T::Str) {
    need_defined(v);
    fail(cat(what, " must be a string, got ", type_name(v)));
  }
  return v.s;
}

std::string spaces(int64_t n) {
  n = std::max<int64_t>(n, 0);
  check_string_size(size_t(n), "the indentation");
  return std::string(size_t(n), ' ');
}

std::vector<Value> iterate(const Value& v) {
  switch (v.t) {
    case T::Undef: return {};
    case T::List:
      charge_items(v.list->v);  // the copy
      return v.list->v;
    case T::Str: {
      check_list_size(size_t(cp_len(v.s)), "the string's list of characters");
      spend(int64_t(v.s.size()));
      std::vector<Value> out;
      for (char32_t c : utf8_decode(v.s)) out.push_back(Value::str(utf8_encode(std::u32string(1, c))));
      return out;
    }
    case T::Dict:
      if (v.dict->kind == Dict::Plain) {
        std::vector<Value> out;
        for (const auto& kv : v.dict->v) out.push_back(Value::str(kv.first));
        return out;
      }
      [[fallthrough]];
    default: fail(cat("'", type_name(v), "' object is not iterable"));
  }
}

int64_t length(const Value& v) {
  switch (v.t) {
    case T::Undef: return 0;
    case T::Str: return cp_len(v.s);
    case T::List: return int64_t(v.list->v.size());
    case T::Dict:
      if (v.dict->kind == Dict::Plain) return int64_t(v.dict->v.size());
      [[fallthrough]];
    default: fail(cat("object of type '", type_name(v), "' has no len()"));
  }
}

// Python's <, as -1/0/1; mismatched types are a TypeError.
int compare(const Value& a, const Value& b) {
  need_defined(a);
  need_defined(b);
  if (a.is_num() && b.is_num()) {
    if (a.t != T::Float && b.t != T::Float) return a.i < b.i ? -1 : a.i > b.i;
    return a.num() < b.num() ? -1 : a.num() > b.num();
  }
  if (a.t == T::Str && b.t == T::Str) return a.s < b.s ? -1 : a.s > b.s;
  if (a.t == T::List && b.t == T::List && a.list->kind == b.list->kind) {
    const auto &x = a.list->v, &y = b.list->v;
    for (size_t k = 0; k < x.size() && k < y.size(); ++k)
      if (!equal(x[k], y[k])) return compare(x[k], y[k]);
    return x.size() < y.size() ? -1 : x.size() > y.size();
  }
  fail(cat("'<' not supported between instances of '", type_name(a), "' and '", type_name(b), "'"));
}

bool contains(const Value& hay, const Value& needle) {
  switch (hay.t) {
    case T::Undef: return false;
    case T::Str:
      if (needle.t != T::Str) fail(cat("'in <string>' requires string as left operand, not ", type_name(needle)));
      charge_search(hay.s.size(), needle.s.size());
      return hay.s.find(needle.s) != std::string::npos;
    case T::List:
      spend(int64_t(hay.list->v.size()));
      for (const auto& x : hay.list->v)
        if (equal(x, needle)) return true;
      return false;
    case T::Dict:
      if (hay.dict->kind == Dict::Plain) return needle.t == T::Str && hay.dict->find(needle.s);
      [[fallthrough]];
    default: fail(cat("argument of type '", type_name(hay), "' is not iterable"));
  }
}

Value num_result(double x) { return Value::real(x); }

Value arith(const std::string& op, const Value& a, const Value& b) {
  need_defined(a);
  need_defined(b);
  const char o = op[0];
  if (a.is_num() && b.is_num()) {
    const bool ints = a.t != T::Float && b.t != T::Float;
    const int64_t x = a.i, y = b.i;
    const double fx = a.num(), fy = b.num();
    int64_t r = 0;
    if (op == "+") {
      if (!ints) return num_result(fx + fy);
      if (__builtin_add_overflow(x, y, &r)) fail("integer overflow in '+'");
      return Value::integer(r);
    }
    if (op == "-") {
      if (!ints) return num_result(fx - fy);
      if (__builtin_sub_overflow(x, y, &r)) fail("integer overflow in '-'");
      return Value::integer(r);
    }
    if (op == "*") {
      if (!ints) return num_result(fx * fy);
      if (__builtin_mul_overflow(x, y, &r)) fail("integer overflow in '*'");
      return Value::integer(r);
    }
    if (op == "/") {
      if (fy == 0) fail(ints ? "division by zero" : "float division by zero");
      return num_result(fx / fy);
    }
    if (op == "//" || op == "%") {
      if (ints) {
        if (y == 0) fail("integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) fail("integer overflow in '//'");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return Value::integer(o == '%' ? m : q);
      }
      if (fy == 0) fail(op == "%" ? "float modulo" : "float floor division by zero");
      double m = std::fmod(fx, fy);
      double div = (fx - m) / fy;
      if (m != 0) {
        if ((fy < 0) != (m < 0)) {
          m += fy;
          div -= 1.0;
        }
      } else {
        m = std::copysign(0.0, fy);
      }
      if (op == "%") return num_result(m);
      double fl;
      if (div != 0) {
        fl = std::floor(div);
        if (div - fl > 0.5) fl += 1.0;
      } else {
        fl = std::copysign(0.0, fx / fy);
      }
      return num_result(fl);
    }
    if (op == "**") {
      if (ints && y >= 0) {
        int64_t acc = 1, base = x;
        for (int64_t e = y; e > 0; e >>= 1) {
          if (e & 1)
            if (__builtin_mul_overflow(acc, base, &acc)) fail("integer overflow in '**'");
          if (e > 1 && __builtin_mul_overflow(base, base, &base)) fail("integer overflow in '**'");
        }
        return Value::integer(acc);
      }
      if (fx == 0 && fy < 0) fail("0.0 cannot be raised to a negative power");
      if (fx < 0 && fy != std::floor(fy)) fail("negative number raised to a fractional power (complex result)");
      const double r2 = std::pow(fx, fy);
      if (std::isinf(r2) && std::isfinite(fx) && std::isfinite(fy)) fail("numerical result out of range in '**'");
      return num_result(r2);
    }
  }
  if (op == "+") {
    if (a.t == T::Str && b.t == T::Str) {
      check_string_size(a.s.size() + b.s.size(), "the '+' result");  // before building it
      return Value::str(a.s + b.s);
    }
    if (a.t == T::List && b.t == T::List && a.list->kind == b.list->kind &&
        (a.list->kind == List::Plain || a.list->kind == List::Tuple)) {
      check_list_size(a.list->v.size() + b.list->v.size(), "the concatenated list");
      charge_items(a.list->v);
      charge_items(b.list->v);
      std::vector<Value> v = a.list->v;
      v.insert(v.end(), b.list->v.begin(), b.list->v.end());
      return Value::make_list(std::move(v), a.list->kind);
    }
    if (a.t == T::Str) fail(cat("can only concatenate str (not \"", type_name(b), "\") to str"));
  }
  if (op == "*") {
    const Value* seq = a.t == T::Str || a.t == T::List ? &a : &b;
    const Value* n = seq == &a ? &b : &a;
    if ((seq->t == T::Str || (seq->t == T::List && seq->list->kind <= List::Tuple)) &&
        (n->t == T::Int || n->t == T::Bool)) {
      // Sizes checked before anything is built; an empty sequence repeats to an empty one at once.
      const uint64_t reps = uint64_t(std::max<int64_t>(n->i, 0));
      auto times = [&](size_t x) {
        uint64_t r;
        return __builtin_mul_overflow(uint64_t(x), reps, &r) ? UINT64_MAX : r;
      };
      if (seq->t == T::Str) {
        check_string_size(times(seq->s.size()), "the repeated string");
        std::string s;
        if (!seq->s.empty())
          for (uint64_t k = 0; k < reps; ++k) s += seq->s;
        return Value::str(std::move(s));
      }
      const std::vector<Value>& items = seq->list->v;
      check_list_size(times(items.size()), "the repeated list");
      check_string_size(times(string_bytes(items)), "the repeated list's strings");
      std::vector<Value> v;
      if (!items.empty())
        for (uint64_t k = 0; k < reps; ++k) {
          charge_items(items);
          v.insert(v.end(), items.begin(), items.end());
        }
      return Value::make_list(std::move(v), seq->list->kind);
    }
  }
  if (op == "%" && a.t == T::Str) fail("printf-style string formatting ('...' % x) is not supported");
  fail(cat("unsupported operand type(s) for ", op, ": '", type_name(a), "' and '", type_name(b), "'"));
}

// ---------------------------------------------------------------- attribute / item access

bool is_str_method(std::string_view n) {
  static const std::set<std::string, std::less<>> m = {
      "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
      "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
      "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans",
      "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit",
      "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill"};
  return m.count(n);
}
bool is_dict_method(std::string_view n) {
  static const std::set<std::string, std::less<>> m = {"clear", "copy", "fromkeys", "get", "items", "keys",
                                                       "pop", "popitem", "setdefault", "update", "values"};
  return m.count(n);
}
bool is_list_method(std::string_view n) {
  static const std::set<std::string, std::less<>> m = {"append", "clear", "copy", "count", "extend", "index",
                                                       "insert", "pop", "remove", "reverse", "sort"};
  return m.count(n);
}

Value bound(const char* prefix, const std::string& name, const Value& self) {
  return Value::func(prefix + name, std::make_shared<const Value>(self));
}

Value getattr(const Value& obj, const std::string& name) {
  switch (obj.t) {
    case T::Undef: fail(undef_msg(obj));
    case T::Dict:
      if (obj.dict->kind == Dict::Plain && is_dict_method(name)) return bound("dict.", name, obj);
      if (obj.dict->kind == Dict::Loop && (name == "cycle" || name == "changed")) return bound("loop.", name, obj);
      if (const Value* v = obj.dict->find(name)) return *v;
      return Value::undef(cat("'", type_name(obj), " object' has no attribute '", name, "'"));
    case T::Str:
      if (is_str_method(name)) return bound("str.", name, obj);
      break;
    case T::List:
      if (is_list_method(name)) return bound("list.", name, obj);
      break;
    default: break;
  }
  return Value::undef(cat("'", type_name(obj), " object' has no attribute '", name, "'"));
}

Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  auto opt = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.t == T::None) return std::nullopt;
    return as_int(v, what);
  };
  const auto st = opt(step, "slice step");
  const int64_t s = st.value_or(1);
  if (s == 0) fail("slice step cannot be zero");
  std::u32string u;
  int64_t n;
  if (obj.t == T::Str) {
    u = utf8_decode(obj.s);
    n = int64_t(u.size());
  } else if (obj.t == T::List) {
    n = int64_t(obj.list->v.size());
  } else {
    need_defined(obj);
    fail(cat("'", type_name(obj), "' object is not subscriptable"));
  }
  auto adjust = [&](std::optional<int64_t> x, int64_t dflt) {
    if (!x) return dflt;
    int64_t v = *x;
    if (v < 0) {
      v += n;
      if (v < 0) v = s < 0 ? -1 : 0;
    } else if (v >= n) {
      v = s < 0 ? n - 1 : n;
    }
    return v;
  };
  const int64_t b = adjust(opt(start, "slice start"), s < 0 ? n - 1 : 0);
  const int64_t e = adjust(opt(stop, "slice stop"), s < 0 ? -1 : n);
  std::vector<int64_t> idx;
  for (int64_t k = b; s > 0 ? k < e : k > e; k += s) idx.push_back(k);
  if (obj.t == T::Str) {
    std::u32string r;
    for (int64_t k : idx) r += u[size_t(k)];
    return Value::str(utf8_encode(r));
  }
  std::vector<Value> r;
  for (int64_t k : idx) r.push_back(obj.list->v[size_t(k)]);
  return Value::make_list(std::move(r), obj.list->kind == List::Tuple ? List::Tuple : List::Plain);
}

Value getitem(const Value& obj, const Value& key) {
  need_defined(obj);
  if (obj.t == T::Dict && key.t == T::Str) {
    if (const Value* v = obj.dict->find(key.s)) return *v;
    return getattr(obj, key.s);
  }
  if ((obj.t == T::List || obj.t == T::Str) && (key.t == T::Int || key.t == T::Bool)) {
    const int64_t n = length(obj);
    int64_t k = key.i < 0 ? key.i + n : key.i;
    if (k < 0 || k >= n)
      return Value::undef(cat(type_name(obj), " object has no element ", key.i));
    if (obj.t == T::List) return obj.list->v[size_t(k)];
    return Value::str(utf8_encode(std::u32string(1, utf8_decode(obj.s)[size_t(k)])));
  }
  if (key.t == T::Str) return getattr(obj, key.s);
  return Value::undef(cat("'", type_name(obj), " object' has no element ", to_str(key)));
}

// Jinja's attribute getter for filters: "a.b.0" walks items/attributes.
Value get_path(const Value& v, const Value& attr) {
  if (attr.t == T::Int) return getitem(v, attr);
  Value cur = v;
  for (const std::string& part : split_sep(as_str(attr, "attribute"), ".", -1, false)) {
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = getitem(cur, digits ? Value::integer(std::stoll(part)) : Value::str(part));
    if (cur.is_undef()) break;
  }
  return cur;
}

// ---------------------------------------------------------------- argument binding

// Binds positional + keyword args to named parameters (Python call rules).
std::vector<std::optional<Value>> bind(const std::string& fn, std::initializer_list<const char*> params,
                                       const std::vector<Value>& pos, const KwArgs& kw) {
  std::vector<std::optional<Value>> out(params.size());
  if (pos.size() > params.size()) fail(cat(fn, "() takes at most ", params.size(), " arguments (", pos.size(), " given)"));
  for (size_t k = 0; k < pos.size(); ++k) out[k] = pos[k];
  for (const auto& [name, v] : kw) {
    size_t k = 0;
    for (const char* p : params) {
      if (name == p) break;
      ++k;
    }
    if (k == params.size()) fail(cat(fn, "() got an unexpected keyword argument '", name, "'"));
    if (out[k]) fail(cat(fn, "() got multiple values for argument '", name, "'"));
    out[k] = v;
  }
  return out;
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
        return filter(e.name, v, args, eval_kw(e));
      }
      case Expr::K::Test: {
        const Value v = eval(*e.a[0]);
        std::vector<Value> args;
        for (size_t k = 1; k < e.a.size(); ++k) args.push_back(eval(*e.a[k]));
        if (!e.kw.empty()) fail("keyword arguments to tests are not supported");
        return Value::boolean(test(e.name, v, args));
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

  Value dict_method(const std::string& m, const Value& self, const std::vector<Value>& args, const KwArgs& kw) {
    const auto& d = self.dict->v;
    if (m == "get") {
      auto a = bind("get", {"key", "default"}, args, kw);
      if (!a[0]) fail("get() missing argument 'key'");
      if (a[0]->t == T::Str)
        if (const Value* v = self.dict->find(a[0]->s)) return *v;
      return a[1] ? *a[1] : Value::none();
    }
    if (!args.empty() || !kw.empty()) fail("dict." + m + "() takes no arguments");
    std::vector<Value> out;
    if (m == "keys") {
      for (const auto& kv : d) out.push_back(Value::str(kv.first));
      return Value::make_list(std::move(out), List::Keys);
    }
    if (m == "values") {
      for (const auto& kv : d) out.push_back(kv.second);
      return Value::make_list(std::move(out), List::Values);
    }
    if (m == "items") {
      for (const auto& kv : d) out.push_back(Value::make_list({Value::str(kv.first), kv.second}, List::Tuple));
      return Value::make_list(std::move(out), List::Items);
    }
    fail("dict." + m + "() is not supported (templates render in an immutable sandbox)");
  }

  Value str_method(const std::string& m, const std::string& s, const std::vector<Value>& args, const KwArgs& kw) {
    auto strs = [](const std::vector<std::string>& v) {
      std::vector<Value> out;
      for (const auto& x : v) out.push_back(Value::str(x));
      return Value::make_list(std::move(out));
    };
    if (m == "strip" || m == "lstrip" || m == "rstrip") {
      auto a = bind(m, {"chars"}, args, kw);
      return Value::str(strip(s, a[0] ? &*a[0] : nullptr, m != "rstrip", m != "lstrip"));
    }
    if (m == "split" || m == "rsplit") {
      auto a = bind(m, {"sep", "maxsplit"}, args, kw);
      const int64_t maxsplit = a[1] ? as_int(*a[1], "maxsplit") : -1;
      if (!a[0] || a[0]->t == T::None) return strs(split_ws(s, maxsplit, m == "rsplit"));
      return strs(split_sep(s, as_str(*a[0], "sep"), maxsplit, m == "rsplit"));
    }
    if (m == "splitlines") {
      auto a = bind(m, {"keepends"}, args, kw);
      return strs(splitlines(s, a[0] && truthy(*a[0])));
    }
    if (m == "startswith" || m == "endswith") {
      auto a = bind(m, {"prefix", "start", "end"}, args, kw);
      if (!a[0]) fail(m + "() takes at least 1 argument");
      std::string sub = s;
      if (a[1] || a[2])
        sub = slice(Value::str(s), a[1] ? *a[1] : Value::none(), a[2] ? *a[2] : Value::none(), Value::none()).s;
      std::vector<Value> cands = a[0]->t == T::List && a[0]->list->kind == List::Tuple ? a[0]->list->v
                                                                                          : std::vector<Value>{*a[0]};
      for (const auto& c : cands) {
        const std::string& x = as_str(c, m.c_str());
        if (x.size() <= sub.size() &&
            (m == "startswith" ? sub.compare(0, x.size(), x) == 0 : sub.compare(sub.size() - x.size(), x.size(), x) == 0))
          return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (m == "replace") {
      auto a = bind(m, {"old", "new", "count"}, args, kw);
      if (!a[0] || !a[1]) fail("replace() takes at least 2 arguments");
      return Value::str(replace_all(s, as_str(*a[0], "replace old"), as_str(*a[1], "replace new"),
                                    a[2] ? as_int(*a[2], "count") : -1));
    }
    if (m == "upper" || m == "lower" || m == "title" || m == "capitalize") {
      bind(m, {}, args, kw);
      return Value::str(m == "title" ? py_title(s) : m == "capitalize" ? py_capitalize(s) : str_case(s, m == "upper"));
    }
    if (m == "find" || m == "count") {
      auto a = bind(m, {"sub", "start", "end"}, args, kw);
      if (!a[0]) fail(m + "() takes at least 1 argument");
      if (a[1] || a[2]) fail(m + "() with start/end is not supported");
      const std::string& sub = as_str(*a[0], m.c_str());
      charge_search(s.size(), sub.size());
      if (m == "find") {
        const size_t p = s.find(sub);
        return Value::integer(p == std::string::npos ? -1 : cp_len(s.substr(0, p)));
      }
      if (sub.empty()) return Value::integer(cp_len(s) + 1);
      int64_t c = 0;
      for (size_t p = 0; (p = s.find(sub, p)) != std::string::npos; p += sub.size()) ++c;
      return Value::integer(c);
    }
    if (m == "join") {
      auto a = bind(m, {"iterable"}, args, kw);
      if (!a[0]) fail("join() takes exactly one argument");
      std::string out;
      bool first = true;
      for (const auto& x : iterate(*a[0])) {
        if (!first) out += s;
        first = false;
        out += as_str(x, "join() item");
        check_string_size(out.size(), "join()'s result");
      }
      return Value::str(std::move(out));
    }
    if (m == "format") return Value::str(format(s, args, kw));
    fail("str." + m + "() is not supported");
  }

  std::string format(const std::string& f, const std::vector<Value>& args, const KwArgs& kw) {
    std::string out;
    size_t auto_idx = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      const char c = f[i];
      if (c == '}') {
        if (i + 1 < f.size() && f[i + 1] == '}') ++i;
        else fail("single '}' encountered in format string");
        out += '}';
      } else if (c == '{') {
        if (i + 1 < f.size() && f[i + 1] == '{') {
          out += '{';
          ++i;
          continue;
        }
        const size_t e = f.find('}', i);
        if (e == std::string::npos) fail("single '{' encountered in format string");
        std::string field = f.substr(i + 1, e - i - 1);
        i = e;
        char conv = 0;
        if (field.find(':') != std::string::npos) fail("format specs in str.format() are not supported");
        if (const size_t bang = field.find('!'); bang != std::string::npos) {
          if (bang + 2 != field.size() || (field[bang + 1] != 'r' && field[bang + 1] != 's'))
            fail("unsupported conversion in str.format()");
          conv = field[bang + 1];
          field.resize(bang);
        }
        const Value* v = nullptr;
        if (field.empty()) {
          if (auto_idx >= args.size()) fail("Replacement index out of range for positional args tuple");
          v = &args[auto_idx++];
        } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
          const size_t k = field.size() > 9 ? args.size() : std::stoul(field);
          if (k >= args.size()) fail("Replacement index out of range for positional args tuple");
          v = &args[k];
        } else {
          for (const auto& [k, x] : kw)
            if (k == field) v = &x;
          if (!v) fail("str.format(): missing keyword '" + field + "'");
        }
        out += conv == 'r' ? repr(*v) : to_str(*v);
        check_string_size(out.size(), "format()'s result");
      } else {
        out += c;
      }
    }
    return out;
  }

  // ---- tests
  bool test(const std::string& n, const Value& v, const std::vector<Value>& args) {
    auto arg = [&]() -> const Value& {
      if (args.size() != 1) fail("test '" + n + "' takes one argument");
      return args[0];
    };
    if (n == "defined") return !v.is_undef();
    if (n == "undefined") return v.is_undef();
    if (n == "none") return v.t == T::None;
    if (n == "boolean") return v.t == T::Bool;
    if (n == "false") return v.t == T::Bool && !v.i;
    if (n == "true") return v.t == T::Bool && v.i;
    if (n == "integer") return v.t == T::Int;
    if (n == "float") return v.t == T::Float;
    if (n == "number") return v.is_num();
    if (n == "string") return v.t == T::Str;
    if (n == "mapping") return v.t == T::Dict && v.dict->kind == Dict::Plain;
    if (n == "iterable") return v.t == T::Undef || v.t == T::Str || v.t == T::List || (v.t == T::Dict && v.dict->kind == Dict::Plain);
    if (n == "sequence") return v.t == T::Undef || v.t == T::Str || v.t == T::List || (v.t == T::Dict && v.dict->kind == Dict::Plain);
    if (n == "callable") return v.t == T::Func;
    if (n == "escaped") return false;
    if (n == "lower" || n == "upper") {
      const std::string s = to_str(v);
      bool any = false;
      for (char32_t c : utf8_decode(s)) {
        if (c >= 0x80 && cased_non_ascii(c)) fail("test '" + n + "' of non-ASCII letters is not supported");
        if (c < 0x80 && std::isalpha(int(c))) {
          any = true;
          if ((n == "lower") != bool(std::islower(int(c)))) return false;
        }
      }
      return any;
    }
    if (n == "even" || n == "odd") return truthy(arith("%", v, Value::integer(2))) == (n == "odd");
    if (n == "divisibleby") return !truthy(arith("%", v, arg()));
    if (n == "eq" || n == "equalto" || n == "==") return equal(v, arg());
    if (n == "ne" || n == "!=") return !equal(v, arg());
    if (n == "lt" || n == "lessthan" || n == "<") return compare(v, arg()) < 0;
    if (n == "le" || n == "<=") return compare(v, arg()) <= 0;
    if (n == "gt" || n == "greaterthan" || n == ">") return compare(v, arg()) > 0;
    if (n == "ge" || n == ">=") return compare(v, arg()) >= 0;
    if (n == "in") return contains(arg(), v);
    if (n == "sameas") {
      const Value& o = arg();
      if (v.t != o.t) return false;
      if (v.t == T::None || v.t == T::Undef) return true;
      if (v.t == T::Bool) return v.i == o.i;
      if (v.t == T::Int) return v.i == o.i && v.i >= -5 && v.i <= 256;  // CPython's small-int cache
      if (v.t == T::List) return v.list == o.list;
      if (v.t == T::Dict) return v.dict == o.dict;
      return false;
    }
    fail("unknown test '" + n + "'");
  }

  // ---- filters
  Value filter(const std::string& n, const Value& v, const std::vector<Value>& args, const KwArgs& kw) {
    auto b = [&](std::initializer_list<const char*> p) { return bind(n, p, args, kw); };
    auto flag = [](const std::optional<Value>& x) { return x && truthy(*x); };
    if (n == "trim") {
      auto a = b({"chars"});
      return Value::str(strip(to_str(v), a[0] ? &*a[0] : nullptr, true, true));
    }
    if (n == "tojson") {
      auto a = b({"ensure_ascii", "indent", "separators", "sort_keys"});
      std::optional<std::string> indent;
      if (a[1] && a[1]->t != T::None) {
        if (a[1]->t == T::Str) indent = a[1]->s;
        else indent = spaces(as_int(*a[1], "tojson indent"));
      }
      std::string item = indent ? "," : ", ", key = ": ";
      if (a[2] && a[2]->t != T::None) {
        if (a[2]->t != T::List || a[2]->list->v.size() != 2) fail("tojson separators must be a pair of strings");
        item = as_str(a[2]->list->v[0], "tojson separator");
        key = as_str(a[2]->list->v[1], "tojson separator");
      }
      return Value::str(to_json(v, flag(a[0]), indent, item, key, flag(a[3])));
    }
    if (n == "length" || n == "count") {
      b({});
      return Value::integer(length(v));
    }
    if (n == "string" || n == "safe") {
      b({});
      return v.t == T::Str ? v : Value::str(to_str(v));
    }
    if (n == "upper" || n == "lower") {
      b({});
      return Value::str(str_case(to_str(v), n == "upper"));
    }
    if (n == "capitalize") {
      b({});
      return Value::str(py_capitalize(to_str(v)));
    }
    if (n == "title") {
      b({});
      return Value::str(jinja_title(to_str(v)));
    }
    if (n == "default" || n == "d") {
      auto a = b({"default_value", "boolean"});
      if (v.is_undef() || (flag(a[1]) && !truthy(v))) return a[0] ? *a[0] : Value::str("");
      return v;
    }
    if (n == "first" || n == "last") {
      b({});
      std::vector<Value> items = iterate(v);
      if (items.empty()) return Value::undef(cat("No ", n, " item, sequence was empty."));
      return n == "first" ? items.front() : items.back();
    }
    if (n == "join") {
      auto a = b({"d", "attribute"});
      std::string out;
      const std::string sep = a[0] ? to_str(*a[0]) : "";
      bool first = true;
      for (const auto& x : iterate(v)) {
        if (!first) out += sep;
        first = false;
        out += to_str(a[1] ? get_path(x, *a[1]) : x);
        check_string_size(out.size(), "join's result");
      }
      return Value::str(std::move(out));
    }
    if (n == "replace") {
      auto a = b({"old", "new", "count"});
      if (!a[0] || !a[1]) fail("replace filter takes at least 2 arguments");
      return Value::str(replace_all(to_str(v), to_str(*a[0]), to_str(*a[1]),
                                    a[2] && a[2]->t != T::None ? as_int(*a[2], "count") : -1));
    }
    if (n == "list") {
      b({});
      return Value::make_list(iterate(v));
    }
    if (n == "items") {
      b({});
      if (v.is_undef()) return Value::make_list();
      if (v.t != T::Dict || v.dict->kind != Dict::Plain) fail("Can only get item pairs from a mapping.");
      std::vector<Value> out;
      for (const auto& [k, x] : v.dict->v) out.push_back(Value::make_list({Value::str(k), x}, List::Tuple));
      return Value::make_list(std::move(out));
    }
    if (n == "int") return to_int(v, b({"default", "base"}));
    if (n == "float") {
      auto a = b({"default"});
      if (auto x = to_float(v)) return Value::real(*x);
      return a[0] ? *a[0] : Value::real(0.0);
    }
    if (n == "abs") {
      b({});
      need_defined(v);
      if (!v.is_num()) fail(cat("bad operand type for abs(): '", type_name(v), "'"));
      if (v.t == T::Float) return Value::real(std::fabs(v.f));
      if (v.i == INT64_MIN) fail("integer overflow in abs()");
      return Value::integer(v.i < 0 ? -v.i : v.i);
    }
    if (n == "round") {
      auto a = b({"precision", "method"});
      const int64_t prec = a[0] ? as_int(*a[0], "round precision") : 0;
      const std::string method = a[1] ? as_str(*a[1], "round method") : "common";
      need_defined(v);
      if (!v.is_num()) fail(cat("round() of '", type_name(v), "'"));
      if (method == "common") {
        if (v.t != T::Float) return Value::integer(v.i);  // round(int, n) stays an int (n >= 0)
        if (prec < 0 || prec > 300) fail("round() precision outside 0..300 is not supported");
        if (prec == 0) return Value::real(std::nearbyint(v.f));
        char buf[512];
        std::snprintf(buf, sizeof buf, "%.*f", int(prec), v.f);  // correctly rounded, ties to even
        return Value::real(std::strtod(buf, nullptr));
      }
      if (method != "ceil" && method != "floor") fail("method must be common, ceil or floor");
      const double p = std::pow(10.0, double(prec));
      const double x = v.num() * p;
      return Value::real((method == "ceil" ? std::ceil(x) : std::floor(x)) / p);
    }
    if (n == "reverse") {
      b({});
      if (v.t == T::Str) {
        std::u32string u = utf8_decode(v.s);
        std::reverse(u.begin(), u.end());
        return Value::str(utf8_encode(u));
      }
      std::vector<Value> items = iterate(v);
      std::reverse(items.begin(), items.end());
      return Value::make_list(std::move(items));
    }
    if (n == "indent") {
      auto a = b({"width", "first", "blank"});
      std::string ind = "    ";
      if (a[0]) ind = a[0]->t == T::Str ? a[0]->s : spaces(as_int(*a[0], "width"));
      const std::vector<std::string> lines = splitlines(to_str(v) + "\n", false);
      std::string out;
      for (size_t k = 0; k < lines.size(); ++k) {
        if (k) out += "\n";
        if (k && (flag(a[2]) || !lines[k].empty())) out += ind;
        out += lines[k];
        check_string_size(out.size(), "indent's result");
      }
      return Value::str(flag(a[1]) ? ind + out : out);
    }
    if (n == "map") {
      std::vector<Value> out;
      const std::vector<Value> items = iterate(v);
      const Value* attr = nullptr;
      const Value* dflt = nullptr;
      for (const auto& [k, x] : kw) {
        if (k == "attribute") attr = &x;
        else if (k == "default") dflt = &x;
      }
      if (attr) {
        if (!args.empty() || kw.size() != 1u + (dflt != nullptr)) fail("map(attribute=...) takes only attribute and default");
        for (const auto& x : items) {
          Value r = get_path(x, *attr);
          out.push_back(r.is_undef() && dflt ? *dflt : r);
        }
      } else {
        if (args.empty()) fail("map() needs a filter name or attribute=");
        const std::string& f = as_str(args[0], "map filter name");
        if (!is_filter(f)) fail("map(): unsupported filter '" + f + "'");
        const std::vector<Value> rest(args.begin() + 1, args.end());
        for (const auto& x : items) out.push_back(filter(f, x, rest, kw));
      }
      return Value::make_list(std::move(out));
    }
    if (n == "select" || n == "reject" || n == "selectattr" || n == "rejectattr") {
      if (!kw.empty()) fail(n + "() takes no keyword arguments");
      const bool attr = n.size() > 6;
      const bool want = n[0] == 's';
      if (attr && args.empty()) fail(n + "() needs an attribute name");
      const size_t t0 = attr ? 1 : 0;
      std::string tname;
      if (args.size() > t0) tname = as_str(args[t0], "test name");
      const std::vector<Value> targs(args.begin() + std::min(args.size(), t0 + 1), args.end());
      std::vector<Value> out;
      for (const auto& x : iterate(v)) {
        const Value subject = attr ? get_path(x, args[0]) : x;
        const bool ok = tname.empty() ? truthy(subject) : test(tname, subject, targs);
        if (ok == want) out.push_back(x);
      }
      return Value::make_list(std::move(out));
    }
    if (n == "sort" || n == "unique" || n == "min" || n == "max" || n == "dictsort") {
      return sorting(n, v, args, kw);
    }
    if (n == "sum") {
      auto a = b({"attribute", "start"});
      Value acc = a[1] ? *a[1] : Value::integer(0);
      for (const auto& x : iterate(v)) acc = arith("+", acc, a[0] ? get_path(x, *a[0]) : x);
      return acc;
    }
    fail("unsupported filter '" + n + "'");
  }
  static bool is_filter(const std::string& f) {
    static const std::set<std::string, std::less<>> known = {
        "abs", "capitalize", "count", "d", "default", "first", "float", "int", "join", "last", "length", "list",
        "lower", "replace", "reverse", "round", "safe", "string", "title", "tojson", "trim", "upper", "items"};
    return known.count(f);
  }

  Value sorting(const std::string& n, const Value& v, const std::vector<Value>& args, const KwArgs& kw) {
    std::vector<std::optional<Value>> a;
    if (n == "sort") a = bind(n, {"reverse", "case_sensitive", "attribute"}, args, kw);
    else if (n == "dictsort") a = bind(n, {"case_sensitive", "by", "reverse"}, args, kw);
    else a = bind(n, {"case_sensitive", "attribute"}, args, kw);
    const bool cs = n == "sort" ? a[1] && truthy(*a[1]) : a[0] && truthy(*a[0]);
    const std::optional<Value> attr = n == "sort" ? a[2] : n == "dictsort" ? std::nullopt : a[1];
    auto key = [&](const Value& x) {
      Value k = attr ? get_path(x, *attr) : x;
      if (!cs && k.t == T::Str) k = Value::str(str_case(k.s, false));
      return k;
    };
    std::vector<Value> items;
    if (n == "dictsort") {
      if (v.t != T::Dict || v.dict->kind != Dict::Plain) fail("dictsort: can only sort a dict");
      const std::string by = a[1] ? as_str(*a[1], "by") : "key";
      if (by != "key" && by != "value") fail("You can only sort by either \"key\" or \"value\"");
      for (const auto& [k, x] : v.dict->v) items.push_back(Value::make_list({Value::str(k), x}, List::Tuple));
      const size_t pos = by == "key" ? 0 : 1;
      const bool rev = a[2] && truthy(*a[2]);
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        const int c = compare(key(x.list->v[pos]), key(y.list->v[pos]));
        return rev ? c > 0 : c < 0;
      });
      return Value::make_list(std::move(items));
    }
    items = iterate(v);
    spend(int64_t(items.size()) * (64 - __builtin_clzll(items.size() | 1)));  // n log n compares
    if (n == "sort") {
      const bool rev = a[0] && truthy(*a[0]);
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        const int c = compare(key(x), key(y));
        return rev ? c > 0 : c < 0;
      });
      return Value::make_list(std::move(items));
    }
    if (n == "unique") {  // a hash set, as Jinja's (1, 1.0 and True are one value, as in Python)
      std::vector<Value> out;
      std::unordered_set<std::string> seen;
      for (const auto& x : items) {
        const Value k = key(x);
        std::string h;
        switch (k.t) {
          case T::Str: h = "s" + k.s; break;
          case T::Bool: case T::Int: h = "i" + std::to_string(k.i); break;
          case T::Float:
            if (k.f == std::trunc(k.f) && std::fabs(k.f) < 9.2e18) h = "i" + std::to_string(int64_t(k.f));
            else h = "f" + py_float_repr(k.f);
            break;
          case T::None: h = "n"; break;
          case T::Undef: h = "u"; break;
          default: fail(cat("unhashable type: '", type_name(k), "'"));
        }
        if (seen.insert(std::move(h)).second) out.push_back(x);
      }
      return Value::make_list(std::move(out));
    }
    if (items.empty()) return Value::undef("No aggregated item, sequence was empty.");
    size_t best = 0;
    for (size_t k = 1; k < items.size(); ++k) {
      const int c = compare(key(items[k]), key(items[best]));
      if (n == "max" ? c > 0 : c < 0) best = k;
    }
    return items[best];
  }

  static std::optional<double> to_float(const Value& v) {
    if (v.is_num()) return v.num();
    if (v.t != T::Str) return std::nullopt;
    std::string s = strip(v.s, nullptr, true, true);
    for (size_t k = 0; k < s.size(); ++k)  // '_' only between digits
      if (s[k] == '_') {
        if (k == 0 || k + 1 == s.size() || !std::isdigit((unsigned char)s[k - 1]) || !std::isdigit((unsigned char)s[k + 1]))
          return std::nullopt;
        s.erase(k--, 1);
      }
    if (s.empty() || s.find_first_not_of("0123456789+-.eEinfatyINFATY") != std::string::npos) return std::nullopt;
    if (s.find_first_of("xXpP") != std::string::npos) return std::nullopt;
    char* end = nullptr;
    const double x = std::strtod(s.c_str(), &end);
    if (end != s.c_str() + s.size()) return std::nullopt;
    return x;
  }
  static Value to_int(const Value& v, const std::vector<std::optional<Value>>& a) {
    const Value dflt = a[0] ? *a[0] : Value::integer(0);
    const int64_t base = a[1] ? as_int(*a[1], "int base") : 10;
    if (v.t == T::Int || v.t == T::Bool) return Value::integer(v.i);
    if (v.t == T::Str) {
      std::string s = strip(v.s, nullptr, true, true);
      bool neg = false;
      if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
        neg = s[0] == '-';
        s.erase(0, 1);
      }
      int b = int(base);
      if (s.size() > 2 && s[0] == '0') {
        const char p = char(s[1] | 0x20);
        const int pb = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
        if (pb && (b == pb || b == 0)) {
          b = pb;
          s.erase(0, 2);
          if (!s.empty() && s[0] == '_') s.erase(0, 1);
        }
      }
      if (b == 0) b = 10;
      bool ok = !s.empty() && s[0] != '_' && s.back() != '_' && s.find("__") == std::string::npos;
      s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
      int64_t r = 0;
      if (ok && b >= 2 && b <= 36) {
        auto res = std::from_chars(s.data(), s.data() + s.size(), r, b);
        ok = res.ec == std::errc() && res.ptr == s.data() + s.size();
      } else {
        ok = false;
      }
      if (ok) return Value::integer(neg ? -r : r);
    }
    if (auto x = to_float(v); x && std::isfinite(*x) && std::fabs(*x) < 9.2e18) return Value::integer(int64_t(*x));
    return dflt;
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
