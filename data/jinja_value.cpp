// Jinja values with Python semantics: str()/repr() printing, json.dumps, equality; UTF-8 and
// Python string-literal helpers.
#include <charconv>
#include <cmath>
#include <cstdio>

#include "data/jinja.h"
#include "data/jinja_util.h"

namespace ft::jinja {

// ---------------------------------------------------------------- UTF-8 / Python strings

bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// Decodes one code point at s[i] (advancing i); throws on invalid UTF-8.
static char32_t next_cp(std::string_view s, size_t& i) {
  const auto b = [&](size_t k) { return (unsigned char)s[k]; };
  const unsigned char c = b(i);
  if (c < 0x80) {
    ++i;
    return c;
  }
  const int n = c >= 0xf8 ? -1 : c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : -1;
  FT_CHECK(n > 0 && i + n < s.size(), "invalid UTF-8 in template text or value at byte ", i);
  char32_t cp = c & (0x3f >> n);
  for (int k = 1; k <= n; ++k) {
    FT_CHECK((b(i + k) & 0xc0) == 0x80, "invalid UTF-8 in template text or value at byte ", i);
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  i += n + 1;
  return cp;
}

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out += next_cp(s, i);
  return out;
}

void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xc0 | (c >> 6));
    out += char(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += char(0xe0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3f));
    out += char(0x80 | (c & 0x3f));
  } else {
    out += char(0xf0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3f));
    out += char(0x80 | ((c >> 6) & 0x3f));
    out += char(0x80 | (c & 0x3f));
  }
}

std::string utf8_encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8_append(out, c);
  return out;
}

size_t py_lstrip_len(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!py_isspace(next_cp(s, j))) break;
    i = j;
  }
  return i;
}

size_t py_rstrip_len(std::string_view s) {
  size_t end = 0;
  for (size_t i = 0; i < s.size();)
    if (!py_isspace(next_cp(s, i))) end = i;
  return end;
}

std::string py_unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  auto hex = [&](size_t at, int n) {
    FT_CHECK(at + n <= s.size(), "truncated \\x/\\u/\\U escape in string literal");
    char32_t v = 0;
    for (int k = 0; k < n; ++k) {
      const char c = s[at + k];
      FT_CHECK(std::isxdigit((unsigned char)c), "invalid \\x/\\u/\\U escape in string literal");
      v = v * 16 + char32_t(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    FT_CHECK(v <= 0x10ffff && (v < 0xd800 || v > 0xdfff), "escape in string literal is not a valid code point");
    return v;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    switch (c) {
      case '\n': break;  // line continuation
      case '\\': case '\'': case '"': out += c; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x': utf8_append(out, hex(i + 1, 2)); i += 2; break;
      case 'u': utf8_append(out, hex(i + 1, 4)); i += 4; break;
      case 'U': utf8_append(out, hex(i + 1, 8)); i += 8; break;
      case 'N': throw Error("\\N{...} escapes in string literals are not supported");
      default:
        if (c >= '0' && c <= '7') {
          char32_t v = 0;
          int n = 0;
          for (; n < 3 && i < s.size() && s[i] >= '0' && s[i] <= '7'; ++n, ++i) v = v * 8 + char32_t(s[i] - '0');
          --i;
          utf8_append(out, v);
        } else {
          out += '\\';  // unknown escapes stay as written (Python keeps them)
          out += c;
        }
    }
  }
  return out;
}

std::string py_float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x < 0 ? "-inf" : "inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);  // shortest round-trip
  std::string s(buf, r.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const size_t e = s.find('e');
  const int exp = std::stoi(s.substr(e + 1));
  std::string digits = s.substr(0, e);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      const size_t ip = size_t(exp) + 1;
      out = digits.size() <= ip ? digits + std::string(ip - digits.size(), '0') + ".0"
                                : digits.substr(0, ip) + "." + digits.substr(ip);
    } else {
      out = "0." + std::string(size_t(-exp - 1), '0') + digits;
    }
  } else {
    out = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return sign + out;
}

// Python's str.isprintable(), exact for ASCII/Latin-1 and the usual separators/format
// characters; unassigned code points elsewhere count as printable.
static bool py_printable(char32_t c) {
  if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) return false;
  if (c < 0x370) return true;
  return !(c == 0x61c || c == 0x6dd || c == 0x70f || c == 0x180e || c == 0x1680 || (c >= 0x600 && c <= 0x605) ||
           (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x206f) ||
           c == 0x3000 || (c >= 0xd800 && c <= 0xf8ff) || (c >= 0xfdd0 && c <= 0xfdef) || c == 0xfeff ||
           (c >= 0xfff9 && c <= 0xfffb) || (c & 0xfffe) == 0xfffe || (c >= 0xe0000 && c <= 0xe007f) ||
           c >= 0xf0000);
}

