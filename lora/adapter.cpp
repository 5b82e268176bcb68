// Adapters, part 1: choosing the projections to adapt (PEFT's target rules) and attaching fresh or
// loaded adapters. The formats are peft_format.cpp and mlx_format.cpp, merging merge.cpp.
#include "lora/adapter.h"

#include <cmath>
#include <set>

#include "autograd/random.h"
#include "lora/adapter_detail.h"

namespace ft {

using namespace lora_detail;

double LoraConfig::scaling_for(int64_t r, double a) const { return rslora ? a / std::sqrt(double(r)) : a / double(r); }

std::vector<int64_t> last_layers(int64_t total, int64_t n) {
  std::vector<int64_t> r;
  if (n <= 0 || n >= total) return r;  // empty = all
  for (int64_t i = total - n; i < total; ++i) r.push_back(i);
  return r;
}

namespace lora_detail {

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

std::string short_name(const std::string& module) {
  auto p = module.rfind('.');
  return p == std::string::npos ? module : module.substr(p + 1);
}

std::map<std::string, Projection*> projection_map(Model& m) {
  std::map<std::string, Projection*> r;
  for (Projection* p : m.projections()) r[p->name] = p;
  return r;
}

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

}  // namespace lora_detail

namespace {

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
    if (c.dora) l->magnitude = dora_weight_norm(p->weight, *l);
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

}  // namespace ft
