// The Trainer driven through the library (optim/trainer.h) and the public API (include/ft/ft.h) on
// the shipped tiny base (recipes/tiny-base, with a 64-row WikiSQL sample) for a few steps: everything a run has to say arrives
// through the callbacks (header lines, warnings, step numbers, reports, validations, samples), the
// library writes nothing to stdout or stderr, request_stop() after step k saves the state of step k
// and returns, and driving the parts by hand (setup, restore, step, report, evaluate, save) gives
// the same adapter as run().
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ft/ft.h"
#include "optim/state.h"
#include "optim/trainer.h"

namespace fs = std::filesystem;

namespace ft {
namespace {

const fs::path kRoot = fs::path(FT_TEST_DATA).parent_path().parent_path();
const fs::path kTiny = kRoot / "recipes" / "tiny-base";
const fs::path kWikisql = kRoot / "tests" / "data" / "datasets" / "wikisql";  // 64 training rows

struct Tmp {
  fs::path path;
  Tmp() {
    std::string t = (fs::temp_directory_path() / "ft_trainer_XXXXXX").string();
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

// A few small steps on the tiny base; max_seq_length 64 truncates most WikiSQL rows (a warning).
TrainConfig tiny_cfg(const fs::path& out) {
  TrainConfig c;
  c.model = kTiny.string();
  c.data = kWikisql.string();
  c.adapter_path = out.string();
  c.iters = 4;
  c.batch_size = 2;
  c.max_seq_length = 64;
  c.lora_rank = 4;
  c.learning_rate = 1e-3;
  c.steps_per_report = 2;
  c.steps_per_eval = 2;
  c.val_batches = 1;
  c.save_every = 2;
  return c;  // progress stays true: the library draws nothing either way
}

struct Seen {
  std::vector<std::pair<TrainLogLevel, std::string>> logs;
  std::vector<StepProgress> steps;
  std::vector<ReportLine> reports;
  std::vector<ValidationLine> validations;
  std::vector<std::array<std::string, 3>> samples;
  std::vector<std::string> progress_logs;

  TrainCallbacks callbacks() {
    TrainCallbacks cb;
    cb.on_log = [this](TrainLogLevel l, const std::string& s) { logs.push_back({l, s}); };
    cb.on_step = [this](const StepProgress& p) { steps.push_back(p); };
    cb.on_report = [this](const ReportLine& r) { reports.push_back(r); };
    cb.on_validation = [this](const ValidationLine& v) { validations.push_back(v); };
    cb.on_sample = [this](const std::string& w, const std::string& p, const std::string& t) { samples.push_back({w, p, t}); };
    cb.on_progress_log = [this](const std::string& s) { progress_logs.push_back(s); };
    return cb;
  }
  bool logged(const std::string& part, TrainLogLevel level = TrainLogLevel::Info) const {
    for (auto& [l, s] : logs)
      if (l == level && s.find(part) != std::string::npos) return true;
    return false;
  }
  std::string all_logs() const {
    std::string a;
    for (auto& [l, s] : logs) a += s + "\n";
    return a;
  }
};

TEST(TrainerCallbacks, EverythingArrivesThroughCallbacksAndNothingIsPrinted) {
  Tmp t;
  TrainConfig c = tiny_cfg(t / "run");
  c.sample_prompt = "ROMEO:";
  c.sample_max_tokens = 4;
  c.metrics_file = (t / "metrics.jsonl").string();
  Seen seen;
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  TrainResult r;
  {
    Trainer trainer(c, seen.callbacks());
    r = trainer.run();
  }
  const std::string out = testing::internal::GetCapturedStdout(), err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(out, "");
  EXPECT_EQ(err, "");

  EXPECT_EQ(r.steps, 4);
  EXPECT_FALSE(r.interrupted);
  // One step report per optimizer step, numbered 1..4 of 4, with finite losses.
  ASSERT_EQ(seen.steps.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(seen.steps[i].step, int64_t(i) + 1);
    EXPECT_EQ(seen.steps[i].total, 4);
    EXPECT_TRUE(std::isfinite(seen.steps[i].loss) && seen.steps[i].loss > 0) << seen.steps[i].loss;
    EXPECT_GT(seen.steps[i].learning_rate, 0);
    EXPECT_GT(seen.steps[i].peak_memory_bytes, 0);
    EXPECT_GE(seen.steps[i].eta_seconds, 0);
  }
  // Reports and validations at steps 2 and 4; the reports are the metrics file's records.
  ASSERT_EQ(seen.reports.size(), 2u);
  ASSERT_EQ(seen.validations.size(), 2u);
  std::vector<nlohmann::json> train_rec, val_rec;
  std::ifstream mf(c.metrics_file);
  for (std::string line; std::getline(mf, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    (j.contains("val_loss") ? val_rec : train_rec).push_back(j);
  }
  ASSERT_EQ(train_rec.size(), 2u);
  ASSERT_EQ(val_rec.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const ReportLine& rep = seen.reports[i];
    EXPECT_EQ(rep.step, 2 * int64_t(i) + 2);
    EXPECT_TRUE(std::isfinite(rep.loss) && rep.loss > 0);
    // The window's token-weighted loss lies between its steps' losses.
    const double a = seen.steps[2 * i].loss, b = seen.steps[2 * i + 1].loss;
    EXPECT_GE(rep.loss, std::min(a, b) * (1 - 1e-12));
    EXPECT_LE(rep.loss, std::max(a, b) * (1 + 1e-12));
    EXPECT_EQ(train_rec[i]["step"].get<int64_t>(), rep.step);
    EXPECT_EQ(train_rec[i]["loss"].get<double>(), rep.loss);
    EXPECT_FALSE(rep.has_loss_scale);
    EXPECT_EQ(seen.validations[i].step, rep.step);
    EXPECT_TRUE(std::isfinite(seen.validations[i].loss) && seen.validations[i].loss > 0);
    EXPECT_GT(seen.validations[i].tokens, 0);
    EXPECT_EQ(val_rec[i]["val_loss"].get<double>(), seen.validations[i].loss);
  }
  EXPECT_EQ(r.final_loss, seen.steps.back().loss);
  EXPECT_EQ(r.final_val_loss, seen.validations.back().loss);
  // The header lines and the dataset's truncation warning.
  EXPECT_TRUE(seen.logged("Model " + kTiny.string() + " (llama, ")) << seen.all_logs();
  EXPECT_TRUE(seen.logged("Steps: 4 (batch 2 x accumulation 1)")) << seen.all_logs();
  EXPECT_TRUE(seen.logged("Memory: weights ")) << seen.all_logs();
  EXPECT_TRUE(seen.logged("tokens and were truncated", TrainLogLevel::Warning)) << seen.all_logs();
  // Samples before and after training, of the prompt.
  ASSERT_EQ(seen.samples.size(), 2u);
  EXPECT_EQ(seen.samples[0][0], "before training");
  EXPECT_EQ(seen.samples[1][0], "after training");
  for (auto& s : seen.samples) {
    EXPECT_EQ(s[1], "ROMEO:");
    EXPECT_FALSE(s[2].empty());
  }
  EXPECT_TRUE(fs::exists(t / "run" / "state-00000004.h5"));
  EXPECT_TRUE(fs::exists(t / "run" / "adapter_model.safetensors"));
}

TEST(TrainerStop, RequestStopAfterStepKSavesStepKAndResumes) {
  Tmp t;
  TrainConfig c = tiny_cfg(t / "run");
  c.iters = 5;
  c.save_every = 100;  // only the stop saves
  c.steps_per_eval = 0;
  Seen seen;
  Trainer* self = nullptr;
  TrainCallbacks cb = seen.callbacks();
  auto record = cb.on_step;
  cb.on_step = [&](const StepProgress& p) {
    record(p);
    if (p.step == 3) { EXPECT_FALSE(self->request_stop()); }  // as the CLI's SIGINT handler does
  };
  testing::internal::CaptureStderr();
  TrainResult r;
  {
    Trainer trainer(c, cb);
    self = &trainer;
    r = trainer.run();
    EXPECT_TRUE(trainer.stop_requested());
    EXPECT_TRUE(trainer.request_stop());  // a second request: already requested
  }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.steps, 3);
  EXPECT_EQ(seen.steps.size(), 3u);
  EXPECT_TRUE(seen.samples.empty());
  EXPECT_TRUE(seen.logged("Interrupted: saved the adapter and training state at step 3 in " + (t / "run").string())) << seen.all_logs();
  const std::string newest = newest_state((t / "run").string());
  EXPECT_EQ(fs::path(newest).filename(), "state-00000003.h5");
  EXPECT_EQ(load_training_state(newest).step, 3);
  EXPECT_TRUE(fs::exists(t / "run" / "adapter_model.safetensors"));

  // --resume continues from step 3 to the end.
  c.resume = true;
  Seen again;
  TrainResult r2 = Trainer(c, again.callbacks()).run();
  EXPECT_FALSE(r2.interrupted);
  EXPECT_EQ(r2.steps, 5);
  ASSERT_EQ(again.steps.size(), 2u);
  EXPECT_EQ(again.steps[0].step, 4);
  EXPECT_TRUE(again.logged("Resuming from " + newest + " (step 3)")) << again.all_logs();
}

TEST(TrainerStop, StopRequestedBeforeTheRunStopsAfterTheFirstStep) {
  Tmp t;
  TrainConfig c = tiny_cfg(t / "run");
  c.steps_per_eval = 0;
  Trainer trainer(c);
  trainer.request_stop();
  TrainResult r = trainer.run();
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.steps, 1);
  EXPECT_EQ(load_training_state(newest_state((t / "run").string())).step, 1);
}

TEST(TrainerParts, DrivenByHandEqualsRun) {
  Tmp t;
  TrainConfig c = tiny_cfg(t / "whole");
  TrainResult whole = train(c);

  c.adapter_path = (t / "parts").string();
  Seen seen;
  Trainer trainer(c, seen.callbacks());
  trainer.setup();
  EXPECT_EQ(trainer.total_steps(), 4);
  trainer.restore();
  std::vector<int64_t> saved, evaluated;
  while (!trainer.done()) {
    StepProgress p = trainer.step();
    EXPECT_EQ(p.step, trainer.current_step());
    if (trainer.report_due()) trainer.report();
    if (trainer.eval_due()) evaluated.push_back(trainer.evaluate().step);
    if (trainer.save_due()) {
      trainer.save();
      saved.push_back(trainer.current_step());
    }
  }
  EXPECT_EQ(saved, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(evaluated, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(seen.steps.back().loss, whole.final_loss);
  EXPECT_EQ(seen.validations.back().loss, whole.final_val_loss);
  EXPECT_EQ(slurp(t / "parts" / "adapter_model.safetensors"), slurp(t / "whole" / "adapter_model.safetensors"));
  EXPECT_THROW(trainer.step(), Error);  // done
}

TEST(TrainerApi, PublicTrainReportsThroughCallbacks) {
  Tmp t;
  std::vector<ft::api::TrainProgress> steps;
  std::vector<ft::api::TrainMetrics> reports;
  std::vector<ft::api::TrainValidation> vals;
  std::vector<std::string> logs;
  ft::api::TrainCallbacks cb;
  cb.on_step = [&](const ft::api::TrainProgress& p) { steps.push_back(p); };
  cb.on_report = [&](const ft::api::TrainMetrics& m) { reports.push_back(m); };
  cb.on_validation = [&](const ft::api::TrainValidation& v) { vals.push_back(v); };
  cb.on_log = [&](ft::api::LogLevel, const std::string& s) { logs.push_back(s); };
  cb.should_stop = [&] { return steps.size() >= 3; };
  ft::api::TrainOptions o;
  o.settings = {{"model", kTiny.string()}, {"data", kWikisql.string()}, {"adapter_path", (t / "api").string()},
                {"iters", "6"}, {"batch_size", "2"}, {"max_seq_length", "64"}, {"lora_rank", "4"},
                {"steps_per_report", "1"}, {"steps_per_eval", "2"}, {"val_batches", "1"}};
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  ft::api::TrainReport r = ft::api::train(o, cb);
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.steps, 3);
  ASSERT_EQ(steps.size(), 3u);
  ASSERT_EQ(reports.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(steps[i].step, int64_t(i) + 1);
    EXPECT_EQ(steps[i].total, 6);
    EXPECT_EQ(reports[i].step, int64_t(i) + 1);
    EXPECT_EQ(reports[i].loss, steps[i].loss);  // one step per report
    EXPECT_TRUE(std::isfinite(reports[i].loss));
  }
  ASSERT_EQ(vals.size(), 1u);
  EXPECT_EQ(vals[0].step, 2);
  EXPECT_EQ(r.final_val_loss, vals[0].loss);
  bool interrupted = false, header = false;
  for (auto& s : logs) {
    interrupted |= s.find("Interrupted: saved the adapter and training state at step 3") != std::string::npos;
    header |= s.find("Steps: 6 (batch 2 x accumulation 1)") != std::string::npos;
  }
  EXPECT_TRUE(interrupted && header);
}

}  // namespace
}  // namespace ft
