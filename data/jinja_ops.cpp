// Jinja value operations with Python semantics: iteration, len(), comparison, `in`, arithmetic
// (int overflow is an error, floor division and modulo as Python's), attribute and item access,
// slicing, argument binding and the dict methods.
#include <algorithm>
#include <cmath>
#include <set>

#include "data/jinja_ops.h"
#include "data/jinja_util.h"

namespace ft::jinja {

[[noreturn]] void fail(std::string msg) { throw Fail{std::move(msg)}; }

std::string undef_msg(const Value& v) { return v.s.empty() ? "value is undefined" : v.s; }

void need_defined(const Value& v) {
  if (v.is_undef()) fail(undef_msg(v));
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

static Value num_result(double x) { return Value::real(x); }

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

static bool is_str_method(std::string_view n) {
  static const std::set<std::string, std::less<>> m = {
      "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
      "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
      "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans",
      "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit",
      "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill"};
  return m.count(n);
}
static bool is_dict_method(std::string_view n) {
  static const std::set<std::string, std::less<>> m = {"clear", "copy", "fromkeys", "get", "items", "keys",
                                                       "pop", "popitem", "setdefault", "update", "values"};
  return m.count(n);
}
static bool is_list_method(std::string_view n) {
  static const std::set<std::string, std::less<>> m = {"append", "clear", "copy", "count", "extend", "index",
                                                       "insert", "pop", "remove", "reverse", "sort"};
  return m.count(n);
}

static Value bound(const char* prefix, const std::string& name, const Value& self) {
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
                                       const Args& pos, const KwArgs& kw) {
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

Value dict_method(const std::string& m, const Value& self, const Args& args, const KwArgs& kw) {
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

}  // namespace ft::jinja
