#include "models/tensors.h"

namespace ft {

namespace {

using Shape = std::vector<int64_t>;
using Cond = bool (*)(const ModelConfig&);

// One kind of tensor of the decoder. Projections list the module; ".weight" (and ".bias" when
// `bias` holds) are appended. out/in: the shape from the config ([n] for norms: out only).
struct Row {
  TensorSlot slot;
  TensorRole role;
  const char* hf;     // after "<prefix>layers.N." for layer tensors, after the prefix for the others
  const char* gguf;   // after "blk.N." for layer tensors
  Cond when;          // present for this config
  int64_t (*out)(const ModelConfig&);
  int64_t (*in)(const ModelConfig&);  // nullptr: a vector
  Cond bias;          // projections: has a bias; nullptr: never
};

bool always(const ModelConfig&) { return true; }
int64_t hidden(const ModelConfig& c) { return c.hidden_size; }
int64_t inter(const ModelConfig& c) { return c.intermediate_size; }
int64_t head_dim(const ModelConfig& c) { return c.head_dim; }
int64_t qdim(const ModelConfig& c) { return c.q_dim(); }
int64_t kvdim(const ModelConfig& c) { return c.kv_dim(); }

// The decoder layer's tensors, in checkpoint order: norms first, then projections.
const Row kLayerRows[] = {
    {TensorSlot::InputNorm, TensorRole::Norm, "input_layernorm", "attn_norm", always, hidden, nullptr, nullptr},
    // Llama-style: the norm before the MLP (GGUF ffn_norm); Gemma 2/3 (sandwich): the norm after attention.
    {TensorSlot::PostAttnNorm, TensorRole::Norm, "post_attention_layernorm", nullptr, always, hidden, nullptr, nullptr},
    {TensorSlot::PreFfNorm, TensorRole::Norm, "pre_feedforward_layernorm", "ffn_norm",
     [](const ModelConfig& c) { return c.sandwich_norms; }, hidden, nullptr, nullptr},
    {TensorSlot::PostFfNorm, TensorRole::Norm, "post_feedforward_layernorm", "post_ffw_norm",
     [](const ModelConfig& c) { return c.sandwich_norms; }, hidden, nullptr, nullptr},
    {TensorSlot::QNorm, TensorRole::Norm, "self_attn.q_norm", "attn_q_norm", [](const ModelConfig& c) { return c.qk_norm; },
     head_dim, nullptr, nullptr},
    {TensorSlot::KNorm, TensorRole::Norm, "self_attn.k_norm", "attn_k_norm", [](const ModelConfig& c) { return c.qk_norm; },
     head_dim, nullptr, nullptr},
    {TensorSlot::Q, TensorRole::Projection, "self_attn.q_proj", "attn_q", [](const ModelConfig& c) { return !c.fused_qkv; },
     qdim, hidden, [](const ModelConfig& c) { return c.qkv_bias; }},
    {TensorSlot::K, TensorRole::Projection, "self_attn.k_proj", "attn_k", [](const ModelConfig& c) { return !c.fused_qkv; },
     kvdim, hidden, [](const ModelConfig& c) { return c.qkv_bias; }},
    {TensorSlot::V, TensorRole::Projection, "self_attn.v_proj", "attn_v", [](const ModelConfig& c) { return !c.fused_qkv; },
     kvdim, hidden, [](const ModelConfig& c) { return c.qkv_bias; }},
    {TensorSlot::QKV, TensorRole::Projection, "self_attn.qkv_proj", "attn_qkv", [](const ModelConfig& c) { return c.fused_qkv; },
     [](const ModelConfig& c) { return c.q_dim() + 2 * c.kv_dim(); }, hidden, [](const ModelConfig& c) { return c.qkv_bias; }},
    {TensorSlot::O, TensorRole::Projection, "self_attn.o_proj", "attn_output", always, hidden, qdim,
     [](const ModelConfig& c) { return c.o_bias; }},
    {TensorSlot::Gate, TensorRole::Projection, "mlp.gate_proj", "ffn_gate", [](const ModelConfig& c) { return !c.fused_gate_up; },
     inter, hidden, [](const ModelConfig& c) { return c.mlp_bias; }},
    {TensorSlot::Up, TensorRole::Projection, "mlp.up_proj", "ffn_up", [](const ModelConfig& c) { return !c.fused_gate_up; },
     inter, hidden, [](const ModelConfig& c) { return c.mlp_bias; }},
    {TensorSlot::GateUp, TensorRole::Projection, "mlp.gate_up_proj", "ffn_up", [](const ModelConfig& c) { return c.fused_gate_up; },
     [](const ModelConfig& c) { return 2 * c.intermediate_size; }, hidden, [](const ModelConfig& c) { return c.mlp_bias; }},
    {TensorSlot::Down, TensorRole::Projection, "mlp.down_proj", "ffn_down", always, hidden, inter,
     [](const ModelConfig& c) { return c.mlp_bias; }},
};

const char* gguf_of(const Row& r, const ModelConfig& c) {
  if (r.slot == TensorSlot::PostAttnNorm) return c.sandwich_norms ? "post_attention_norm" : "ffn_norm";
  return r.gguf;
}

}  // namespace

std::string ModelTensor::module() const {
  const std::string tail = bias ? ".bias" : ".weight";
  return name.size() > tail.size() ? name.substr(0, name.size() - tail.size()) : name;
}

std::vector<ModelTensor> model_tensors(const ModelConfig& c) {
  std::vector<ModelTensor> out;
  const int64_t V = c.vocab_size, D = c.hidden_size;
  out.push_back({c.weight("embed_tokens.weight"), "token_embd.weight", {V, D}, TensorRole::Embedding, TensorSlot::Embed});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".";
    for (const Row& r : kLayerRows) {
      if (!r.when(c)) continue;
      const std::string hf = c.layer_weight(l, r.hf), gguf = blk + gguf_of(r, c);
      Shape shape = r.in ? Shape{r.out(c), r.in(c)} : Shape{r.out(c)};
      out.push_back({hf + ".weight", gguf + ".weight", shape, r.role, r.slot, l});
      if (r.bias && r.bias(c)) out.push_back({hf + ".bias", gguf + ".bias", {r.out(c)}, r.role, r.slot, l, true});
    }
  }
  out.push_back({c.weight("norm.weight"), "output_norm.weight", {D}, TensorRole::Norm, TensorSlot::FinalNorm});
  if (!c.tie_word_embeddings) out.push_back({c.lm_head_name, "output.weight", {V, D}, TensorRole::Head, TensorSlot::LmHead});
  return out;
}

std::vector<WeightSpec> expected_weights(const ModelConfig& c) {
  std::vector<WeightSpec> w;
  for (const ModelTensor& t : model_tensors(c)) w.push_back({t.name, t.shape});
  return w;
}

}  // namespace ft
