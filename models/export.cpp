#include "models/export.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "autograd/file_io.h"
#include "autograd/json_file.h"
#include "autograd/quant.h"
#include "models/gguf_load.h"
#include "models/safetensors.h"

namespace ft {

namespace fs = std::filesystem;

void export_model(const Model& m, const std::string& dir, const ExportOptions& opt) {
  FT_CHECK(fs::absolute(dir) != fs::absolute(m.dir), "refusing to export over the source model directory '", dir, "'");
  fs::create_directories(dir);
  std::optional<DType> want;
  if (!opt.dtype.empty()) want = dtype_from_name(opt.dtype);
  const ModelConfig& c = m.cfg;
  std::vector<std::pair<std::string, Tensor>> ts;
  for (const ModelTensor& t : model_tensors(c)) {
    const Tensor& x = m.tensor(t);
    if (!x.defined()) continue;
    if (const Projection* p = m.projection(t)) FT_CHECK(!p->lora, "export_model: '", p->name, "' still has an adapter; merge it first");
    ts.push_back({t.name, x});
  }

  // The majority dtype of the big matrices decides torch_dtype in config.json; small vectors follow it.
  // A quantized matrix counts with the dtype of its scales (MLX stores them in the model's dtype).
  auto float_dtype = [](const Tensor& t) { return is_quantized(t) ? quant_params(t).scale_dtype : t.dtype(); };
  DType main_dt = want ? *want : float_dtype(m.embed);
  std::vector<Tensor> keep;
  std::vector<TensorRecord> recs;
  nlohmann::ordered_json quant;  // MLX's config block, when quantized matrices are written as they are
  for (auto& [name, t] : ts) {
    // MLX layout (module.weight uint32, module.scales, module.biases) for MLX's group sizes; a GGUF
    // Q6_K matrix (groups of 16, which MLX does not read) is written dequantised (float32).
    if (is_quantized(t) && !want && quant_group_supported(quant_params(t).group_size)) {
      const QuantParams& q = quant_params(t);
      const std::string module = name.substr(0, name.size() - 7);  // strip ".weight"
      TensorRecord w = TensorRecord::view(name, DType::I32, q.packed.shape(), q.packed.raw());
      w.st_dtype = StDtype::U32;
      recs.push_back(w);
      for (auto [part, is_bias] : {std::pair<const char*, bool>{".scales", false}, {".biases", true}}) {
        // (one level: as held, in the checkpoint's dtype; a K-quant's two levels: their fp32 products)
        Tensor x = q.two_level()                   ? quant_group_params(q, is_bias)
                   : is_bias && q.bias_from_scale ? quant_group_params(q, true).to(q.scale_dtype).contiguous()
                                                  : (is_bias ? q.biases : q.scales).to(q.scale_dtype).contiguous();
        keep.push_back(x);
        recs.push_back(TensorRecord::view(module + part, x.dtype(), x.shape(), x.raw()));
      }
      if (quant.empty()) quant = {{"group_size", q.group_size}, {"bits", q.bits}, {"mode", "affine"}};
      else if (quant["group_size"] != q.group_size || quant["bits"] != q.bits)
        quant[module] = {{"group_size", q.group_size}, {"bits", q.bits}};
      continue;
    }
    Tensor x = t.detach().contiguous().to(want ? *want : (t.dim() == 1 ? main_dt : is_quantized(t) ? DType::F32 : t.dtype()));
    keep.push_back(x);
    recs.push_back(TensorRecord::view(name, x.dtype(), x.shape(), x.raw()));
  }
  // Remove shards of an earlier export in the same directory so no stale index survives.
  for (auto& e : fs::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    if (n.rfind("model", 0) == 0 && (n.find(".safetensors") != std::string::npos)) fs::remove(e.path());
  }
  write_safetensors_sharded(dir, recs, opt.max_shard_bytes, {{"format", "pt"}});

  // config.json: the source's, with the dtype updated (both v4 and v5 spellings when present).
  // A GGUF source: its metadata as HF files (models/gguf_load.h).
  const bool gguf = is_gguf_file(m.dir);
  GgufHfTexts texts;
  if (gguf) texts = gguf_hf_texts(*GgufFile::open(m.dir));
  nlohmann::ordered_json cfg = gguf ? nlohmann::ordered_json::parse(texts.config_json)
                                    : read_ordered_json_file((fs::path(m.dir) / "config.json").string());
  const char* dn = main_dt == DType::BF16 ? "bfloat16" : main_dt == DType::F16 ? "float16" : "float32";
  if (cfg.contains("dtype")) cfg["dtype"] = dn;
  cfg["torch_dtype"] = dn;
  cfg.erase("quantization");  // describe the matrices as written: MLX's block when quantized, none when float
  cfg.erase("quantization_config");
  if (!quant.empty()) {
    cfg["quantization"] = quant;
    cfg["quantization_config"] = quant;
  }
  write_file_atomic((fs::path(dir) / "config.json").string(), cfg.dump(2) + "\n");
  if (gguf) {
    write_file_atomic((fs::path(dir) / "tokenizer.json").string(), texts.tokenizer_json);
    write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(), texts.tokenizer_config_json + "\n");
    return;
  }
  for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "tokenizer.model", "chat_template.jinja", "vocab.json", "merges.txt", "added_tokens.json"}) {
    fs::path src = fs::path(m.dir) / name;
    if (!fs::exists(src)) continue;
    std::ifstream in(src, std::ios::binary);
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    write_file_atomic((fs::path(dir) / name).string(), content);
  }
}

}  // namespace ft
