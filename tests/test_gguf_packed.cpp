// Quantised GGUF tensors kept packed (models/gguf_packed.h): every block type re-expressed as
// affine groups gives exactly ggml's dequantised values (on every ISA path), groups of 16 (Q6_K)
// run through the GEMM/GEMV kernels exactly, and a model read from q8_0/q4_0/q4_k/q6_k files
// computes the loss of the same file dequantised to fp32, holding only the packed bytes.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "autograd/autograd.h"
#include "autograd/dtype.h"
#include "autograd/gemm.h"
#include "autograd/gemv.h"
#include "autograd/ops.h"
#include "autograd/quant.h"
#include "lora/adapter.h"
#include "models/export.h"
#include "models/gguf.h"
#include "models/gguf_export.h"
#include "models/gguf_load.h"
#include "models/gguf_packed.h"
#include "models/gguf_quant.h"
#include "tests/isa_levels.h"

namespace ft {
namespace {

namespace fs = std::filesystem;

const GgmlType kTypes[] = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                           GgmlType::Q5_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// Offsets of the fp16 d / dmin / m fields of a block (the rest of a block is codes and integer scales).
std::vector<size_t> half_fields(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_1:
    case GgmlType::Q5_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: return {0, 2};
    case GgmlType::Q6_K: return {208};
    default: return {0};
  }
}

// Random blocks: random bytes, the fp16 fields random finite values of either sign (normal and subnormal).
std::vector<uint8_t> random_rows(GgmlType t, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  const size_t bb = ggml_block_bytes(t);
  std::vector<uint8_t> v(ggml_row_bytes(t, cols) * size_t(rows));
  for (auto& b : v) b = uint8_t(rng());
  for (size_t at = 0; at < v.size(); at += bb)
    for (size_t f : half_fields(t)) {
      uint16_t h = uint16_t(rng());
      if (((h >> 10) & 31) == 31) h = uint16_t(h & ~(1u << 14));  // not inf/NaN
      std::memcpy(&v[at + f], &h, 2);
    }
  return v;
}

std::vector<float> ggml_rows(GgmlType t, const std::vector<uint8_t>& data, int64_t rows, int64_t cols) {
  std::vector<float> y(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) ggml_dequantize_row(t, data.data() + size_t(r) * ggml_row_bytes(t, cols), cols, y.data() + r * cols);
  return y;
}

// Equal values (+0 == −0: see gguf_packed.h, the one difference is the sign of an exact zero).
void expect_same_values(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  size_t zeros = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i], want[i]) << what << " element " << i;
    zeros += got[i] == 0.f;
  }
  EXPECT_LT(zeros, got.size() / 4) << what;  // the comparison is not vacuous
}

