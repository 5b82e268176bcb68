#include "lora/adapter.h"

#include "autograd/quant.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "autograd/gemm.h"
#include "autograd/file_io.h"
#include "autograd/json_file.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "models/safetensors.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;

double LoraConfig::scaling_for(int64_t r, double a) const { return rslora ? a / std::sqrt(double(r)) : a / double(r); }

std::vector<int64_t> last_layers(int64_t total, int64_t n) {
  std::vector<int64_t> r;
  if (n <= 0 || n >= total) return r;  // empty = all
  for (int64_t i = total - n; i < total; ++i) r.push_back(i);
  return r;
}

namespace {

const std::string kPeftPrefix = "base_model.model.";

// Layer index of a module path "...layers.N....", or -1.
int64_t layer_of(const std::string& name) {
  auto p = name.find("layers.");
  if (p == std::string::npos) return -1;
  p += 7;
  int64_t v = 0;
  bool any = false;
  while (p < name.size() && std::isdigit(static_cast<unsigned char>(name[p]))) { v = v * 10 + (name[p++] - '0'); any = true; }
  return any ? v : -1;
}

bool ends_with_component(const std::string& name, const std::string& key) {
  return name == key || (name.size() > key.size() && name.compare(name.size() - key.size(), key.size(), key) == 0 &&
                         name[name.size() - key.size() - 1] == '.');
}

bool targeted(const LoraConfig& c, const std::string& name) {
  if (!c.target_regex.empty()) return std::regex_match(name, std::regex(c.target_regex));
  for (const auto& t : c.targets)
    if (t == "all-linear" || ends_with_component(name, t)) return true;
  return false;
}

template <class V>
V pattern_value(const std::map<std::string, V>& pat, const std::string& name, V dflt) {
  for (const auto& [k, v] : pat)
    if (std::regex_match(name, std::regex("(.*\\.)?(" + k + ")"))) return v;
  return dflt;
}

std::string short_name(const std::string& module) {
  auto p = module.rfind('.');
  return p == std::string::npos ? module : module.substr(p + 1);
}

// Row norms of W + s·B·A (float32) [out].
Tensor dora_weight_norm(const Projection& p, const LoraAdapter& l) {
  NoGradGuard ng;
  Tensor w = p.weight.to(DType::F32).clone();
  sgemm(false, false, w.size(0), w.size(1), l.rank(), l.scaling, l.B.data<float>(), l.rank(), l.A.data<float>(), w.size(1), 1.f,
        w.data<float>(), w.size(1));
  Tensor n = Tensor::empty({w.size(0)});
  const float* pw = w.data<float>();
  for (int64_t o = 0; o < w.size(0); ++o) {
    double s = 0;
    for (int64_t i = 0; i < w.size(1); ++i) s += double(pw[o * w.size(1) + i]) * pw[o * w.size(1) + i];
    n.data<float>()[o] = float(std::sqrt(s));
  }
  return n;
}

std::map<std::string, Projection*> projection_map(Model& m) {
  std::map<std::string, Projection*> r;
  for (Projection* p : m.projections()) r[p->name] = p;
  return r;
}

std::string module_list(Model& m) {
  std::set<std::string> s;
  for (Projection* p : m.projections()) s.insert(short_name(p->name));
  std::string r;
  for (auto& x : s) r += (r.empty() ? "" : ", ") + x;
  return r;
}

}  // namespace

