#pragma once
// HF-compatible tokenizers: `tokenizer.json` (BPE: byte-level GPT-2 / Llama 3 / Qwen2 style and
// SentencePiece-style with byte fallback: Llama 2 / TinyLlama / Mistral / Gemma) and the Llama 3
// tiktoken `tokenizer.model`. Encoding gives the ids HF `tokenizers` gives; decoding follows HF
// transformers (including `clean_up_tokenization_spaces` when tokenizer_config.json asks for it).
// A Tokenizer is immutable after loading (except the small setters below) and safe to use from
// many threads at once; copies share the loaded vocabulary.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ft {
namespace tok { struct Impl; }  // the loaded model (data/tokenizer_impl.h)

class Tokenizer {
 public:
  // A HF tokenizer.json, or a tiktoken file (base64 token + rank per line, Llama 3 layout).
  static Tokenizer from_file(const std::string& path);
  // A model directory: tokenizer.json, else tokenizer.model (tiktoken); plus tokenizer_config.json
  // (bos/eos/pad/unk tokens, chat_template, clean_up_tokenization_spaces, add_bos/eos_token) and
  // chat_template.jinja when present.
  static Tokenizer from_dir(const std::string& dir);
  // The same from in-memory texts of tokenizer.json and tokenizer_config.json (may be empty);
  // `source` names them in errors (a GGUF file's tokenizer, models/gguf_load.h).
  static Tokenizer from_json_text(const std::string& tokenizer_json, const std::string& config_json, const std::string& source);

  // Text must be valid UTF-8 (ft::Error otherwise). Added/special tokens in the text are always
  // recognised (as HF does); add_special_tokens adds the post-processor's BOS/EOS.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Ids outside the vocabulary throw ft::Error. Invalid UTF-8 from byte tokens becomes U+FFFD.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t token_to_id(std::string_view token) const;  // -1 if unknown
  std::string id_to_token(int32_t id) const;          // "" if unknown; byte-level form ("Ġthe")
  size_t vocab_size() const;                          // model vocab + added tokens (max id + 1)
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> pad_id() const { return pad_id_; }
  std::optional<int32_t> unk_id() const { return unk_id_; }
  bool is_special(int32_t id) const;  // an added token flagged special (skipped by decode(.., true))

  // Strings from tokenizer_config.json ("" when absent); chat templates may need bos_token.
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  const std::string& pad_token() const { return pad_token_; }
  const std::string& unk_token() const { return unk_token_; }
  const std::string& chat_template() const { return chat_template_; }

  // transformers' post-decode clean-up (" ." -> "." etc.); from tokenizer_config.json, default off.
  bool clean_up_tokenization_spaces() const { return clean_up_; }
  void set_clean_up_tokenization_spaces(bool on) { clean_up_ = on; }

 private:
  Tokenizer() = default;
  std::string decode_impl(const std::vector<int32_t>& ids, bool skip_special, bool clean_up) const;
  void set_specials_from_config(const std::string& config_path);
  void set_specials_from_text(const std::string& config_text, const std::string& source);
  static Tokenizer from_bytes(const std::string& bytes, const std::string& source);
  friend class StreamDecoder;

  std::shared_ptr<const tok::Impl> impl_;
  std::vector<int32_t> prefix_, suffix_;  // ids the post-processor adds around a single sequence
  std::optional<int32_t> bos_id_, eos_id_, pad_id_, unk_id_;
  std::string bos_token_, eos_token_, pad_token_, unk_token_, chat_template_;
  bool clean_up_ = false;
};

// Incremental detokenisation for generation: push() returns only text made of complete UTF-8
// characters, with the spacing a full decode would give (HF DecodeStream algorithm); the pieces
// concatenate to decode(ids) without clean_up_tokenization_spaces (which is not prefix-stable).
// One exception, as in HF's DecodeStream: when a run of byte-fallback tokens turns out invalid
// UTF-8, decode() replaces every byte of the run with U+FFFD, including characters of it the stream
// already returned (a stream cannot take text back: it continues after what it returned).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special_tokens = false)
      : tok_(tok), skip_special_(skip_special_tokens) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is pending (incomplete bytes as U+FFFD); then starts afresh

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  std::string prefix_;
  size_t prefix_index_ = 0;
};

}  // namespace ft
