// Sampling processors (HF semantics), batched generation, and training-loop guarantees: exact resume
// after SIGKILL, NaN stop, gradient accumulation equivalence.
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include "models/generate.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "models/sampling.h"
#include "optim/state.h"
#include "optim/trainer.h"

using namespace ft;
namespace fs = std::filesystem;

namespace {
const fs::path kRoot = fs::path(FT_TEST_DATA).parent_path().parent_path();
const fs::path kLlama = kRoot / "tests" / "fixtures" / "models" / "llama";
}  // namespace

TEST(Sampling, RepetitionPenaltyLikeHF) {
  std::vector<float> s = {2.f, -2.f, 1.f, 0.5f};
  apply_repetition_penalty(s.data(), 4, {0, 1, 1}, 2.0);  // each id once: positive /p, negative *p
  EXPECT_FLOAT_EQ(s[0], 1.f);
  EXPECT_FLOAT_EQ(s[1], -4.f);
  EXPECT_FLOAT_EQ(s[2], 1.f);
}

TEST(Sampling, TopKKeepsTiesTopPAndMinP) {
  std::vector<float> s = {1.f, 3.f, 3.f, 2.f, 0.f};
  apply_top_k(s.data(), 5, 2);  // threshold = 2nd largest (3): ties survive, the rest -inf
  EXPECT_EQ(s[0], -INFINITY);
  EXPECT_EQ(s[1], 3.f);
  EXPECT_EQ(s[2], 3.f);
  EXPECT_EQ(s[3], -INFINITY);
  // top-p: probabilities 0.5, 0.3, 0.2 (logs); p = 0.7 keeps the two best (cum of the rest 0.2 <= 0.3).
  std::vector<float> t = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  apply_top_p(t.data(), 3, 0.7);
  EXPECT_NE(t[0], -INFINITY);
  EXPECT_NE(t[1], -INFINITY);
  EXPECT_EQ(t[2], -INFINITY);
  // min-p 0.5: keeps tokens with p >= 0.5 * max p.
  std::vector<float> u = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  apply_min_p(u.data(), 3, 0.5);
  EXPECT_NE(u[0], -INFINITY);
  EXPECT_NE(u[1], -INFINITY);
  EXPECT_EQ(u[2], -INFINITY);
}

TEST(Sampling, GreedyAndSeededSampling) {
  std::vector<float> s = {0.f, 5.f, 1.f};
  Sampler g({0.0, 0, 1.0, 0.0, 1.0, 0});
  EXPECT_EQ(g.sample(s.data(), 3, {}), 1);
  // Seeded sampling is reproducible and follows the distribution.
  std::vector<int> counts(3);
  Sampler a({1.0, 0, 1.0, 0.0, 1.0, 42}), b({1.0, 0, 1.0, 0.0, 1.0, 42});
  for (int i = 0; i < 2000; ++i) {
    std::vector<float> x = {0.f, std::log(3.f), std::log(6.f)}, y = x;
    int ia = a.sample(x.data(), 3, {}), ib = b.sample(y.data(), 3, {});
    ASSERT_EQ(ia, ib);
    counts[size_t(ia)]++;
  }
  EXPECT_NEAR(counts[0] / 2000.0, 0.1, 0.03);
  EXPECT_NEAR(counts[2] / 2000.0, 0.6, 0.04);
  EXPECT_THROW(Sampler({-1.0, 0, 1.0, 0.0, 1.0, 0}), Error);
  EXPECT_THROW(Sampler({1.0, 0, 1.5, 0.0, 1.0, 0}), Error);
}

TEST(Generate, BatchedGreedyEqualsOneByOne) {
  Model m = Model::load(kLlama.string(), {"float32"});
  std::vector<std::vector<int32_t>> prompts = {{1, 343, 223, 83}, {1, 42, 425, 81, 484, 315, 3, 223, 42}, {1, 7}};
  GenerateOptions o;
  o.max_tokens = 12;
  auto batched = generate_batch(m, prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(batched[i], generate(m, prompts[i], o, nullptr)) << "prompt " << i;
  EXPECT_THROW(generate(m, {1, 100000}, o, nullptr), Error);
}

namespace {
std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TrainConfig small_run(const fs::path& out) {
  TrainConfig c;
  c.model = kLlama.string();
  c.data = (kRoot / "tests" / "data" / "datasets" / "wikisql").string();
  c.adapter_path = out.string();
  c.iters = 24;
  c.batch_size = 2;
  c.grad_accumulation = 2;
  c.learning_rate = 1e-3;
  c.lora_dropout = 0.1;  // dropout on: resume must restore the RNG stream too
  c.lora_rank = 4;
  c.steps_per_eval = 0;
  c.save_every = 4;
  c.max_seq_length = 128;
  c.progress = false;
  return c;
}

double max_abs_diff(const fs::path& a, const fs::path& b) {
  auto fa = SafetensorsFile::open(a.string()), fb = SafetensorsFile::open(b.string());
  double m = 0;
  for (const TensorRecord& r : fa->tensors()) {
    const TensorRecord& s = fb->get(r.name);
    const float *x = static_cast<const float*>(r.data), *y = static_cast<const float*>(s.data);
    for (int64_t i = 0; i < r.numel(); ++i) m = std::max(m, double(std::abs(x[i] - y[i])));
  }
  return m;
}
}  // namespace

// An uninterrupted run and a run SIGKILLed at several moments and resumed each time end with the same
// adapter (max abs difference <= 1e-6; here exactly 0: every kernel is deterministic).
TEST(Train, ResumeAfterSigkillEqualsUninterrupted) {
  fs::path tmp = fs::temp_directory_path() / ("ft_resume_" + std::to_string(getpid()));
  fs::remove_all(tmp);
  TrainConfig ref = small_run(tmp / "ref");
  train(ref);
  fs::path killed = tmp / "killed";
  for (int attempt = 0; attempt < 6; ++attempt) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      TrainConfig c = small_run(killed);
      c.resume = true;
      try { train(c); } catch (...) { _exit(3); }
      _exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(60 + 45 * attempt));
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    ASSERT_FALSE(WIFEXITED(st) && WEXITSTATUS(st) == 3) << "training failed in the child";
  }
  TrainConfig fin = small_run(killed);
  fin.resume = true;
  TrainResult r = train(fin);
  EXPECT_EQ(r.steps, 24);
  EXPECT_LE(max_abs_diff(tmp / "ref" / "adapter_model.safetensors", killed / "adapter_model.safetensors"), 1e-6);
  // Whatever the kills interrupted, every state file left is complete (a half-written one can only
  // be a *.tmp, which is never read).
  for (auto& e : fs::directory_iterator(killed))
    if (e.path().extension() == ".h5") EXPECT_NO_THROW(load_training_state(e.path().string())) << e.path();
  fs::remove_all(tmp);
}

TEST(Train, NanLossStopsWithClearMessage) {
  fs::path tmp = fs::temp_directory_path() / ("ft_nan_" + std::to_string(getpid()));
  fs::remove_all(tmp);
  TrainConfig c = small_run(tmp);
  c.learning_rate = 1e30;  // diverges at once
  c.max_grad_norm = 0;
  c.iters = 10;
  c.save_every = 0;
  try {
    train(c);
    FAIL() << "expected the run to stop";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("step"), std::string::npos) << m;
    EXPECT_TRUE(m.find("nan") != std::string::npos || m.find("inf") != std::string::npos) << m;
  }
  fs::remove_all(tmp);
}
