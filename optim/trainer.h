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
#include <atomic>
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
  std::function<bool()> should_stop;    // not a setting: polled after each step, as the stop flag (API callers)

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

// Set by the CLI's SIGINT handler: the loop saves and returns at the end of the current step.
std::atomic<bool>& train_stop_flag();

TrainResult train(const TrainConfig& cfg);

// Newest state-<step>.h5 in dir that loads completely ("" when none).
std::string newest_state(const std::string& dir);

// Writes an SVG line chart of (step, loss) series to path (atomic).
void write_loss_svg(const std::string& path, const std::vector<std::pair<double, double>>& train,
                    const std::vector<std::pair<double, double>>& val);

}  // namespace ft
