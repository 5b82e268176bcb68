#include "lora/gguf_adapter.h"

#include <cmath>
#include <filesystem>

#include "models/gguf.h"
#include "models/gguf_export.h"

namespace ft {

std::vector<std::string> export_gguf_adapter(const Model& m, const LoraConfig& cfg, const std::string& path) {
  const ModelConfig& c = m.cfg;
  FT_CHECK(!cfg.dora, "DoRA adapters have no llama.cpp form (llama.cpp applies only W + scaling·B·A); merge the adapter ",
           "into the model instead: ft merge --model M --adapter A --format gguf --out merged.gguf");
  std::vector<std::string> notes;
  GgufWriter w;
  const std::string arch = gguf_arch(c);
  w.set("general.architecture", GgufValue::str(arch));
  w.set("general.type", GgufValue::str("adapter"));
  w.set("adapter.type", GgufValue::str("lora"));
  const double qfold = gguf_query_fold(c);
  double alpha = 0;
  int folded = 0;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const DecoderLayer& l = m.layers[size_t(i)];
    for (const Projection* p : {&l.q, &l.k, &l.v, &l.qkv, &l.o, &l.gate, &l.up, &l.gate_up, &l.down}) {
      if (!p->weight.defined() || !p->lora) continue;
      FT_CHECK(!p->lora->magnitude.defined(), "DoRA adapters have no llama.cpp form; merge the adapter instead: ",
               "ft merge --model M --adapter A --format gguf --out merged.gguf");
      const LoraAdapter& a = *p->lora;
      const int64_t r = a.rank(), out = p->out_features(), in = p->in_features();
      if (alpha == 0) alpha = double(a.scaling) * double(r);
      double mul = double(a.scaling) * double(r) / alpha;  // 1 unless this projection's scaling differs
      if (std::fabs(mul - 1.0) > 1e-12) ++folded;
      std::vector<float> A = a.A.detach().contiguous().to(DType::F32).to_vector();
      std::vector<float> B = a.B.detach().contiguous().to(DType::F32).to_vector();
      const bool isq = p == &l.q, isk = p == &l.k;
      if (isq && !c.qk_norm) mul *= qfold;
      if (p == &l.qkv && qfold != 1.0)
        for (int64_t row = 0; row < c.q_dim(); ++row)
          for (int64_t k = 0; k < r; ++k) B[size_t(row * r + k)] = float(double(B[size_t(row * r + k)]) * qfold);
      if (mul != 1.0)
        for (float& x : B) x = float(double(x) * mul);
      if ((isq || isk) && gguf_permutes_qk(c)) B = gguf_permute_rows(B, out, r, isq ? c.num_heads : c.num_kv_heads);
      std::string base = gguf_tensor_base(c, p->name);
      FT_CHECK(!base.empty(), "GGUF adapter: no GGUF name for '", p->name, "'");
      w.add_tensor(base + ".weight.lora_a", {in, r}, GgmlType::F32, A.data(), A.size() * 4);
      w.add_tensor(base + ".weight.lora_b", {r, out}, GgmlType::F32, B.data(), B.size() * 4);
    }
  }
  FT_CHECK(alpha != 0, "GGUF adapter: the model has no LoRA adapters attached");
  w.set("adapter.lora.alpha", GgufValue::f32(float(alpha)));
  if (folded)
    notes.push_back(cat(folded, " projections have a different scaling than alpha / r with alpha = ", alpha,
                        " (rsLoRA, rank or alpha patterns): their factor is folded into lora_b"));
  w.write(path);
  return notes;
}

std::string ollama_modelfile(const std::string& base_gguf, const std::string& adapter_gguf) {
  return "# ollama: ollama create NAME -f THIS_FILE, then ollama run NAME\n"
         "FROM " + base_gguf + "\nADAPTER " + adapter_gguf + "\n";
}

}  // namespace ft
