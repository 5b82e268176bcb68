#pragma once
// Internal: the AST shared by jinja_parse.cpp (builds it) and jinja_eval.cpp (walks it).
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/jinja.h"

namespace ft::jinja {

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
  enum class K : uint8_t {
    Const, Name, Attr, Item, Slice, Call, Filter, Test, Not, Neg, Pos,
    Bin, Cmp, And, Or, Cond, List, Tuple, Dict, Concat,
  };
  K k;
  int line = 0;
  Value val;                                          // Const
  std::string name;                                   // Name, Attr, Filter, Test, Bin (operator)
  std::vector<ExprP> a;                               // operands / args (may hold nulls: Slice, Cond)
  std::vector<std::pair<std::string, ExprP>> kw;      // keyword args of Call/Filter/Test
  std::vector<std::string> ops;                       // Cmp: operators between a[i] and a[i+1]
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class K : uint8_t { Text, Out, If, For, Set, SetBlock, Break, Continue, Generation };
  K k;
  int line = 0;
  std::string text;                   // Text
  ExprP expr;                         // Out value; For iterable; Set value
  ExprP cond;                         // For: `if` filter
  std::vector<std::string> targets;   // For/Set/SetBlock names; Set ns.attr: {ns, attr}
  bool ns_attr = false;               // Set target is ns.attr
  std::vector<std::pair<ExprP, Body>> branches;  // If/elif/else (else: null condition)
  Body body, else_body;               // For/SetBlock/Generation body; For else
};

Body parse_template(const std::string& source, const std::string& name);

// Whether the evaluator has this filter / test (jinja_filters.cpp): the parser refuses others.
bool is_filter(std::string_view name);
bool is_test(std::string_view name);

}  // namespace ft::jinja
