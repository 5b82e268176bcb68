#pragma once
// The identity of a training run, recorded in every training state so that `--resume` continues only
// the run that wrote the state (see README "Runs and their folders"):
//   model     config.json and tokenizer files (content hashes), and every weight's name, dtype, shape
//             and a hash of its bytes (read through the mapping: one pass at memory speed, in parallel)
//   data      the files the run reads (train, valid): name, size, content hash
//   settings  every training option that changes the numbers (resumable_keys() are the others)
// identity_differences() names each difference between a state's identity and this run's.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ft {

struct TrainConfig;
struct TrainingState;

// 64-bit content hash of a byte range (XXH64 over 1 MiB chunks, then over the chunk hashes; the chunks
// are hashed in parallel, the result does not depend on the thread count). Hex, 16 digits.
std::string content_hash(const void* data, size_t n);
// content_hash of a whole file (mmap'd); ft::Error naming the file when it cannot be read.
std::string file_hash(const std::string& path);

// {"config": {file: hash}, "weights": [[name, dtype, shape, hash], ...]} (weights sorted by name), or
// "weights": "random init" for a model trained from scratch (no weights in the directory).
nlohmann::json model_fingerprint(const std::string& model_dir, bool from_scratch);
// [{"name", "bytes", "hash"}, ...] of the given files, in order.
nlohmann::json data_fingerprint(const std::vector<std::string>& files);

// Options that may differ between a run and its resumption (they do not change the trained numbers,
// or, for iters/epochs, set where the run ends).
const std::vector<std::string>& resumable_keys();
// The options of `c` that change the numbers (every key not in resumable_keys()).
nlohmann::json identity_settings(const TrainConfig& c);

// How identity_differences() names its two sides. The default: a training state against this run
// ("learning_rate: 0.001 in the state, 0.0001 now"); ranks("on rank 0", "on rank 2 (host b)") for the
// start-up check of data-parallel training ("seed: 0 on rank 0, 3 on rank 2 (host b)").
struct IdentitySides {
  std::string a = "in the state", b = "now";
  std::string a_model = "in the state's model", from_a_model = "from the state's model";  // model files / weights
  std::string a_run = "by the state's run";                                           // data files: "read by ..."
  std::string a_run_bytes = "in the state's run";
  static IdentitySides ranks(const std::string& a, const std::string& b);
};
// One line per difference ("learning_rate: 0.001 in the state, 0.0001 now"; "model weights with
// different values: model.layers.0.mlp.up_proj.weight"), empty when the identities match.
std::vector<std::string> identity_differences(const nlohmann::json& saved, const nlohmann::json& now,
                                              const IdentitySides& sides = {});
// --resume: ft::Error naming every difference between the state at `path` and this run's identity; a
// state of an older ft (no identity recorded) only gets a warning (passed to warn).
void check_resume_identity(const std::string& path, const TrainingState& st, const nlohmann::json& identity,
                           const std::function<void(const std::string&)>& warn = {});

}  // namespace ft
