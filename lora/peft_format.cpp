// Adapters, part 2: PEFT's format (adapter_config.json + adapter_model.safetensors), and finding
// out which format an adapter directory holds.
#include <filesystem>
#include <set>

#include "autograd/file_io.h"
#include "autograd/json_file.h"
#include "lora/adapter_detail.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace lora_detail;

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

LoraConfig load_adapter(const std::string& dir, Model& model, bool trainable) {
  FT_CHECK(fs::is_directory(dir), "adapter '", dir, "' is not a directory");
  if (fs::exists(fs::path(dir) / "adapter_model.safetensors")) return load_peft_adapter(dir, model, trainable);
  if (fs::exists(fs::path(dir) / "adapters.safetensors")) return load_mlx_adapter(dir, model, trainable);
  throw Error(cat("'", dir, "' holds no adapter (expected adapter_model.safetensors (PEFT) or adapters.safetensors (mlx-lm))"));
}

}  // namespace ft
