// Trainer: the loop's parts (step, report, evaluate, save, sample) and the whole run.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <sys/resource.h>

#include "autograd/cpu.h"
#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/random.h"
#include "models/export.h"
#include "models/generate.h"
#include "optim/data_parallel.h"
#include "optim/dist.h"
#include "optim/state.h"
#include "optim/trainer.h"
#include "optim/trainer_impl.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// CPU time (user + system, all threads) of this process so far: throughput per core-second, robust on
// a shared machine where wall time depends on the load.
double cpu_s() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

std::string state_name(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "state-%08lld.h5", (long long)step);
  return buf;
}

// Greedy continuation of `prompt`, for showing what training changed.
std::string sample_text(const Model& model, const Tokenizer& tok, const std::string& prompt, int64_t max_tokens) {
  GenerateOptions go;
  go.max_tokens = max_tokens;
  go.eos_ids = eos_ids(model, tok.eos_id());
  std::vector<int32_t> ids = tok.encode(prompt, true), out = generate(model, ids, go, nullptr);
  // Decode prompt + continuation together and cut the prompt's text off, so a leading space of the
  // first new token (SentencePiece "▁") is kept.
  std::string before = tok.decode(ids, true);
  ids.insert(ids.end(), out.begin(), out.end());
  std::string all = tok.decode(ids, true);
  return all.size() >= before.size() && all.compare(0, before.size(), before) == 0 ? all.substr(before.size()) : tok.decode(out, true);
}

int64_t mib(int64_t bytes) { return (bytes + 524288) / 1048576; }

}  // namespace

void Trainer::Impl::write_metrics(const json& record) {
  if (metrics.is_open()) {
    metrics << record.dump() << "\n";
    metrics.flush();
  }
}

void Trainer::Impl::save_adapter() {
  if (full) export_model(*model, c.adapter_path, ExportOptions{c.save_dtype.empty() ? base_dtype_name(*model) : c.save_dtype});
  else save_peft_adapter(c.adapter_path, *model, lc);
  write_loss_svg((fs::path(c.adapter_path) / "loss.svg").string(), hist_train, hist_val);
}

bool Trainer::report_due() const { return m_->step > 0 && (m_->step % m_->c.steps_per_report == 0 || m_->step == m_->total); }
bool Trainer::eval_due() const {
  const Impl& m = *m_;
  return m.step > 0 && m.data.valid && m.c.steps_per_eval > 0 && (m.step % m.c.steps_per_eval == 0 || m.step == m.total);
}
bool Trainer::save_due() const {
  const Impl& m = *m_;
  return m.step > 0 && ((m.c.save_every > 0 && m.step % m.c.save_every == 0) || m.step == m.total);
}