std::string py_str_repr(std::string_view s) {
  const bool dq = s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t c = next_cp(s, i);
    if (c == '\\' || c == char32_t(q)) {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!py_printable(c)) {
      char b[16];
      std::snprintf(b, sizeof b, c < 0x100 ? "\\x%02x" : c < 0x10000 ? "\\u%04x" : "\\U%08x", unsigned(c));
      out += b;
    } else {
      out.append(s.substr(start, i - start));
    }
  }
  return out + q;
}

// ---------------------------------------------------------------- values

// ---------------------------------------------------------------- the render budget

namespace {
thread_local RenderBudget* tl_budget = nullptr;
thread_local int64_t tl_last_work = 0, tl_last_refused = 0;
}  // namespace

RenderBudget::RenderBudget() : saved_(tl_budget) { tl_budget = this; }
RenderBudget::~RenderBudget() {
  tl_last_work = kMaxWork - left;
  tl_last_refused = refused;
  tl_budget = saved_;
}
int64_t last_render_work() { return tl_last_work; }
int64_t last_render_refused() { return tl_last_refused; }

void spend(int64_t units) {
  if (!tl_budget) return;
  if (units > tl_budget->left) {  // refused: not done, so not counted as work (last_render_work)
    tl_budget->refused = units;
    throw Error(cat("the template did too much work (over ", kMaxWork,
                    " steps: an endless or huge loop, or strings / lists grown without bound); ft stops a "
                    "render there"));
  }
  tl_budget->left -= units;
}
void check_string_size(size_t bytes, const char* what) {
  if (bytes > kMaxStringBytes)
    throw Error(cat(what, " would be ", bytes, " bytes, over the ", kMaxStringBytes >> 20,
                    " MiB a chat template may build"));
}
void check_list_size(size_t items, const char* what) {
  if (items > kMaxListItems)
    throw Error(cat(what, " would have ", items, " items, over the ", kMaxListItems, " a chat template may build"));
}
void charge_bytes(size_t bytes) { spend(int64_t(bytes >> 8)); }
size_t string_bytes(const std::vector<Value>& items) {
  size_t bytes = 0;
  for (const Value& x : items) bytes += x.t == Value::T::Str ? x.s.size() : 0;
  return bytes;
}
void charge_items(const std::vector<Value>& items) {
  if (tl_budget) spend(int64_t(items.size())), charge_bytes(string_bytes(items));
}
void charge_big_string(size_t bytes) {
  if (!tl_budget) return;
  check_string_size(bytes, "a string");
  charge_bytes(bytes);
}

Value Value::make_list(std::vector<Value> items, int kind) {
  if (tl_budget) {
    check_list_size(items.size(), "a list");
    spend(int64_t(items.size() >> 4));
  }
  Value v;
  v.t = T::List;
  v.list = std::make_shared<List>();
  v.list->v = std::move(items);
  v.list->kind = List::Kind(kind);
  return v;
}

Value Value::make_dict(int kind) {
  Value v;
  v.t = T::Dict;
  v.dict = std::make_shared<Dict>();
  v.dict->kind = Dict::Kind(kind);
  return v;
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, val] : v)
    if (k == key) return &val;
  return nullptr;
}

void Dict::set(std::string key, Value val) {
  for (auto& [k, x] : v)
    if (k == key) {
      x = std::move(val);
      return;
    }
  v.emplace_back(std::move(key), std::move(val));
}

namespace {
// JSON inputs (messages, tools) nest at most this deep: printing, comparing and freeing values
// recurse on them.
constexpr int kMaxJsonDepth = 256;
Value from_json_at(const nlohmann::ordered_json& j, int depth) {
  using J = nlohmann::ordered_json::value_t;
  FT_CHECK(depth <= kMaxJsonDepth, "chat template input: JSON nests more than ", kMaxJsonDepth, " levels deep");
  switch (j.type()) {
    case J::null: return Value::none();
    case J::boolean: return Value::boolean(j.get<bool>());
    case J::number_integer: return Value::integer(j.get<int64_t>());
    case J::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      FT_CHECK(u <= uint64_t(INT64_MAX), "chat template input: integer ", u, " does not fit in int64");
      return Value::integer(int64_t(u));
    }
    case J::number_float: return Value::real(j.get<double>());
    case J::string: return Value::str(j.get<std::string>());
    case J::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(from_json_at(x, depth + 1));
      return Value::make_list(std::move(items));
    }
    case J::object: {
      Value d = Value::make_dict();
      d.dict->v.reserve(j.size());
      for (const auto& [k, x] : j.items()) d.dict->v.emplace_back(k, from_json_at(x, depth + 1));
      return d;
    }
    default: throw Error("chat template input: binary/discarded JSON values are not supported");
  }
}
}  // namespace

