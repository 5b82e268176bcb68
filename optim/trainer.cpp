// Trainer: construction, setup (lock, resume choice, model, data, parameters, optimiser) and restore.
// The loop's parts (step, report, evaluate, save, run) are in optim/trainer_loop.cpp.
#include "optim/trainer.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include <unistd.h>

#include "autograd/cpu.h"
#include "autograd/random.h"
#include "models/export.h"
#include "models/gguf_load.h"
#include "optim/data_parallel.h"
#include "optim/dist.h"
#include "optim/identity.h"
#include "optim/trainer_impl.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Data parallel --resume: rank 0 reads the state file and sends its bytes, so that the other ranks
// (other hosts, maybe without the adapter path's file system) load the same state.
TrainingState load_state_from_rank0(const std::string& path) {
  std::string bytes;
  if (dist::rank() == 0) {
    std::ifstream f(path, std::ios::binary);
    FT_CHECK(f.good(), "cannot read training state '", path, "'");
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  bytes = dist::broadcast(bytes);
  if (dist::rank() == 0) return load_training_state(path);
  const fs::path tmp = fs::temp_directory_path() / cat("ft-resume-", getpid(), "-rank", dist::rank(), ".h5");
  {
    std::ofstream o(tmp, std::ios::binary | std::ios::trunc);
    o.write(bytes.data(), std::streamsize(bytes.size()));
    FT_CHECK(o.good(), "rank ", dist::rank(), ": cannot write a copy of the training state to ", tmp.string());
  }
  struct Remove { fs::path p; ~Remove() { std::error_code ec; fs::remove(p, ec); } } remove{tmp};
  return load_training_state(tmp.string());
}

}  // namespace

std::string base_dtype_name(const Model& m) {
  return m.checkpoint_dtype == "BF16" ? "bfloat16" : m.checkpoint_dtype == "F16" ? "float16" : "float32";
}

std::string newest_state(const std::string& dir, const std::function<void(const std::string&)>& warn) {
  if (!fs::is_directory(dir)) return "";
  std::vector<std::pair<int64_t, std::string>> found;
  std::regex re("state-([0-9]{1,18})\\.h5");  // {1,18}: stoll must not overflow
  for (auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    std::string n = e.path().filename().string();
    if (std::regex_match(n, m, re)) found.push_back({std::stoll(m[1]), e.path().string()});
  }
  std::sort(found.rbegin(), found.rend());
  for (auto& [step, path] : found) {
    try {
      load_training_state(path);
      return path;
    } catch (const Error& e) {
      if (warn) warn(cat("warning: skipping unreadable training state ", path, ": ", e.what()));
    }
  }
  return "";
}

Trainer::Trainer(TrainConfig cfg, TrainCallbacks callbacks) : m_(std::make_unique<Impl>()) {
  m_->c = std::move(cfg);
  m_->cb = std::move(callbacks);
}

Trainer::~Trainer() = default;

int64_t Trainer::current_step() const { return m_->step; }
int64_t Trainer::total_steps() const { return m_->total; }
const TrainConfig& Trainer::config() const { return m_->c; }
bool Trainer::done() const { return m_->step >= m_->total; }