StepProgress Trainer::step() {
  Impl& m = *m_;
  FT_CHECK(m.set_up, "Trainer::step: call setup() first");
  if (!m.restored) restore();
  FT_CHECK(!done(), "Trainer::step: the run is done (step ", m.step, " of ", m.total, ")");
  const TrainConfig& c = m.c;
  Model& model = *m.model;
  if (m.loop_start < 0) {
    m.loop_start = now_s();
    m.loop_first_step = m.step;
  }
  AutocastF16Guard autocast(m.scaler.has_value());       // forward and backward of this step
  AutocastBF16Guard autocast_bf(c.dtype == "bfloat16");  // bf16 matmul inputs (autograd/ops.h)
  const float loss_scale = m.scaler ? m.scaler->scale() : 1.f;
  double t0 = now_s();
  std::vector<Batch> micro(size_t(c.grad_accumulation));
  int64_t n_targets = 0, n_tokens = 0;
  for (auto& b : micro) {
    if (!m.it->next(b)) FT_CHECK(false, "internal: the data iterator ran dry");
    n_targets += b.n_targets;
    n_tokens += b.B * b.T;
  }
  {
    FT_PROFILE_PHASE("optimizer");
    m.opt->zero_grad();
  }
  // Activation memory: everything the step allocates on top of what lives across steps (weights,
  // trainable weights, optimiser state), at its peak during forward + backward.
  const int64_t mem_before = memory_stats().current;
  reset_peak_memory();
  double loss_sum = 0, my_targets = 0;
  if (!m.full && !m.grad_sums) {
    std::vector<Tensor> leaves;
    for (auto& p : m.params) leaves.push_back(p.value);
    m.grad_sums.emplace(leaves);
  }
  GradSum64::Scope grad_scope(m.grad_sums ? &*m.grad_sums : nullptr);
  for (auto& b : micro) {
    if (b.n_targets == 0) continue;
    Batch part;
    if (m.ranks > 1) {  // this rank's rows; their dropout masks are those of the whole batch's rows
      auto [lo, hi] = rank_rows(b.B);
      part = slice_rows(b, lo, hi);
      dropout_row_base() = lo;
    }
    const Batch& mine = m.ranks > 1 ? part : b;
    if (mine.n_targets > 0) {
      Tensor ls = batch_loss_sum(model, mine, c.pack, m.fo);
      loss_sum += double(ls.item());
      my_targets += double(mine.n_targets);
      FT_PROFILE_PHASE("backward");
      // Normalised by the supervised tokens of the whole global batch (every rank sees all of it).
      scale(ls, loss_scale * (1.f / float(std::max<int64_t>(n_targets, 1)))).backward();
    }
    if (m.grad_sums) m.grad_sums->absorb();  // fp32 gradients of ops without fp64 sums (DoRA's magnitude)
    if (m.ranks > 1) {
      dropout_row_base() = 0;
      sync_dropout_stream();
    }
  }
  if (m.ranks > 1) {  // one all-reduce of the gradients per optimiser step (bucketed), and of the loss
    FT_PROFILE_PHASE("allreduce");
    if (m.grad_sums) allreduce_grads(*m.grad_sums);
    else allreduce_grads(m.params);
    double sums[2] = {loss_sum, my_targets};
    dist::allreduce_sum(sums, 2);
    loss_sum = sums[0];
    // The supervised tokens the ranks computed are those of the whole global batch, which every
    // rank normalised its loss by (n_targets: each rank iterates the whole global batch).
    FT_CHECK(int64_t(sums[1]) == n_targets, "internal: the ranks computed ", int64_t(sums[1]), " supervised tokens of a global batch of ", n_targets);
  }
  if (m.grad_sums) m.grad_sums->finish();  // the fp32 gradients the optimiser steps with
  const int64_t act_bytes = memory_stats().peak - mem_before;
  m.window_act = std::max(m.window_act, act_bytes);
  if (!m.memory_reported) {
    m.memory_reported = true;
    int64_t trainable_bytes = 0;
    for (auto& p : m.params) trainable_bytes += int64_t(p.value.nbytes());
    m.log(TrainLogLevel::Info,
          cat("Memory: weights ", mib(model.weight_bytes()), " MB (", c.dtype, "), trainable weights + gradients + ", name_of(c.optimizer),
              " state ", mib(trainable_bytes * (c.optimizer == OptimizerType::AdamW ? 4 : c.momentum > 0 ? 3 : 2) + (m.grad_sums ? 2 * trainable_bytes : 0)), " MB, activations ", mib(act_bytes), " MB (peak of step ",
              m.step + 1, ", ", c.grad_checkpoint ? cat(name_of(c.checkpoint_policy), " checkpointing every ", c.checkpoint_every, " block(s)") : std::string("no checkpointing"),
              "), process peak RSS ", mib(peak_rss_bytes()), " MB"));
  }
  double loss = n_targets ? loss_sum / double(n_targets) : 0.0;
  // float16: an inf/NaN among the scaled gradients skips the step (a non-finite loss still stops).
  const bool skip = m.scaler && std::isfinite(loss) && m.scaler->unscale(m.params);
  double gnorm = c.max_grad_norm > 0 && !skip ? clip_grad_norm(m.params, c.max_grad_norm) : 0.0;
  if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
    std::string last = newest_state(c.adapter_path, [&](const std::string& w) { m.log(TrainLogLevel::Warning, w); });
    throw Error(cat("the loss became ", std::isfinite(loss) ? "finite but the gradient norm became " : "", std::isfinite(loss) ? gnorm : loss,
                    " at step ", m.step + 1, "; stopping. ", last.empty() ? "No training state was saved yet." : "The last good state is " + last + " (resume with --resume)",
                    ". Try a lower --learning-rate or --max-grad-norm 1."));
  }
  float lr = m.sched.at(m.step);
  if (!skip) {
    FT_PROFILE_PHASE("optimizer");
    m.opt->step(lr);
  }
  if (m.scaler) {
    m.scaler->update(skip);
    FT_CHECK(m.scaler->scale() >= 1.17549435e-38f, "the float16 gradients overflowed at every loss scale down to ", m.scaler->scale(),
             " (step ", m.step + 1, ", ", m.scaler->skipped_steps(), " steps skipped): the model overflows float16; train with --dtype bfloat16 or float32");
  }
  ++m.step;
  double dt = now_s() - t0;
  m.trained_tokens += double(n_tokens);
  m.window_loss += loss_sum;
  m.window_targets += double(n_targets);
  m.window_tokens += double(n_tokens);
  m.window_time += dt;
  m.last_loss = loss;
  m.last_lr = lr;
  m.last_gnorm = gnorm;

  StepProgress p;
  p.step = m.step;
  p.total = m.total;
  p.loss = loss;
  p.learning_rate = lr;
  p.tokens_per_second = m.window_time > 0 ? m.window_tokens / m.window_time : 0;
  p.elapsed_seconds = now_s() - m.loop_start;
  const int64_t here = m.step - m.loop_first_step;  // steps of this process
  p.eta_seconds = here > 0 ? p.elapsed_seconds / double(here) * double(m.total - m.step) : -1;
  p.peak_memory_bytes = peak_rss_bytes();
  p.skipped = skip;
  if (m.cb.on_step) m.cb.on_step(p);
  return p;
}

