// Adapters, part 3: mlx-lm's format (adapter_config.json with lora_parameters + adapters.safetensors,
// lora_a [in, r], lora_b [r, out], DoRA magnitude ".m").
#include <filesystem>
#include <set>

#include "autograd/file_io.h"
#include "autograd/json_file.h"
#include "lora/adapter_detail.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace lora_detail;

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

}  // namespace ft