void Trainer::setup() {
  FT_CHECK(!m_->set_up, "Trainer::setup: already set up");
  Impl& m = *m_;
  TrainConfig& c = m.c;
  c.validate();
  m.full = c.fine_tune_type == FineTuneType::Full;
  // Data parallel (mpirun): every rank computes batch_size / ranks rows of every micro-batch; rank 0
  // alone owns the adapter path (lock, states, adapter, metrics, samples, console).
  m.ranks = dist::size();
  m.lead = dist::rank() == 0;
  c.progress = c.progress && m.lead;
  // The adapter path belongs to this run until the Trainer is destroyed (a second run into it stops here).
  if (m.lead) m.lock.emplace(c.adapter_path);
  m.given_settings = identity_settings(c);
  auto warn = [&](const std::string& w) { m.log(TrainLogLevel::Warning, w); };

  // Resume: the newest complete state, if its identity matches this run's (checked below, once the
  // model and data are read); its settings then also fill in what an adapter derived (rank, alpha).
  if (c.resume) {
    m.resume_path = dist::broadcast(m.lead ? newest_state(c.adapter_path, warn) : std::string());  // rank 0's choice
    if (m.resume_path.empty()) {
      m.log(TrainLogLevel::Info, cat("note: --resume: no training state in ", c.adapter_path, ", starting from scratch"));
    } else {
      m.resume_state = m.ranks > 1 ? load_state_from_rank0(m.resume_path) : load_training_state(m.resume_path);
      m.resuming = true;
      m.log(TrainLogLevel::Info, cat("Resuming from ", m.resume_path, " (step ", m.resume_state.step, ")"));
      const auto& keep = resumable_keys();
      for (auto& [k, v] : m.resume_state.settings.items())
        if (std::find(keep.begin(), keep.end(), k) == keep.end()) c.set_json(k, v);
    }
  }
  check_batch_divides(c.batch_size, c.grad_accumulation, m.ranks);  // (a resumed run's batch_size is its state's)
  // A new run never writes over another run's files without --overwrite.
  if (!m.resuming && m.lead) {
    RunDirContents there = inspect_run_dir(c.adapter_path);
    if (!there.empty()) {
      FT_CHECK(c.overwrite, there.refusal(c.adapter_path));
      m.old_run.snapshot(c.adapter_path);
      m.log(TrainLogLevel::Info, cat("--overwrite: the run already in ", c.adapter_path,
                                     " is replaced; its files stay until this run's first training state is saved"));
    }
  }

  // Model, tokenizer, chat template, data.
  LoadOptions lo;
  lo.dtype = c.dtype;
  lo.quantize = int(c.quantize);
  lo.group_size = int(c.group_size);
  m.from_scratch = m.full && !Model::has_weights(c.model);
  if (m.from_scratch)
    m.log(TrainLogLevel::Info, cat("No weights in ", c.model, ": initialising a new model from its config.json (training from scratch)"));
  FT_CHECK(m.full || Model::has_weights(c.model), c.model, " holds no model.safetensors (or sharded index); LoRA needs a base model's weights");
  m.model.emplace(m.from_scratch ? Model::init_random(c.model, c.seed) : Model::load(c.model, lo));
  Model& model = *m.model;
  m.tok.emplace(load_model_tokenizer(c.model));
  m.renderer = chat_renderer_for(*m.tok);  // null without a chat template
  m.enc = std::make_unique<TokenizerEncoder>(*m.tok);
  DatasetOptions dopt;
  dopt.max_seq_length = c.max_seq_length;
  dopt.mask_prompt = c.mask_prompt;
  dopt.use_chat_template = c.use_chat_template && m.renderer != nullptr;
  if (fs::is_directory(c.data)) m.data = load_data_dir(c.data, *m.enc, m.renderer.get(), dopt);
  else m.data.train = load_dataset(c.data, *m.enc, m.renderer.get(), dopt);
  for (const Dataset* ds : {&m.data.train, m.data.valid ? &*m.data.valid : nullptr, m.data.test ? &*m.data.test : nullptr})
    if (ds)
      for (const std::string& w : ds->warnings) m.log(TrainLogLevel::Warning, "ft: warning: " + w);
  for (const Example& e : m.data.train.examples)
    for (int32_t id : e.ids)
      FT_CHECK(id >= 0 && id < model.cfg.vocab_size, m.data.train.source, ": token id ", id, " from the tokenizer is outside the model's vocabulary (", model.cfg.vocab_size, "): tokenizer and model do not match");
  m.pad = padding_id(*m.enc);

  // The run's identity, recorded in every state; a resumed state must have the same.
  std::vector<std::string> data_files = {m.data.train.source};
  if (m.data.valid) data_files.push_back(m.data.valid->source);
  m.identity = {{"model", model_fingerprint(c.model, m.from_scratch)}, {"data", data_fingerprint(data_files)}, {"settings", m.given_settings}};
  check_ranks_agree(m.identity);  // every rank: rank 0's model, data and settings
  if (m.resuming) check_resume_identity(m.resume_path, m.resume_state, m.identity, warn);
  m.run_info = m.resuming && m.resume_state.run.contains("id") ? m.resume_state.run : new_run_info();

  // Trainable parameters.
  LoraConfig& lc = m.lc;
  if (m.full) {
    auto want = [&](const std::string& n) {
      for (auto& t : c.full_targets) if (t == "all" || n.find(t) != std::string::npos) return true;
      return false;
    };
    m.params = model.make_trainable(want);
    FT_CHECK(!m.params.empty(), "full fine-tuning: no weight matches full_targets");
  } else if (!c.resume_adapter.empty() && !m.resuming) {
    lc = load_adapter(c.resume_adapter, model, /*trainable=*/true);
    m.params = lora_parameters(model);
    c.lora_rank = lc.rank;
    c.lora_alpha = lc.alpha;
    c.rslora = lc.rslora;
    c.fine_tune_type = lc.dora ? FineTuneType::DoRA : FineTuneType::LoRA;
    m.log(TrainLogLevel::Info, cat("Starting from adapter ", c.resume_adapter, " (rank ", lc.rank, ", alpha ", lc.alpha, ")"));
  } else {
    lc.rank = c.lora_rank;
    lc.alpha = c.lora_alpha;
    lc.dropout = c.lora_dropout;
    lc.rslora = c.rslora;
    lc.dora = c.fine_tune_type == FineTuneType::DoRA;
    lc.targets = c.lora_targets;
    lc.layers = last_layers(model.cfg.num_layers, c.num_layers);
    lc.init = c.lora_init;
    lc.seed = c.seed;
    lc.base_model = c.model;
    m.params = attach_lora(model, lc);
  }
  if (!m.full && lc.base_model.empty()) lc.base_model = c.model;
  if (!m.full) lc.dropout = c.lora_dropout;
  if (!m.full)
    for (Projection* p : model.projections())
      if (p->lora) p->lora->dropout = float(c.lora_dropout);

  OptimizerConfig oc;
  oc.type = name_of(c.optimizer);
  oc.beta1 = float(c.beta1);
  oc.beta2 = float(c.beta2);
  oc.eps = float(c.eps);
  oc.weight_decay = float(c.weight_decay);
  oc.momentum = float(c.momentum);
  m.opt.emplace(m.params, oc);

  BatchOptions bo;
  bo.batch_size = c.batch_size;
  bo.seed = c.seed;
  bo.shuffle = true;
  bo.group_by_length = c.group_by_length;
  bo.pack = c.pack;
  bo.max_seq_length = c.max_seq_length;
  m.it.emplace(m.data.train, bo, m.pad);
  const int64_t steps_per_epoch = std::max<int64_t>(1, m.it->batches_per_epoch() / c.grad_accumulation);
  m.total = c.iters > 0 ? c.iters : c.epochs * steps_per_epoch;
  m.sched = make_schedule(c.lr_schedule, float(c.learning_rate), c.warmup_steps, m.total);

  // float16: autocast + dynamic loss scaling (optim/grad_scaler.h); float32/bfloat16: no scaling.
  if (c.dtype == "float16") m.scaler.emplace(GradScalerConfig{c.loss_scale_init, 2.0, 0.5, c.loss_scale_growth_interval});
  global_rng() = {c.seed, 0};

  m.fo.training = true;
  m.fo.checkpoint_every = c.grad_checkpoint ? c.checkpoint_every : 0;
  m.fo.checkpoint_keep_qkv = c.checkpoint_policy == CheckpointPolicy::Selective;

  int64_t n_trainable = 0;
  for (auto& p : m.params) n_trainable += p.value.numel();
  m.log(TrainLogLevel::Info, cat("Model ", c.model, " (", model.cfg.model_type, ", ", model.checkpoint_parameters, " parameters, ", c.dtype, ")"));
  m.log(TrainLogLevel::Info, cat("Training ", m.full ? "all chosen weights" : name_of(c.fine_tune_type), ": ", n_trainable, " trainable parameters (",
                                 100.0 * double(n_trainable) / double(std::max<int64_t>(model.checkpoint_parameters, 1)), "%)"));
  m.log(TrainLogLevel::Info, cat("Data: ", m.data.train.size(), " training examples", m.data.valid ? cat(", ", m.data.valid->size(), " validation") : "",
                                 "; ", m.it->batches_per_epoch(), " batches/epoch, padding ", 100.0 * m.it->padding_fraction(), "%"));
  m.log(TrainLogLevel::Info, cat("Steps: ", m.total, " (batch ", c.batch_size, " x accumulation ", c.grad_accumulation, ")"));
  if (m.ranks > 1)
    m.log(TrainLogLevel::Info, cat("Data parallel: ", m.ranks, " ranks (MPI), ", c.batch_size / m.ranks, " rows of every micro-batch per rank, ",
                                   num_threads(), num_threads() == 1 ? " thread" : " threads", " per rank (rank 0's)"));
  m.set_up = true;
}

