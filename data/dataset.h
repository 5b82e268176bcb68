#pragma once
// Training / evaluation datasets in the formats mlx-lm, TRL and LLaMA-Factory users already have,
// tokenised once, up front, into (ids, mask) examples. Every row is validated and tokenised before
// training starts; bad input is an ft::Error naming the file, the line (JSONL) or the row index
// (JSON arrays) and what to fix.
//
// Files
//   *.jsonl: one JSON object per line; blank lines are skipped; CRLF and a UTF-8 BOM are fine.
//   *.json : a JSON array of objects (Alpaca / ShareGPT files); a .json file whose first
//            character is not '[' is read as JSONL.
//   A data directory holds train.jsonl (or train.json) and optionally valid / test the same way.
//
// Row formats, detected from the keys of the first row (every row of a file must use the same
// format; other keys are ignored):
//   messages                  {"messages": [{"role", "content"}, ...], "tools"?: [...]}  (Chat)
//                             roles system, developer, user, assistant, tool; "content" a string,
//                             a list of text parts ({"type": "text", "text"|"value": ...}, joined),
//                             or null / absent on an assistant message with "tool_calls";
//                             "loss_weight": 0 on an assistant message excludes it from the loss.
//   conversations             ShareGPT [{"from", "value"}] (+ "system", "tools"), turned into
//                             messages: human->user, gpt->assistant, system->system,
//                             function_call->assistant with tool_calls, observation->tool.
//   prompt + completion       (PromptCompletion)
//   instruction + output      Alpaca (+ optional "input").
//   text                      (Text)
//
// Tokenisation (`ids`), with enc = the tokenizer:
//   Text:  enc.encode(text, add_special_tokens=true) (BOS as the tokenizer's post-processor
//          decides), then EOS appended unless already last (mlx-lm's convention).
//   PromptCompletion: with use_chat_template (default: on when a chat template is given, as
//          mlx-lm) rendered as [{"role":"user","content":prompt},{"role":"assistant",
//          "content":completion}] like a Chat row; otherwise encode(prompt + completion, true)
//          + EOS (no separator is inserted: put one in the data if you want one).
//   Chat:  the chat template renders the whole conversation (tools passed through,
//          add_generation_prompt=false) and the text is encoded with add_special_tokens=false (the
//          template writes BOS itself, as HF apply_chat_template(tokenize=True)); no EOS appended.
//   Alpaca: by default a PromptCompletion row whose prompt is the standard Alpaca prompt (the
//          Stanford Alpaca text, with or without the "### Input:" section) and whose completion is
//          "output", never through the chat template. With alpaca_chat = true it is a Chat row
//          [{"role":"user","content": instruction + "\n" + input (if any)},
//           {"role":"assistant","content": output}] (LLaMA-Factory's convention).
//
// Loss mask (`mask`, same length as ids): mask[t] = 1 when token ids[t] is a training target, i.e.
// the logits at position t-1 are trained to predict ids[t] (HF causal-LM shift). mask[0] is
// always 0. BatchIterator turns this into targets[t] = ids[t+1] or -100. Without mask_prompt every
// token after the first is a target (mlx-lm, TRL defaults). With mask_prompt:
//   PromptCompletion / Alpaca (plain): the completion's tokens and everything the tokenizer puts
//          after it (post-processor suffix, the appended EOS).
//   Chat (and templated PromptCompletion / Alpaca): each assistant message as the template renders
//          it (ChatTemplateRenderer: the {% generation %} block, else what the turn adds to the
//          rendering: content, tool calls, and any formatting the template writes before them),
//          plus the end-of-turn token that follows the content (<|im_end|>, <|eot_id|>,
//          <end_of_turn>, </s>: the first special token after it, when only whitespace stands
//          between), as TRL's assistant-only loss does, so the model learns to stop. Whitespace
//          the template writes after that token ("\n" after <|im_end|>) is not a target.
//   Padding is never a target.
// Exact boundaries: the text is encoded once; a span boundary at byte b is placed after the
// tokens that encode(text[0, b)) shares with the full encoding (longest common prefix). When a
// merge crosses the boundary (the tokens differ there), the token that crosses it counts as inside
// the supervised span (the model must emit it to produce the span's first / last characters).
// Dataset::n_boundary_merges counts those cases (0 on the ChatML / Llama 3 templates and on the
// real datasets under tests/data, where span edges are special tokens or newlines). Speed: the
// end of every special token in the encoding is a known boundary (added tokens are split off
// before the model runs), so only the text after the nearest one is re-encoded; masking costs
// next to nothing on chat rows.
//
// Truncation: rows longer than max_seq_length keep their first max_seq_length tokens. One warning
// per dataset gives the count; rows left with no target at all (e.g. a prompt longer than the
// limit with mask_prompt) are dropped and counted too. An empty result is an error.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ft {

class Tokenizer;
class ChatTemplate;

// What the pipeline needs from a tokenizer: TokenizerEncoder adapts ft::Tokenizer (tests may
// provide others). Implementations must be callable from several threads at once.
struct TextEncoder {
  virtual ~TextEncoder() = default;
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual std::optional<int32_t> pad_id() const = 0;
  virtual bool is_special(int32_t id) const = 0;  // added tokens flagged special
};