std::vector<NamedParam> attach_lora(Model& model, const LoraConfig& c) {
  FT_CHECK(c.rank > 0, "LoRA rank must be > 0, got ", c.rank);
  FT_CHECK(c.dropout >= 0 && c.dropout < 1, "LoRA dropout must be in [0, 1), got ", c.dropout);
  FT_CHECK(c.init == "default" || c.init == "gaussian", "unknown LoRA init '", c.init, "' (use default or gaussian)");
  for (int64_t l : c.layers)
    FT_CHECK(l >= 0 && l < model.cfg.num_layers, "LoRA layer ", l, " does not exist (the model has ", model.cfg.num_layers, " layers)");
  detach_lora(model);
  uint64_t idx = 0;
  for (Projection* p : model.projections()) {
    ++idx;
    int64_t layer = layer_of(p->name);
    if (!c.layers.empty() && std::find(c.layers.begin(), c.layers.end(), layer) == c.layers.end()) continue;
    if (!targeted(c, p->name)) continue;
    int64_t r = pattern_value(c.rank_pattern, p->name, c.rank);
    double a = pattern_value(c.alpha_pattern, p->name, c.alpha);
    auto l = std::make_shared<LoraAdapter>();
    int64_t in = p->in_features(), out = p->out_features();
    uint64_t seed = hash2(c.seed, idx);
    if (c.init == "default") {
      float bound = float(1.0 / std::sqrt(double(in)));  // kaiming_uniform_(a=sqrt(5)) on [r, in]
      l->A = Tensor::uniform({r, in}, seed, -bound, bound);
    } else {
      l->A = Tensor::randn({r, in}, seed, float(1.0 / double(r)));
    }
    l->B = Tensor::zeros({out, r});
    l->scaling = float(c.scaling_for(r, a));
    l->dropout = float(c.dropout);
    if (c.dora) l->magnitude = dora_weight_norm(*p, *l);
    l->A.set_requires_grad(true);
    l->B.set_requires_grad(true);
    if (l->magnitude.defined()) l->magnitude.set_requires_grad(true);
    p->lora = l;
  }
  auto params = lora_parameters(model);
  FT_CHECK(!params.empty(), "no projection matches the LoRA targets (",
           c.target_regex.empty() ? [&] { std::string s; for (auto& t : c.targets) s += (s.empty() ? "" : ", ") + t; return s; }() : c.target_regex,
           c.layers.empty() ? "" : " in the chosen layers", "); the model's projections are: ", module_list(model));
  return params;
}

std::vector<NamedParam> lora_parameters(Model& model) {
  std::vector<NamedParam> r;
  for (Projection* p : model.projections()) {
    if (!p->lora) continue;
    std::string base = kPeftPrefix + p->name;
    r.push_back({base + ".lora_A.weight", p->lora->A});
    r.push_back({base + ".lora_B.weight", p->lora->B});
    if (p->lora->magnitude.defined()) r.push_back({base + ".lora_magnitude_vector", p->lora->magnitude});
  }
  return r;
}

void detach_lora(Model& model) {
  for (Projection* p : model.projections()) p->lora.reset();
}

// ---- PEFT ---------------------------------------------------------------------------------------

void save_peft_adapter(const std::string& dir, Model& model, const LoraConfig& c) {
  fs::create_directories(dir);
  std::set<std::string> names;
  std::vector<NamedParam> params = lora_parameters(model);
  FT_CHECK(!params.empty(), "save_peft_adapter: the model has no adapters");
  std::vector<Tensor> keep;
  std::vector<TensorRecord> recs;
  for (auto& p : params) {
    Tensor t = p.value.detach().contiguous();
    keep.push_back(t);
    recs.push_back(TensorRecord::view(p.name, DType::F32, t.shape(), t.raw()));
  }
  for (Projection* p : model.projections())
    if (p->lora) names.insert(short_name(p->name));
  json j = {{"peft_type", "LORA"},
            {"task_type", "CAUSAL_LM"},
            {"r", c.rank},
            {"lora_alpha", c.alpha},
            {"lora_dropout", c.dropout},
            {"target_modules", std::vector<std::string>(names.begin(), names.end())},
            {"bias", "none"},
            {"use_rslora", c.rslora},
            {"use_dora", c.dora},
            {"fan_in_fan_out", false},
            {"init_lora_weights", c.init == "gaussian" ? json("gaussian") : json(true)},
            {"inference_mode", true},
            {"modules_to_save", nullptr},
            {"layers_to_transform", c.layers.empty() ? json(nullptr) : json(c.layers)},
            {"layers_pattern", nullptr},
            {"rank_pattern", json(c.rank_pattern)},
            {"alpha_pattern", json(c.alpha_pattern)},
            {"base_model_name_or_path", c.base_model.empty() ? json(nullptr) : json(c.base_model)},
            {"revision", nullptr}};
  write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), recs, {{"format", "pt"}});
  write_file_atomic((fs::path(dir) / "adapter_config.json").string(), j.dump(2) + "\n");
}

