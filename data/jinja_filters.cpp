// Jinja's filters and tests: one table each (name -> function), looked up once per use. Each
// function binds its arguments as jinja2's does (Python call rules) and follows jinja2 3.x's
// behaviour, errors included.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "data/jinja_ast.h"
#include "data/jinja_ops.h"
#include "data/jinja_util.h"

namespace ft::jinja {
namespace {

using Bound = std::vector<std::optional<Value>>;
bool flag(const std::optional<Value>& x) { return x && truthy(*x); }

// ---------------------------------------------------------------- tests

using TestFn = bool (*)(const std::string& n, const Value& v, const Args& args);

// A test's one argument (`x is divisibleby 3`), checked only by the tests that take one.
const Value& one_arg(const std::string& n, const Args& args) {
  if (args.size() != 1) fail("test '" + n + "' takes one argument");
  return args[0];
}
bool is_iterable(const Value& v) {
  return v.t == T::Undef || v.t == T::Str || v.t == T::List || (v.t == T::Dict && v.dict->kind == Dict::Plain);
}
bool test_case(const std::string& n, const Value& v, const Args&) {  // lower, upper
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
bool test_sameas(const std::string& n, const Value& v, const Args& args) {
  const Value& o = one_arg(n, args);
  if (v.t != o.t) return false;
  if (v.t == T::None || v.t == T::Undef) return true;
  if (v.t == T::Bool) return v.i == o.i;
  if (v.t == T::Int) return v.i == o.i && v.i >= -5 && v.i <= 256;  // CPython's small-int cache
  if (v.t == T::List) return v.list == o.list;
  if (v.t == T::Dict) return v.dict == o.dict;
  return false;
}

const std::unordered_map<std::string_view, TestFn>& test_table() {
  static const std::unordered_map<std::string_view, TestFn> table = [] {
    std::unordered_map<std::string_view, TestFn> t;
    auto add = [&](std::initializer_list<std::string_view> names, TestFn f) {
      for (std::string_view name : names) t.emplace(name, f);
    };
    using S = const std::string&;
    using V = const Value&;
    using A = const Args&;
    add({"defined"}, [](S, V v, A) { return !v.is_undef(); });
    add({"undefined"}, [](S, V v, A) { return v.is_undef(); });
    add({"none"}, [](S, V v, A) { return v.t == T::None; });
    add({"boolean"}, [](S, V v, A) { return v.t == T::Bool; });
    add({"false"}, [](S, V v, A) { return v.t == T::Bool && !v.i; });
    add({"true"}, [](S, V v, A) { return v.t == T::Bool && v.i; });
    add({"integer"}, [](S, V v, A) { return v.t == T::Int; });
    add({"float"}, [](S, V v, A) { return v.t == T::Float; });
    add({"number"}, [](S, V v, A) { return v.is_num(); });
    add({"string"}, [](S, V v, A) { return v.t == T::Str; });
    add({"mapping"}, [](S, V v, A) { return v.t == T::Dict && v.dict->kind == Dict::Plain; });
    add({"iterable", "sequence"}, [](S, V v, A) { return is_iterable(v); });
    add({"callable"}, [](S, V v, A) { return v.t == T::Func; });
    add({"escaped"}, [](S, V, A) { return false; });
    add({"lower", "upper"}, test_case);
    add({"even", "odd"}, [](S n, V v, A) { return truthy(arith("%", v, Value::integer(2))) == (n == "odd"); });
    add({"divisibleby"}, [](S n, V v, A a) { return !truthy(arith("%", v, one_arg(n, a))); });
    add({"eq", "equalto", "=="}, [](S n, V v, A a) { return equal(v, one_arg(n, a)); });
    add({"ne", "!="}, [](S n, V v, A a) { return !equal(v, one_arg(n, a)); });
    add({"lt", "lessthan", "<"}, [](S n, V v, A a) { return compare(v, one_arg(n, a)) < 0; });
    add({"le", "<="}, [](S n, V v, A a) { return compare(v, one_arg(n, a)) <= 0; });
    add({"gt", "greaterthan", ">"}, [](S n, V v, A a) { return compare(v, one_arg(n, a)) > 0; });
    add({"ge", ">="}, [](S n, V v, A a) { return compare(v, one_arg(n, a)) >= 0; });
    add({"in"}, [](S n, V v, A a) { return contains(one_arg(n, a), v); });
    add({"sameas"}, test_sameas);
    return t;
  }();
  return table;
}

// ---------------------------------------------------------------- filters

using FilterFn = Value (*)(const std::string& n, const Value& v, const Args& args, const KwArgs& kw);
struct FilterDef {
  FilterFn fn;
  bool in_map;  // may be named by map('name')
};

Value sorting(const std::string& n, const Value& v, const Args& args, const KwArgs& kw);
std::optional<double> to_float(const Value& v);
Value to_int(const Value& v, const Bound& a);

Value f_trim(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  auto a = bind(n, {"chars"}, args, kw);
  return Value::str(strip(to_str(v), a[0] ? &*a[0] : nullptr, true, true));
}
Value f_tojson(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  auto a = bind(n, {"ensure_ascii", "indent", "separators", "sort_keys"}, args, kw);
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
Value f_length(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {  // length, count
  bind(n, {}, args, kw);
  return Value::integer(length(v));
}
Value f_string(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {  // string, safe
  bind(n, {}, args, kw);
  return v.t == T::Str ? v : Value::str(to_str(v));
}
Value f_case(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {  // upper, lower
  bind(n, {}, args, kw);
  return Value::str(str_case(to_str(v), n == "upper"));
}
Value f_capitalize(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  bind(n, {}, args, kw);
  return Value::str(py_capitalize(to_str(v)));
}
Value f_title(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  bind(n, {}, args, kw);
  return Value::str(jinja_title(to_str(v)));
}
Value f_default(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {  // default, d
  auto a = bind(n, {"default_value", "boolean"}, args, kw);
  if (v.is_undef() || (flag(a[1]) && !truthy(v))) return a[0] ? *a[0] : Value::str("");
  return v;
}
Value f_first_last(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  bind(n, {}, args, kw);
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undef(cat("No ", n, " item, sequence was empty."));
  return n == "first" ? items.front() : items.back();
}
Value f_join(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  auto a = bind(n, {"d", "attribute"}, args, kw);
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
Value f_replace(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  auto a = bind(n, {"old", "new", "count"}, args, kw);
  if (!a[0] || !a[1]) fail("replace filter takes at least 2 arguments");
  return Value::str(replace_all(to_str(v), to_str(*a[0]), to_str(*a[1]),
                                a[2] && a[2]->t != T::None ? as_int(*a[2], "count") : -1));
}
Value f_list(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  bind(n, {}, args, kw);
  return Value::make_list(iterate(v));
}
Value f_items(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  bind(n, {}, args, kw);
  if (v.is_undef()) return Value::make_list();
  if (v.t != T::Dict || v.dict->kind != Dict::Plain) fail("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, x] : v.dict->v) out.push_back(Value::make_list({Value::str(k), x}, List::Tuple));
  return Value::make_list(std::move(out));
}
Value f_int(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  return to_int(v, bind(n, {"default", "base"}, args, kw));
}
Value f_float(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  auto a = bind(n, {"default"}, args, kw);
  if (auto x = to_float(v)) return Value::real(*x);
  return a[0] ? *a[0] : Value::real(0.0);
}
Value f_abs(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  bind(n, {}, args, kw);
  need_defined(v);
  if (!v.is_num()) fail(cat("bad operand type for abs(): '", type_name(v), "'"));
  if (v.t == T::Float) return Value::real(std::fabs(v.f));
  if (v.i == INT64_MIN) fail("integer overflow in abs()");
  return Value::integer(v.i < 0 ? -v.i : v.i);
}
Value f_round(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  auto a = bind(n, {"precision", "method"}, args, kw);
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
Value f_reverse(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  bind(n, {}, args, kw);
  if (v.t == T::Str) {
    std::u32string u = utf8_decode(v.s);
    std::reverse(u.begin(), u.end());
    return Value::str(utf8_encode(u));
  }
  std::vector<Value> items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::make_list(std::move(items));
}
Value f_indent(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  auto a = bind(n, {"width", "first", "blank"}, args, kw);
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
Value f_map(const std::string& n, const Value& v, const Args& args, const KwArgs& kw);
Value f_select(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  // select, reject, selectattr, rejectattr
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
    const bool ok = tname.empty() ? truthy(subject) : apply_test(tname, subject, targs);
    if (ok == want) out.push_back(x);
  }
  return Value::make_list(std::move(out));
}
Value f_sum(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
  auto a = bind(n, {"attribute", "start"}, args, kw);
  Value acc = a[1] ? *a[1] : Value::integer(0);
  for (const auto& x : iterate(v)) acc = arith("+", acc, a[0] ? get_path(x, *a[0]) : x);
  return acc;
}

const std::unordered_map<std::string_view, FilterDef>& filter_table() {
  static const std::unordered_map<std::string_view, FilterDef> table = [] {
    std::unordered_map<std::string_view, FilterDef> t;
    // in_map: the filters map('name') accepts.
    auto add = [&](std::initializer_list<std::string_view> names, FilterFn f, bool in_map) {
      for (std::string_view name : names) t.emplace(name, FilterDef{f, in_map});
    };
    add({"trim"}, f_trim, true);
    add({"tojson"}, f_tojson, true);
    add({"length", "count"}, f_length, true);
    add({"string", "safe"}, f_string, true);
    add({"upper", "lower"}, f_case, true);
    add({"capitalize"}, f_capitalize, true);
    add({"title"}, f_title, true);
    add({"default", "d"}, f_default, true);
    add({"first", "last"}, f_first_last, true);
    add({"join"}, f_join, true);
    add({"replace"}, f_replace, true);
    add({"list"}, f_list, true);
    add({"items"}, f_items, true);
    add({"int"}, f_int, true);
    add({"float"}, f_float, true);
    add({"abs"}, f_abs, true);
    add({"round"}, f_round, true);
    add({"reverse"}, f_reverse, true);
    add({"indent"}, f_indent, false);
    add({"map"}, f_map, false);
    add({"select", "reject", "selectattr", "rejectattr"}, f_select, false);
    add({"sort", "unique", "min", "max", "dictsort"}, sorting, false);
    add({"sum"}, f_sum, false);
    return t;
  }();
  return table;
}

Value f_map(const std::string&, const Value& v, const Args& args, const KwArgs& kw) {
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
    const auto it = filter_table().find(f);
    if (it == filter_table().end() || !it->second.in_map) fail("map(): unsupported filter '" + f + "'");
    const std::vector<Value> rest(args.begin() + 1, args.end());
    for (const auto& x : items) out.push_back(it->second.fn(f, x, rest, kw));
  }
  return Value::make_list(std::move(out));
}

// sort, dictsort, unique, min, max.
Value sorting(const std::string& n, const Value& v, const Args& args, const KwArgs& kw) {
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

std::optional<double> to_float(const Value& v) {
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
Value to_int(const Value& v, const std::vector<std::optional<Value>>& a) {
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

}  // namespace

Value apply_filter(const std::string& name, const Value& v, const Args& args, const KwArgs& kw) {
  const auto it = filter_table().find(name);
  if (it == filter_table().end()) fail("unsupported filter '" + name + "'");
  return it->second.fn(name, v, args, kw);
}

bool is_filter(std::string_view name) { return filter_table().count(name) != 0; }
bool is_test(std::string_view name) { return test_table().count(name) != 0; }

bool apply_test(const std::string& name, const Value& v, const Args& args) {
  const auto it = test_table().find(name);
  if (it == test_table().end()) fail("unknown test '" + name + "'");
  return it->second(name, v, args);
}

}  // namespace ft::jinja
