// An adapter path belongs to one training run (optim/run_dir.h, optim/identity.h):
//   - an exclusive OS lock for the whole run: a second `ft train` into the path stops before loading
//     anything and names the holder's pid; two processes racing for one path: exactly one trains; a
//     SIGKILLed run's lock never blocks the next run
//   - a new run refuses a folder that holds a run (saying what is there and how to go on); --overwrite
//     replaces the old run's files only after the new run's first state is saved (a run that fails or
//     is killed before that leaves them byte-identical)
//   - --resume refuses a state whose identity (settings, data, model weights and config) differs and
//     names each difference; a state already at or past the requested steps says so, and the result
//     carries the real last step and losses
//   - rotation keeps this run's two newest states, never another run's
//   - the free-space check stops before training, with the numbers (an environment override, and a real
//     size-limited tmpfs in a private mount namespace where the machine allows one)
// No test here measures time: children are waited for by their own progress (a lock file, metrics
// lines), never by a clock.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "models/safetensors.h"
#include "optim/identity.h"
#include "optim/run_dir.h"
#include "optim/state.h"
#include "optim/trainer.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace ft {
namespace {

const fs::path kRoot = fs::path(FT_TEST_DATA).parent_path().parent_path();
const fs::path kLlama = kRoot / "tests" / "fixtures" / "models" / "llama";
const fs::path kData = kRoot / "tests" / "data" / "datasets" / "wikisql";

struct Tmp {
  fs::path path;
  Tmp() {
    std::string t = (fs::temp_directory_path() / "ft_runs_XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~Tmp() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& s) const { return path / s; }
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TrainConfig run_cfg(const fs::path& out, const fs::path& model = kLlama, const fs::path& data = kData) {
  TrainConfig c;
  c.model = model.string();
  c.data = data.string();
  c.adapter_path = out.string();
  c.iters = 4;
  c.batch_size = 2;
  c.max_seq_length = 64;
  c.lora_rank = 4;
  c.learning_rate = 1e-3;
  c.steps_per_eval = 0;
  c.save_every = 2;
  c.progress = false;
  return c;
}

std::vector<std::string> train_args(const fs::path& out, int iters) {
  return {"train", "--model", kLlama.string(), "--data", kData.string(), "--adapter-path", out.string(), "--iters", std::to_string(iters),
          "--batch-size", "2", "--max-seq-length", "64", "--lora-rank", "4", "--progress", "false", "--steps-per-eval", "0"};
}

// `ft` as a child process, stdout/stderr to files; `setup` runs in the child before exec (exit 77 when
// it returns false).
struct Child {
  pid_t pid = -1;
  fs::path out, err;
  std::string stderr_text() const { return slurp(err); }
};
Child spawn(const std::vector<std::string>& args, const fs::path& io, const std::function<bool()>& setup = {}) {
  Child c;
  static int n = 0;
  ++n;
  c.out = io / ("out" + std::to_string(n)), c.err = io / ("err" + std::to_string(n));
  const char* bin = std::getenv("FT_TEST_BINARY");
  std::vector<std::string> argv_s = {bin && *bin ? bin : FT_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  c.pid = ::fork();
  if (c.pid == 0) {
    int fo = ::open(c.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = ::open(c.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fo < 0 || fe < 0 || ::dup2(fo, 1) < 0 || ::dup2(fe, 2) < 0 || ::chdir(kRoot.c_str()) != 0) ::_exit(126);
    if (setup && !setup()) ::_exit(77);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return c;
}
// Exit status (or 128 + signal).
int wait_for(const Child& c) {
  int st = 0;
  if (::waitpid(c.pid, &st, 0) != c.pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
bool running(const Child& c) {
  int st = 0;
  return ::waitpid(c.pid, &st, WNOHANG) == 0;
}

// Every regular file of dir (name -> bytes), the lock file excepted.
std::map<std::string, std::string> files_of(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != RunLock::kFileName) m[e.path().filename().string()] = slurp(e.path());
  return m;
}

std::string run_id(const fs::path& state) { return read_training_state_header(state.string()).run.value("id", std::string()); }

std::vector<std::string> state_names(const fs::path& dir) {
  std::vector<std::string> v;
  for (auto& [step, p] : state_files(dir.string())) v.push_back(fs::path(p).filename().string());
  return v;
}

}  // namespace

// ---- the lock -------------------------------------------------------------------------------------

TEST(Runs, LockIsExclusiveNamesItsHolderAndCleansUp) {
  Tmp t;
  const fs::path dir = t / "new" / "run";
  {
    RunLock a(dir.string());
    EXPECT_TRUE(fs::exists(dir / RunLock::kFileName));
    EXPECT_NE(slurp(dir / RunLock::kFileName).find("pid " + std::to_string(::getpid())), std::string::npos);
    // flock conflicts between open files, also inside one process.
    const std::string e = error_of([&] { RunLock b(dir.string()); });
    EXPECT_NE(e.find("in use by another training run"), std::string::npos) << e;
    EXPECT_NE(e.find("pid " + std::to_string(::getpid()) + " on host"), std::string::npos) << e;
    EXPECT_NE(e.find("--adapter-path"), std::string::npos) << e;
  }
  // Nothing was written: the lock file and both directories it created are gone.
  EXPECT_FALSE(fs::exists(t / "new"));
  { RunLock again(dir.string()); }
  // A directory that existed stays; so does a directory the run wrote into.
  fs::create_directories(dir);
  { RunLock l(dir.string()); std::ofstream(dir / "x") << "x"; }
  EXPECT_TRUE(fs::exists(dir / "x"));
  EXPECT_FALSE(fs::exists(dir / RunLock::kFileName));
  // A path under a regular file is an error naming it.
  std::ofstream(t / "file") << "x";
  const std::string e = error_of([&] { RunLock l((t / "file" / "a").string()); });
  EXPECT_NE(e.find("cannot create the adapter path"), std::string::npos) << e;
}

// Two `ft train` started together into one path: exactly one trains; the other stops with "in use"
// (it lost the race for the lock) or "already holds" (it started after the winner finished). The
// folder holds one run's states, and no lock file once both ended.
TEST(Runs, TwoProcessesRacingForOnePathOnlyOneTrains) {
  Tmp t;
  const fs::path out = t / "a";
  std::vector<std::string> args = train_args(out, 3);
  args.insert(args.end(), {"--save-every", "1"});
  Child a = spawn(args, t.path), b = spawn(args, t.path);
  const int ra = wait_for(a), rb = wait_for(b);
  ASSERT_TRUE((ra == 0) != (rb == 0)) << "exit codes " << ra << ", " << rb << "\n" << a.stderr_text() << "\n" << b.stderr_text();
  const std::string loser = ra == 0 ? b.stderr_text() : a.stderr_text();
  EXPECT_EQ(ra == 0 ? rb : ra, 1) << loser;
  EXPECT_TRUE(loser.find("in use by another training run") != std::string::npos || loser.find("already holds a training run") != std::string::npos) << loser;
  const auto states = state_names(out);
  ASSERT_EQ(states, (std::vector<std::string>{"state-00000002.h5", "state-00000003.h5"}));
  EXPECT_EQ(run_id(out / states[0]), run_id(out / states[1]));
  EXPECT_FALSE(fs::exists(out / RunLock::kFileName));
}

// A second run into the path of a running one stops before it loads anything (no "Model" line) and names
// the holder's pid; the first run keeps training. After the first is SIGKILLed its lock file is still
// there, naming a dead process, and the next run trains: an OS lock dies with its process.
TEST(Runs, SecondRunStopsAtOnceAndAKilledRunsLockNeverBlocks) {
  Tmp t;
  const fs::path out = t / "a";
  std::vector<std::string> args = train_args(out, 1000000);
  args.insert(args.end(), {"--save-every", "0"});
  Child first = spawn(args, t.path);
  const std::string tag = "pid " + std::to_string(first.pid) + " ";
  while (slurp(out / RunLock::kFileName).find(tag) == std::string::npos) {  // the first run holds the lock
    ASSERT_TRUE(running(first)) << first.stderr_text();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Child second = spawn(train_args(out, 2), t.path);
  EXPECT_EQ(wait_for(second), 1);
  const std::string e = second.stderr_text();
  EXPECT_NE(e.find("in use by another training run (" + tag + "on host"), std::string::npos) << e;
  EXPECT_EQ(e.find("Model "), std::string::npos) << "the second run loaded the model before stopping: " << e;
  EXPECT_TRUE(running(first)) << first.stderr_text();
  ::kill(first.pid, SIGKILL);
  EXPECT_EQ(wait_for(first), 128 + SIGKILL);
  EXPECT_NE(slurp(out / RunLock::kFileName).find(tag), std::string::npos);  // stale, naming the dead run
  Child third = spawn(train_args(out, 2), t.path);
  EXPECT_EQ(wait_for(third), 0) << third.stderr_text();
  EXPECT_NE(third.stderr_text().find("Done after 2 steps"), std::string::npos) << third.stderr_text();
  EXPECT_FALSE(fs::exists(out / RunLock::kFileName));
}

// ---- refusal and --overwrite ----------------------------------------------------------------------

TEST(Runs, NewRunRefusesAFolderHoldingARunAndSaysWhatIsThere) {
  Tmp t;
  const fs::path out = t / "a";
  train(run_cfg(out));
  const auto before = files_of(out);
  TrainConfig c = run_cfg(out);
  c.iters = 6;
  const std::string e = error_of([&] { train(c); });
  for (const std::string& want : std::vector<std::string>{out.string() + " already holds a training run: step 4 of 4 (state-00000004.h5, saved 20",
                                  "model " + kLlama.string(), "adapter_model.safetensors", "--resume", "--adapter-path", "--overwrite"})
    EXPECT_NE(e.find(want), std::string::npos) << "lacks '" << want << "': " << e;
  EXPECT_EQ(files_of(out), before);
  // An adapter without states (copied there, or from another tool): refused the same way.
  const fs::path only = t / "only";
  fs::create_directories(only);
  fs::copy(out / "adapter_model.safetensors", only / "adapter_model.safetensors");
  fs::copy(out / "adapter_config.json", only / "adapter_config.json");
  const std::string e2 = error_of([&] { train(run_cfg(only)); });
  EXPECT_NE(e2.find("already holds an adapter (adapter_model.safetensors, written 20"), std::string::npos) << e2;
  EXPECT_NE(e2.find("base model " + kLlama.string()), std::string::npos) << e2;
  EXPECT_NE(e2.find("no training state"), std::string::npos) << e2;
  // Unrelated files do not make a folder a run's.
  const fs::path other = t / "other";
  fs::create_directories(other);
  std::ofstream(other / "notes.txt") << "mine";
  EXPECT_EQ(train(run_cfg(other)).steps, 4);
  EXPECT_EQ(slurp(other / "notes.txt"), "mine");
}

// --overwrite: a new run that fails (free-space check) or is SIGKILLed before its first save leaves
// the old run's files byte-identical; one that saves replaces them: afterwards the folder holds only the
// new run's states (its newest two), its adapter, and no file of the old run.
TEST(Runs, OverwriteReplacesTheOldRunOnlyAfterTheFirstSave) {
  Tmp t;
  const fs::path out = t / "a";
  TrainConfig a = run_cfg(out);
  a.iters = 6;
  a.save_every = 3;
  train(a);
  const auto old_files = files_of(out);
  ASSERT_EQ(state_names(out), (std::vector<std::string>{"state-00000003.h5", "state-00000006.h5"}));
  const std::string old_id = run_id(out / "state-00000006.h5");

  TrainConfig b = run_cfg(out);
  b.overwrite = true;
  b.seed = 7;
  ::setenv("FT_TEST_FREE_BYTES", "1000", 1);
  const std::string e = error_of([&] { train(b); });
  ::unsetenv("FT_TEST_FREE_BYTES");
  EXPECT_NE(e.find("not enough free space"), std::string::npos) << e;
  EXPECT_EQ(files_of(out), old_files);

  std::vector<std::string> args = train_args(out, 1000000);
  args.insert(args.end(), {"--overwrite", "--save-every", "100000", "--steps-per-report", "1", "--metrics-file", (t / "m.jsonl").string()});
  Child k = spawn(args, t.path);
  for (;;) {  // two steps trained, no save yet
    const std::string m = slurp(t / "m.jsonl");
    if (std::count(m.begin(), m.end(), '\n') >= 2) break;
    ASSERT_TRUE(running(k)) << k.stderr_text();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(k.pid, SIGKILL);
  wait_for(k);
  EXPECT_EQ(files_of(out), old_files);

  b.iters = 2;
  b.save_every = 1;
  TrainResult r = train(b);
  EXPECT_EQ(r.steps, 2);
  // The first save wrote state 1, then the old run's files went; rotation then kept states 1 and 2,
  // both this run's (numbers lower than the old run's 3 and 6, which a by-number rotation would keep).
  ASSERT_EQ(state_names(out), (std::vector<std::string>{"state-00000001.h5", "state-00000002.h5"}));
  const std::string new_id = run_id(out / "state-00000001.h5");
  EXPECT_EQ(run_id(out / "state-00000002.h5"), new_id);
  EXPECT_NE(new_id, old_id);
  auto now = files_of(out);
  EXPECT_EQ(now.size(), 5u);  // 2 states, adapter_model.safetensors, adapter_config.json, loss.svg
  EXPECT_NE(now["adapter_model.safetensors"], old_files.at("adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(out / RunLock::kFileName));
}

// Rotation keeps this run's two newest states; another run's state in the folder is not this run's to
// remove, even with a lower step number.
TEST(Runs, RotationKeepsThisRunsNewestStates) {
  Tmp t;
  train(run_cfg(t / "other"));  // states 2 and 4 of another run
  const fs::path out = t / "a";
  TrainConfig c = run_cfg(out);
  c.iters = 2;
  train(c);
  fs::copy(t / "other" / "state-00000002.h5", out / "state-00000000.h5");  // another run's, lowest number
  c.iters = 8;
  c.resume = true;
  train(c);
  EXPECT_EQ(state_names(out), (std::vector<std::string>{"state-00000000.h5", "state-00000006.h5", "state-00000008.h5"}));
  EXPECT_EQ(run_id(out / "state-00000000.h5"), run_id(t / "other" / "state-00000002.h5"));
  EXPECT_EQ(run_id(out / "state-00000006.h5"), run_id(out / "state-00000008.h5"));
}

// ---- identity -------------------------------------------------------------------------------------

TEST(Runs, ResumeRefusesAStateOfADifferentRunAndNamesEachDifference) {
  Tmp t;
  fs::copy(kLlama, t / "model", fs::copy_options::recursive);
  fs::copy(kData, t / "data", fs::copy_options::recursive);
  const fs::path out = t / "a";
  TrainConfig c = run_cfg(out, t / "model", t / "data");
  train(c);
  const auto saved = files_of(out);
  c.resume = true;
  auto resume_error = [&](const TrainConfig& r) {
    std::string e = error_of([&] { train(r); });
    EXPECT_NE(e.find("--resume: " + (out / "state-00000004.h5").string() + " belongs to a different run"), std::string::npos) << e;
    EXPECT_EQ(files_of(out), saved);
    return e;
  };
  {  // settings
    TrainConfig r = c;
    r.learning_rate = 2e-3;
    r.seed = 3;
    r.mask_prompt = true;
    r.iters = 8, r.save_every = 4, r.steps_per_report = 1;  // these may change
    const std::string e = resume_error(r);
    EXPECT_NE(e.find("(3 differences)"), std::string::npos) << e;
    EXPECT_NE(e.find("learning_rate: 0.001 in the state, 0.002 now"), std::string::npos) << e;
    EXPECT_NE(e.find("seed: 0 in the state, 3 now"), std::string::npos) << e;
    EXPECT_NE(e.find("mask_prompt: false in the state, true now"), std::string::npos) << e;
  }
  {  // data: same size, different content; then a longer file; then a missing validation file
    std::string rows = slurp(t / "data" / "train.jsonl");
    const std::string orig = rows;
    rows[rows.find("SELECT")] = 's';
    std::ofstream(t / "data" / "train.jsonl", std::ios::binary | std::ios::trunc) << rows;
    std::string e = resume_error(c);
    EXPECT_NE(e.find("data file train.jsonl: same size, different content"), std::string::npos) << e;
    std::ofstream(t / "data" / "train.jsonl", std::ios::binary | std::ios::trunc) << orig << orig.substr(0, orig.find('\n') + 1);
    e = resume_error(c);
    EXPECT_NE(e.find("data file train.jsonl: " + std::to_string(orig.size()) + " bytes in the state's run, "), std::string::npos) << e;
    std::ofstream(t / "data" / "train.jsonl", std::ios::binary | std::ios::trunc) << orig;
    fs::rename(t / "data" / "valid.jsonl", t / "valid.jsonl");
    e = resume_error(c);
    EXPECT_NE(e.find("data file valid.jsonl: read by the state's run, not now"), std::string::npos) << e;
    fs::rename(t / "valid.jsonl", t / "data" / "valid.jsonl");
  }
  {  // model: one weight's values, then config.json
    const std::string st = (t / "model" / "model.safetensors").string();
    auto src = SafetensorsFile::open(st);
    std::vector<TensorRecord> recs = src->tensors();
    std::vector<uint8_t> changed;
    for (TensorRecord& r : recs)
      if (r.name == "model.layers.1.mlp.up_proj.weight") {
        changed.assign(static_cast<const uint8_t*>(r.data), static_cast<const uint8_t*>(r.data) + r.nbytes);
        changed[5] ^= 1;  // one bit of one value
        r.data = changed.data();
      }
    ASSERT_FALSE(changed.empty());
    const std::string tmp = st + ".new";
    write_safetensors(tmp, recs, src->metadata());
    const std::string orig_model = slurp(st);
    src.reset();
    fs::rename(tmp, st);
    std::string e = resume_error(c);
    EXPECT_NE(e.find("(1 difference)"), std::string::npos) << e;
    EXPECT_NE(e.find("model weights with different values: model.layers.1.mlp.up_proj.weight"), std::string::npos) << e;
    std::ofstream(st, std::ios::binary | std::ios::trunc) << orig_model;
    std::string cfg = slurp(t / "model" / "config.json");
    std::ofstream(t / "model" / "config.json", std::ios::trunc) << cfg << "\n";
    e = resume_error(c);
    EXPECT_NE(e.find("model file config.json: different content"), std::string::npos) << e;
    std::ofstream(t / "model" / "config.json", std::ios::trunc) << cfg;
  }
  // Everything restored (the model and data may move: they are identified by content): resume works.
  fs::rename(t / "model", t / "model2");
  TrainConfig ok = run_cfg(out, t / "model2", t / "data");
  ok.resume = true;
  ok.iters = 6;
  EXPECT_EQ(train(ok).steps, 6);
}

TEST(Runs, IdentityDifferencesAndHashes) {
  // The hash: XXH64 (the empty input gives the reference XXH64("", seed 0)), independent of the data's
  // alignment, sensitive to every byte and to the length.
  EXPECT_EQ(content_hash(nullptr, 0), "ef46db3751d8e999");
  std::vector<uint8_t> v(3 << 20);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t(i * 131 + (i >> 9));
  const std::string h = content_hash(v.data(), v.size());
  std::vector<uint8_t> shifted(v.size() + 1);
  std::memcpy(shifted.data() + 1, v.data(), v.size());
  EXPECT_EQ(content_hash(shifted.data() + 1, v.size()), h);
  v[v.size() / 2] ^= 0x40;
  EXPECT_NE(content_hash(v.data(), v.size()), h);
  EXPECT_NE(content_hash(v.data(), v.size() - 1), content_hash(v.data(), v.size()));
  // Resumable keys never count as differences; every other setting does.
  TrainConfig a, b;
  b.iters = 99, b.save_every = 1, b.metrics_file = "m", b.steps_per_eval = 3, b.model = "elsewhere";
  EXPECT_TRUE(identity_differences({{"settings", identity_settings(a)}}, {{"settings", identity_settings(b)}}).empty());
  b.lora_dropout = 0.1;
  auto d = identity_differences({{"settings", identity_settings(a)}}, {{"settings", identity_settings(b)}});
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0], "lora_dropout: 0.0 in the state, 0.1 now");
}

// ---- resume past the end, the final line ------------------------------------------------------------

TEST(Runs, ResumeAtOrPastTheEndSaysSoAndReportsTheRealLastStep) {
  Tmp t;
  const fs::path out = t / "a";
  TrainConfig c = run_cfg(out);
  c.steps_per_eval = 2;
  const TrainResult first = train(c);
  ASSERT_GT(first.final_loss, 0);
  ASSERT_GT(first.final_val_loss, 0);
  c.resume = true;
  c.iters = 2;
  TrainResult r = train(c);
  EXPECT_TRUE(r.already_done);
  EXPECT_EQ(r.steps, 4);
  EXPECT_EQ(r.requested_steps, 2);
  EXPECT_EQ(r.final_loss, first.final_loss);
  EXPECT_EQ(r.final_val_loss, first.final_val_loss);
  EXPECT_EQ(r.final_val_step, 4);
  // The CLI's last line, resuming past the end, then further without validating (the last validation
  // loss is the state's, with its step).
  auto cli = [&](int iters, int steps_per_eval) {
    return std::vector<std::string>{"train", "--model", kLlama.string(), "--data", kData.string(), "--adapter-path", out.string(),
                                    "--iters", std::to_string(iters), "--batch-size", "2", "--max-seq-length", "64", "--lora-rank", "4",
                                    "--learning-rate", "0.001", "--progress", "false", "--steps-per-eval", std::to_string(steps_per_eval), "--save-every", "2", "--resume"};
  };
  std::vector<std::string> args = cli(3, 2);
  Child k = spawn(args, t.path);
  ASSERT_EQ(wait_for(k), 0) << k.stderr_text();
  std::string e = k.stderr_text();
  EXPECT_NE(e.find("Nothing to train: " + (out / "state-00000004.h5").string() + " is at step 4, at or past the 3 steps this run asks for (--iters 3)"),
            std::string::npos) << e;
  EXPECT_NE(e.find("Already done after 4 steps (3 asked for): loss "), std::string::npos) << e;
  EXPECT_NE(e.find(", validation loss "), std::string::npos) << e;
  Child k2 = spawn(cli(5, 0), t.path);  // no validation now: the last one was at step 4
  ASSERT_EQ(wait_for(k2), 0) << k2.stderr_text();
  e = k2.stderr_text();
  EXPECT_NE(e.find("Done after 5 steps: loss "), std::string::npos) << e;
  EXPECT_NE(e.find(" (step 4). Adapter in"), std::string::npos) << e;
}

// ---- free space -----------------------------------------------------------------------------------

TEST(Runs, FreeSpaceCheckStopsBeforeTrainingWithTheNumbers) {
  Tmp t;
  const fs::path out = t / "a";
  ::setenv("FT_TEST_FREE_BYTES", "5000", 1);
  const std::string e = error_of([&] { train(run_cfg(out)); });
  ::unsetenv("FT_TEST_FREE_BYTES");
  for (const std::string& want : std::vector<std::string>{"not enough free space in " + out.string(), "a training state ", "the adapter ", "5000 bytes are free"})
    EXPECT_NE(e.find(want), std::string::npos) << "lacks '" << want << "': " << e;
  EXPECT_FALSE(fs::exists(out)) << "a refused run left its folder behind";
  EXPECT_GT(free_bytes(t.path.string()), 0u);  // the real statvfs answer
}

// The same on a real file system too small for one state: a tmpfs in a private mount namespace (the
// test needs the right to create one: root or unprivileged user namespaces). A 64 KiB tmpfs cannot hold
// the ~150 KB of state + adapter; a 4 MiB one trains and saves.
TEST(Runs, FreeSpaceCheckOnASizeLimitedTmpfs) {
  Tmp t;
  const fs::path mnt = t / "mnt";
  fs::create_directories(mnt);
  auto mount_tmpfs = [&](const std::string& size) {
    return [=]() {
      if (::unshare(CLONE_NEWNS) != 0) return false;
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
      return ::mount("tmpfs", mnt.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    };
  };
  Child small = spawn(train_args(mnt / "a", 2), t.path, mount_tmpfs("64k"));
  const int rs = wait_for(small);
  if (rs == 77) GTEST_SKIP() << "no private tmpfs here (needs CAP_SYS_ADMIN in a mount namespace)";
  EXPECT_EQ(rs, 1) << small.stderr_text();
  const std::string e = small.stderr_text();
  EXPECT_NE(e.find("not enough free space in " + (mnt / "a").string()), std::string::npos) << e;
  EXPECT_NE(e.find("KiB are free"), std::string::npos) << e;
  EXPECT_EQ(e.find("step 1"), std::string::npos) << e;
  Child big = spawn(train_args(mnt / "a", 2), t.path, mount_tmpfs("4m"));
  EXPECT_EQ(wait_for(big), 0) << big.stderr_text();
  EXPECT_NE(big.stderr_text().find("Done after 2 steps"), std::string::npos) << big.stderr_text();
  EXPECT_TRUE(fs::is_empty(mnt));  // the tmpfs lived only in the children's namespaces
}

}  // namespace ft
