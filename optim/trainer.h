#pragma once
// The training loop: LoRA / DoRA / full fine-tuning with gradient accumulation, clipping, schedules,
// validation, metrics, crash-safe checkpoints and exact resume.
//
// Loss: the summed token cross-entropy of every micro-batch divided by the number of supervised
// tokens of the whole effective batch (all gradient-accumulation micro-batches), so every supervised
// token weighs the same whatever the padding or the split into micro-batches.
//
// Files in adapter_path:
//   adapter_config.json + adapter_model.safetensors   the final (and latest saved) PEFT adapter
//   state-<step>.h5                                   training states (this run's two newest are kept)
//   loss.svg                                          training / validation loss curves
//   .ft-train.lock                                    held (flock) while a run trains (optim/run_dir.h)
// A new run refuses a folder that holds another run's states or adapter unless `overwrite` is set;
// `resume` continues only a state whose identity (optim/identity.h) matches this run's.
//   (full fine-tuning: the whole model in HF layout instead of the adapter)
//
// The library never prints: what a run has to say (header lines, warnings, progress numbers, report
// and validation lines, samples) goes to TrainCallbacks; `ft train` (cli/cmd_train.cpp) prints it.
#include <atomic>
#include <memory>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/chat_template.h"
#include "data/dataset.h"
#include "models/loss.h"
#include "optim/settings.h"

namespace ft {

class Model;


struct TrainConfig {
  std::string model, data, adapter_path = "adapters", resume_adapter;
  bool resume = false;
  bool overwrite = false;               // replace the run already in adapter_path (after this run's first save)
  FineTuneType fine_tune_type = FineTuneType::LoRA;  // lora | dora | full
  int64_t lora_rank = 8;
  double lora_alpha = 16, lora_dropout = 0.0;
  bool rslora = false;
  std::vector<std::string> lora_targets = {"all-linear"};
  std::string lora_init = "default";
  int64_t num_layers = -1;              // adapt the last N layers; -1 = all
  std::vector<std::string> full_targets = {"all"};  // full: "all" or name substrings to train
  OptimizerType optimizer = OptimizerType::AdamW;  // adamw | sgd
  double learning_rate = 1e-4, weight_decay = 0.0, momentum = 0.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  ScheduleType lr_schedule = ScheduleType::Constant;  // constant | linear | cosine
  int64_t warmup_steps = 0;
  double max_grad_norm = 1.0;           // 0 = off
  int64_t iters = 0, epochs = 0;        // one of them; iters wins when both are set
  int64_t batch_size = 4, grad_accumulation = 1, max_seq_length = 2048;
  bool mask_prompt = false, pack = false, group_by_length = true, use_chat_template = true;
  uint64_t seed = 0;
  std::string dtype = "float32";        // float32 | bfloat16 | float16: storage of the frozen base weights;
                                        // float16 also means fp16 autocast + dynamic loss scaling
  int64_t quantize = 0;                 // quantise the base on load: 4 or 8 bits (0 = off; MLX affine, autograd/quant.h)
  int64_t group_size = 64;              // with quantize: elements per group (32, 64 or 128)
  double loss_scale_init = 65536;       // float16: initial loss scale (torch.amp.GradScaler's init_scale)
  int64_t loss_scale_growth_interval = 2000;  // float16: good steps before the scale doubles
  bool grad_checkpoint = false;
  int64_t checkpoint_every = 1;         // with grad_checkpoint: every k-th block
  CheckpointPolicy checkpoint_policy = CheckpointPolicy::Selective;  // selective: keep q/k/v too; full: only block inputs
  int64_t steps_per_report = 10, steps_per_eval = 100, val_batches = 25, save_every = 100;
  std::string metrics_file;
  bool progress = true;                 // progress bar on stderr
  std::string sample_prompt;            // generate from this prompt before and after training
  int64_t sample_max_tokens = 48;
  std::string merged_path;              // after training: merge the adapter and write the model here
  std::string save_dtype;               // dtype of written models (full fine-tuning, merged_path): "" = the base's