Value Value::from_json(const nlohmann::ordered_json& j) { return from_json_at(j, 0); }

const char* type_name(const Value& v) {
  switch (v.t) {
    case Value::T::Undef: return "Undefined";
    case Value::T::None: return "NoneType";
    case Value::T::Bool: return "bool";
    case Value::T::Int: return "int";
    case Value::T::Float: return "float";
    case Value::T::Str: return "str";
    case Value::T::List:
      switch (v.list->kind) {
        case List::Kind::Tuple: return "tuple";
        case List::Kind::Keys: return "dict_keys";
        case List::Kind::Values: return "dict_values";
        case List::Kind::Items: return "dict_items";
        case List::Kind::Range: return "range";
        default: return "list";
      }
    case Value::T::Dict:
      return v.dict->kind == Dict::Kind::Plain ? "dict" : v.dict->kind == Dict::Kind::Namespace ? "Namespace"
                                                                                                  : "LoopContext";
    case Value::T::Func: return "builtin_function_or_method";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.t) {
    case Value::T::Undef: case Value::T::None: return false;
    case Value::T::Bool: case Value::T::Int: return v.i != 0;
    case Value::T::Float: return v.f != 0;
    case Value::T::Str: return !v.s.empty();
    case Value::T::List: return !v.list->v.empty();
    case Value::T::Dict: return v.dict->kind != Dict::Kind::Plain || !v.dict->v.empty();
    case Value::T::Func: return true;
  }
  return false;
}

namespace {
// repr() appended to `out`: one growing string (a list nested 40 deep is not re-copied at every level),
// its size checked as it grows.
void repr_into(std::string& out, const Value& v) {
  switch (v.t) {
    case Value::T::List: {
      const auto& l = *v.list;
      FT_CHECK(l.kind != List::Kind::Range, "printing a range object is not supported (use range(...) | list)");
      const bool other = l.kind != List::Kind::Tuple && l.kind != List::Kind::Plain;
      out += l.kind == List::Kind::Tuple ? "(" : l.kind == List::Kind::Plain ? "[" : std::string(type_name(v)) + "([";
      for (size_t k = 0; k < l.v.size(); ++k) {
        if (k) out += ", ";
        repr_into(out, l.v[k]);
        check_string_size(out.size(), "the printed list");
      }
      out += l.kind == List::Kind::Tuple ? (l.v.size() == 1 ? ",)" : ")") : other ? "])" : "]";
      return;
    }
    case Value::T::Dict: {
      const bool ns = v.dict->kind == Dict::Kind::Namespace;
      FT_CHECK(ns || v.dict->kind == Dict::Kind::Plain, "printing a loop object is not supported");
      out += ns ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, x] : v.dict->v) {
        out += first ? "" : ", ";
        first = false;
        out += py_str_repr(k);
        out += ": ";
        repr_into(out, x);
        check_string_size(out.size(), "the printed dict");
      }
      out += ns ? "}>" : "}";
      return;
    }
    case Value::T::Undef: out += "Undefined"; return;
    case Value::T::Str: out += py_str_repr(v.s); return;
    case Value::T::Func: throw Error("printing a function or method ('" + v.s + "') is not supported; call it");
    default: out += to_str(v); return;
  }
}
}  // namespace

std::string repr(const Value& v) {
  std::string out;
  repr_into(out, v);
  return out;
}

std::string to_str(const Value& v) {
  switch (v.t) {
    case Value::T::Undef: return "";
    case Value::T::None: return "None";
    case Value::T::Bool: return v.i ? "True" : "False";
    case Value::T::Int: return std::to_string(v.i);
    case Value::T::Float: return py_float_repr(v.f);
    case Value::T::Str: return v.s;
    default: return repr(v);
  }
}