TEST(GgufPacked, EveryBlockTypeDequantisesExactlyAsGgmlOnEveryIsa) {
  testing::IsaGuard guard;
  const int64_t rows = 6, cols = 512;
  for (GgmlType t : kTypes) {
    const std::string name = ggml_type_name(t);
    std::vector<uint8_t> data = random_rows(t, rows, cols, 7 + uint32_t(t));
    const std::vector<float> want = ggml_rows(t, data, rows, cols);
    Tensor q = gguf_repack(t, data.data(), rows, cols, nullptr, name);
    const QuantParams& p = quant_params(q);
    EXPECT_EQ(p.bits, gguf_affine_of(t).bits) << name;
    EXPECT_EQ(p.group_size, t == GgmlType::Q6_K ? 16 : 32) << name;
    // the scales: the file's fp16 d held in 16 bits; the symmetric types' offsets −128·d (Q8_0), −8·d
    // (Q4_0), −16·d (Q5_0) are derived from them, not stored (here the d span fp16's whole range, where
    // such offsets would overflow fp16: the products are fp32); Q4_1/Q5_1's d and m are both held, fp16
    // values whatever they are. The K-quants keep two levels: an 8-bit code for each group's scale and
    // bias, one fp32 pair per super-block of 256 (8 groups of 32, or 16 of 16 for Q6_K)
    const bool kquant = t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K;
    const bool m_field = t == GgmlType::Q4_1 || t == GgmlType::Q5_1;
    const int64_t codes_bytes = rows * cols * p.bits / 8;
    if (kquant) {
      EXPECT_TRUE(p.two_level()) << name;
      EXPECT_EQ(p.super_group, 256 / p.group_size) << name;
      EXPECT_EQ(int64_t(q.nbytes()), codes_bytes + 2 * rows * cols / p.group_size + 8 * rows * cols / 256) << name;
      EXPECT_LE(double(q.nbytes()) * 8 / double(rows * cols), t == GgmlType::Q4_K ? 4.75 : t == GgmlType::Q5_K ? 5.75 : 7.25) << name;
    } else {
      EXPECT_FALSE(p.two_level()) << name;
      EXPECT_EQ(p.scales.dtype(), DType::F16) << name;
      EXPECT_EQ(p.bias_from_scale, m_field ? 0 : -(1 << (p.bits - 1))) << name;
      EXPECT_EQ(p.biases.defined(), m_field) << name;
      EXPECT_EQ(int64_t(q.nbytes()), codes_bytes + (m_field ? 4 : 2) * rows * cols / p.group_size) << name;
      EXPECT_EQ(double(q.nbytes()) * 8 / double(rows * cols), p.bits + (m_field ? 1.0 : 0.5)) << name;  // as in the file
    }
    if (!kquant) {  // d below 2 (as in real files: d ≈ max|w| / 127): every type but the K-quants holds them in fp16
      std::vector<uint8_t> small = data;
      for (size_t at = 0; at < small.size(); at += ggml_block_bytes(t))
        for (size_t f : half_fields(t)) small[at + f + 1] = uint8_t(small[at + f + 1] & ~0x40u);  // exponent < 16: |h| < 2
      Tensor qs = gguf_repack(t, small.data(), rows, cols, nullptr, name);
      EXPECT_EQ(quant_params(qs).scales.dtype(), DType::F16) << name;
      EXPECT_EQ(int64_t(qs.nbytes()), rows * cols * p.bits / 8 + (m_field ? 4 : 2) * rows * cols / p.group_size) << name;
      expect_same_values(dequantize(qs).to_vector(), ggml_rows(t, small, rows, cols), name + " small d");
    }
    for (const std::string& isa : testing::isa_levels()) {
      set_isa(isa);
      expect_same_values(dequantize(q).to_vector(), want, name + " " + isa);
      // unaligned segments go through dequantize_block's scalar ends
      std::vector<float> seg(size_t(rows * 37));
      dequantize_block(p, 0, rows, 5, 42, seg.data(), 37);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < 37; ++c) ASSERT_EQ(seg[size_t(r * 37 + c)], want[size_t(r * cols + 5 + c)]) << name << " " << isa;
    }
    // a row order (llama.cpp's q/k rows back to HF's): row i is source row order[i]
    std::vector<int64_t> order = {3, 0, 5, 1, 4, 2};
    Tensor qo = gguf_repack(t, data.data(), rows, cols, &order, name);
    std::vector<float> reordered;
    for (int64_t r : order) reordered.insert(reordered.end(), want.begin() + r * cols, want.begin() + (r + 1) * cols);
    expect_same_values(dequantize(qo).to_vector(), reordered, name + " reordered");
  }
}

