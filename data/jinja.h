#pragma once
// A Jinja2 subset that renders chat templates exactly as jinja2 3.x does in HF transformers'
// environment (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, the
// {% generation %} tag). Templates are parsed once into an AST (jinja::Template) and rendered
// many times. Values follow Python semantics (str()/repr() printing, int/float arithmetic,
// truthiness, dict insertion order). Anything outside the subset is an ft::Error naming the
// template, line and construct, at parse time where possible.
#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/error.h"

namespace ft::jinja {

struct Value;
struct List;
struct Dict;

// Charges a new string of `bytes` to the running render (see jinja_util.h; no-op outside a render).
void charge_big_string(size_t bytes);

// A template value. Lists/dicts are shared (templates cannot mutate them; namespaces can be
// mutated through `set ns.attr`, which every holder then sees, as in Python).
struct Value {
  enum class T : uint8_t { Undef, None, Bool, Int, Float, Str, List, Dict, Func };
  T t = T::Undef;
  int64_t i = 0;                      // Bool (0/1) and Int
  double f = 0;                       // Float
  std::string s;                      // Str; Func: name; Undef: why (for error messages)
  std::shared_ptr<List> list;         // List
  std::shared_ptr<Dict> dict;         // Dict
  std::shared_ptr<const Value> self;  // Func: bound receiver (null for global functions)

  static Value undef(std::string why = {}) { Value v; v.s = std::move(why); return v; }
  static Value none() { Value v; v.t = T::None; return v; }
  static Value boolean(bool b) { Value v; v.t = T::Bool; v.i = b; return v; }
  static Value integer(int64_t x) { Value v; v.t = T::Int; v.i = x; return v; }
  static Value real(double x) { Value v; v.t = T::Float; v.f = x; return v; }
  static Value str(std::string x) {
    if (x.size() >= 4096) charge_big_string(x.size());
    Value v; v.t = T::Str; v.s = std::move(x); return v;
  }
  static Value make_list(std::vector<Value> items = {}, int kind = 0);  // kind: List::Kind
  static Value make_dict(int kind = 0);                                  // kind: Dict::Kind
  static Value func(std::string name, std::shared_ptr<const Value> self = nullptr) {
    Value v; v.t = T::Func; v.s = std::move(name); v.self = std::move(self); return v;
  }
  static Value from_json(const nlohmann::ordered_json& j);

  bool is_undef() const { return t == T::Undef; }
  bool is_num() const { return t == T::Bool || t == T::Int || t == T::Float; }
  double num() const { return t == T::Float ? f : double(i); }
};

struct List {
  // Python's list, tuple, dict views and range differ only in how they print / compare.
  enum Kind : uint8_t { Plain, Tuple, Keys, Values, Items, Range };
  std::vector<Value> v;
  Kind kind = Plain;
};

struct Dict {
  enum Kind : uint8_t { Plain, Namespace, Loop };
  std::vector<std::pair<std::string, Value>> v;  // insertion order, as Python dicts
  Kind kind = Kind::Plain;
  const Value* find(std::string_view key) const;
  void set(std::string key, Value val);
};

// Python semantics shared by the evaluator and the chat-template layer.
bool truthy(const Value& v);
std::string to_str(const Value& v);   // Python str(): what {{ v }} prints
std::string repr(const Value& v);     // Python repr()
bool equal(const Value& a, const Value& b);
const char* type_name(const Value& v);  // Python type name for messages
// Python json.dumps(v, ensure_ascii, indent, separators, sort_keys); indent: nullopt = none.
std::string to_json(const Value& v, bool ensure_ascii, std::optional<std::string> indent,
                    std::string item_sep, std::string key_sep, bool sort_keys);

struct Node;

// A parsed template. Cheap to copy (shares the AST); render() is const and thread-safe.
class Template {
 public:
  Template(const std::string& source, std::string name = "template");
  struct Output {
    std::string text;
    std::vector<std::pair<size_t, size_t>> generation;  // byte spans of {% generation %} blocks
  };
  // vars: the template's variables (a JSON object). now: the time strftime_now() formats
  // (local time when unset).
  Output render(const std::vector<std::pair<std::string, Value>>& vars,
                const std::optional<std::tm>& now = std::nullopt) const;
  const std::string& name() const { return name_; }
  bool has_generation() const { return has_generation_; }

 private:
  std::string name_;
  std::shared_ptr<const std::vector<std::unique_ptr<Node>>> body_;
  bool has_generation_ = false;
};

// The message raise_exception(msg) produced, e.g. "System role not supported".
struct RaisedError : Error {
  RaisedError(const std::string& what, std::string msg) : Error(what), message(std::move(msg)) {}
  std::string message;
};

}  // namespace ft::jinja