// One assistant message in a rendered conversation: byte range [begin, end) of the rendered text,
// starting at the message's content (or tool calls) and ending anywhere from the end of the
// content to the end of the turn (the pipeline finds the end-of-turn token itself, see above).
struct ChatSpan {
  size_t message = 0;  // index into the messages array
  size_t begin = 0, end = 0;
};
struct RenderedChat {
  std::string text;
  std::vector<ChatSpan> spans;  // one per assistant message, in order; message SIZE_MAX = unknown
  bool last_turn_only = false;  // spans cover only the last assistant turn (see ChatTemplateRenderer)
};
// What the pipeline needs from a chat template. Must be callable from several threads at once.
struct ChatRenderer {
  virtual ~ChatRenderer() = default;
  // Renders the whole conversation with add_generation_prompt = false. tools: null or a list.
  virtual RenderedChat render(const nlohmann::ordered_json& messages,
                              const nlohmann::ordered_json& tools) const = 0;
};

// ft::Tokenizer as a TextEncoder (keeps a reference: the tokenizer must outlive it).
class TokenizerEncoder final : public TextEncoder {
 public:
  explicit TokenizerEncoder(const Tokenizer& tok) : tok_(tok) {}
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::optional<int32_t> bos_id() const override;
  std::optional<int32_t> eos_id() const override;
  std::optional<int32_t> pad_id() const override;
  bool is_special(int32_t id) const override;

 private:
  const Tokenizer& tok_;
};

// ft::ChatTemplate (data/chat_template.h) as a ChatRenderer. Spans come from
// ChatTemplate::render_masked: the {% generation %} blocks when the template has them, else prefix
// rendering (content + end-of-turn text). Templates that re-render earlier turns once later ones
// exist (Qwen3 drops earlier <think> blocks) cannot place every turn; for those rows only the last
// assistant turn is a target (mlx-lm's convention), and the dataset warns with the count.
// extra: more template variables (e.g. {"enable_thinking": false}).
class ChatTemplateRenderer final : public ChatRenderer {
 public:
  explicit ChatTemplateRenderer(const ChatTemplate& t,
                                nlohmann::ordered_json extra = nlohmann::ordered_json::object());
  RenderedChat render(const nlohmann::ordered_json& messages,
                      const nlohmann::ordered_json& tools) const override;

 private:
  std::shared_ptr<const ChatTemplate> t_;
  nlohmann::ordered_json extra_;
};

// The renderer for a tokenizer's own chat template (tokenizer_config.json / chat_template.jinja), or
// for template_source when not empty, with the tokenizer's special tokens (bos_token, eos_token,
// ...). nullptr when neither exists (then use_chat_template defaults to off).
std::unique_ptr<ChatRenderer> chat_renderer_for(
    const Tokenizer& tok, const std::string& template_source = "",
    nlohmann::ordered_json extra = nlohmann::ordered_json::object());

enum class RowFormat { Text, PromptCompletion, Chat, Alpaca, ShareGPT };
const char* row_format_name(RowFormat f);  // "text", "prompt/completion", ...

struct DatasetOptions {
  int64_t max_seq_length = 2048;
  bool mask_prompt = false;                // loss only on completions / assistant turns
  std::optional<bool> use_chat_template;   // PromptCompletion rows; unset: on when chat != nullptr
  bool alpaca_chat = false;                // Alpaca rows through the chat template
};

struct Example {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;  // mask[t] = 1: ids[t] is a target (predicted at position t-1)
  int64_t row = 0;            // index of the source row in its file
  int64_t n_targets() const;
};

struct Dataset {
  std::string source;  // file the rows came from
  RowFormat format = RowFormat::Text;
  std::vector<Example> examples;
  int64_t n_rows = 0;             // rows read from the file
  int64_t n_truncated = 0;        // rows cut to max_seq_length
  int64_t n_dropped = 0;          // rows with no target left (not in examples)
  int64_t n_boundary_merges = 0;  // span boundaries a token crossed (see above)
  int64_t n_last_turn_only = 0;   // chat rows where only the last assistant turn is a target
  std::vector<std::string> warnings;  // for the caller to show (the library never prints)

  size_t size() const { return examples.size(); }
  int64_t n_tokens() const;
  int64_t n_targets() const;
};

// The JSON rows of one file, unvalidated. where[i]: 1-based line (JSONL) or 0-based index (array).
struct RawRows {
  std::string path;
  bool json_array = false;
  std::vector<nlohmann::ordered_json> rows;
  std::vector<int64_t> where;
  std::string locate(size_t i) const;  // "path:LINE" or "path row I"
};
RawRows read_rows(const std::string& path);
// From the first row's keys; ft::Error naming the keys found and the accepted formats.
RowFormat detect_format(const RawRows& raw);

// Validates and tokenises every row (in parallel). chat may be null (no chat template): Chat,
// ShareGPT and alpaca_chat rows then fail with an error saying a chat template is needed.
Dataset make_dataset(const RawRows& raw, const TextEncoder& enc, const ChatRenderer* chat,
                     const DatasetOptions& opt);
Dataset load_dataset(const std::string& path, const TextEncoder& enc, const ChatRenderer* chat,
                     const DatasetOptions& opt);

struct DataSplits {
  Dataset train;
  std::optional<Dataset> valid, test;
};
// dir/train.jsonl (or .json) is required; valid and test are optional.
// The file to evaluate: `data` itself when it is a file; in a data directory the split's .jsonl (or
// .json), or with no split the first of test, valid, train. ft::Error when there is none.
std::string eval_data_file(const std::string& data, const std::string& split);
DataSplits load_data_dir(const std::string& dir, const TextEncoder& enc, const ChatRenderer* chat,
                         const DatasetOptions& opt);

// The standard Alpaca prompt for an instruction and optional input (ends with "### Response:\n").
std::string alpaca_prompt(std::string_view instruction, std::string_view input);

}  // namespace ft
