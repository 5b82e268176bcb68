#include "optim/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <regex>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

#include "autograd/cpu.h"
#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/quant.h"
#include "autograd/random.h"
#include "data/batching.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "lora/adapter.h"
#include "models/gguf_load.h"
#include "models/export.h"
#include "models/generate.h"
#include "models/loss.h"
#include "models/model.h"
#include "optim/data_parallel.h"
#include "optim/dist.h"
#include "optim/grad_scaler.h"
#include "optim/identity.h"
#include "optim/optimizer.h"
#include "optim/progress.h"
#include "optim/run_dir.h"
#include "optim/state.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::atomic<bool>& train_stop_flag() {
  static std::atomic<bool> f{false};
  return f;
}

// ---- helpers ------------------------------------------------------------------------------------

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

std::string base_dtype_name(const Model& m) {
  return m.checkpoint_dtype == "BF16" ? "bfloat16" : m.checkpoint_dtype == "F16" ? "float16" : "float32";
}

}  // namespace


std::string newest_state(const std::string& dir) {
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
      std::cerr << "warning: skipping unreadable training state " << path << ": " << e.what() << "\n";
    }
  }
  return "";
}

void write_loss_svg(const std::string& path, const std::vector<std::pair<double, double>>& tr,
                    const std::vector<std::pair<double, double>>& va) {
  const double W = 640, H = 400, L = 60, R = 20, T = 30, B = 50;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (auto* s : {&tr, &va})
    for (auto& [x, y] : *s) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x); x1 = std::max(x1, x); y0 = std::min(y0, y); y1 = std::max(y1, y);
    }
  if (x0 > x1) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  double pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double y) { return T + (y1 - y) / (y1 - y0) * (H - T - B); };
  std::ostringstream s;
  s.precision(6);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << W / 2 << "\" y=\"18\" text-anchor=\"middle\">ft training loss</text>\n"
    << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n"
    << "<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    double yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
    s << "<text x=\"" << L - 5 << "\" y=\"" << Y(yv) + 4 << "\" text-anchor=\"end\">" << yv << "</text>\n";
    s << "<text x=\"" << X(xv) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << int64_t(xv) << "</text>\n";
  }
  s << "<text x=\"" << W / 2 << "\" y=\"" << H - 10 << "\" text-anchor=\"middle\">step</text>\n";
  auto line = [&](const std::vector<std::pair<double, double>>& v, const char* color) {
    if (v.empty()) return;
    s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"";
    for (auto& [x, y] : v) if (std::isfinite(y)) s << X(x) << "," << Y(y) << " ";
    s << "\"/>\n";
    for (auto& [x, y] : v) if (std::isfinite(y) && v.size() < 60) s << "<circle cx=\"" << X(x) << "\" cy=\"" << Y(y) << "\" r=\"2.5\" fill=\"" << color << "\"/>\n";
  };
  line(tr, "#1f77b4");
  line(va, "#d62728");
  s << "<text x=\"" << W - R - 120 << "\" y=\"" << T + 10 << "\" fill=\"#1f77b4\">train loss</text>\n";
  if (!va.empty()) s << "<text x=\"" << W - R - 120 << "\" y=\"" << T + 26 << "\" fill=\"#d62728\">validation loss</text>\n";
  s << "</svg>\n";
  write_file_atomic(path, s.str());
}

// ---- the loop -----------------------------------------------------------------------------------