bool equal(const Value& a, const Value& b) {
  if (a.is_num() && b.is_num()) {
    if (a.t != Value::T::Float && b.t != Value::T::Float) return a.i == b.i;
    return a.num() == b.num();
  }
  if (a.t != b.t) return false;
  switch (a.t) {
    case Value::T::Undef: case Value::T::None: return true;
    case Value::T::Str: return a.s == b.s;
    case Value::T::List: {
      if (a.list == b.list) return true;  // as Python's identity shortcut
      const auto &x = *a.list, &y = *b.list;
      if (x.kind != y.kind || x.v.size() != y.v.size()) return false;
      spend(int64_t(x.v.size()));
      for (size_t k = 0; k < x.v.size(); ++k)
        if (!equal(x.v[k], y.v[k])) return false;
      return true;
    }
    case Value::T::Dict: {
      if (a.dict == b.dict) return true;
      if (a.dict->kind != Dict::Kind::Plain || b.dict->kind != Dict::Kind::Plain) return false;
      if (a.dict->v.size() != b.dict->v.size()) return false;
      for (const auto& [k, x] : a.dict->v) {
        const Value* y = b.dict->find(k);
        if (!y || !equal(x, *y)) return false;
      }
      return true;
    }
    case Value::T::Func: return a.s == b.s && a.self == b.self;
    default: return false;
  }
}

static void json_str(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t c = next_cp(s, i);
    char b[16];
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ensure_ascii && c >= 0x7f)) {
          if (c >= 0x10000) {
            const char32_t u = c - 0x10000;
            std::snprintf(b, sizeof b, "\\u%04x\\u%04x", unsigned(0xd800 + (u >> 10)), unsigned(0xdc00 + (u & 0x3ff)));
          } else {
            std::snprintf(b, sizeof b, "\\u%04x", unsigned(c));
          }
          out += b;
        } else {
          out.append(s, start, i - start);
        }
    }
  }
  out += '"';
}

namespace {
struct JsonWriter {
  bool ensure_ascii;
  std::optional<std::string> indent;
  std::string item_sep, key_sep;
  bool sort_keys;
  std::string out;

  void newline(int level) {
    check_string_size(out.size() + 1 + size_t(level) * indent->size(), "the JSON text");
    out += '\n';
    for (int k = 0; k < level; ++k) out += *indent;
  }
  void write(const Value& v, int level) {
    switch (v.t) {
      case Value::T::None: out += "null"; return;
      case Value::T::Bool: out += v.i ? "true" : "false"; return;
      case Value::T::Int: out += std::to_string(v.i); return;
      case Value::T::Float:
        out += std::isnan(v.f) ? "NaN" : std::isinf(v.f) ? (v.f < 0 ? "-Infinity" : "Infinity") : py_float_repr(v.f);
        return;
      case Value::T::Str: json_str(out, v.s, ensure_ascii); return;
      case Value::T::List: {
        FT_CHECK(v.list->kind == List::Kind::Plain || v.list->kind == List::Kind::Tuple,
                 "Object of type ", type_name(v), " is not JSON serializable");
        const auto& l = v.list->v;
        if (l.empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (size_t k = 0; k < l.size(); ++k) {
          if (k) out += item_sep;
          if (indent) newline(level + 1);
          write(l[k], level + 1);
          check_string_size(out.size(), "the JSON text");
        }
        if (indent) newline(level);
        out += ']';
        return;
      }
      case Value::T::Dict: {
        FT_CHECK(v.dict->kind == Dict::Kind::Plain, "Object of type ", type_name(v), " is not JSON serializable");
        std::vector<const std::pair<std::string, Value>*> items;
        for (const auto& kv : v.dict->v) items.push_back(&kv);
        if (sort_keys) std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
        if (items.empty()) {
          out += "{}";
          return;
        }
        out += '{';
        for (size_t k = 0; k < items.size(); ++k) {
          if (k) out += item_sep;
          if (indent) newline(level + 1);
          json_str(out, items[k]->first, ensure_ascii);
          out += key_sep;
          write(items[k]->second, level + 1);
          check_string_size(out.size(), "the JSON text");
        }
        if (indent) newline(level);
        out += '}';
        return;
      }
      default: throw Error(cat("Object of type ", type_name(v), " is not JSON serializable"));
    }
  }
};
}  // namespace

std::string to_json(const Value& v, bool ensure_ascii, std::optional<std::string> indent, std::string item_sep,
                    std::string key_sep, bool sort_keys) {
  JsonWriter w{ensure_ascii, std::move(indent), std::move(item_sep), std::move(key_sep), sort_keys, {}};
  w.write(v, 0);
  return std::move(w.out);
}

}  // namespace ft::jinja