  nlohmann::json to_json() const;
  // Sets one key (dashes or underscores) from its text form; ft::Error naming the key otherwise.
  void set(const std::string& key, const std::string& value);
  void set_json(const std::string& key, const nlohmann::json& value);
  static std::vector<std::string> keys();
  void validate() const;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t requested_steps = 0;          // the run's length (iters, or epochs x steps per epoch)
  double final_loss = 0, final_val_loss = -1;
  int64_t final_val_step = -1;          // the step of final_val_loss
  bool already_done = false;            // resumed from a state at or past requested_steps: nothing trained
  double tokens_per_second = 0;
  std::string adapter_path;
  bool interrupted = false;
};

// ---- what a run reports (all numbers; the CLI formats them) --------------------------------------

enum class TrainLogLevel { Info, Warning };

// After every optimizer step (the progress bar's numbers).
struct StepProgress {
  int64_t step = 0, total = 0;          // steps done (of the whole run, resumed ones included), run length
  double loss = 0, learning_rate = 0;   // this step's loss and learning rate
  double tokens_per_second = 0;         // over the steps since the last report
  double elapsed_seconds = 0;           // since this process's first step
  double eta_seconds = -1;              // remaining, from this process's pace (-1: unknown)
  int64_t peak_memory_bytes = 0;        // process peak RSS
  bool skipped = false;                 // float16: gradients overflowed, the update was skipped
};

// Every steps_per_report steps and at the last step (one metrics-file record).
struct ReportLine {
  int64_t step = 0;
  double loss = 0;                      // token-weighted over the steps since the last report
  double learning_rate = 0, tokens_per_second = 0, trained_tokens = 0, grad_norm = 0;
  int64_t peak_memory_bytes = 0;
  bool has_loss_scale = false;          // float16 runs
  double loss_scale = 0;
  int64_t skipped_steps = 0;
};

struct ValidationLine {
  int64_t step = 0;
  double loss = 0;
  int64_t tokens = 0;
};

struct TrainCallbacks {
  // Header lines, notes and warnings (`ft train` writes them to stderr).
  std::function<void(TrainLogLevel, const std::string&)> on_log;
  std::function<void(const StepProgress&)> on_step;
  std::function<void(const ReportLine&)> on_report;
  std::function<void(const ValidationLine&)> on_validation;
  // A greedy sample of sample_prompt; when: "before training" | "after training".
  std::function<void(const std::string& when, const std::string& prompt, const std::string& text)> on_sample;
  // Progress-display lines that are not reports (e.g. "--overwrite: ... removed N file(s)").
  std::function<void(const std::string&)> on_progress_log;
  // Polled at the end of each step, as request_stop() (true: save and return).
  std::function<bool()> should_stop;
};

// One training run, in parts an embedder (or the CLI) can drive:
//   Trainer t(cfg, callbacks);
//   t.setup();  t.restore();                 // or t.run(): all of it, as `ft train`
//   while (!t.done()) { t.step(); ... t.report(); t.evaluate(); t.save(); }
// request_stop() may be called from any thread or a signal handler: the run saves at the end of the
// current step and returns (TrainResult::interrupted).
class Trainer {
 public:
  explicit Trainer(TrainConfig cfg, TrainCallbacks callbacks = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Locks the adapter path, chooses the state to resume, loads model, tokenizer and data, creates the
  // trainable parameters, optimiser, schedule and data order; reports the run's header lines.
  void setup();
  // Loads the chosen training state (weights, optimiser, data position, RNG, histories): no-op
  // without --resume or without a state.
  void restore();
  // One optimizer step (all micro-batches); throws on a non-finite loss.
  StepProgress step();
  // True when step() has reached the run's length.
  bool done() const;
  // Whether this step (just done) is a report / validation / save step by the schedule in the config.
  bool report_due() const;
  bool eval_due() const;
  bool save_due() const;
  // The metrics record of the steps since the last report (also written to metrics_file).
  ReportLine report();
  // Validation loss on valid.jsonl (val_batches batches); also written to metrics_file.
  ValidationLine evaluate();
  // The training state of this step, then the adapter (or model) and loss.svg.
  void save();
  // Greedy continuation of sample_prompt (empty prompt: nothing), reported through on_sample.
  void sample(const std::string& when);
  // The whole run: setup, restore, the loop with its reports, validations and saves, samples, merge.
  TrainResult run();

  // Thread- and async-signal-safe. Returns whether a stop was already requested.
  bool request_stop() noexcept { return stop_.exchange(true); }
  bool stop_requested() const noexcept { return stop_.load(); }

  int64_t current_step() const;
  int64_t total_steps() const;
  const TrainConfig& config() const;  // after setup: with what a state or an adapter filled in

  struct Impl;

 private:
  std::unique_ptr<Impl> m_;
  std::atomic<bool> stop_{false};
};

// The whole run (Trainer::run).
TrainResult train(const TrainConfig& cfg, const TrainCallbacks& callbacks = {});

// Newest state-<step>.h5 in dir that loads completely ("" when none); each unreadable newer one is
// passed to warn (when given).
std::string newest_state(const std::string& dir, const std::function<void(const std::string&)>& warn = {});

// Writes an SVG line chart of (step, loss) series to path (atomic).
void write_loss_svg(const std::string& path, const std::vector<std::pair<double, double>>& train,
                    const std::vector<std::pair<double, double>>& val);

}  // namespace ft