LoraConfig parse_peft_config(const json& j, const std::string& src) {
  FT_CHECK(j.is_object(), src, ": must be a JSON object");
  LoraConfig c;
  auto get_num = [&](const char* k, double dflt) -> double {
    if (!j.contains(k) || j[k].is_null()) return dflt;
    FT_CHECK(j[k].is_number(), src, ": key '", k, "' must be a number, got ", j[k].type_name());
    return j[k].get<double>();
  };
  auto get_bool = [&](const char* k) -> bool {
    if (!j.contains(k) || j[k].is_null()) return false;
    FT_CHECK(j[k].is_boolean(), src, ": key '", k, "' must be true or false, got ", j[k].type_name());
    return j[k].get<bool>();
  };
  std::string pt = j.value("peft_type", "LORA");
  FT_CHECK(pt == "LORA", src, ": peft_type '", pt, "' is not supported (ft reads LORA adapters, DoRA included)");
  FT_CHECK(j.contains("r"), src, ": key 'r' (the LoRA rank) is missing");
  c.rank = int64_t(get_num("r", 8));
  FT_CHECK(c.rank > 0, src, ": key 'r' must be > 0");
  c.alpha = get_num("lora_alpha", 8);
  c.dropout = get_num("lora_dropout", 0);
  c.rslora = get_bool("use_rslora");
  c.dora = get_bool("use_dora");
  FT_CHECK(!get_bool("fan_in_fan_out"), src, ": fan_in_fan_out adapters (GPT-2 Conv1D) are not supported");
  if (j.contains("bias") && j["bias"].is_string())
    FT_CHECK(j["bias"] == "none", src, ": bias '", j["bias"].get<std::string>(), "' is not supported (only \"none\")");
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null() && !(j["modules_to_save"].is_array() && j["modules_to_save"].empty()))
    throw Error(cat(src, ": modules_to_save is not supported by ft (only LoRA/DoRA weights)"));
  c.targets.clear();
  if (j.contains("target_modules") && !j["target_modules"].is_null()) {
    const json& t = j["target_modules"];
    if (t.is_string()) {
      if (t == "all-linear") c.targets = {"all-linear"};
      else c.target_regex = t.get<std::string>();
    } else {
      FT_CHECK(t.is_array(), src, ": target_modules must be a list or a string");
      for (auto& x : t) {
        FT_CHECK(x.is_string(), src, ": target_modules entries must be strings");
        c.targets.push_back(x.get<std::string>());
      }
    }
  }
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
    const json& l = j["layers_to_transform"];
    if (l.is_number_integer()) c.layers = {l.get<int64_t>()};
    else {
      FT_CHECK(l.is_array(), src, ": layers_to_transform must be an integer or a list");
      for (auto& x : l) c.layers.push_back(x.get<int64_t>());
    }
  }
  if (j.contains("rank_pattern") && j["rank_pattern"].is_object())
    for (auto& [k, v] : j["rank_pattern"].items()) c.rank_pattern[k] = v.get<int64_t>();
  if (j.contains("alpha_pattern") && j["alpha_pattern"].is_object())
    for (auto& [k, v] : j["alpha_pattern"].items()) c.alpha_pattern[k] = v.get<double>();
  if (j.contains("init_lora_weights") && j["init_lora_weights"].is_string()) c.init = j["init_lora_weights"].get<std::string>() == "gaussian" ? "gaussian" : "default";
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()) c.base_model = j["base_model_name_or_path"];
  return c;
}

