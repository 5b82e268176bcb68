#pragma once
// Internal: UTF-8 and Python string helpers and the render budget, used by the jinja engine.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ft::jinja {

struct Value;

bool py_isspace(char32_t c);                       // Python str.isspace() for one code point
std::u32string utf8_decode(std::string_view s);    // invalid UTF-8 -> ft::Error
std::string utf8_encode(std::u32string_view s);
void utf8_append(std::string& out, char32_t c);
size_t py_lstrip_len(std::string_view s);          // bytes of leading Unicode whitespace
size_t py_rstrip_len(std::string_view s);          // length after removing trailing whitespace
std::string py_unescape(std::string_view body);    // a string literal's body, as Python's unicode-escape
std::string py_float_repr(double x);               // Python repr(float)
std::string py_str_repr(std::string_view s);       // Python repr(str)

// Limits on one render. A chat template is code that ships with a model; a broken or hostile one
// (an endless nested loop, a string doubled forty times, `"x" * 10**9`) must end in an ft::Error
// naming the template line, not hang or exhaust memory. Real templates stay far below: rendering a
// 100-turn conversation costs ~10^4-10^5 units.
inline constexpr size_t kMaxStringBytes = size_t(16) << 20;  // any string value, and the output
inline constexpr size_t kMaxListItems = size_t(1) << 20;     // any list (Python's range() caps at 10^5)
inline constexpr int64_t kMaxWork = 1'000'000;  // units: statements + expressions + loop iterations x 4
                                                //   + list items walked + bytes copied / 256
// Charges `units` to the running render (no-op outside Template::render); ft::Error when spent.
void spend(int64_t units);
// ft::Error when a string of `bytes` (or a list of `items`) would pass the limits above.
void check_string_size(size_t bytes, const char* what);
void check_list_size(size_t items, const char* what);
// Copying costs: `bytes` of string, or a list's items (one unit each) and their strings.
void charge_bytes(size_t bytes);
size_t string_bytes(const std::vector<Value>& items);  // the items' own string bytes
void charge_items(const std::vector<Value>& items);
// Budget units the last finished render on this thread spent (<= kMaxWork: a charge that would pass
// the budget is refused before its work is done), and the charge it refused (0 if none). Tests bound
// a render's work with these, not with a clock.
int64_t last_render_work();
int64_t last_render_refused();
// Sets the budget of the render on this thread for its lifetime (renders do not nest).
class RenderBudget {
 public:
  RenderBudget();
  ~RenderBudget();
  RenderBudget(const RenderBudget&) = delete;
  RenderBudget& operator=(const RenderBudget&) = delete;
  int64_t left = kMaxWork;
  int64_t refused = 0;

 private:
  RenderBudget* saved_;
};

}  // namespace ft::jinja
