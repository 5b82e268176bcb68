// Embedding gather with a scatter-add gradient.
#include <cstring>

#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/quant.h"

namespace ft {

namespace {
struct EmbeddingNode : Node {
  const char* name() const override { return "embedding"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor& w = inputs[0];
    const Tensor& ids = saved[0];
    int64_t V = w.size(0), D = w.size(1), n = ids.numel();
    Tensor g = f32c(g_in);
    Tensor gw = Tensor::zeros({V, D});
    const int32_t* pi = ids.data<int32_t>();
    const float* pg = g.data<float>();
    float* pw = gw.data<float>();
    // Parallel over column chunks: each thread owns a slice of D, so no two threads write the same row
    // element, and the order of accumulation (token order) is fixed: deterministic.
    int64_t cb = 64;
    parallel_range((D + cb - 1) / cb, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        int64_t d0 = c * cb, d1 = std::min(D, d0 + cb);
        for (int64_t t = 0; t < n; ++t) {
          float* row = pw + int64_t(pi[t]) * D;
          const float* gr = pg + t * D;
          for (int64_t d = d0; d < d1; ++d) row[d] += gr[d];
        }
      }
    });
    return {gw};
  }
};
}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids_in) {
  FT_PROFILE_SCOPE("embedding");
  FT_CHECK(weight.dim() == 2, "embedding: weight must be [vocab, dim], got ", weight.shape_str());
  FT_CHECK(ids_in.dtype() == DType::I32 || ids_in.dtype() == DType::I64, "embedding: ids must be int32/int64, got ", dtype_name(ids_in.dtype()));
  Tensor ids = ids_in.contiguous().to(DType::I32);
  Tensor w = weight.contiguous();
  int64_t V = w.size(0), D = w.size(1), n = ids.numel();
  const int32_t* pi = ids.data<int32_t>();
  for (int64_t t = 0; t < n; ++t)
    FT_CHECK(pi[t] >= 0 && pi[t] < V, "embedding: token id ", pi[t], " at position ", t, " is outside the vocabulary [0, ", V, ")");
  Shape os = ids.shape();
  os.push_back(D);
  Tensor out = Tensor::empty(os);
  float* po = out.data<float>();
  if (is_quantized(w)) {  // dequantise only the gathered rows
    const QuantParams& q = quant_params(w);
    parallel_range(n, 64, [&](int64_t s, int64_t e) {
      for (int64_t t = s; t < e; ++t) dequantize_block(q, pi[t], pi[t] + 1, 0, D, po + t * D, D);
    });
    FT_CHECK(!weight.requires_grad(), "embedding: a quantized embedding cannot be trained");
    return out;
  }
  const size_t es = dtype_size(w.dtype());
  const char* pw = static_cast<const char*>(w.raw());
  parallel_range(n, 64, [&](int64_t s, int64_t e) {
    for (int64_t t = s; t < e; ++t) convert(pw + size_t(pi[t]) * size_t(D) * es, w.dtype(), po + t * D, DType::F32, size_t(D));
  });
  if (should_record({&weight})) {
    auto node = std::make_shared<EmbeddingNode>();
    node->inputs = {weight};
    node->saved = {ids};
    return record(out, node);
  }
  return out;
}

}  // namespace ft