TrainResult train(const TrainConfig& c_in) {
  TrainConfig c = c_in;
  c.validate();
  const bool full = c.fine_tune_type == FineTuneType::Full;
  // Data parallel (mpirun): every rank computes batch_size / ranks rows of every micro-batch; rank 0
  // alone owns the adapter path (lock, states, adapter, metrics, samples, console).
  const int64_t ranks = dist::size();
  const bool lead = dist::rank() == 0;
  c.progress = c.progress && lead;
  // The adapter path belongs to this run until it returns (a second run into it stops here).
  std::optional<RunLock> lock;
  if (lead) lock.emplace(c.adapter_path);
  const json given_settings = identity_settings(c);  // as given: before a state or an adapter changes c

  // Resume: the newest complete state, if its identity matches this run's (checked below, once the
  // model and data are read); its settings then also fill in what an adapter derived (rank, alpha).
  TrainingState resume_state;
  bool resuming = false;
  std::string resume_path;
  if (c.resume) {
    resume_path = dist::broadcast(lead ? newest_state(c.adapter_path) : std::string());  // rank 0's choice
    if (resume_path.empty()) {
      std::cerr << "note: --resume: no training state in " << c.adapter_path << ", starting from scratch\n";
    } else {
      resume_state = ranks > 1 ? load_state_from_rank0(resume_path) : load_training_state(resume_path);
      resuming = true;
      std::cerr << "Resuming from " << resume_path << " (step " << resume_state.step << ")\n";
      const auto& keep = resumable_keys();
      for (auto& [k, v] : resume_state.settings.items())
        if (std::find(keep.begin(), keep.end(), k) == keep.end()) c.set_json(k, v);
    }
  }
  check_batch_divides(c.batch_size, c.grad_accumulation, ranks);  // (a resumed run's batch_size is its state's)
  // A new run never writes over another run's files without --overwrite.
  OldRunFiles old_run;
  if (!resuming && lead) {
    RunDirContents there = inspect_run_dir(c.adapter_path);
    if (!there.empty()) {
      FT_CHECK(c.overwrite, there.refusal(c.adapter_path));
      old_run.snapshot(c.adapter_path);
      std::cerr << "--overwrite: the run already in " << c.adapter_path << " is replaced; its files stay until this run's first training state is saved\n";
    }
  }

  // Model, tokenizer, chat template, data.
  LoadOptions lo;
  lo.dtype = c.dtype;
  lo.quantize = int(c.quantize);
  lo.group_size = int(c.group_size);
  const bool from_scratch = full && !Model::has_weights(c.model);
  if (from_scratch) std::cerr << "No weights in " << c.model << ": initialising a new model from its config.json (training from scratch)\n";
  FT_CHECK(full || Model::has_weights(c.model), c.model, " holds no model.safetensors (or sharded index); LoRA needs a base model's weights");
  Model model = from_scratch ? Model::init_random(c.model, c.seed) : Model::load(c.model, lo);
  Tokenizer tok = load_model_tokenizer(c.model);
  std::unique_ptr<ChatRenderer> renderer = chat_renderer_for(tok);  // null without a chat template
  TokenizerEncoder enc(tok);
  DatasetOptions dopt;
  dopt.max_seq_length = c.max_seq_length;
  dopt.mask_prompt = c.mask_prompt;
  dopt.use_chat_template = c.use_chat_template && renderer != nullptr;
  DataSplits data;
  if (fs::is_directory(c.data)) data = load_data_dir(c.data, enc, renderer.get(), dopt);
  else data.train = load_dataset(c.data, enc, renderer.get(), dopt);
  for (const Example& e : data.train.examples)
    for (int32_t id : e.ids)
      FT_CHECK(id >= 0 && id < model.cfg.vocab_size, data.train.source, ": token id ", id, " from the tokenizer is outside the model's vocabulary (", model.cfg.vocab_size, "): tokenizer and model do not match");
  const int32_t pad = padding_id(enc);

  // The run's identity, recorded in every state; a resumed state must have the same.
  std::vector<std::string> data_files = {data.train.source};
  if (data.valid) data_files.push_back(data.valid->source);
  const json identity = {{"model", model_fingerprint(c.model, from_scratch)}, {"data", data_fingerprint(data_files)}, {"settings", given_settings}};
  check_ranks_agree(identity);  // every rank: rank 0's model, data and settings
  if (resuming) check_resume_identity(resume_path, resume_state, identity);
  const json run_info = resuming && resume_state.run.contains("id") ? resume_state.run : new_run_info();

  // Trainable parameters.
  std::vector<NamedParam> params;
  LoraConfig lc;
  if (full) {
    auto want = [&](const std::string& n) {
      for (auto& t : c.full_targets) if (t == "all" || n.find(t) != std::string::npos) return true;
      return false;
    };
    params = model.make_trainable(want);
    FT_CHECK(!params.empty(), "full fine-tuning: no weight matches full_targets");
  } else if (!c.resume_adapter.empty() && !resuming) {
    lc = load_adapter(c.resume_adapter, model, /*trainable=*/true);
    params = lora_parameters(model);
    c.lora_rank = lc.rank;
    c.lora_alpha = lc.alpha;
    c.rslora = lc.rslora;
    c.fine_tune_type = lc.dora ? FineTuneType::DoRA : FineTuneType::LoRA;
    std::cerr << "Starting from adapter " << c.resume_adapter << " (rank " << lc.rank << ", alpha " << lc.alpha << ")\n";
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
    params = attach_lora(model, lc);
  }
  if (!full && lc.base_model.empty()) lc.base_model = c.model;
  if (!full) lc.dropout = c.lora_dropout;
  if (!full)
    for (Projection* p : model.projections())
      if (p->lora) p->lora->dropout = float(c.lora_dropout);

  OptimizerConfig oc;
  oc.type = name_of(c.optimizer);
  oc.beta1 = float(c.beta1);
  oc.beta2 = float(c.beta2);
  oc.eps = float(c.eps);
  oc.weight_decay = float(c.weight_decay);
  oc.momentum = float(c.momentum);
  Optimizer opt(params, oc);

  BatchOptions bo;
  bo.batch_size = c.batch_size;
  bo.seed = c.seed;
  bo.shuffle = true;
  bo.group_by_length = c.group_by_length;
  bo.pack = c.pack;
  bo.max_seq_length = c.max_seq_length;
  BatchIterator it(data.train, bo, pad);
  const int64_t steps_per_epoch = std::max<int64_t>(1, it.batches_per_epoch() / c.grad_accumulation);
  const int64_t total = c.iters > 0 ? c.iters : c.epochs * steps_per_epoch;
  Schedule sched = make_schedule(c.lr_schedule, float(c.learning_rate), c.warmup_steps, total);

  // float16: autocast + dynamic loss scaling (optim/grad_scaler.h); float32/bfloat16: no scaling.
  std::optional<GradScaler> scaler;
  if (c.dtype == "float16") scaler.emplace(GradScalerConfig{c.loss_scale_init, 2.0, 0.5, c.loss_scale_growth_interval});

  int64_t step = 0;
  double last_val = -1, last_loss = 0;  // the last step's loss, the last validation loss and its step
  int64_t last_val_step = -1;
  global_rng() = {c.seed, 0};
  std::vector<std::pair<double, double>> hist_train, hist_val;
  double trained_tokens = 0;
  if (resuming) {
    for (auto& p : params) {
      auto f = resume_state.params.find(p.name);
      FT_CHECK(f != resume_state.params.end(), "training state lacks parameter '", p.name, "' (was it saved by another run?)");
      FT_CHECK(f->second.shape() == p.value.shape(), "training state parameter '", p.name, "' has shape ", f->second.shape_str(), ", expected ", p.value.shape_str());
      p.value.copy_(f->second);
    }
    opt.load_state(resume_state.optimizer, resume_state.optimizer_steps);
    step = resume_state.step;
    global_rng() = resume_state.rng;
    it.restore(resume_state.data);
    trained_tokens = resume_state.extra.value("trained_tokens", 0.0);
    const json& ex = resume_state.extra;
    const json th = ex.value("train_history", json::array()), vh = ex.value("val_history", json::array());
    last_loss = ex.contains("last_loss") ? ex["last_loss"].get<double>() : th.empty() ? 0.0 : th.back()[1].get<double>();
    last_val = ex.contains("last_val_loss") ? ex["last_val_loss"].get<double>() : vh.empty() ? -1.0 : vh.back()[1].get<double>();
    last_val_step = ex.contains("last_val_step") ? ex["last_val_step"].get<int64_t>() : vh.empty() ? -1 : int64_t(vh.back()[0].get<double>());
    if (scaler) {
      FT_CHECK(resume_state.extra.contains("grad_scaler"), "training state of a float16 run lacks its loss scale ('grad_scaler')");
      scaler->load_state(resume_state.extra["grad_scaler"]);
    }
    for (auto& p : resume_state.extra.value("train_history", json::array())) hist_train.push_back({p[0], p[1]});
    for (auto& p : resume_state.extra.value("val_history", json::array())) hist_val.push_back({p[0], p[1]});
  }

  int64_t n_trainable = 0;
  for (auto& p : params) n_trainable += p.value.numel();
  std::cerr << "Model " << c.model << " (" << model.cfg.model_type << ", " << model.checkpoint_parameters << " parameters, "
            << c.dtype << ")\n"
            << "Training " << (full ? "all chosen weights" : name_of(c.fine_tune_type)) << ": " << n_trainable << " trainable parameters ("
            << 100.0 * double(n_trainable) / double(std::max<int64_t>(model.checkpoint_parameters, 1)) << "%)\n"
            << "Data: " << data.train.size() << " training examples" << (data.valid ? cat(", ", data.valid->size(), " validation") : "")
            << "; " << it.batches_per_epoch() << " batches/epoch, padding " << 100.0 * it.padding_fraction() << "%\n"
            << "Steps: " << total << " (batch " << c.batch_size << " x accumulation " << c.grad_accumulation << ")\n";
  if (ranks > 1)
    std::cerr << "Data parallel: " << ranks << " ranks (MPI), " << c.batch_size / ranks << " rows of every micro-batch per rank, "
              << num_threads() << (num_threads() == 1 ? " thread" : " threads") << " per rank (rank 0's)\n";

  // Before the first save: one more training state and the adapter (or model) must fit on the disk.
  const bool already_done = resuming && step >= total;
  if (!already_done && lead) {
    uint64_t param_bytes = 0, moment_bytes = 0;
    for (auto& p : params) param_bytes += uint64_t(p.value.numel()) * 4;
    for (auto& [n, t] : opt.state()) moment_bytes += uint64_t(t.numel()) * 4;
    const uint64_t meta = (uint64_t(1) << 20) + identity.dump().size();  // HDF5 structure, JSON attributes
    const uint64_t out = full ? uint64_t(model.checkpoint_parameters) * (c.save_dtype == "float32" || (c.save_dtype.empty() && base_dtype_name(model) == "float32") ? 4 : 2) + (uint64_t(1) << 20)
                              : param_bytes + (uint64_t(64) << 10);
    check_free_space(c.adapter_path, param_bytes + moment_bytes + meta, out);
  }
  std::ofstream metrics;
  if (!c.metrics_file.empty() && lead) {
    metrics.open(c.metrics_file, resuming ? std::ios::app : std::ios::trunc);
    FT_CHECK(metrics.good(), "cannot write metrics file '", c.metrics_file, "'");
  }
  auto emit = [&](const json& j) {
    if (metrics.is_open()) { metrics << j.dump() << "\n"; metrics.flush(); }
  };

  ForwardOptions fo;
  fo.training = true;
  fo.checkpoint_every = c.grad_checkpoint ? c.checkpoint_every : 0;
  fo.checkpoint_keep_qkv = c.checkpoint_policy == CheckpointPolicy::Selective;

  auto save_adapter = [&]() {
    if (full) export_model(model, c.adapter_path, ExportOptions{c.save_dtype.empty() ? base_dtype_name(model) : c.save_dtype});
    else save_peft_adapter(c.adapter_path, model, lc);
    write_loss_svg((fs::path(c.adapter_path) / "loss.svg").string(), hist_train, hist_val);
  };
  ProgressBar bar(total, c.progress);
  auto progress_log = [&](const std::string& line) { bar.log(line); };
  std::vector<std::pair<int64_t, std::string>> my_states;
  if (resuming) my_states = states_of_run(c.adapter_path, resume_state.run, resume_state.run.empty());
  // Every save: all ranks must hold bitwise the same weights and optimiser state (checked by hash).
  // FT_DEBUG_RANK_HASHES=DIR: each rank also writes DIR/rank-R.txt ("step hash" lines; tests).
  const char* hash_dir = std::getenv("FT_DEBUG_RANK_HASHES");
  auto save_state = [&]() {
    if (ranks > 1 || (hash_dir && *hash_dir)) {
      const std::string h = training_hash(params, opt.state());
      if (hash_dir && *hash_dir) std::ofstream(fs::path(hash_dir) / cat("rank-", dist::rank(), ".txt"), std::ios::app) << step << " " << h << "\n";
      check_ranks_in_step(h, step);
    }
    if (!lead) return;
    TrainingState st;
    st.step = step;
    st.optimizer_steps = opt.steps();
    st.rng = global_rng();
    for (auto& p : params) st.params[p.name] = p.value;
    st.optimizer = opt.state();
    st.settings = c.to_json();
    st.data = it.state();
    json th = json::array(), vh = json::array();
    for (auto& [x, y] : hist_train) th.push_back({x, y});
    for (auto& [x, y] : hist_val) vh.push_back({x, y});
    st.extra = {{"trained_tokens", trained_tokens}, {"train_history", th}, {"val_history", vh}};
    if (scaler) st.extra["grad_scaler"] = scaler->state();
    st.extra["last_loss"] = last_loss;
    st.extra["last_val_loss"] = last_val;
    st.extra["last_val_step"] = last_val_step;
    st.run = run_info;
    st.identity = identity;
    // The state first: an adapter is only ever replaced once the state of its step is safe on disk.
    const std::string path = (fs::path(c.adapter_path) / state_name(step)).string();
    save_training_state(path, st);
    save_adapter();
    // Keep this run's two newest states (another run's are not this run's to rotate).
    my_states.erase(std::remove_if(my_states.begin(), my_states.end(), [&](auto& s) { return s.second == path; }), my_states.end());
    my_states.push_back({step, path});
    std::sort(my_states.begin(), my_states.end());
    while (my_states.size() > 2) {
      std::error_code ec;
      fs::remove(my_states.front().second, ec);
      my_states.erase(my_states.begin());
    }
    if (!old_run.empty()) {
      const int n = old_run.remove_unreplaced();
      progress_log(cat("--overwrite: this run's first state is saved; removed ", n, " file(s) of the earlier run in ", c.adapter_path));
    }
  };

  auto show_sample = [&](const char* when) {
    if (c.sample_prompt.empty() || !lead) return;
    std::string t = sample_text(model, tok, c.sample_prompt, c.sample_max_tokens);
    std::cout << "---- sample " << when << " ----\n" << c.sample_prompt << t << "\n---------------------------\n" << std::flush;
  };
  if (!resuming || step == 0) show_sample("before training");

  TrainResult res;
  if (already_done) {
    std::cerr << "Nothing to train: " << resume_path << " is at step " << step << ", at or past the " << total
              << " steps this run asks for (" << (c.iters > 0 ? cat("--iters ", c.iters) : cat("--epochs ", c.epochs))
              << "). To train further, raise --iters above " << step << ".\n";
    if (lead) save_adapter();  // that step's adapter (a crash between saving the state and the adapter leaves an older one)
  }
  double window_loss = 0, window_targets = 0, window_tokens = 0, window_time = 0;
  int64_t window_act = 0;  // peak activation bytes of the steps since the last report
  bool memory_reported = false;
  auto mib = [](int64_t bytes) { return (bytes + 524288) / 1048576; };
  train_stop_flag() = false;
  while (step < total) {
    AutocastF16Guard autocast(scaler.has_value());  // forward, backward and validation of this step
    AutocastBF16Guard autocast_bf(c.dtype == "bfloat16");  // bf16 matmul inputs (autograd/ops.h)
    const float loss_scale = scaler ? scaler->scale() : 1.f;
    double t0 = now_s();
    std::vector<Batch> micro(size_t(c.grad_accumulation));
    int64_t n_targets = 0, n_tokens = 0;
    for (auto& b : micro) {
      if (!it.next(b)) FT_CHECK(false, "internal: the data iterator ran dry");
      n_targets += b.n_targets;
      n_tokens += b.B * b.T;
    }
    {
      FT_PROFILE_PHASE("optimizer");
      opt.zero_grad();
    }
    // Activation memory: everything the step allocates on top of what lives across steps (weights,
    // trainable weights, optimiser state), at its peak during forward + backward.
    const int64_t mem_before = memory_stats().current;
    reset_peak_memory();
    double loss_sum = 0, my_targets = 0;
    for (auto& b : micro) {
      if (b.n_targets == 0) continue;
      Batch part;
      if (ranks > 1) {  // this rank's rows; their dropout masks are those of the whole batch's rows
        auto [lo, hi] = rank_rows(b.B);
        part = slice_rows(b, lo, hi);
        dropout_row_base() = lo;
      }
      const Batch& mine = ranks > 1 ? part : b;
      if (mine.n_targets > 0) {
        Tensor ls = batch_loss_sum(model, mine, c.pack, fo);
        loss_sum += double(ls.item());
        my_targets += double(mine.n_targets);
        FT_PROFILE_PHASE("backward");
        // Normalised by the supervised tokens of the whole global batch (every rank sees all of it).
        scale(ls, loss_scale * (1.f / float(std::max<int64_t>(n_targets, 1)))).backward();
      }
      if (ranks > 1) {
        dropout_row_base() = 0;
        sync_dropout_stream();
      }
    }
    if (ranks > 1) {  // one all-reduce of the gradients per optimiser step (bucketed), and of the loss
      FT_PROFILE_PHASE("allreduce");
      allreduce_grads(params);
      double sums[2] = {loss_sum, my_targets};
      dist::allreduce_sum(sums, 2);
      loss_sum = sums[0];
      // The supervised tokens the ranks computed are those of the whole global batch, which every
      // rank normalised its loss by (n_targets: each rank iterates the whole global batch).
      FT_CHECK(int64_t(sums[1]) == n_targets, "internal: the ranks computed ", int64_t(sums[1]), " supervised tokens of a global batch of ", n_targets);
    }
    const int64_t act_bytes = memory_stats().peak - mem_before;
    window_act = std::max(window_act, act_bytes);
    if (!memory_reported) {
      memory_reported = true;
      int64_t trainable_bytes = 0;
      for (auto& p : params) trainable_bytes += int64_t(p.value.nbytes());
      const std::string line = cat("Memory: weights ", mib(model.weight_bytes()), " MB (", c.dtype, "), trainable weights + gradients + ", name_of(c.optimizer),
                  " state ", mib(trainable_bytes * (c.optimizer == OptimizerType::AdamW ? 4 : c.momentum > 0 ? 3 : 2)), " MB, activations ", mib(act_bytes), " MB (peak of step ",
                  step + 1, ", ", c.grad_checkpoint ? cat(name_of(c.checkpoint_policy), " checkpointing every ", c.checkpoint_every, " block(s)") : std::string("no checkpointing"),
                  "), process peak RSS ", mib(peak_rss_bytes()), " MB");
      if (c.progress) bar.log(line);  // like the header lines, also without the progress display
      else std::cerr << line << "\n";
    }
    double loss = n_targets ? loss_sum / double(n_targets) : 0.0;
    // float16: an inf/NaN among the scaled gradients skips the step (a non-finite loss still stops).
    const bool skip = scaler && std::isfinite(loss) && scaler->unscale(params);
    double gnorm = c.max_grad_norm > 0 && !skip ? clip_grad_norm(params, c.max_grad_norm) : 0.0;
    if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
      bar.finish();
      std::string last = newest_state(c.adapter_path);
      throw Error(cat("the loss became ", std::isfinite(loss) ? "finite but the gradient norm became " : "", std::isfinite(loss) ? gnorm : loss,
                      " at step ", step + 1, "; stopping. ", last.empty() ? "No training state was saved yet." : "The last good state is " + last + " (resume with --resume)",
                      ". Try a lower --learning-rate or --max-grad-norm 1."));
    }
    float lr = sched.at(step);
    if (!skip) {
      FT_PROFILE_PHASE("optimizer");
      opt.step(lr);
    }
    if (scaler) {
      scaler->update(skip);
      FT_CHECK(scaler->scale() >= 1.17549435e-38f, "the float16 gradients overflowed at every loss scale down to ", scaler->scale(),
               " (step ", step + 1, ", ", scaler->skipped_steps(), " steps skipped): the model overflows float16; train with --dtype bfloat16 or float32");
    }
    ++step;
    double dt = now_s() - t0;
    trained_tokens += double(n_tokens);
    window_loss += loss_sum;
    window_targets += double(n_targets);
    window_tokens += double(n_tokens);
    window_time += dt;
    last_loss = loss;
    bar.update(step, loss, lr, window_time > 0 ? window_tokens / window_time : 0, peak_rss_bytes());

    if (step % c.steps_per_report == 0 || step == total) {
      double l = window_targets > 0 ? window_loss / window_targets : loss;
      double tps = window_time > 0 ? window_tokens / window_time : 0;
      hist_train.push_back({double(step), l});
      json rec = {{"step", step}, {"loss", l}, {"learning_rate", lr}, {"tokens_per_second", tps}, {"trained_tokens", trained_tokens},
                  {"peak_memory_mb", double(peak_rss_bytes()) / 1048576.0},
                  {"activation_memory_mb", double(window_act) / 1048576.0}, {"weight_memory_mb", double(model.weight_bytes()) / 1048576.0},
                  {"grad_norm", gnorm}, {"cpu_seconds", cpu_s()}};
      if (scaler) {
        rec["loss_scale"] = scaler->scale();
        rec["skipped_steps"] = scaler->skipped_steps();
      }
      emit(rec);
      bar.log(cat("step ", step, ": loss ", l, ", lr ", lr, ", ", int64_t(tps), " tok/s, peak ", peak_rss_bytes() / 1048576, " MB",
                  scaler ? cat(", loss scale ", scaler->scale(), " (", scaler->skipped_steps(), " steps skipped)") : std::string()));
      res.tokens_per_second = tps;
      window_loss = window_targets = window_tokens = window_time = 0;
      window_act = 0;
    }
    if (data.valid && c.steps_per_eval > 0 && (step % c.steps_per_eval == 0 || step == total)) {
      double t1 = now_s();
      auto [vl, vn] = evaluate_loss_ranks(model, *data.valid, c.batch_size, pad, c.val_batches);
      last_val = vl;
      last_val_step = step;
      hist_val.push_back({double(step), vl});
      emit({{"step", step}, {"val_loss", vl}, {"val_tokens", vn}, {"val_time", now_s() - t1}});
      bar.log(cat("step ", step, ": validation loss ", vl, " (", vn, " tokens)"));
    }
    uint64_t stop_any = train_stop_flag().load() || (c.should_stop && c.should_stop()) ? 1 : 0;
    dist::allreduce_max(&stop_any, 1);  // Ctrl-C on any rank: all save (rank 0 writes) and stop together
    const bool stop = stop_any != 0;
    if ((c.save_every > 0 && step % c.save_every == 0) || stop || step == total) save_state();
    if (stop) {
      bar.finish();
      std::cerr << "Interrupted: saved the adapter and training state at step " << step << " in " << c.adapter_path
                << " (continue with --resume)\n";
      res.interrupted = true;
      break;
    }
  }
  bar.finish();
  if (!res.interrupted) {
    show_sample("after training");
    if (!c.merged_path.empty() && lead) {
      FT_CHECK(!full, "merged_path is for adapters; full fine-tuning already writes the whole model to adapter_path");
      // A quantized base: re-quantized with its settings (mlx-lm's fuse), unless save_dtype asks for floats.
      const bool requant = model.quantized() && c.save_dtype.empty();
      std::string dt = c.save_dtype.empty() ? (requant ? "" : base_dtype_name(model)) : c.save_dtype;
      merge_lora(model, DType::F32, requant);
      export_model(model, c.merged_path, ExportOptions{dt});
      std::cerr << "Merged model (" << (requant ? "quantized" : dt) << ") written to " << c.merged_path << "\n";
    }
  }
  res.steps = step;
  res.requested_steps = total;
  res.already_done = already_done;
  res.final_loss = last_loss;
  res.final_val_loss = last_val;
  res.final_val_step = last_val_step;
  res.adapter_path = c.adapter_path;
  return res;
}

}  // namespace ft
