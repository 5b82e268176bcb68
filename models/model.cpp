#include "models/model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "autograd/kernels.h"
#include "autograd/json_file.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "autograd/quant.h"
#include "models/quant_config.h"
#include "models/gguf_load.h"
#include "models/safetensors.h"

namespace ft {

namespace {

struct Loader {
  const CheckpointReader& ck;
  const ModelConfig& cfg;
  std::string dtype;  // target dtype for matrices ("" = keep)
  const QuantConfig& qc;  // the checkpoint's quantization block (MLX)
  int quantize = 0, group_size = 64;  // quantise on load
  std::string cfg_file;               // dir/config.json, for messages

  Tensor raw(const std::string& name, const Shape& expect) const {
    const TensorRecord* r = ck.find(name);
    FT_CHECK(r, ck.files().size() == 1 ? ck.files()[0]->path() : ck.path(), ": tensor '", name, "' is missing (model_type ", cfg.model_type, ", ", cfg.num_layers,
             " layers per config.json); the checkpoint does not match its config");
    FT_CHECK(r->shape == expect, r->file.empty() ? ck.path() : r->file, ": tensor '", name, "' has shape ", shape_str(r->shape),
             " but config.json implies ", shape_str(expect), " (hidden_size ", cfg.hidden_size, ", heads ", cfg.num_heads, "/",
             cfg.num_kv_heads, ", head_dim ", cfg.head_dim, ", intermediate_size ", cfg.intermediate_size, ", vocab_size ",
             cfg.vocab_size, ")");
    DType dt = r->weight_dtype();
    auto owner = std::const_pointer_cast<void>(ck.file_of(name)->keep_alive());
    return Tensor::from_external(r->data, r->shape, dt, owner);
  }
  // Big matrices: stored dtype, or converted to the requested one. f16 is widened to f32.
  // Quantised matrices: read as MLX stored them (module.scales present), or quantised on load.
  Tensor matrix(const std::string& name, const Shape& expect) const {
    const std::string module = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 ? name.substr(0, name.size() - 7) : name;
    const bool has_scales = ck.find(module + ".scales") != nullptr;
    if (has_scales) {
      FT_CHECK(qc.present, ck.path(), ": tensor '", module, ".scales' exists but ", cfg_file,
               " has no \"quantization\" block (group_size, bits) to read it with");
      std::optional<QuantSetting> s = qc.for_module(module);
      FT_CHECK(s, cfg_file, ": \"quantization\" exempts '", module, "' (false) but the checkpoint holds its scales; config and weights contradict");
      return load_quantized_matrix(ck, module, expect, *s);
    }
    if (qc.present && qc.has_override(module) && qc.for_module(module))
      throw Error(cat(cfg_file, ": \"quantization\" quantizes '", module, "' but the checkpoint has no '", module,
                      ".scales'; config and weights contradict"));
    Tensor t = raw(name, expect);
    // A converted copy releases the file's pages it was made from: quantising an 8B bf16 base on load
    // then peaks near the quantised size instead of keeping 16 GB of mapped bf16 pages resident.
    auto converted = [&](Tensor c) {
      ck.file_of(name)->release(*ck.find(name));
      return c;
    };
    if (quantize > 0 && expect[1] % group_size == 0)  // MLX stores scales in the weights' dtype
      return converted(quantize_affine(t, quantize, group_size, t.dtype(), name));
    DType want = t.dtype();  // as stored (bf16/fp16 values widen exactly: the numbers are fp32's, README "Precision")
    if (dtype == "float32") want = DType::F32;
    if (dtype == "bfloat16") want = DType::BF16;
    if (dtype == "float16") want = DType::F16;
    return t.dtype() == want ? t : converted(t.to(want));
  }
  Tensor vec(const std::string& name, const Shape& expect) const { return raw(name, expect).to(DType::F32); }
  bool has(const std::string& name) const { return ck.find(name) != nullptr; }
};

}  // namespace

Model Model::load(const std::string& dir, const LoadOptions& opt) {
  FT_CHECK(opt.dtype.empty() || opt.dtype == "float32" || opt.dtype == "bfloat16" || opt.dtype == "float16",
           "unsupported model dtype '", opt.dtype, "' (use float32, bfloat16 or float16)");
  if (is_gguf_file(dir)) return load_gguf_model(dir, opt);
  Model m;
  m.dir = dir;
  m.cfg = load_model_config(dir);
  CheckpointReader ck = CheckpointReader::open(dir);
  resolve_weight_names(m.cfg, [&](const std::string& n) { return ck.find(n) != nullptr; });
  const ModelConfig& c = m.cfg;
  std::map<std::string, int64_t> bytes_by_dtype;
  for (const auto& n : ck.names()) {
    const TensorRecord& r = ck.get(n);
    m.checkpoint_parameters += r.numel();
    bytes_by_dtype[st_dtype_name(r.st_dtype)] += int64_t(r.nbytes);
  }
  int64_t best = -1;
  for (auto& [k, v] : bytes_by_dtype)
    if (v > best) { best = v; m.checkpoint_dtype = k; }

  const QuantConfig qc = read_quant_config(dir);
  FT_CHECK(!(qc.present && opt.quantize), dir, " is already quantized (config.json \"quantization\"); drop --quantize");
  if (opt.quantize) {
    FT_CHECK(opt.quantize == 4 || opt.quantize == 8 || quant_bits_supported(opt.quantize), "--quantize ", opt.quantize,
             ": unsupported bit width (4 or 8; 2, 3, 5, 6 also work)");
    FT_CHECK(quant_group_supported(opt.group_size), "--group-size ", opt.group_size, ": unsupported (32, 64 or 128)");
  }
  Loader L{ck, c, opt.dtype, qc, opt.quantize, opt.group_size, (std::filesystem::path(dir) / "config.json").string()};
  m.layers.resize(size_t(c.num_layers));
  for (const ModelTensor& t : model_tensors(c)) {
    m.tensor(t) = t.matrix() ? L.matrix(t.name, t.shape) : L.vec(t.name, t.shape);
    if (t.role == TensorRole::Projection && !t.bias) m.projection(t)->name = t.module();
  }
  if (c.tie_word_embeddings) m.lm_head = m.embed;
  return m;
}

bool Model::has_weights(const std::string& dir) {
  if (is_gguf_file(dir)) return true;
  namespace fs = std::filesystem;
  return fs::exists(fs::path(dir) / "model.safetensors") || fs::exists(fs::path(dir) / "model.safetensors.index.json") ||
         (fs::is_regular_file(dir) && dir.size() > 12 && dir.substr(dir.size() - 12) == ".safetensors");
}

Model Model::init_random(const std::string& dir, uint64_t seed, double std) {
  Model m;
  m.dir = dir;
  m.cfg = load_model_config(dir);
  if (std <= 0) {
    std = 0.02;
    const nlohmann::json j = read_json_file((std::filesystem::path(dir) / "config.json").string());
    if (j.is_object() && j.contains("initializer_range") && j["initializer_range"].is_number()) std = j["initializer_range"].get<double>();
  }
  const ModelConfig& c = m.cfg;
  uint64_t k = 0;
  auto mat = [&](int64_t out, int64_t in) { return Tensor::randn({out, in}, hash2(seed, ++k), float(std)); };
  auto norm = [&](int64_t n) { return Tensor::full({n}, c.norm_plus_one ? 0.f : 1.f); };
  const std::vector<ModelTensor> tensors = model_tensors(c);
  m.layers.resize(size_t(c.num_layers));
  // Matrices draw from the stream in the order embedding, head, then the layers' projections.
  auto init = [&](const ModelTensor& t) {
    if (t.role == TensorRole::Norm) m.tensor(t) = norm(t.shape[0]);
    else if (t.bias) m.tensor(t) = Tensor::zeros(t.shape);
    else m.tensor(t) = mat(t.shape[0], t.shape[1]);
    if (t.role == TensorRole::Projection && !t.bias) m.projection(t)->name = t.module();
    m.checkpoint_parameters += t.shape.size() == 1 ? t.shape[0] : t.shape[0] * t.shape[1];
  };
  for (const ModelTensor& t : tensors)
    if (t.role == TensorRole::Embedding || t.role == TensorRole::Head) init(t);
  for (const ModelTensor& t : tensors)
    if (t.role != TensorRole::Embedding && t.role != TensorRole::Head) init(t);
  if (c.tie_word_embeddings) m.lm_head = m.embed;
  m.checkpoint_dtype = "F32";
  return m;
}

Tensor& Model::tensor(const ModelTensor& t) {
  if (t.layer < 0) {
    switch (t.slot) {
      case TensorSlot::Embed: return embed;
      case TensorSlot::FinalNorm: return final_norm;
      case TensorSlot::LmHead: return lm_head;
      default: break;
    }
    throw Error(cat("tensor '", t.name, "': a layer tensor without a layer index"));
  }
  FT_CHECK(size_t(t.layer) < layers.size(), "tensor '", t.name, "': layer ", t.layer, " of ", layers.size());
  DecoderLayer& l = layers[size_t(t.layer)];
  switch (t.slot) {
    case TensorSlot::InputNorm: return l.input_norm;
    case TensorSlot::PostAttnNorm: return l.post_attn_norm;
    case TensorSlot::PreFfNorm: return l.pre_ff_norm;
    case TensorSlot::PostFfNorm: return l.post_ff_norm;
    case TensorSlot::QNorm: return l.q_norm;
    case TensorSlot::KNorm: return l.k_norm;
    default: break;
  }
  Projection* p = projection(t);
  FT_CHECK(p, "tensor '", t.name, "': no member for its slot");
  return t.bias ? p->bias : p->weight;
}

const Tensor& Model::tensor(const ModelTensor& t) const { return const_cast<Model*>(this)->tensor(t); }

Projection* Model::projection(const ModelTensor& t) {
  if (t.role != TensorRole::Projection || t.layer < 0 || size_t(t.layer) >= layers.size()) return nullptr;
  DecoderLayer& l = layers[size_t(t.layer)];
  switch (t.slot) {
    case TensorSlot::Q: return &l.q;
    case TensorSlot::K: return &l.k;
    case TensorSlot::V: return &l.v;
    case TensorSlot::QKV: return &l.qkv;
    case TensorSlot::O: return &l.o;
    case TensorSlot::Gate: return &l.gate;
    case TensorSlot::Up: return &l.up;
    case TensorSlot::GateUp: return &l.gate_up;
    case TensorSlot::Down: return &l.down;
    default: return nullptr;
  }
}

const Projection* Model::projection(const ModelTensor& t) const { return const_cast<Model*>(this)->projection(t); }

std::vector<NamedParam> Model::make_trainable(const std::function<bool(const std::string&)>& want) {
  std::vector<NamedParam> params;
  auto train = [&](const ModelTensor& t) {
    Tensor& x = tensor(t);
    if (!x.defined() || !want(t.name)) return;
    FT_CHECK(!is_quantized(x), "full fine-tuning: '", t.name, "' is a quantized weight (frozen); train a LoRA/DoRA adapter on a quantized ",
             "model, or load the float model for full fine-tuning (or exclude it with full_targets)");
    x = x.to(DType::F32).clone();
    x.set_requires_grad(true);
    params.push_back({t.name, x});
  };
  const std::vector<ModelTensor> tensors = model_tensors(cfg);
  for (const ModelTensor& t : tensors)
    if (t.layer < 0) train(t);
  if (cfg.tie_word_embeddings) lm_head = embed;
  for (const ModelTensor& t : tensors)
    if (t.layer >= 0 && t.role != TensorRole::Projection) train(t);
  for (const ModelTensor& t : tensors)
    if (t.role == TensorRole::Projection) train(t);
  return params;
}

std::vector<Projection*> Model::projections() {
  std::vector<Projection*> r;
  for (const ModelTensor& t : model_tensors(cfg))
    if (t.role == TensorRole::Projection && !t.bias && tensor(t).defined()) r.push_back(projection(t));
  return r;
}

int64_t Model::weight_bytes() const {
  int64_t n = 0;
  for (const ModelTensor& t : model_tensors(cfg))
    if (tensor(t).defined()) n += int64_t(tensor(t).nbytes());
  return n;
}

std::vector<std::pair<std::string, const Tensor*>> Model::quantized_matrices() const {
  std::vector<std::pair<std::string, const Tensor*>> r;
  if (is_quantized(embed)) r.push_back({cfg.weight("embed_tokens.weight"), &embed});
  if (is_quantized(lm_head) && lm_head.impl() != embed.impl()) r.push_back({cfg.lm_head_name, &lm_head});
  for (auto& l : layers)
    for (const Projection* p : {&l.q, &l.k, &l.v, &l.qkv, &l.o, &l.gate, &l.up, &l.gate_up, &l.down})
      if (is_quantized(p->weight)) r.push_back({p->name + ".weight", &p->weight});
  return r;
}

KVCache Model::make_cache(int64_t batch, int64_t capacity, DType dt) const {
  FT_CHECK(dt == DType::F32 || dt == DType::BF16, "KV cache dtype must be float32 or bfloat16, got ", dtype_name(dt));
  KVCache c;
  c.batch = batch;
  c.capacity = capacity;
  for (int64_t i = 0; i < cfg.num_layers; ++i) {
    c.k.push_back(Tensor::zeros({batch, capacity, cfg.num_kv_heads, cfg.head_dim}).to(dt));
    c.v.push_back(Tensor::zeros({batch, capacity, cfg.num_kv_heads, cfg.head_dim}).to(dt));
  }
  return c;
}

namespace {
// Writes x [B, T, Hkv, D] into cache [B, cap, Hkv, D] at rows [offset, offset + T).
void cache_write(Tensor& cache, const Tensor& x_in, int64_t offset) {
  Tensor x = x_in.to(DType::F32).contiguous();
  int64_t B = x.size(0), T = x.size(1), row = x.size(2) * x.size(3), cap = cache.size(1);
  FT_CHECK(offset + T <= cap, "KV cache full: ", offset + T, " positions needed, capacity ", cap);
  const float* src = x.data<float>();
  const size_t esz = dtype_size(cache.dtype());
  char* dst = static_cast<char*>(cache.raw());
  for (int64_t b = 0; b < B; ++b)
    convert(src + b * T * row, DType::F32, dst + size_t((b * cap + offset) * row) * esz, cache.dtype(), size_t(T * row));
}
}  // namespace

Model::Qkv Model::layer_qkv(int64_t i, const Tensor& x, const Tensor& cos, const Tensor& sin,
                            const ForwardOptions& opt) const {
  const DecoderLayer& l = layers[size_t(i)];
  const float eps = float(cfg.rms_norm_eps);
  const bool p1 = cfg.norm_plus_one, tr = opt.training;
  const int64_t B = x.size(0), T = x.size(1), Hq = cfg.num_heads, Hkv = cfg.num_kv_heads, D = cfg.head_dim;

  // Attention block. Shapes: h [B,T,hidden] -> q [B,T,Hq,D], k/v [B,T,Hkv,D].
  Tensor h = rms_norm(x, l.input_norm, eps, p1);
  Tensor q, k, v;
  if (cfg.fused_qkv) {
    auto parts = split(l.qkv.forward(h, tr), {cfg.q_dim(), cfg.kv_dim(), cfg.kv_dim()}, -1);
    q = parts[0], k = parts[1], v = parts[2];
  } else {
    q = l.q.forward(h, tr), k = l.k.forward(h, tr), v = l.v.forward(h, tr);
  }
  q = reshape(q, {B, T, Hq, D});
  k = reshape(k, {B, T, Hkv, D});
  v = reshape(v, {B, T, Hkv, D});
  if (cfg.qk_norm) {
    q = rms_norm(q, l.q_norm, eps, p1);
    k = rms_norm(k, l.k_norm, eps, p1);
  }
  return {rope(q, cos, sin), rope(k, cos, sin), v};
}

Tensor Model::layer_rest(int64_t i, const Tensor& x, Qkv qkv, const ForwardOptions& opt, int64_t offset,
                         bool graph_only) const {
  const DecoderLayer& l = layers[size_t(i)];
  const LayerSpec& spec = cfg.layers[size_t(i)];
  const float eps = float(cfg.rms_norm_eps);
  const bool p1 = cfg.norm_plus_one, tr = opt.training;
  const int64_t B = x.size(0), T = x.size(1), Hq = cfg.num_heads, D = cfg.head_dim;
  Tensor q = std::move(qkv.q), k = std::move(qkv.k), v = std::move(qkv.v);
  if (opt.cache) {
    cache_write(opt.cache->k[size_t(i)], k, offset);
    cache_write(opt.cache->v[size_t(i)], v, offset);
    k = opt.cache->k[size_t(i)].slice(1, 0, offset + T);
    v = opt.cache->v[size_t(i)].slice(1, 0, offset + T);
  }
  AttentionOptions ao;
  ao.scale = float(cfg.attn_scale);
  ao.causal = true;
  ao.window = spec.sliding ? spec.window : 0;
  ao.softcap = float(cfg.attn_logit_softcap);
  ao.q_offset = offset;
  ao.segment_ids = opt.segment_ids;
  // Residual connections are fused into the projections (one pass less) unless a norm sits between.
  Tensor att = reshape(attention(q, k, v, ao), {B, T, Hq * D});
  Tensor x1 = cfg.sandwich_norms ? add(x, rms_norm(l.o.forward(att, tr), l.post_attn_norm, eps, p1)) : l.o.forward(att, tr, x);

  // MLP block: down(act(gate(h)) * up(h)).
  Tensor h2 = rms_norm(x1, cfg.sandwich_norms ? l.pre_ff_norm : l.post_attn_norm, eps, p1);
  Tensor gate, up;
  if (cfg.fused_gate_up) {
    auto parts = split(l.gate_up.forward(h2, tr), {cfg.intermediate_size, cfg.intermediate_size}, -1);
    gate = parts[0], up = parts[1];
  } else {
    gate = l.gate.forward(h2, tr), up = l.up.forward(h2, tr);
  }
  Tensor act = gated_act(gate, up, cfg.act);
  if (cfg.sandwich_norms) return add(x1, rms_norm(l.down.forward(act, tr), l.post_ff_norm, eps, p1));
  return l.down.forward(act, tr, x1, graph_only);
}

Tensor Model::hidden(const Tensor& ids, const ForwardOptions& opt) const {
  FT_CHECK(ids.dim() == 2, "model input ids must be [batch, seq], got ", ids.shape_str());
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t offset = opt.cache ? opt.cache->len : 0;
  if (opt.cache) FT_CHECK(opt.cache->batch == B, "KV cache batch ", opt.cache->batch, " != input batch ", B);
  if (cfg.max_position_embeddings > 0 && !opt.positions.defined() && offset + T > cfg.max_position_embeddings * 64)
    throw Error(cat("sequence of ", offset + T, " positions is far beyond the model's context (max_position_embeddings ",
                    cfg.max_position_embeddings, ")"));

  Tensor x = embedding(embed, ids);  // [B, T, hidden]
  // fp32 scale whatever the storage (transformers with dtype=float32; a model loaded in bf16 there
  // would round sqrt(hidden) to bf16, but ft computes in fp32: README "Precision").
  if (cfg.embed_scale != 1.0) x = scale(x, float(cfg.embed_scale));

  // RoPE tables, one per distinct RopeParams (Gemma 3 has two).
  std::vector<int64_t> pos;
  int64_t seq_len = offset + T;
  if (opt.positions.defined()) {
    FT_CHECK(opt.positions.shape() == ids.shape(), "positions ", opt.positions.shape_str(), " must match ids ", ids.shape_str());
    std::vector<int32_t> p = opt.positions.to_ids();
    pos.assign(p.begin(), p.end());
    for (int64_t v : pos) seq_len = std::max(seq_len, v + 1);
  } else {
    for (int64_t t = 0; t < T; ++t) pos.push_back(offset + t);
  }
  if (opt.cache) {
    opt.cache->max_seq_seen = std::max(opt.cache->max_seq_seen, seq_len);
    seq_len = opt.cache->max_seq_seen;
  }
  std::vector<const RopeParams*> distinct;
  std::vector<size_t> which(cfg.layers.size());
  std::vector<Tensor> coss, sins;
  for (size_t i = 0; i < cfg.layers.size(); ++i) {
    size_t j = 0;
    while (j < distinct.size() && !(*distinct[j] == cfg.layers[i].rope)) ++j;
    if (j == distinct.size()) {
      distinct.push_back(&cfg.layers[i].rope);
      std::vector<float> c, s;
      rope_cos_sin(cfg.layers[i].rope, int(cfg.head_dim), pos.data(), int64_t(pos.size()), seq_len, c, s);
      int64_t rot = int64_t(c.size()) / int64_t(pos.size());
      Shape sh = opt.positions.defined() ? Shape{B, T, rot} : Shape{T, rot};
      coss.push_back(Tensor::from_vector(c, sh));
      sins.push_back(Tensor::from_vector(s, sh));
    }
    which[i] = j;
  }

  for (int64_t i = 0; i < cfg.num_layers; ++i) {
    const Tensor& c = coss[which[size_t(i)]];
    const Tensor& s = sins[which[size_t(i)]];
    bool ckpt = opt.checkpoint_every > 0 && grad_enabled() && i % opt.checkpoint_every == 0 && !opt.cache;
    if (ckpt) {
      ForwardOptions o = opt;  // captured by value: backward runs after this call returns
      // Recomputed for backward, the layer's output value is never read: skip its last GEMM then.
      if (opt.checkpoint_keep_qkv) {  // selective: q, k, v (after RoPE) kept, the rest recomputed
        Qkv qkv = layer_qkv(i, x, c, s, opt);
        x = checkpoint(
            [this, i, o](const std::vector<Tensor>& in) {
              return layer_rest(i, in[0], {in[1], in[2], in[3]}, o, 0, in_checkpoint_recompute());
            },
            {x, qkv.q, qkv.k, qkv.v});
      } else {  // full: only the block's input kept
        x = checkpoint(
            [this, i, c, s, o](const std::vector<Tensor>& in) {
              return layer_rest(i, in[0], layer_qkv(i, in[0], c, s, o), o, 0, in_checkpoint_recompute());
            },
            {x});
      }
    } else {
      x = layer_rest(i, x, layer_qkv(i, x, c, s, opt), opt, offset);
    }
  }
  if (opt.cache) opt.cache->len += T;
  return rms_norm(x, final_norm, float(cfg.rms_norm_eps), cfg.norm_plus_one);
}

Tensor Model::loss_sum(const Tensor& h, const Tensor& targets) const {
  return linear_cross_entropy_sum(h, lm_head, targets, -100, float(std::max(0.0, cfg.final_logit_softcap)));
}

Tensor Model::logits(const Tensor& h) const {
  Tensor y = linear(h, lm_head);
  if (cfg.final_logit_softcap > 0) y = softcap(y, float(cfg.final_logit_softcap));
  return y;
}

}  // namespace ft
