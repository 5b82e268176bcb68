#pragma once
// Internal: what the Jinja evaluator (jinja_eval.cpp) and its filters and tests (jinja_filters.cpp)
// share: evaluation failures, Python value operations (jinja_ops.cpp) and string functions
// (jinja_strings.cpp). Every operation charges its work to the render budget (jinja_util.h).
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/jinja.h"

namespace ft::jinja {

// A failure inside evaluation; the evaluator adds the template name and line.
struct Fail {
  std::string msg;
  bool raised = false;  // from raise_exception()
};
[[noreturn]] void fail(std::string msg);

using T = Value::T;
using KwArgs = std::vector<std::pair<std::string, Value>>;
using Args = std::vector<Value>;

std::string undef_msg(const Value& v);
void need_defined(const Value& v);  // fails with the reason v is undefined

// ---- values (jinja_ops.cpp)
int64_t as_int(const Value& v, const char* what);
const std::string& as_str(const Value& v, const char* what);
std::string spaces(int64_t n);
std::vector<Value> iterate(const Value& v);
int64_t length(const Value& v);
int compare(const Value& a, const Value& b);  // Python's <, as -1/0/1; mismatched types fail
bool contains(const Value& hay, const Value& needle);
Value arith(const std::string& op, const Value& a, const Value& b);
Value getattr(const Value& obj, const std::string& name);
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
Value getitem(const Value& obj, const Value& key);
Value get_path(const Value& v, const Value& attr);  // Jinja's attribute getter: "a.b.0"
// Binds positional + keyword args to named parameters (Python call rules).
std::vector<std::optional<Value>> bind(const std::string& fn, std::initializer_list<const char*> params,
                                       const Args& pos, const KwArgs& kw);
Value dict_method(const std::string& m, const Value& self, const Args& args, const KwArgs& kw);

// ---- strings (jinja_strings.cpp)
bool cased_non_ascii(char32_t c);
std::string str_case(const std::string& s, bool upper);
std::string py_capitalize(const std::string& s);
std::string jinja_title(const std::string& s);  // the title filter
void charge_search(size_t text, size_t pattern);
std::string strip(const std::string& s, const Value* chars, bool left, bool right);
std::vector<std::string> split_sep(const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right);
std::vector<std::string> splitlines(const std::string& s, bool keepends);
std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count);
int64_t cp_len(const std::string& s);
Value str_method(const std::string& m, const std::string& s, const Args& args, const KwArgs& kw);

// ---- filters and tests (jinja_filters.cpp): one table each, looked up by name
Value apply_filter(const std::string& name, const Value& v, const Args& args, const KwArgs& kw);
bool apply_test(const std::string& name, const Value& v, const Args& args);

}  // namespace ft::jinja