// Groups of 16 (Q6_K) and 5/6-bit codes through the GEMM packers: the bits of sgemm on the
// dequantised matrix, on every ISA path. The decode GEMV (M <= kGemvMaxRows, regrouped by the affine
// identity, autograd/quant.h) within its stated bound of the dot with s·q + b in double.
TEST(GgufPacked, GemmAndGemvOnGroupsOf16EqualTheDequantisedMatrix) {
  testing::IsaGuard guard;
  for (GgmlType t : {GgmlType::Q6_K, GgmlType::Q5_K, GgmlType::Q8_0}) {
    const int64_t out = 37, in = 512;
    std::vector<uint8_t> data = random_rows(t, out, in, 99);
    Tensor q = gguf_repack(t, data.data(), out, in, nullptr, "w");
    const QuantParams& p = quant_params(q);
    Tensor wf = dequantize(q);
    for (const std::string& isa : testing::isa_levels()) {
      set_isa(isa);
      for (int64_t M : {1, 3, 9}) {
        Tensor x = Tensor::randn({M, in}, uint64_t(M), 1e-3f);
        std::vector<float> y1(size_t(M * out)), y2(size_t(M * out));
        gemm_qw(false, true, M, out, in, 1.f, x.data<float>(), in, p, 0.f, y1.data(), out);
        sgemm(false, true, M, out, in, 1.f, x.data<float>(), in, wf.data<float>(), in, 0.f, y2.data(), out);
        if (M > kGemvMaxRows) {
          ASSERT_EQ(y1, y2) << ggml_type_name(t) << " " << isa << " M " << M;
        } else {
          const float* xs = x.data<float>();
          // (held in fp16 for the types whose scales are fp16 (compact_quant_scales), two-level for the K-quants)
          const std::vector<float> scv = quant_group_params(p, false).to_vector(), biv = quant_group_params(p, true).to_vector();
          const float* sc = scv.data();
          const float* bi = biv.data();
          const int64_t gpr = p.groups_per_row();
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < out; ++j) {
              double ref = 0, mag = 0;
              for (int64_t c = 0; c < in; ++c) {
                const double sg = sc[j * gpr + c / p.group_size], bg = bi[j * gpr + c / p.group_size], q = quant_code(p, j, c);
                ref += double(xs[i * in + c]) * (sg * q + bg);
                mag += std::fabs(double(xs[i * in + c])) * (std::fabs(sg) * q + std::fabs(bg));
              }
              ASSERT_LE(std::fabs(y1[size_t(i * out + j)] - ref), double(in) * std::ldexp(1.0, -23) * mag + 1e-30)
                  << ggml_type_name(t) << " " << isa << " M " << M << " row " << j;
            }
        }
        Tensor g = Tensor::randn({M, out}, uint64_t(M + 100), 1e-3f);
        std::vector<float> d1(size_t(M * in)), d2(size_t(M * in));
        gemm_qw(false, false, M, in, out, 1.f, g.data<float>(), out, p, 0.f, d1.data(), in);
        sgemm(false, false, M, in, out, 1.f, g.data<float>(), out, wf.data<float>(), in, 0.f, d2.data(), in);
        ASSERT_EQ(d1, d2) << ggml_type_name(t) << " " << isa << " backward M " << M;
      }
    }
  }
  // quantize_affine (merging) accepts groups of 16 as well
  Tensor w = Tensor::randn({4, 64}, 5, 0.1f);
  EXPECT_EQ(quant_params(quantize_affine(w, 6, 16, DType::F32)).groups_per_row(), 4);
  EXPECT_FALSE(quant_group_supported(16));  // not an MLX group size (checkpoints, --group-size)
}

// ------------------------------------------------------------------------------- whole models

const fs::path kModels = fs::path(FT_TEST_DATA).parent_path() / "fixtures" / "models";

