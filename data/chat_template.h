#pragma once
// Chat templates rendered exactly as HF transformers' tokenizer.apply_chat_template(messages,
// tools=..., tokenize=False, add_generation_prompt=..., **kwargs) renders them.
//
// The template sees: messages, tools (None when absent), documents (None),
// add_generation_prompt, the tokenizer's special tokens (bos_token, eos_token, ...; unset
// ones are undefined), then `extra` (e.g. enable_thinking), plus the globals
// raise_exception(msg) and strftime_now(fmt). raise_exception surfaces as jinja::RaisedError
// (an ft::Error) whose .message is the template's text.
//
// JSON inputs are nlohmann::ordered_json because key order is visible in the output (tojson of
// tools, printing dicts); a plain nlohmann::json converts implicitly but with sorted keys.
#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/jinja.h"

namespace ft {

// Bytes [begin, end) of the rendered text that belong to messages[message] (an assistant turn).
struct AssistantSpan {
  size_t begin = 0, end = 0;
  size_t message = 0;  // index into messages; SIZE_MAX when unknown (see render_masked)
};

struct MaskedChat {
  std::string text;
  std::vector<AssistantSpan> spans;
};

class ChatTemplate {
 public:
  using json = nlohmann::ordered_json;

  // source: the Jinja template; special_tokens: {"bos_token": "<s>", ...} as HF's
  // special_tokens_map (null values are dropped).
  explicit ChatTemplate(const std::string& source, std::string name = "chat_template",
                        const json& special_tokens = json::object());
  // Reads chat_template and the special tokens (bos/eos/unk/sep/pad/cls/mask_token, as
  // transformers 5's special_tokens_map) from a HF tokenizer_config.json; falls back to a
  // chat_template.jinja beside it. A list of named templates picks "default".
  static ChatTemplate from_tokenizer_config(const std::string& path);

  std::string render(const json& messages, const json& tools = nullptr, bool add_generation_prompt = false,
                     const json& extra = json::object()) const;
  // The same, plus the byte spans of {% generation %} blocks (HF's AssistantTracker).
  jinja::Template::Output render_output(const json& messages, const json& tools, bool add_generation_prompt,
                                        const json& extra) const;

  // The conversation rendered for training (add_generation_prompt=false) plus the spans of the
  // assistant turns, i.e. what the model must learn to produce:
  //  - templates with {% generation %} blocks: exactly those blocks (HF's
  //    return_assistant_tokens_mask); message indices are assigned in order when the number of
  //    blocks equals the number of assistant messages, else SIZE_MAX.
  //  - otherwise by prefix rendering: for each assistant message k, P = render(messages[:k],
  //    add_generation_prompt=true), Q = render(messages[:k+1]); the span is [len(P), len(Q)):
  //    the content plus the end-of-turn text the template appends after it. Requires P to be a
  //    prefix of Q and Q a prefix of the full rendering; templates that re-render earlier turns
  //    once later ones exist (Qwen3 drops earlier <think> blocks) fail with an ft::Error, use
  //    render_per_turn for them.
  MaskedChat render_masked(const json& messages, const json& tools = nullptr, const json& extra = json::object()) const;
  // One training sequence per assistant message k: render(messages[:k+1]) with the one span
  // [len(render(messages[:k], add_generation_prompt=true)), end). Works for every template.
  std::vector<MaskedChat> render_per_turn(const json& messages, const json& tools = nullptr,
                                          const json& extra = json::object()) const;

  // strftime_now() uses this time instead of the local clock (reproducible renders).
  void set_time(const std::tm& t) { now_ = t; }
  const json& special_tokens() const { return special_; }
  const std::string& name() const { return tmpl_.name(); }
  bool has_generation_blocks() const { return tmpl_.has_generation(); }

 private:
  jinja::Template tmpl_;
  json special_;
  std::optional<std::tm> now_;
};

// One-shot convenience (parses the template on every call; use ChatTemplate for many rows).
std::string render_chat_template(const std::string& tmpl, const nlohmann::ordered_json& messages,
                                 const nlohmann::ordered_json& tools, bool add_generation_prompt,
                                 const nlohmann::ordered_json& extra);

}  // namespace ft
