// Failure behaviour of the writers (write_safetensors, save_training_state, write_file_atomic): an
// unwritable directory, a full disk (RLIMIT_FSIZE in a forked child), a SIGKILL at a random moment
// of a save. The destination is always either the previous complete file or the new complete one,
// a failed write is an ft::Error naming the file, and no leftover `.tmp` is ever read as a state or
// checkpoint. Also: a checkpoint with NaN weights loads, and training stops at the first step with
// an ft::Error.
#include <gtest/gtest.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "autograd/error.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "optim/state.h"
#include "optim/trainer.h"

namespace ft {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path dir;
  explicit TempDir(const std::string& name)
      : dir(fs::temp_directory_path() / ("ft_test_failures_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(dir, fs::perms::owner_all, ec);
    fs::remove_all(dir, ec);
  }
  std::string operator/(const std::string& f) const { return (dir / f).string(); }
};

// Version v of each file kind: distinguishable contents, `n` floats of payload.
std::vector<float> payload(int v, size_t n) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = float(v) * 1000.f + float(i % 997);
  return x;
}

struct Writer {
  const char* name;
  std::function<void(const std::string& path, int version)> save;
  // The version a complete file at `path` holds; throws (ft::Error) when the file is not complete.
  std::function<int(const std::string& path)> load;
};

constexpr size_t kFloats = 1 << 18;  // 1 MiB of payload per save