namespace {

// Attaches one adapter from tensors A [r, in], B [out, r] (already in PEFT orientation).
void attach_loaded(Projection* p, Tensor A, Tensor B, Tensor mag, double scaling, double dropout, bool trainable,
                   const std::string& file, const std::string& module) {
  FT_CHECK(A.dim() == 2 && A.size(1) == p->in_features(), file, ": LoRA A of '", module, "' has shape ", A.shape_str(),
           " but the model's projection takes ", p->in_features(), " inputs (adapter made for another model?)");
  FT_CHECK(B.dim() == 2 && B.size(0) == p->out_features() && B.size(1) == A.size(0), file, ": LoRA B of '", module, "' has shape ",
           B.shape_str(), ", expected [", p->out_features(), ", ", A.size(0), "]");
  if (mag.defined()) FT_CHECK(mag.dim() == 1 && mag.size(0) == p->out_features(), file, ": DoRA magnitude of '", module, "' has shape ", mag.shape_str());
  auto l = std::make_shared<LoraAdapter>();
  l->A = A.to(DType::F32).clone();
  l->B = B.to(DType::F32).clone();
  if (mag.defined()) l->magnitude = mag.to(DType::F32).clone();
  l->scaling = float(scaling);
  l->dropout = float(dropout);
  if (trainable) {
    l->A.set_requires_grad(true);
    l->B.set_requires_grad(true);
    if (l->magnitude.defined()) l->magnitude.set_requires_grad(true);
  }
  p->lora = l;
}

Tensor record_tensor(const TensorRecord& r) {
  return Tensor::from_external(r.data, r.shape, r.weight_dtype(), nullptr).clone();
}
}  // namespace

LoraConfig load_peft_adapter(const std::string& dir, Model& model, bool trainable) {
  fs::path cfg_path = fs::path(dir) / "adapter_config.json", st_path = fs::path(dir) / "adapter_model.safetensors";
  FT_CHECK(fs::exists(cfg_path), "'", dir, "' is not a PEFT adapter: adapter_config.json is missing");
  FT_CHECK(fs::exists(st_path), "'", dir, "' is not a PEFT adapter: adapter_model.safetensors is missing");
  LoraConfig c = parse_peft_config(read_json_file(cfg_path.string()), cfg_path.string());
  auto file = SafetensorsFile::open(st_path.string());
  auto pm = projection_map(model);
  detach_lora(model);
  struct Parts { const TensorRecord *A = nullptr, *B = nullptr, *M = nullptr; };
  std::map<std::string, Parts> mods;
  for (const TensorRecord& r : file->tensors()) {
    std::string n = r.name;
    FT_CHECK(n.rfind(kPeftPrefix, 0) == 0, st_path.string(), ": tensor '", n, "' does not start with '", kPeftPrefix, "' (not a PEFT LoRA adapter?)");
    n = n.substr(kPeftPrefix.size());
    auto cut = [&](const std::string& suf) { return n.size() > suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0; };
    std::string module;
    if (cut(".lora_A.weight")) { module = n.substr(0, n.size() - 14); mods[module].A = &r; }
    else if (cut(".lora_B.weight")) { module = n.substr(0, n.size() - 14); mods[module].B = &r; }
    else if (cut(".lora_magnitude_vector.weight")) { module = n.substr(0, n.size() - 29); mods[module].M = &r; }
    else if (cut(".lora_magnitude_vector")) { module = n.substr(0, n.size() - 22); mods[module].M = &r; }
    else throw Error(cat(st_path.string(), ": tensor '", r.name, "' is not a LoRA A/B or DoRA magnitude tensor"));
  }
  FT_CHECK(!mods.empty(), st_path.string(), ": the adapter holds no tensors");
  for (auto& [module, parts] : mods) {
    auto it = pm.find(module);
    FT_CHECK(it != pm.end(), st_path.string(), ": adapter targets module '", module, "' which this model does not have (model_type ",
             model.cfg.model_type, ", ", model.cfg.num_layers, " layers)");
    FT_CHECK(parts.A && parts.B, st_path.string(), ": module '", module, "' lacks its ", parts.A ? "lora_B" : "lora_A", " tensor");
    FT_CHECK(!c.dora || parts.M, st_path.string(), ": use_dora is set but module '", module, "' has no lora_magnitude_vector");
    int64_t r = pattern_value(c.rank_pattern, module, c.rank);
    double a = pattern_value(c.alpha_pattern, module, c.alpha);
    FT_CHECK(parts.A->shape.size() == 2 && parts.A->shape[0] == r, st_path.string(), ": lora_A of '", module, "' has shape ",
             shape_str(parts.A->shape), " but adapter_config.json says rank ", r);
    attach_loaded(it->second, record_tensor(*parts.A), record_tensor(*parts.B), parts.M ? record_tensor(*parts.M) : Tensor(),
                  c.scaling_for(r, a), c.dropout, trainable, st_path.string(), module);
  }
  return c;
}

