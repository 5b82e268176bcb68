// Chat templates: any template source either fails to parse / render with an ft::Error or renders a
// fixed conversation (with and without tools and generation prompt, masked and per turn).
#include <string>

#include "autograd/error.h"
#include "data/chat_template.h"
#include "tests/fuzz/fuzz_targets.h"

namespace ft::fuzz {

int chat_template(const uint8_t* data, size_t size) {
  using json = ChatTemplate::json;
  static const json messages = json::parse(R"([
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi <b>there</b> {{ x }} caf\u00e9"},
    {"role": "assistant", "content": "Hello!", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
    {"role": "tool", "content": "42"},
    {"role": "user", "content": "Again?"},
    {"role": "assistant", "content": "<think>no</think>Yes."}
  ])");
  static const json tools = json::parse(
      R"([{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}])");
  static const json specials = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"pad_token", nullptr}};
  static const json extra = {{"enable_thinking", false}};
  std::tm now{};
  now.tm_year = 124, now.tm_mon = 6, now.tm_mday = 26, now.tm_hour = 12;
  const std::string src(reinterpret_cast<const char*>(data), size);
  try {
    ChatTemplate t(src, "fuzz.jinja", specials);
    t.set_time(now);
    try {
      (void)t.render(messages, nullptr, true);
    } catch (const Error&) {
    }
    try {
      (void)t.render_output(messages, tools, false, extra);
    } catch (const Error&) {
    }
    try {
      MaskedChat m = t.render_masked(messages);
      for (const AssistantSpan& s : m.spans)
        FT_FUZZ_ASSERT(s.begin <= s.end && s.end <= m.text.size(), "assistant span outside the rendered text");
    } catch (const Error&) {
    }
    try {
      for (const MaskedChat& m : t.render_per_turn(messages))
        for (const AssistantSpan& s : m.spans)
          FT_FUZZ_ASSERT(s.begin <= s.end && s.end <= m.text.size(), "assistant span outside the rendered text");
    } catch (const Error&) {
    }
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace ft::fuzz