ReportLine Trainer::report() {
  Impl& m = *m_;
  FT_CHECK(m.step > 0, "Trainer::report: no step done yet");
  ReportLine r;
  r.step = m.step;
  r.loss = m.window_targets > 0 ? m.window_loss / m.window_targets : m.last_loss;
  r.learning_rate = m.last_lr;
  r.tokens_per_second = m.window_time > 0 ? m.window_tokens / m.window_time : 0;
  r.trained_tokens = m.trained_tokens;
  r.grad_norm = m.last_gnorm;
  r.peak_memory_bytes = peak_rss_bytes();
  m.hist_train.push_back({double(m.step), r.loss});
  json rec = {{"step", m.step}, {"loss", r.loss}, {"learning_rate", m.last_lr}, {"tokens_per_second", r.tokens_per_second},
              {"trained_tokens", m.trained_tokens}, {"peak_memory_mb", double(r.peak_memory_bytes) / 1048576.0},
              {"activation_memory_mb", double(m.window_act) / 1048576.0}, {"weight_memory_mb", double(m.model->weight_bytes()) / 1048576.0},
              {"grad_norm", m.last_gnorm}, {"cpu_seconds", cpu_s()}};
  if (m.scaler) {
    r.has_loss_scale = true;
    r.loss_scale = m.scaler->scale();
    r.skipped_steps = m.scaler->skipped_steps();
    rec["loss_scale"] = m.scaler->scale();
    rec["skipped_steps"] = m.scaler->skipped_steps();
  }
  m.write_metrics(rec);
  if (m.cb.on_report) m.cb.on_report(r);
  m.window_loss = m.window_targets = m.window_tokens = m.window_time = 0;
  m.window_act = 0;
  return r;
}

ValidationLine Trainer::evaluate() {
  Impl& m = *m_;
  FT_CHECK(m.set_up, "Trainer::evaluate: call setup() first");
  FT_CHECK(m.data.valid.has_value(), "Trainer::evaluate: ", m.c.data, " has no validation split (valid.jsonl)");
  AutocastF16Guard autocast(m.scaler.has_value());         // as the step's forward
  AutocastBF16Guard autocast_bf(m.c.dtype == "bfloat16");
  double t1 = now_s();
  auto [vl, vn] = evaluate_loss_ranks(*m.model, *m.data.valid, m.c.batch_size, m.pad, m.c.val_batches);
  m.last_val = vl;
  m.last_val_step = m.step;
  m.hist_val.push_back({double(m.step), vl});
  m.write_metrics({{"step", m.step}, {"val_loss", vl}, {"val_tokens", vn}, {"val_time", now_s() - t1}});
  ValidationLine v{m.step, vl, vn};
  if (m.cb.on_validation) m.cb.on_validation(v);
  return v;
}

