// Jinja's string functions: Python str semantics (case mapping, strip, split, splitlines, replace,
// str.format) and the str methods templates call ("a,b".split(","), s.startswith(...)). Every search
// is charged to the render budget before it runs (charge_search).
#include <algorithm>
#include <cctype>

#include "data/jinja_ops.h"
#include "data/jinja_util.h"

namespace ft::jinja {

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
static bool is_cased(char32_t c) { return (c < 0x80 && std::isalpha(int(c))) || cased_non_ascii(c); }
static char32_t cp_case(char32_t c, bool upper) {
  if (c < 0x80) return char32_t(upper ? std::toupper(int(c)) : std::tolower(int(c)));
  if (cased_non_ascii(c)) fail("upper/lower/title/capitalize of non-ASCII letters is not supported");
  return c;
}
std::string str_case(const std::string& s, bool upper) {
  std::u32string u = utf8_decode(s);
  for (auto& c : u) c = cp_case(c, upper);
  return utf8_encode(u);
}
static std::string py_title(const std::string& s) {  // str.title()
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
static std::vector<std::string> split_ws(const std::string& s, int64_t maxsplit, bool from_right) {
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

// ---------------------------------------------------------------- str methods

// Python str.format: {}, {0}, {name}, with !r / !s conversions; no format specs.
static std::string str_format(const std::string& f, const Args& args, const KwArgs& kw) {
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

Value str_method(const std::string& m, const std::string& s, const Args& args, const KwArgs& kw) {
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
  if (m == "format") return Value::str(str_format(s, args, kw));
  fail("str." + m + "() is not supported");
}

}  // namespace ft::jinja
