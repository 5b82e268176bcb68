#pragma once
// Trainer's state between its parts (optim/trainer.cpp: setup and restore; optim/trainer_loop.cpp:
// step, report, evaluate, save, run). Internal to optim/.
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/grad_sum.h"
#include "data/batching.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "lora/adapter.h"
#include "models/loss.h"
#include "models/model.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "optim/run_dir.h"
#include "optim/state.h"
#include "optim/trainer.h"

namespace ft {

// "float32" | "bfloat16" | "float16": the dtype of the model's checkpoint.
std::string base_dtype_name(const Model& m);

struct Trainer::Impl {
  TrainConfig c;
  TrainCallbacks cb;
  bool full = false, lead = true;
  int64_t ranks = 1;
  bool set_up = false, restored = false;

  std::optional<RunLock> lock;
  nlohmann::json given_settings;  // as given: before a state or an adapter changes c

  // Resume: the chosen state (read in setup, applied in restore).
  TrainingState resume_state;
  bool resuming = false;
  std::string resume_path;
  OldRunFiles old_run;

  std::optional<Model> model;
  std::optional<Tokenizer> tok;
  std::unique_ptr<ChatRenderer> renderer;
  std::unique_ptr<TokenizerEncoder> enc;
  DataSplits data;
  int32_t pad = 0;
  bool from_scratch = false;
  nlohmann::json identity, run_info;

  std::vector<NamedParam> params;
  LoraConfig lc;
  std::optional<Optimizer> opt;
  // LoRA / DoRA: each step's gradients summed in fp64 (autograd/grad_sum.h), row chunk by row chunk of
  // every sequence, over micro-batches and ranks, and rounded to fp32 once: N ranks and one process
  // take the same step (full fine-tuning keeps fp32 sums: fp64 would cost 8 bytes per weight).
  std::optional<GradSum64> grad_sums;
  std::optional<BatchIterator> it;
  Schedule sched;
  std::optional<GradScaler> scaler;
  ForwardOptions fo;
  int64_t total = 0;
  std::ofstream metrics;

  // Progress of the run.
  int64_t step = 0;
  double last_val = -1, last_loss = 0;  // the last step's loss, the last validation loss and its step
  int64_t last_val_step = -1;
  std::vector<std::pair<double, double>> hist_train, hist_val;
  double trained_tokens = 0;
  std::vector<std::pair<int64_t, std::string>> my_states;  // this run's saved states (two newest kept)

  // Since the last report.
  double window_loss = 0, window_targets = 0, window_tokens = 0, window_time = 0;
  int64_t window_act = 0;  // peak activation bytes
  double last_gnorm = 0;
  float last_lr = 0;
  bool memory_reported = false;
  // This process's pace (ETA).
  double loop_start = -1;
  int64_t loop_first_step = 0;

  void log(TrainLogLevel level, const std::string& line) const {
    if (cb.on_log) cb.on_log(level, line);
  }
  void write_metrics(const nlohmann::json& record);
  void save_adapter();
};

}  // namespace ft