fs::path tmp_dir() {
  fs::path d = fs::temp_directory_path() / ("ft_gguf_packed_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

// A random llama (llama3 rope, untied head) whose rows fill 256-element K-quant blocks.
Model random_base(const fs::path& dir) {
  fs::create_directories(dir);
  nlohmann::json c = nlohmann::json::parse(std::ifstream(kModels / "llama" / "config.json"));
  c["hidden_size"] = 256, c["intermediate_size"] = 512, c["head_dim"] = 64;
  std::ofstream(dir / "config.json") << c.dump(2);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(kModels / "llama" / f, dir / f, fs::copy_options::overwrite_existing);
  return Model::init_random(dir.string(), 11, 0.05);
}

double seq_loss(const Model& m, const std::vector<int32_t>& ids) {
  NoGradGuard ng;
  const int64_t T = int64_t(ids.size());
  Tensor logits = m.forward(Tensor::from_ids(ids, {1, T}));
  std::vector<int32_t> tgt(ids.begin() + 1, ids.end());
  tgt.push_back(-100);
  return cross_entropy(reshape(logits, {T, logits.size(-1)}), Tensor::from_ids(tgt, {T})).item();
}

void dequantize_all(Model& m) {
  const bool tied = m.lm_head.impl() == m.embed.impl();
  if (is_quantized(m.embed)) m.embed = m.embed.to(DType::F32);
  if (tied) m.lm_head = m.embed;
  else if (is_quantized(m.lm_head)) m.lm_head = m.lm_head.to(DType::F32);
  for (Projection* p : m.projections())
    if (is_quantized(p->weight)) p->weight = p->weight.to(DType::F32);
}

TEST(GgufPacked, QuantisedFilesGiveTheLossOfTheirDequantisedWeightsHoldingOnlyPackedBytes) {
  const fs::path dir = tmp_dir();
  Model base = random_base(dir / "base");
  std::vector<int32_t> ids;
  for (int i = 0; i < 24; ++i) ids.push_back(int32_t((i * 37 + 5) % 512));
  for (const char* ot : {"q8_0", "q4_0", "q4_k", "q6_k"}) {
    SCOPED_TRACE(ot);
    const fs::path g = dir / (std::string(ot) + ".gguf");
    export_gguf(base, g.string(), GgufExportOptions{ot, ""});
    Model m = Model::load(g.string());
    auto f = GgufFile::open(g.string());
    // every matrix packed; the bytes in memory are the packed codes + the file's fp16 scale per group
    // (Q4_0, Q5_0, Q8_0: the offset is −2^(bits−1) times it; Q4_1, Q5_1: an fp16 offset too), or for
    // the K-quants an 8-bit code for each and an fp32 pair per super-block of 256
    int64_t expect_bytes = 0, quantised = 0;
    for (const GgufTensorInfo& t : f->tensors()) {
      const GgufAffine a = gguf_affine_of(t.type);
      if (a.bits == 0) {
        if (t.name != "rope_freqs.weight") expect_bytes += t.numel() * 4;  // rope factors are config, not weights
        continue;
      }
      ++quantised;
      const bool kquant = t.type == GgmlType::Q4_K || t.type == GgmlType::Q5_K || t.type == GgmlType::Q6_K;
      const bool sym = t.type == GgmlType::Q4_0 || t.type == GgmlType::Q5_0 || t.type == GgmlType::Q8_0;
      expect_bytes += t.numel() * a.bits / 8 + (kquant ? 2 * t.numel() / a.group + 8 * t.numel() / 256 : (sym ? 2 : 4) * t.numel() / a.group);
    }
    EXPECT_EQ(int64_t(m.quantized_matrices().size()), quantised);
    EXPECT_EQ(quantised, 2 + 2 * 7);  // embedding, head, 7 projections per layer
    EXPECT_EQ(m.weight_bytes(), expect_bytes);
    // the packed q_proj holds exactly ggml's values, rows back in HF order
    const GgufTensorInfo* tq = f->tensor("blk.0.attn_q.weight");
    ASSERT_TRUE(tq);
    std::vector<uint8_t> raw(tq->data, tq->data + tq->nbytes);
    std::vector<float> want = gguf_permute_rows(ggml_rows(tq->type, raw, tq->ne[1], tq->ne[0]), tq->ne[1], tq->ne[0], m.cfg.num_heads, true);
    expect_same_values(m.layers[0].q.weight.to(DType::F32).to_vector(), want, "blk.0.attn_q");
    // loss: the packed model against the same weights dequantised to fp32 (same kernels' sums)
    Model d = Model::load(g.string());
    dequantize_all(d);
    EXPECT_TRUE(d.quantized_matrices().empty());
    const double lq = seq_loss(m, ids), ld = seq_loss(d, ids), lb = seq_loss(base, ids);
    EXPECT_EQ(lq, ld);
    EXPECT_NEAR(lq, lb, 0.05 * lb);  // and close to the float model it was written from
    EXPECT_NE(lq, lb);
    // as a HF directory: MLX-layout affine groups (fp32 scales), Q6_K's groups of 16 as float32; same loss
    const fs::path hf = dir / (std::string(ot) + "-hf");
    export_model(m, hf.string(), ExportOptions{});
    Model r = Model::load(hf.string());
    EXPECT_EQ(r.quantized_matrices().size(), std::string(ot) == "q6_k" ? 0u : m.quantized_matrices().size());
    EXPECT_EQ(seq_loss(r, ids), lq);
  }
  fs::remove_all(dir);
}

// QLoRA on a packed GGUF base: gradients reach the adapter (the base stays frozen and packed);
// merging gives float matrices equal to base + adapter, and a GGUF written from the merged model
// (quantised matrices dequantised one at a time, then quantised to the source's type) loads.
TEST(GgufPacked, LoraOnAPackedBaseTrainsMergesAndExports) {
  const fs::path dir = tmp_dir();
  Model base = random_base(dir / "base2");
  const fs::path g = dir / "b.gguf";
  export_gguf(base, g.string(), GgufExportOptions{"q4_0", ""});
  Model m = Model::load(g.string());
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.targets = {"q_proj", "down_proj"};
  lc.seed = 3;
  std::vector<NamedParam> ps = attach_lora(m, lc);
  std::vector<int32_t> ids = {1, 17, 300, 42, 8, 99, 250, 3};
  {
    const int64_t T = int64_t(ids.size());
    Tensor logits = m.forward(Tensor::from_ids(ids, {1, T}));
    std::vector<int32_t> tgt(ids.begin() + 1, ids.end());
    tgt.push_back(-100);
    cross_entropy(reshape(logits, {T, logits.size(-1)}), Tensor::from_ids(tgt, {T})).backward();
  }
  bool any_grad = false;
  for (auto& p : ps) {
    ASSERT_TRUE(p.value.grad().defined()) << p.name;
    for (float x : p.value.grad().to_vector()) any_grad = any_grad || x != 0.f;
  }
  EXPECT_TRUE(any_grad);
  EXPECT_TRUE(is_quantized(m.layers[0].q.weight));
  for (auto& p : ps)  // a non-zero adapter
    if (p.name.find("lora_B") != std::string::npos) {
      std::vector<float> v = Tensor::randn(p.value.shape(), 4, 0.01f).to_vector();
      std::copy(v.begin(), v.end(), p.value.data<float>());
    }
  const double with_adapter = seq_loss(m, ids);
  merge_lora(m, DType::F32, /*requantize=*/false);
  EXPECT_FALSE(is_quantized(m.layers[0].q.weight));  // merged: float
  EXPECT_TRUE(is_quantized(m.layers[0].k.weight));   // untouched: still packed
  EXPECT_NEAR(seq_loss(m, ids), with_adapter, 1e-5 * with_adapter);
  const fs::path out = dir / "merged.gguf";
  export_gguf(m, out.string(), GgufExportOptions{});
  auto f = GgufFile::open(out.string());
  EXPECT_EQ(f->tensor("blk.0.attn_k.weight")->type, GgmlType::Q4_0);  // the source's type by default
  EXPECT_EQ(f->tensor("blk.0.attn_q.weight")->type, GgmlType::Q4_0);
  EXPECT_NEAR(seq_loss(Model::load(out.string()), ids), with_adapter, 0.05 * with_adapter);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ft