// ---- mlx-lm -------------------------------------------------------------------------------------

void save_mlx_adapter(const std::string& dir, Model& model, const LoraConfig& c) {
  fs::create_directories(dir);
  std::vector<Tensor> keep;
  std::vector<TensorRecord> recs;
  std::set<std::string> keys;
  std::set<int64_t> layers;
  double scale = 0;
  for (Projection* p : model.projections()) {
    if (!p->lora) continue;
    const LoraAdapter& l = *p->lora;
    Tensor a = l.A.detach().transpose(0, 1).contiguous(), b = l.B.detach().transpose(0, 1).contiguous();
    keep.push_back(a);
    keep.push_back(b);
    recs.push_back(TensorRecord::view(p->name + ".lora_a", DType::F32, a.shape(), a.raw()));
    recs.push_back(TensorRecord::view(p->name + ".lora_b", DType::F32, b.shape(), b.raw()));
    if (l.magnitude.defined()) {
      Tensor m = l.magnitude.detach().contiguous();
      keep.push_back(m);
      recs.push_back(TensorRecord::view(p->name + ".m", DType::F32, m.shape(), m.raw()));
    }
    std::string n = p->name;
    auto lp = n.find("layers.");
    auto dot = n.find('.', lp + 7);
    keys.insert(n.substr(dot + 1));
    layers.insert(layer_of(n));
    scale = l.scaling;
  }
  FT_CHECK(!recs.empty(), "save_mlx_adapter: the model has no adapters");
  // mlx-lm applies adapters to the last num_layers layers.
  int64_t first = *layers.begin();
  FT_CHECK(*layers.rbegin() == model.cfg.num_layers - 1 && int64_t(layers.size()) == model.cfg.num_layers - first,
           "mlx-lm adapters must cover the last N layers contiguously; this adapter covers other layers (save it as PEFT)");
  json j = {{"fine_tune_type", c.dora ? "dora" : "lora"},
            {"num_layers", int64_t(layers.size())},
            {"lora_parameters", {{"rank", c.rank}, {"scale", scale}, {"dropout", c.dropout}, {"keys", std::vector<std::string>(keys.begin(), keys.end())}}}};
  write_safetensors((fs::path(dir) / "adapters.safetensors").string(), recs, {});
  write_file_atomic((fs::path(dir) / "adapter_config.json").string(), j.dump(2) + "\n");
}

