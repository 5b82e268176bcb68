#pragma once
// Crash-safe training state in HDF5 (one file per save):
//   /params/<name>      float32 trainable weights
//   /optimizer/<name>   optimiser moments (see Optimizer::state)
//   attributes on "/":  format ("ft-training-state"), version, step, optimizer_steps,
//                       rng_seed, rng_counter, settings (JSON), data (JSON: data-loader position),
//                       extra (JSON: anything else the loop wants back, e.g. loss history; float16 runs:
//                       "grad_scaler": GradScaler::state(), the loss scale and its growth counter),
//                       run (JSON: the run's id, host, start time; version 2),
//                       identity (JSON: model, data and settings fingerprints, optim/identity.h; version 2)
// Written through replace_file_atomic (autograd/file_io.h): a reader sees either the previous
// complete file or the new complete file, never a partial one.
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "autograd/file_io.h"
#include "autograd/random.h"
#include "autograd/tensor.h"

namespace ft {

struct TrainingState {
  int64_t step = 0;
  int64_t optimizer_steps = 0;
  RngState rng;
  std::map<std::string, Tensor> params;
  std::map<std::string, Tensor> optimizer;
  nlohmann::json settings = nlohmann::json::object();
  nlohmann::json data = nlohmann::json::object();
  nlohmann::json extra = nlohmann::json::object();
  nlohmann::json run = nlohmann::json::object();       // empty in version-1 states
  nlohmann::json identity = nlohmann::json::object();  // empty in version-1 states
};

void save_training_state(const std::string& path, const TrainingState& st);
// Throws ft::Error naming the file (and dataset) when the file is missing, truncated or not a state.
TrainingState load_training_state(const std::string& path);
// The attributes only (step, settings, run, identity, ...; no tensors): cheap, for listing states.
TrainingState read_training_state_header(const std::string& path);

}  // namespace ft