void Trainer::restore() {
  Impl& m = *m_;
  FT_CHECK(m.set_up, "Trainer::restore: call setup() first");
  FT_CHECK(!m.restored, "Trainer::restore: already restored");
  m.restored = true;
  const TrainConfig& c = m.c;
  if (m.resuming) {
    const TrainingState& rs = m.resume_state;
    for (auto& p : m.params) {
      auto f = rs.params.find(p.name);
      FT_CHECK(f != rs.params.end(), "training state lacks parameter '", p.name, "' (was it saved by another run?)");
      FT_CHECK(f->second.shape() == p.value.shape(), "training state parameter '", p.name, "' has shape ", f->second.shape_str(), ", expected ", p.value.shape_str());
      p.value.copy_(f->second);
    }
    m.opt->load_state(rs.optimizer, rs.optimizer_steps);
    m.step = rs.step;
    global_rng() = rs.rng;
    m.it->restore(rs.data);
    m.trained_tokens = rs.extra.value("trained_tokens", 0.0);
    const json& ex = rs.extra;
    const json th = ex.value("train_history", json::array()), vh = ex.value("val_history", json::array());
    m.last_loss = ex.contains("last_loss") ? ex["last_loss"].get<double>() : th.empty() ? 0.0 : th.back()[1].get<double>();
    m.last_val = ex.contains("last_val_loss") ? ex["last_val_loss"].get<double>() : vh.empty() ? -1.0 : vh.back()[1].get<double>();
    m.last_val_step = ex.contains("last_val_step") ? ex["last_val_step"].get<int64_t>() : vh.empty() ? -1 : int64_t(vh.back()[0].get<double>());
    if (m.scaler) {
      FT_CHECK(ex.contains("grad_scaler"), "training state of a float16 run lacks its loss scale ('grad_scaler')");
      m.scaler->load_state(ex["grad_scaler"]);
    }
    for (auto& p : th) m.hist_train.push_back({p[0], p[1]});
    for (auto& p : vh) m.hist_val.push_back({p[0], p[1]});
    m.my_states = states_of_run(c.adapter_path, rs.run, rs.run.empty());
  }

  // Before the first save: one more training state and the adapter (or model) must fit on the disk.
  if (!done() && m.lead) {
    const Model& model = *m.model;
    uint64_t param_bytes = 0, moment_bytes = 0;
    for (auto& p : m.params) param_bytes += uint64_t(p.value.numel()) * 4;
    for (auto& [n, t] : m.opt->state()) moment_bytes += uint64_t(t.numel()) * 4;
    const uint64_t meta = (uint64_t(1) << 20) + m.identity.dump().size();  // HDF5 structure, JSON attributes
    const uint64_t out = m.full ? uint64_t(model.checkpoint_parameters) * (c.save_dtype == "float32" || (c.save_dtype.empty() && base_dtype_name(model) == "float32") ? 4 : 2) + (uint64_t(1) << 20)
                                : param_bytes + (uint64_t(64) << 10);
    check_free_space(c.adapter_path, param_bytes + moment_bytes + meta, out);
  }
  if (!c.metrics_file.empty() && m.lead) {
    m.metrics.open(c.metrics_file, m.resuming ? std::ios::app : std::ios::trunc);
    FT_CHECK(m.metrics.good(), "cannot write metrics file '", c.metrics_file, "'");
  }
}

}  // namespace ft