LoraConfig load_mlx_adapter(const std::string& dir, Model& model, bool trainable) {
  fs::path cfg_path = fs::path(dir) / "adapter_config.json", st_path = fs::path(dir) / "adapters.safetensors";
  FT_CHECK(fs::exists(cfg_path) && fs::exists(st_path), "'", dir, "' is not an mlx-lm adapter (needs adapter_config.json and adapters.safetensors)");
  json j = read_json_file(cfg_path.string());
  FT_CHECK(j.contains("lora_parameters") && j["lora_parameters"].is_object(), cfg_path.string(), ": key 'lora_parameters' is missing");
  const json& lp = j["lora_parameters"];
  LoraConfig c;
  FT_CHECK(lp.contains("rank") && lp["rank"].is_number_integer(), cfg_path.string(), ": lora_parameters.rank must be an integer");
  c.rank = lp["rank"].get<int64_t>();
  double scale = lp.value("scale", 20.0);
  c.alpha = scale * double(c.rank);
  c.dropout = lp.value("dropout", 0.0);
  std::string ft_type = j.value("fine_tune_type", "lora");
  FT_CHECK(ft_type == "lora" || ft_type == "dora", cfg_path.string(), ": fine_tune_type '", ft_type, "' is not an adapter (lora or dora)");
  c.dora = ft_type == "dora";
  auto file = SafetensorsFile::open(st_path.string());
  auto pm = projection_map(model);
  detach_lora(model);
  std::set<std::string> shorts;
  for (const TensorRecord& r : file->tensors()) {
    const std::string& n = r.name;
    auto cut = [&](const std::string& suf) { return n.size() > suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0; };
    if (!cut(".lora_a")) {
      FT_CHECK(cut(".lora_b") || cut(".m"), st_path.string(), ": tensor '", n, "' is not an mlx-lm LoRA tensor");
      continue;
    }
    std::string module = n.substr(0, n.size() - 7);
    auto it = pm.find(module);
    FT_CHECK(it != pm.end(), st_path.string(), ": adapter targets module '", module, "' which this model does not have");
    const TensorRecord* b = file->find(module + ".lora_b");
    FT_CHECK(b, st_path.string(), ": module '", module, "' lacks its lora_b tensor");
    const TensorRecord* m = file->find(module + ".m");
    Tensor A = record_tensor(r).transpose(0, 1).contiguous(), B = record_tensor(*b).transpose(0, 1).contiguous();
    FT_CHECK(A.size(0) == c.rank, st_path.string(), ": lora_a of '", module, "' has rank ", A.size(0), " but the config says ", c.rank);
    attach_loaded(it->second, A, B, m ? record_tensor(*m) : Tensor(), scale, c.dropout, trainable, st_path.string(), module);
    shorts.insert(short_name(module));
  }
  c.targets.assign(shorts.begin(), shorts.end());
  return c;
}

LoraConfig load_adapter(const std::string& dir, Model& model, bool trainable) {
  FT_CHECK(fs::is_directory(dir), "adapter '", dir, "' is not a directory");
  if (fs::exists(fs::path(dir) / "adapter_model.safetensors")) return load_peft_adapter(dir, model, trainable);
  if (fs::exists(fs::path(dir) / "adapters.safetensors")) return load_mlx_adapter(dir, model, trainable);
  throw Error(cat("'", dir, "' holds no adapter (expected adapter_model.safetensors (PEFT) or adapters.safetensors (mlx-lm))"));
}

void merge_lora(Model& model, DType dtype, bool requantize) {
  NoGradGuard ng;
  for (Projection* p : model.projections()) {
    if (p->lora) {
      const LoraAdapter& l = *p->lora;
      std::optional<QuantParams> base_q;
      if (is_quantized(p->weight)) base_q = quant_params(p->weight);
      Tensor w = p->weight.to(DType::F32).clone();
      int64_t out = w.size(0), in = w.size(1);
      sgemm(false, false, out, in, l.rank(), l.scaling, l.B.data<float>(), l.rank(), l.A.data<float>(), in, 1.f, w.data<float>(), in);
      if (l.magnitude.defined()) {
        float* pw = w.data<float>();
        const float* m = l.magnitude.data<float>();
        for (int64_t o = 0; o < out; ++o) {
          double s = 0;
          for (int64_t i = 0; i < in; ++i) s += double(pw[o * in + i]) * pw[o * in + i];
          float f = float(m[o] / std::sqrt(s));
          for (int64_t i = 0; i < in; ++i) pw[o * in + i] *= f;
        }
      }
      // (a GGUF Q6_K base's groups of 16 are not MLX's: its merged matrices stay float)
      p->weight = base_q && requantize && quant_group_supported(base_q->group_size) ? quantize_affine(w, base_q->bits, base_q->group_size, base_q->scale_dtype, p->name + ".weight")
                                       : w.to(dtype);
      p->lora.reset();
    } else if (p->weight.dtype() != dtype && !is_quantized(p->weight)) {
      p->weight = p->weight.to(dtype);
    }
  }
}

}  // namespace ft
