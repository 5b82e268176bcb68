#pragma once
// ft's public C++ API: load a model (with tokenizer, chat template and optional adapter), generate
// (one prompt, chat messages, or many prompts decoded together), evaluate, train, merge, convert.
// Only standard-library types cross this header; none of ft's dependencies (Eigen, TBB, yaml-cpp,
// HDF5, ...) is included by it (libft.a is static: a program links them, as the CMake package and
// ft.pc say). Failures throw ft::api::Error with a message that names the file, tensor or
// key and says what to do. The library never prints on its own: messages go to the log callback.
//
//   #include <ft/ft.h>
//   ft::api::Session s = ft::api::load("recipes/tiny-base");
//   std::string text = ft::api::generate(s, "ROMEO:", {.max_tokens = 20}).text;
//
// CMake: find_package(ft) and target_link_libraries(app PRIVATE ft::ft); pkg-config: ft.
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ft::api {

// Every failure of the API (the same type as the library's internal errors).
using Error = std::runtime_error;

std::string version();

enum class LogLevel { Info, Warning };
using LogFn = std::function<void(LogLevel, const std::string&)>;
// Where the API's own messages go (none by default).
void set_log_callback(LogFn fn);

struct LoadOptions {
  std::string adapter;  // PEFT or mlx-lm adapter directory to attach ("" = none)
  std::string dtype;    // storage of the big matrices: "" (checkpoint's), float32, bfloat16, float16
  int quantize = 0;     // quantise the base on load: 4 or 8 bits (MLX affine), 0 = no
  int group_size = 64;  // with quantize: weights per group (32, 64, 128)
};

namespace detail { struct SessionState; }

// A loaded model with its tokenizer and chat template. Move-only; not for concurrent use.
class Session {
 public:
  explicit Session(std::unique_ptr<detail::SessionState> s);
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  ~Session();
  const std::string& model_dir() const;
  std::string model_type() const;       // "llama", "qwen3", ...
  int64_t num_parameters() const;       // of the checkpoint
  int64_t vocab_size() const;
  bool has_chat_template() const;
  detail::SessionState& state() { return *s_; }  // ft's internals (detail/session.h, not installed)
  const detail::SessionState& state() const { return *s_; }

 private:
  std::unique_ptr<detail::SessionState> s_;
};

Session load(const std::string& model_dir, const LoadOptions& options = {});

struct Message {
  std::string role, content;  // role: system | user | assistant
};

struct GenerateOptions {
  int64_t max_tokens = 256;
  double temperature = 0;  // 0 = greedy
  int64_t top_k = 0;
  double top_p = 1, min_p = 0, repetition_penalty = 1;
  uint64_t seed = 0;
  std::vector<std::string> stop;  // stop before any of these strings
};

struct Generation {
  std::string text;
  std::vector<int32_t> prompt_tokens, tokens;
  std::string finish_reason;  // eos | length | stop
  double prompt_tokens_per_second = 0, tokens_per_second = 0;
};

// Called with each new piece of text as it is decoded (whole UTF-8 characters); return false to stop.
using TokenFn = std::function<bool(const std::string& piece)>;

// A plain prompt, encoded as HF tokenizer(prompt) does (BOS etc. from the tokenizer).
Generation generate(Session& s, const std::string& prompt, const GenerateOptions& options = {},
                    const TokenFn& on_token = {});
// Chat messages rendered with the model's chat template (generation prompt added).
Generation generate(Session& s, const std::vector<Message>& messages, const GenerateOptions& options = {},
                    const TokenFn& on_token = {});
// Many plain prompts decoded together (left-padded batch); greedy results equal generate() on each
// alone. chat: render each prompt as one user message first.
std::vector<Generation> generate_batch(Session& s, const std::vector<std::string>& prompts,
                                       const GenerateOptions& options = {}, bool chat = false);

struct EvalOptions {
  std::string split;  // data directory: test | valid | train ("" = the first that exists)
  int64_t batch_size = 8, max_seq_length = 2048;
  bool mask_prompt = false;  // loss on completions only
};
struct EvalResult {
  double loss = 0, perplexity = 0;
  int64_t tokens = 0, examples = 0;
  std::string file;
};
// Token-weighted cross-entropy of the session's model on a JSONL file or data directory.
EvalResult evaluate(Session& s, const std::string& data, const EvalOptions& options = {});

struct TrainOptions {
  std::string recipe;  // YAML recipe ("" = none)
  std::vector<std::pair<std::string, std::string>> settings;  // recipe keys, applied after the recipe
};
struct TrainReport {
  int64_t steps = 0;
  double final_loss = 0, final_val_loss = -1;  // -1: no validation
  std::string adapter_path;
  bool interrupted = false;
};
// What a run reports (the numbers `ft train` prints and draws its progress bar from).
struct TrainProgress {  // after every optimizer step
  int64_t step = 0, total = 0;          // steps done (resumed ones included) of the run's total
  double loss = 0, learning_rate = 0;   // this step's
  double tokens_per_second = 0;         // since the last report
  double elapsed_seconds = 0, eta_seconds = -1;  // this process's time in the loop; remaining (-1: unknown)
  int64_t peak_memory_bytes = 0;        // process peak RSS
};
struct TrainMetrics {  // every steps_per_report steps and at the end: a metrics_file record
  int64_t step = 0;
  double loss = 0;                      // token-weighted over the steps since the last report
  double learning_rate = 0, tokens_per_second = 0, trained_tokens = 0, grad_norm = 0;
  int64_t peak_memory_bytes = 0;
  double loss_scale = 0;                // dtype float16: the dynamic loss scale (else 0)
  int64_t skipped_steps = 0;            // dtype float16: steps skipped for overflowing gradients
};
struct TrainValidation {  // every steps_per_eval steps and at the end, with validation data
  int64_t step = 0;
  double loss = 0;
  int64_t tokens = 0;
};
struct TrainCallbacks {
  // Polled at the end of each step: true saves and returns early (as Ctrl-C does in `ft train`).
  std::function<bool()> should_stop;
  // The run's header lines, notes and warnings (unset: the log callback of set_log_callback).
  LogFn on_log;
  std::function<void(const TrainProgress&)> on_step;
  std::function<void(const TrainMetrics&)> on_report;
  std::function<void(const TrainValidation&)> on_validation;
  // Greedy samples of sample_prompt; when: "before training" | "after training".
  std::function<void(const std::string& when, const std::string& prompt, const std::string& text)> on_sample;
};
TrainReport train(const TrainOptions& options, const TrainCallbacks& callbacks = {});

// Folds an adapter into the base and writes an HF model directory ("" dtype: the base's); returns
// the dtype written.
std::string merge(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir,
           const std::string& dtype = "", uint64_t max_shard_bytes = 5000000000ull);
// Rewrites an adapter in another format: "peft" or "mlx".
void convert_adapter(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir,
                     const std::string& format);
// Rewrites a model in another dtype (float32, bfloat16, float16) and shard size.
void convert_model(const std::string& model_dir, const std::string& out_dir, const std::string& dtype,
                   uint64_t max_shard_bytes = 5000000000ull);

}  // namespace ft::api
