#include "models/quant_config.h"

#include <filesystem>

#include "autograd/error.h"
#include "autograd/json_file.h"
#include "autograd/quant.h"
#include "models/safetensors.h"

namespace ft {

std::optional<QuantSetting> QuantConfig::for_module(const std::string& path) const {
  auto it = overrides.find(path);
  if (it != overrides.end()) return it->second;
  return base;
}

namespace {

QuantSetting parse_setting(const nlohmann::json& q, const std::string& where, const QuantSetting* dflt) {
  QuantSetting s = dflt ? *dflt : QuantSetting{};
  for (const char* k : {"bits", "group_size"}) {
    if (!q.contains(k)) {
      FT_CHECK(dflt, where, " has no \"", k, "\"");
      continue;
    }
    FT_CHECK(q[k].is_number_integer(), where, ": \"", k, "\" must be an integer, got ", q[k].dump());
    (std::string(k) == "bits" ? s.bits : s.group_size) = q[k].get<int>();
  }
  FT_CHECK(quant_bits_supported(s.bits), where, ": ", s.bits, "-bit quantization is not supported (affine: 2, 3, 4, 5, 6 or 8 bits)");
  FT_CHECK(quant_group_supported(s.group_size), where, ": group size ", s.group_size, " is not supported (32, 64 or 128)");
  return s;
}

QuantConfig parse_block(const nlohmann::json& q, const std::string& where) {
  QuantConfig c;
  FT_CHECK(q.is_object(), where, " must be an object, got ", q.dump());
  if (q.contains("quant_method")) {
    const std::string m = q["quant_method"].is_string() ? q["quant_method"].get<std::string>() : q["quant_method"].dump();
    throw Error(cat(where, ": quant_method \"", m, "\" is not supported; ft reads MLX affine quantization (mlx-lm checkpoints) and ",
                    "quantizes float checkpoints itself (--quantize 4|8)"));
  }
  if (q.contains("mode")) {
    FT_CHECK(q["mode"].is_string() && q["mode"].get<std::string>() == "affine", where, ": mode ", q["mode"].dump(),
             " is not supported (ft reads MLX's \"affine\" mode)");
  }
  c.present = true;
  c.base = parse_setting(q, where, nullptr);
  for (auto it = q.begin(); it != q.end(); ++it) {
    const std::string& k = it.key();
    if (k == "bits" || k == "group_size" || k == "mode") continue;
    if (it->is_boolean()) {
      FT_CHECK(!it->get<bool>(), where, ": module \"", k, "\": true is not a quantization setting (use an object or false)");
      c.overrides[k] = std::nullopt;
    } else if (it->is_object()) {
      if (it->contains("mode"))
        FT_CHECK((*it)["mode"] == "affine", where, ": module \"", k, "\": mode ", (*it)["mode"].dump(), " is not supported (affine only)");
      c.overrides[k] = parse_setting(*it, cat(where, ": module \"", k, "\""), &c.base);
    }
  }
  return c;
}

}  // namespace

QuantConfig read_quant_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  nlohmann::json j = read_json_file(path);
  QuantConfig a, b;
  if (j.contains("quantization")) a = parse_block(j["quantization"], path + ": \"quantization\"");
  if (j.contains("quantization_config")) b = parse_block(j["quantization_config"], path + ": \"quantization_config\"");
  if (a.present && b.present) {
    FT_CHECK(a.base == b.base && a.overrides == b.overrides, path, ": \"quantization\" (", j["quantization"].dump(), ") and \"quantization_config\" (",
             j["quantization_config"].dump(), ") contradict each other");
  }
  return a.present ? a : b;
}

Tensor load_quantized_matrix(const CheckpointReader& ck, const std::string& module, const Shape& expect, const QuantSetting& s) {
  const std::string wn = module + ".weight", sn = module + ".scales", bn = module + ".biases";
  const TensorRecord* w = ck.find(wn);
  const TensorRecord* sc = ck.find(sn);
  const TensorRecord* bi = ck.find(bn);
  auto file = [&](const TensorRecord* r) { return r && !r->file.empty() ? r->file : ck.path(); };
  const std::string setting = cat("(config.json quantization: bits ", s.bits, ", group_size ", s.group_size, ")");
  FT_CHECK(w, file(sc), ": tensor '", wn, "' is missing (its scales are present)");
  FT_CHECK(sc && bi, file(w), ": quantized module '", module, "' lacks its ", sc ? "biases" : "scales", " tensor (affine mode needs ", module,
           ".scales and ", module, ".biases)");
  const int64_t out = expect[0], in = expect[1];
  FT_CHECK(w->st_dtype == StDtype::U32, file(w), ": tensor '", wn, "' is ", st_dtype_name(w->st_dtype), " but ", module,
           ".scales exists: MLX-quantized weights are packed uint32 (U32)");
  FT_CHECK(in % s.group_size == 0, file(w), ": tensor '", wn, "': the input dimension ", in, " is not a multiple of the group size ",
           s.group_size, " ", setting);
  const Shape ws{out, in * s.bits / 32}, gs{out, in / s.group_size};
  FT_CHECK(w->shape == ws, file(w), ": tensor '", wn, "' has shape ", shape_str(w->shape), " but ", s.bits, "-bit codes of the [", out, ", ", in,
           "] matrix config.json implies need ", shape_str(ws), " uint32 words ", setting,
           "; the weight is truncated or was quantized with other settings");
  for (const TensorRecord* r : {sc, bi}) {
    FT_CHECK(r->shape == gs, file(r), ": tensor '", r->name, "' has shape ", shape_str(r->shape), " but the [", out, ", ", in, "] matrix in groups of ",
             s.group_size, " needs ", shape_str(gs), " ", setting);
    FT_CHECK(r->st_dtype == StDtype::F32 || r->st_dtype == StDtype::BF16 || r->st_dtype == StDtype::F16, file(r), ": tensor '", r->name, "' is ",
             st_dtype_name(r->st_dtype), "; scales and biases must be F32, BF16 or F16");
  }
  FT_CHECK(sc->st_dtype == bi->st_dtype, file(bi), ": '", sn, "' is ", st_dtype_name(sc->st_dtype), " but '", bn, "' is ", st_dtype_name(bi->st_dtype));
  auto owner = [&](const std::string& n) { return std::const_pointer_cast<void>(ck.file_of(n)->keep_alive()); };
  QuantParams p;
  p.bits = s.bits;
  p.group_size = s.group_size;
  p.rows = out;
  p.cols = in;
  p.packed = Tensor::from_external(w->data, ws, DType::I32, owner(wn));
  if (reinterpret_cast<uintptr_t>(w->data) % 4 != 0) p.packed = p.packed.clone();  // unaligned in the file: copy once
  p.scale_dtype = *to_dtype(sc->st_dtype);
  // Kept as stored (fp32, fp16 or bf16: the kernels widen them a block of rows at a time), mapped from
  // the file; a copy only where the file leaves them misaligned for their element size.
  p.scales = Tensor::from_external(sc->data, gs, p.scale_dtype, owner(sn));
  p.biases = Tensor::from_external(bi->data, gs, p.scale_dtype, owner(bn));
  const size_t es = dtype_size(p.scale_dtype);
  if (reinterpret_cast<uintptr_t>(sc->data) % es != 0) p.scales = p.scales.clone();
  if (reinterpret_cast<uintptr_t>(bi->data) % es != 0) p.biases = p.biases.clone();
  return make_quantized(std::move(p), cat(file(w), ": tensor '", wn, "'"));
}

}  // namespace ft
