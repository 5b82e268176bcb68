#pragma once
// An adapter path belongs to one training run (README "Runs and their folders"):
//   RunLock          an exclusive OS lock (flock) on <dir>/.ft-train.lock for the whole run; the kernel
//                    drops it when the process dies, so a crashed or killed run never blocks the next
//   RunDirContents   what earlier runs left in the folder (training states, an adapter or a model), and
//                    the refusal message that says what is there and how to go on
//   OldRunFiles      --overwrite: the earlier run's files, removed only after this run's first complete
//                    save (a file this run has since replaced is a new file and is kept)
//   check_free_space statvfs before the first save: one training state + the adapter must fit
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ft {

class RunLock {
 public:
  // Creates `dir` (and missing parents) and takes the lock, or throws ft::Error naming the process
  // (pid, host, start time) that holds it.
  explicit RunLock(const std::string& dir);
  // Unlocks and removes the lock file; removes the directories this lock created if they are empty.
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  static constexpr const char* kFileName = ".ft-train.lock";

 private:
  int fd_ = -1;
  std::string dir_, path_;
  std::vector<std::string> created_;  // directories created here, innermost first
};

// A new run's identity: a random id, the host and the start time (UTC, ISO 8601).
nlohmann::json new_run_info();

// Training state files named state-<step>.h5 in dir (whatever run wrote them), by step.
std::vector<std::pair<int64_t, std::string>> state_files(const std::string& dir);
// Those of the run `run` (new_run_info()'s id); a state of an older ft records no run and counts as
// the run's when `legacy` is set (resuming from such a state).
std::vector<std::pair<int64_t, std::string>> states_of_run(const std::string& dir, const nlohmann::json& run, bool legacy);

struct RunDirContents {
  std::vector<std::pair<int64_t, std::string>> states;  // state-<step>.h5, by step
  std::vector<std::string> outputs;                     // adapter / model files (names)
  bool empty() const { return states.empty() && outputs.empty(); }
  // "runs/x already holds a training run: step 60 of 60 (state-00000060.h5, saved 2026-12-03
  // 08:12:04 UTC), model M, and its adapter (adapter_model.safetensors). ..." + how to go on.
  std::string refusal(const std::string& dir) const;
};
RunDirContents inspect_run_dir(const std::string& dir);

// The files of an earlier run in `dir` (states, adapter/model files, loss.svg) with their inodes.
class OldRunFiles {
 public:
  void snapshot(const std::string& dir);
  // Removes every snapshotted file that still is the same file (same inode); returns how many.
  int remove_unreplaced();
  bool empty() const { return files_.empty(); }

 private:
  struct F { std::string path; uint64_t dev, ino; };
  std::vector<F> files_;
};

// Bytes available to this user on the file system of `dir` (statvfs f_bavail x f_frsize). The
// environment variable FT_TEST_FREE_BYTES replaces the answer (tests of the check on any machine).
uint64_t free_bytes(const std::string& dir);
// ft::Error with the numbers when state_bytes + adapter_bytes do not fit in free_bytes(dir).
void check_free_space(const std::string& dir, uint64_t state_bytes, uint64_t adapter_bytes);
std::string human_bytes(uint64_t b);

}  // namespace ft
