#include "optim/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

#include <sys/resource.h>

#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/quant.h"
#include "autograd/random.h"
#include "data/batching.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "lora/adapter.h"
#include "models/export.h"
#include "models/generate.h"
#include "models/loss.h"
#include "models/model.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "optim/progress.h"
#include "optim/state.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::atomic<bool>& train_stop_flag() {
  static std::atomic<bool> f{false};
  return f;
}

// ---- configuration ------------------------------------------------------------------------------

namespace {
std::string norm_key(std::string k) {
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}
bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  throw Error(cat("option '", key, "' expects true or false, got '", v, "'"));
}
int64_t parse_int(const std::string& key, const std::string& v) {
  try {
    size_t n = 0;
    long long x = std::stoll(v, &n);
    if (n == v.size()) return x;
  } catch (...) {}
  throw Error(cat("option '", key, "' expects an integer, got '", v, "'"));
}
double parse_num(const std::string& key, const std::string& v) {
  try {
    size_t n = 0;
    double x = std::stod(v, &n);
    if (n == v.size() && std::isfinite(x)) return x;
  } catch (...) {}
  throw Error(cat("option '", key, "' expects a number, got '", v, "'"));
}
std::vector<std::string> parse_list(const std::string& v) {
  std::vector<std::string> r;
  std::string cur;
  for (char c : v) {
    if (c == ',' || c == ' ' || c == '[' || c == ']' || c == '"' || c == '\'') {
      if (!cur.empty()) r.push_back(cur), cur.clear();
    } else cur += c;
  }
  if (!cur.empty()) r.push_back(cur);
  return r;
}
}  // namespace

#define FT_TRAIN_KEYS(X)                                                                          \
  X(model, str) X(data, str) X(adapter_path, str) X(resume_adapter, str) X(resume, bool)           \
  X(fine_tune_type, str) X(lora_rank, int) X(lora_alpha, num) X(lora_dropout, num) X(rslora, bool) \
  X(lora_targets, list) X(lora_init, str) X(num_layers, int) X(full_targets, list)                 \
  X(optimizer, str) X(learning_rate, num) X(weight_decay, num) X(momentum, num) X(beta1, num)      \
  X(beta2, num) X(eps, num) X(lr_schedule, str) X(warmup_steps, int) X(max_grad_norm, num)         \
  X(iters, int) X(epochs, int) X(batch_size, int) X(grad_accumulation, int) X(max_seq_length, int) \
  X(mask_prompt, bool) X(pack, bool) X(group_by_length, bool) X(use_chat_template, bool)           \
  X(seed, int) X(dtype, str) X(loss_scale_init, num) X(loss_scale_growth_interval, int)            \
  X(grad_checkpoint, bool) X(checkpoint_every, int) X(checkpoint_policy, str)                       \
  X(steps_per_report, int) X(steps_per_eval, int) X(val_batches, int) X(save_every, int)           \
  X(metrics_file, str) X(progress, bool) X(sample_prompt, str) X(sample_max_tokens, int) X(merged_path, str)       \
  X(save_dtype, str) X(quantize, int) X(group_size, int)

std::vector<std::string> TrainConfig::keys() {
  std::vector<std::string> k;
#define X(name, kind) k.push_back(#name);
  FT_TRAIN_KEYS(X)
#undef X
  return k;
}

json TrainConfig::to_json() const {
  json j;
#define X(name, kind) j[#name] = name;
  FT_TRAIN_KEYS(X)
#undef X
  return j;
}

void TrainConfig::set(const std::string& key_in, const std::string& v) {
  std::string key = norm_key(key_in);
#define str_set(name) name = v;
#define bool_set(name) name = parse_bool(#name, v);
#define int_set(name) name = decltype(name)(parse_int(#name, v));
#define num_set(name) name = parse_num(#name, v);
#define list_set(name) name = parse_list(v);
#define X(name, kind) if (key == #name) { kind##_set(name) return; }
  FT_TRAIN_KEYS(X)
#undef X
#undef str_set
#undef bool_set
#undef int_set
#undef num_set
#undef list_set
  std::string all;
  for (auto& k : keys()) all += (all.empty() ? "" : ", ") + k;
  throw Error(cat("unknown training option '", key_in, "'. Known options: ", all));
}

void TrainConfig::set_json(const std::string& key, const json& v) {
  if (v.is_string()) return set(key, v.get<std::string>());
  if (v.is_boolean()) return set(key, v.get<bool>() ? "true" : "false");
  if (v.is_number_integer()) return set(key, std::to_string(v.get<int64_t>()));
  if (v.is_number()) {
    std::ostringstream s;
    s.precision(17);
    s << v.get<double>();
    return set(key, s.str());
  }
  if (v.is_array()) {
    std::string s;
    for (auto& x : v) {
      FT_CHECK(x.is_string() || x.is_number(), "option '", key, "': list entries must be strings or numbers");
      s += (s.empty() ? "" : ",") + (x.is_string() ? x.get<std::string>() : x.dump());
    }
    return set(key, s);
  }
  if (v.is_null()) return;
  throw Error(cat("option '", key, "' has an unsupported value ", v.dump()));
}