std::vector<Writer> writers() {
  Writer st{"write_safetensors",
            [](const std::string& path, int v) {
              std::vector<float> w = payload(v, kFloats);
              write_safetensors(path, {TensorRecord::view("w", DType::F32, {int64_t(kFloats)}, w.data())},
                                {{"version", std::to_string(v)}});
            },
            [](const std::string& path) {
              auto f = SafetensorsFile::open(path);
              int v = std::stoi(f->metadata().at("version"));
              const TensorRecord& r = f->get("w");
              std::vector<float> w = payload(v, kFloats);
              FT_CHECK(r.nbytes == w.size() * 4 && std::memcmp(r.data, w.data(), r.nbytes) == 0, path, ": payload differs");
              return v;
            }};
  Writer state{"save_training_state",
               [](const std::string& path, int v) {
                 TrainingState s;
                 s.step = v;
                 s.params["w"] = Tensor::from_vector(payload(v, kFloats / 2), {int64_t(kFloats / 2)});
                 s.optimizer["w.exp_avg"] = Tensor::from_vector(payload(v + 1, kFloats / 2), {int64_t(kFloats / 2)});
                 s.data = {{"epoch", v}};
                 save_training_state(path, s);
               },
               [](const std::string& path) {
                 TrainingState s = load_training_state(path);
                 int v = int(s.step);
                 FT_CHECK(s.data.value("epoch", -1) == v && s.params.count("w") && s.optimizer.count("w.exp_avg"), path,
                          ": incomplete state");
                 std::vector<float> w = payload(v, kFloats / 2), m = payload(v + 1, kFloats / 2);
                 FT_CHECK(std::memcmp(s.params["w"].raw(), w.data(), w.size() * 4) == 0 &&
                              std::memcmp(s.optimizer["w.exp_avg"].raw(), m.data(), m.size() * 4) == 0,
                          path, ": payload differs");
                 return v;
               }};
  Writer text{"write_file_atomic",
              [](const std::string& path, int v) {
                write_file_atomic(path, "version " + std::to_string(v) + "\n" + std::string(kFloats, char('a' + v % 26)) + "\nend\n");
              },
              [](const std::string& path) {
                std::ifstream f(path, std::ios::binary);
                std::stringstream ss;
                ss << f.rdbuf();
                std::string s = ss.str();
                int v = -1;
                FT_CHECK(std::sscanf(s.c_str(), "version %d", &v) == 1, path, ": no version line");
                FT_CHECK(s == "version " + std::to_string(v) + "\n" + std::string(kFloats, char('a' + v % 26)) + "\nend\n",
                         path, ": truncated or corrupt");
                return v;
              }};
  return {st, state, text};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Runs `save` in a forked child after `setup` (no gtest there); returns (0 = ft::Error, 1 = no error,
// 2 = another exception, 3 = setup failed; the error message).
std::pair<int, std::string> in_child(const std::function<bool()>& setup, const std::function<void()>& save) {
  int fds[2];
  if (::pipe(fds) != 0) return {-1, "pipe failed"};
  pid_t pid = ::fork();
  if (pid < 0) return {-1, "fork failed"};
  if (pid == 0) {
    ::close(fds[0]);
    int code = 1;
    std::string msg = "no error";
    if (!setup()) {
      code = 3, msg = std::string("setup failed: ") + std::strerror(errno);
    } else {
      try {
        save();
      } catch (const Error& e) {
        code = 0, msg = e.what();
      } catch (const std::exception& e) {
        code = 2, msg = std::string("not an ft::Error: ") + e.what();
      }
    }
    (void)!::write(fds[1], msg.data(), msg.size());
    ::_exit(code);
  }
  ::close(fds[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
  ::close(fds[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return {-1, "waitpid failed"};
  if (!WIFEXITED(status)) return {-1, "child died with signal " + std::to_string(WTERMSIG(status))};
  return {WEXITSTATUS(status), msg};
}

bool has_tmp(const fs::path& dir) {
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tmp") return true;
  return false;
}

}  // namespace

// A directory the process may not write to. As root (permissions do not apply) the save runs in a
// forked child that drops to uid/gid 65534 (nobody) first.
TEST(Failures, WriteIntoReadOnlyDirectory) {
  const bool root = ::geteuid() == 0;
  for (const Writer& w : writers()) {
    SCOPED_TRACE(w.name);
    TempDir t(std::string("ro_") + w.name);
    const std::string path = t / "out";
    w.save(path, 1);
    fs::permissions(t.dir, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);
    auto [code, e] = in_child([&] { return !root || (::setgid(65534) == 0 && ::setuid(65534) == 0); },
                              [&] { w.save(path, 2); });
    if (code == 3) GTEST_SKIP() << "cannot drop root privileges: " << e;
    EXPECT_EQ(code, 0) << e;
    EXPECT_NE(e.find(path + ".tmp"), std::string::npos) << e;  // names the file it could not create
    fs::permissions(t.dir, fs::perms::owner_all);
    EXPECT_EQ(w.load(path), 1);  // the previous file is untouched
    EXPECT_FALSE(has_tmp(t.dir));
  }
}

TEST(Failures, WriteUnderARegularFile) {  // the parent "directory" is a file: fails for root too
  for (const Writer& w : writers()) {
    SCOPED_TRACE(w.name);
    TempDir t(std::string("notdir_") + w.name);
    std::ofstream(t / "file") << "x";
    const std::string path = t / "file/out";
    std::string e = error_of([&] { w.save(path, 1); });
    EXPECT_NE(e.find(path + ".tmp"), std::string::npos) << e;
    EXPECT_EQ(std::ifstream(t / "file").get(), 'x');
    e = error_of([&] { w.save(t / "missing_dir/out", 1); });
    EXPECT_NE(e.find("missing_dir/out.tmp"), std::string::npos) << e;
  }
}

// Disk full: a forked child saves under RLIMIT_FSIZE (SIGXFSZ ignored, so writes fail with EFBIG as
// they would with ENOSPC). The save must throw ft::Error, leave no .tmp and keep the old file.
TEST(Failures, DiskFullKeepsThePreviousFile) {
  for (const Writer& w : writers()) {
    for (rlim_t limit : {rlim_t(0), rlim_t(3000), rlim_t(kFloats / 2)}) {
      SCOPED_TRACE(std::string(w.name) + " limit " + std::to_string(limit));
      TempDir t(std::string("full_") + w.name);
      const std::string path = t / "out";
      w.save(path, 1);
      auto [code, msg] = in_child(
          [&] {
            ::signal(SIGXFSZ, SIG_IGN);
            rlimit rl{limit, limit};
            return ::setrlimit(RLIMIT_FSIZE, &rl) == 0;
          },
          [&] { w.save(path, 2); });
      EXPECT_EQ(code, 0) << msg;
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_EQ(w.load(path), 1);
      EXPECT_FALSE(has_tmp(t.dir));
    }
  }
}

// SIGKILL at random moments of repeated saves over an existing file: the destination is always a
// complete file (the old version or a newer one), and a leftover .tmp is never picked up by the
// readers that scan a directory (CheckpointReader, newest_state). The next save cleans it up.
TEST(Failures, SigkillWhileSavingNeverLeavesAPartialFile) {
  uint64_t rng = 12345;
  auto next = [&](uint64_t n) { rng = rng * 6364136223846793005ull + 1442695040888963407ull; return (rng >> 33) % n; };
  for (const Writer& w : writers()) {
    SCOPED_TRACE(w.name);
    TempDir t(std::string("kill_") + w.name);
    const std::string kind = w.name;
    const std::string path = t / (kind == "save_training_state" ? "state-7.h5" : kind == "write_safetensors" ? "model.safetensors" : "config.json");
    // One save's duration sets the range of kill times.
    timespec a{}, b{};
    ::clock_gettime(CLOCK_MONOTONIC, &a);
    w.save(path, 1);
    ::clock_gettime(CLOCK_MONOTONIC, &b);
    const int64_t save_us = std::max<int64_t>(200, (b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000);
    int left_tmp = 0, newer = 0;
    for (int round = 0; round < 12; ++round) {
      pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        for (int v = 100 * (round + 1);; ++v) {
          try {
            w.save(path, v);
          } catch (...) {
            ::_exit(3);
          }
        }
      }
      ::usleep(useconds_t(next(uint64_t(3 * save_us))));
      ::kill(pid, SIGKILL);
      int status = 0;
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
      ASSERT_TRUE(WIFSIGNALED(status)) << "the saving child failed (exit " << WEXITSTATUS(status) << ")";
      left_tmp += has_tmp(t.dir);
      int v = -1;
      ASSERT_NO_THROW(v = w.load(path)) << "round " << round << ": partial or missing file after SIGKILL";
      newer += v >= 100 * (round + 1);
      if (kind == "save_training_state") { EXPECT_EQ(newest_state(t.dir.string()), path); }  // never the .tmp
      if (kind == "write_safetensors") { EXPECT_EQ(CheckpointReader::open(t.dir.string()).files()[0]->path(), path); }
    }
    w.save(path, 9999);
    EXPECT_EQ(w.load(path), 9999);
    EXPECT_FALSE(has_tmp(t.dir));
    std::printf("[%s] one save %.1f ms; of 12 kills, %d left a .tmp, %d came after a save of that round completed\n",
                w.name, double(save_us) / 1000.0, left_tmp, newer);
  }
}

TEST(Failures, StaleTmpAndOddNamesAreNotStates) {
  TempDir t("names");
  TrainingState s;
  s.step = 3;
  s.params["w"] = Tensor::from_vector({1, 2}, {2});
  save_training_state(t / "state-3.h5", s);
  std::ofstream(t / "state-9.h5.tmp") << "partial";      // a save killed midway
  std::ofstream(t / "state-8.h5") << "truncated";          // a torn copy: skipped with a warning
  EXPECT_EQ(newest_state(t.dir.string()), t / "state-3.h5");
  std::ofstream(t / "state-99999999999999999999.h5") << "x";  // step does not fit int64
  EXPECT_EQ(newest_state(t.dir.string()), t / "state-3.h5");
}

// A checkpoint whose weights hold NaN loads (loading does not scan values); the first training step
// stops with an ft::Error naming the non-finite loss and the step.
TEST(Failures, NanWeightsLoadButTrainingStopsAtTheFirstStep) {
  const std::string fixture = std::string(FT_TEST_DATA) + "/../fixtures/models/llama";
  TempDir t("nan");
  const std::string model = t / "model";
  fs::create_directories(model);
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) fs::copy(fixture + "/" + f, model + "/" + f);
  {
    auto src = SafetensorsFile::open(fixture + "/model.safetensors");
    std::vector<TensorRecord> recs = src->tensors();
    std::vector<uint8_t> poisoned;
    for (TensorRecord& r : recs) {
      if (r.name != "model.layers.0.mlp.down_proj.weight") continue;
      poisoned.assign(static_cast<const uint8_t*>(r.data), static_cast<const uint8_t*>(r.data) + r.nbytes);
      ASSERT_GE(r.nbytes, 4u);
      if (r.st_dtype == StDtype::F32) {
        const float nan = std::nanf("");
        std::memcpy(poisoned.data(), &nan, 4);
      } else {
        poisoned[0] = 0xc0, poisoned[1] = 0x7f;  // bf16 / f16 NaN
      }
      r.data = poisoned.data();
    }
    ASSERT_FALSE(poisoned.empty());
    write_safetensors(model + "/model.safetensors", recs, src->metadata());
  }
  Model m = Model::load(model);
  Tensor logits = m.forward(Tensor::from_ids({1, 5, 9, 3}, {1, 4}));
  bool any_nan = false;
  for (int64_t i = 0; i < logits.numel(); ++i) any_nan |= std::isnan(logits.data<float>()[i]);
  EXPECT_TRUE(any_nan) << "a NaN weight must reach the logits (no silent repair)";

  fs::create_directories(t / "data");
  std::ofstream(t / "data/train.jsonl") << "{\"text\": \"hello world, hello NaN\"}\n{\"text\": \"another row\"}\n";
  TrainConfig c;
  c.model = model;
  c.data = t / "data";
  c.adapter_path = t / "adapters";
  c.iters = 3;
  c.batch_size = 1;
  c.progress = false;
  c.steps_per_eval = 1000;
  std::string e = error_of([&] { train(c); });
  std::printf("[nan weights] train(): %s\n", e.c_str());
  EXPECT_NE(e.find("nan"), std::string::npos) << e;
  EXPECT_NE(e.find("step 1"), std::string::npos) << e;
}

}  // namespace ft