void Trainer::save() {
  Impl& m = *m_;
  FT_CHECK(m.set_up && m.restored, "Trainer::save: call setup() and restore() first");
  const TrainConfig& c = m.c;
  // Every save: all ranks must hold bitwise the same weights and optimiser state (checked by hash).
  // FT_DEBUG_RANK_HASHES=DIR: each rank also writes DIR/rank-R.txt ("step hash" lines; tests).
  const char* hash_dir = std::getenv("FT_DEBUG_RANK_HASHES");
  if (m.ranks > 1 || (hash_dir && *hash_dir)) {
    const std::string h = training_hash(m.params, m.opt->state());
    if (hash_dir && *hash_dir) std::ofstream(fs::path(hash_dir) / cat("rank-", dist::rank(), ".txt"), std::ios::app) << m.step << " " << h << "\n";
    check_ranks_in_step(h, m.step);
  }
  if (!m.lead) return;
  TrainingState st;
  st.step = m.step;
  st.optimizer_steps = m.opt->steps();
  st.rng = global_rng();
  for (auto& p : m.params) st.params[p.name] = p.value;
  st.optimizer = m.opt->state();
  st.settings = c.to_json();
  st.data = m.it->state();
  json th = json::array(), vh = json::array();
  for (auto& [x, y] : m.hist_train) th.push_back({x, y});
  for (auto& [x, y] : m.hist_val) vh.push_back({x, y});
  st.extra = {{"trained_tokens", m.trained_tokens}, {"train_history", th}, {"val_history", vh}};
  if (m.scaler) st.extra["grad_scaler"] = m.scaler->state();
  st.extra["last_loss"] = m.last_loss;
  st.extra["last_val_loss"] = m.last_val;
  st.extra["last_val_step"] = m.last_val_step;
  st.run = m.run_info;
  st.identity = m.identity;
  // The state first: an adapter is only ever replaced once the state of its step is safe on disk.
  const std::string path = (fs::path(c.adapter_path) / state_name(m.step)).string();
  save_training_state(path, st);
  m.save_adapter();
  // Keep this run's two newest states (another run's are not this run's to rotate).
  auto& mine = m.my_states;
  mine.erase(std::remove_if(mine.begin(), mine.end(), [&](auto& s) { return s.second == path; }), mine.end());
  mine.push_back({m.step, path});
  std::sort(mine.begin(), mine.end());
  while (mine.size() > 2) {
    std::error_code ec;
    fs::remove(mine.front().second, ec);
    mine.erase(mine.begin());
  }
  if (!m.old_run.empty()) {
    const int n = m.old_run.remove_unreplaced();
    if (m.cb.on_progress_log)
      m.cb.on_progress_log(cat("--overwrite: this run's first state is saved; removed ", n, " file(s) of the earlier run in ", c.adapter_path));
  }
}

void Trainer::sample(const std::string& when) {
  Impl& m = *m_;
  FT_CHECK(m.set_up, "Trainer::sample: call setup() first");
  if (m.c.sample_prompt.empty() || !m.lead) return;
  std::string t = sample_text(*m.model, *m.tok, m.c.sample_prompt, m.c.sample_max_tokens);
  if (m.cb.on_sample) m.cb.on_sample(when, m.c.sample_prompt, t);
}

TrainResult Trainer::run() {
  Impl& m = *m_;
  if (!m.set_up) setup();
  if (!m.restored) restore();
  const TrainConfig& c = m.c;
  const bool already_done = m.resuming && done();
  if (!m.resuming || m.step == 0) sample("before training");

  TrainResult res;
  if (already_done) {
    m.log(TrainLogLevel::Info, cat("Nothing to train: ", m.resume_path, " is at step ", m.step, ", at or past the ", m.total,
                                   " steps this run asks for (", c.iters > 0 ? cat("--iters ", c.iters) : cat("--epochs ", c.epochs),
                                   "). To train further, raise --iters above ", m.step, "."));
    if (m.lead) m.save_adapter();  // that step's adapter (a crash between saving the state and the adapter leaves an older one)
  }
  while (!done()) {
    step();
    if (report_due()) res.tokens_per_second = report().tokens_per_second;
    if (eval_due()) evaluate();
    uint64_t stop_any = stop_requested() || (m.cb.should_stop && m.cb.should_stop()) ? 1 : 0;
    dist::allreduce_max(&stop_any, 1);  // Ctrl-C on any rank: all save (rank 0 writes) and stop together
    const bool stop = stop_any != 0;
    if (save_due() || stop) save();
    if (stop) {
      m.log(TrainLogLevel::Info, cat("Interrupted: saved the adapter and training state at step ", m.step, " in ", c.adapter_path,
                                     " (continue with --resume)"));
      res.interrupted = true;
      break;
    }
  }
  if (!res.interrupted) {
    sample("after training");
    if (!c.merged_path.empty() && m.lead) {
      FT_CHECK(!m.full, "merged_path is for adapters; full fine-tuning already writes the whole model to adapter_path");
      Model& model = *m.model;
      // A quantized base: re-quantized with its settings (mlx-lm's fuse), unless save_dtype asks for floats.
      const bool requant = model.quantized() && c.save_dtype.empty();
      std::string dt = c.save_dtype.empty() ? (requant ? "" : base_dtype_name(model)) : c.save_dtype;
      merge_lora(model, DType::F32, requant);
      export_model(model, c.merged_path, ExportOptions{dt});
      m.log(TrainLogLevel::Info, cat("Merged model (", requant ? "quantized" : dt, ") written to ", c.merged_path));
    }
  }
  res.steps = m.step;
  res.requested_steps = m.total;
  res.already_done = already_done;
  res.final_loss = m.last_loss;
  res.final_val_loss = m.last_val;
  res.final_val_step = m.last_val_step;
  res.adapter_path = c.adapter_path;
  return res;
}

TrainResult train(const TrainConfig& cfg, const TrainCallbacks& callbacks) {
  Trainer t(cfg, callbacks);
  return t.run();
}

}  // namespace ft