void TrainConfig::validate() const {
  FT_CHECK(!model.empty(), "no model given: pass --model DIR (a HuggingFace model directory) or set 'model' in the recipe");
  FT_CHECK(!data.empty(), "no data given: pass --data PATH (a directory with train.jsonl, or a .jsonl file)");
  FT_CHECK(fine_tune_type == "lora" || fine_tune_type == "dora" || fine_tune_type == "full", "fine_tune_type must be lora, dora or full, got '", fine_tune_type, "'");
  FT_CHECK(optimizer == "adamw" || optimizer == "sgd", "optimizer must be adamw or sgd, got '", optimizer, "'");
  FT_CHECK(lr_schedule == "constant" || lr_schedule == "linear" || lr_schedule == "cosine", "lr_schedule must be constant, linear or cosine, got '", lr_schedule, "'");
  FT_CHECK(dtype == "float32" || dtype == "bfloat16" || dtype == "float16", "dtype must be float32, bfloat16 or float16, got '", dtype, "'");
  FT_CHECK(loss_scale_init > 0 && loss_scale_init <= 3.4e38, "loss_scale_init must be > 0 and a float32 (<= 3.4e38), got ", loss_scale_init);
  FT_CHECK(loss_scale_growth_interval > 0, "loss_scale_growth_interval must be > 0, got ", loss_scale_growth_interval);
  FT_CHECK(lora_rank > 0, "lora_rank must be > 0, got ", lora_rank);
  FT_CHECK(lora_dropout >= 0 && lora_dropout < 1, "lora_dropout must be in [0, 1), got ", lora_dropout);
  FT_CHECK(learning_rate >= 0, "learning_rate must be >= 0, got ", learning_rate);
  FT_CHECK(batch_size > 0, "batch_size must be > 0, got ", batch_size);
  FT_CHECK(grad_accumulation > 0, "grad_accumulation must be > 0, got ", grad_accumulation);
  FT_CHECK(max_seq_length > 1, "max_seq_length must be > 1, got ", max_seq_length);
  FT_CHECK(iters > 0 || epochs > 0, "set the training length with --iters N or --epochs N");
  FT_CHECK(iters >= 0 && epochs >= 0, "iters and epochs must be >= 0");
  FT_CHECK(steps_per_report > 0, "steps_per_report must be > 0");
  FT_CHECK(steps_per_eval >= 0 && save_every >= 0 && val_batches >= 0, "steps_per_eval, save_every and val_batches must be >= 0");
  FT_CHECK(checkpoint_every > 0, "checkpoint_every must be > 0");
  FT_CHECK(checkpoint_policy == "selective" || checkpoint_policy == "full",
           "checkpoint_policy must be selective (keep q/k/v, faster) or full (keep only block inputs, least memory), "
           "got '", checkpoint_policy, "'");
  FT_CHECK(max_grad_norm >= 0, "max_grad_norm must be >= 0 (0 = off)");
  FT_CHECK(quantize == 0 || quantize == 2 || quantize == 3 || quantize == 4 || quantize == 5 || quantize == 6 || quantize == 8,
           "quantize must be 4 or 8 (2, 3, 5, 6 also work; 0 = off), got ", quantize);
  FT_CHECK(group_size == 32 || group_size == 64 || group_size == 128, "group_size must be 32, 64 or 128, got ", group_size);
  FT_CHECK(quantize == 0 || fine_tune_type != "full", "full fine-tuning of a quantized base is not possible (quantized weights are frozen): "
           "train a LoRA/DoRA adapter on it (fine_tune_type lora or dora), or drop quantize");
  FT_CHECK(save_dtype.empty() || save_dtype == "float32" || save_dtype == "bfloat16" || save_dtype == "float16",
           "save_dtype must be float32, bfloat16 or float16, got '", save_dtype, "'");
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
  const bool full = c.fine_tune_type == "full";

  // Resume: the newest complete state decides the settings that shape the run.
  TrainingState resume_state;
  bool resuming = false;
  if (c.resume) {
    std::string st = newest_state(c.adapter_path);
    if (st.empty()) {
      std::cerr << "note: --resume: no training state in " << c.adapter_path << ", starting from scratch\n";
    } else {
      resume_state = load_training_state(st);
      resuming = true;
      std::cerr << "Resuming from " << st << " (step " << resume_state.step << ")\n";
      // The run's settings come from the state; only progress/report knobs may change.
      json saved = resume_state.settings;
      for (auto& [k, v] : saved.items())
        if (k != "progress" && k != "metrics_file" && k != "resume" && k != "iters" && k != "steps_per_report") c.set_json(k, v);
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
  Tokenizer tok = Tokenizer::from_dir(c.model);
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
    c.fine_tune_type = lc.dora ? "dora" : "lora";
    std::cerr << "Starting from adapter " << c.resume_adapter << " (rank " << lc.rank << ", alpha " << lc.alpha << ")\n";
  } else {
    lc.rank = c.lora_rank;
    lc.alpha = c.lora_alpha;
    lc.dropout = c.lora_dropout;
    lc.rslora = c.rslora;
    lc.dora = c.fine_tune_type == "dora";
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
  oc.type = c.optimizer;
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
            << "Training " << (full ? "all chosen weights" : c.fine_tune_type) << ": " << n_trainable << " trainable parameters ("
            << 100.0 * double(n_trainable) / double(std::max<int64_t>(model.checkpoint_parameters, 1)) << "%)\n"
            << "Data: " << data.train.size() << " training examples" << (data.valid ? cat(", ", data.valid->size(), " validation") : "")
            << "; " << it.batches_per_epoch() << " batches/epoch, padding " << 100.0 * it.padding_fraction() << "%\n"
            << "Steps: " << total << " (batch " << c.batch_size << " x accumulation " << c.grad_accumulation << ")\n";

  // Everything is validated (data, model, adapter): only now create the output directory, so a run
  // that fails on bad input leaves nothing behind.
  fs::create_directories(c.adapter_path);
  std::ofstream metrics;
  if (!c.metrics_file.empty()) {
    metrics.open(c.metrics_file, resuming ? std::ios::app : std::ios::trunc);
    FT_CHECK(metrics.good(), "cannot write metrics file '", c.metrics_file, "'");
  }
  auto emit = [&](const json& j) {
    if (metrics.is_open()) { metrics << j.dump() << "\n"; metrics.flush(); }
  };

  ForwardOptions fo;
  fo.training = true;
  fo.checkpoint_every = c.grad_checkpoint ? c.checkpoint_every : 0;
  fo.checkpoint_keep_qkv = c.checkpoint_policy == "selective";

  auto save_adapter = [&]() {
    if (full) export_model(model, c.adapter_path, ExportOptions{c.save_dtype.empty() ? base_dtype_name(model) : c.save_dtype});
    else save_peft_adapter(c.adapter_path, model, lc);
    write_loss_svg((fs::path(c.adapter_path) / "loss.svg").string(), hist_train, hist_val);
  };
  auto save_state = [&]() {
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
    save_adapter();
    save_training_state((fs::path(c.adapter_path) / state_name(step)).string(), st);
    // Keep the two newest states.
    std::vector<std::string> states;
    for (auto& e : fs::directory_iterator(c.adapter_path)) {
      std::string n = e.path().filename().string();
      if (n.rfind("state-", 0) == 0 && n.size() > 3 && n.substr(n.size() - 3) == ".h5") states.push_back(e.path().string());
    }
    std::sort(states.begin(), states.end());
    for (size_t i = 0; i + 2 < states.size(); ++i) fs::remove(states[i]);
  };

  auto show_sample = [&](const char* when) {
    if (c.sample_prompt.empty()) return;
    std::string t = sample_text(model, tok, c.sample_prompt, c.sample_max_tokens);
    std::cout << "---- sample " << when << " ----\n" << c.sample_prompt << t << "\n---------------------------\n" << std::flush;
  };
  if (!resuming || step == 0) show_sample("before training");

  ProgressBar bar(total, c.progress);
  TrainResult res;
  double window_loss = 0, window_targets = 0, window_tokens = 0, window_time = 0;
  double last_val = -1, last_loss = 0;
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
    double loss_sum = 0;
    for (auto& b : micro) {
      if (b.n_targets == 0) continue;
      Tensor ls = batch_loss_sum(model, b, c.pack, fo);
      loss_sum += double(ls.item());
      FT_PROFILE_PHASE("backward");
      scale(ls, loss_scale * (1.f / float(std::max<int64_t>(n_targets, 1)))).backward();
    }
    const int64_t act_bytes = memory_stats().peak - mem_before;
    window_act = std::max(window_act, act_bytes);
    if (!memory_reported) {
      memory_reported = true;
      int64_t trainable_bytes = 0;
      for (auto& p : params) trainable_bytes += int64_t(p.value.nbytes());
      const std::string line = cat("Memory: weights ", mib(model.weight_bytes()), " MB (", c.dtype, "), trainable weights + gradients + ", c.optimizer,
                  " state ", mib(trainable_bytes * (c.optimizer == "adamw" ? 4 : c.momentum > 0 ? 3 : 2)), " MB, activations ", mib(act_bytes), " MB (peak of step ",
                  step + 1, ", ", c.grad_checkpoint ? cat(c.checkpoint_policy, " checkpointing every ", c.checkpoint_every, " block(s)") : std::string("no checkpointing"),
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
      auto [vl, vn] = evaluate_loss(model, *data.valid, c.batch_size, pad, c.val_batches);
      last_val = vl;
      hist_val.push_back({double(step), vl});
      emit({{"step", step}, {"val_loss", vl}, {"val_tokens", vn}, {"val_time", now_s() - t1}});
      bar.log(cat("step ", step, ": validation loss ", vl, " (", vn, " tokens)"));
    }
    bool stop = train_stop_flag().load() || (c.should_stop && c.should_stop());
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
    if (!c.merged_path.empty()) {
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
  res.final_loss = last_loss;
  res.final_val_loss = last_val;
  res.adapter_path = c.adapter_path;
  return res;
}

}  // namespace ft
