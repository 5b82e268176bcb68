// matmul (batched, transposes) and linear (x·Wᵀ + b) with their vector-Jacobian products.
// All GEMMs go through the dispatched kernels in autograd/gemm.h.
#include "autograd/gemm.h"
#include "autograd/kernels.h"
#include "autograd/ops.h"

namespace ft {

namespace {

void gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// B given as a weight tensor [rows, cols] that may be bf16 (frozen base weights) or f16.
void gemm_w(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const Tensor& B, float beta, float* C, int64_t ldc) {
  if (B.dtype() == DType::BF16) {
    gemm_bf16w(ta, tb, M, N, K, alpha, A, lda, B.data<uint16_t>(), B.size(1), beta, C, ldc);
    return;
  }
  Tensor b32 = f32c(B);
  sgemm(ta, tb, M, N, K, alpha, A, lda, b32.data<float>(), B.size(1), beta, C, ldc);
}

struct MatmulNode : Node {
  bool ta, tb;
  const char* name() const override { return "matmul"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor &a = inputs[0], &b = inputs[1];
    Tensor ga, gb;
    if (needs(0)) {
      if (!ta) ga = matmul(g, b, false, !tb);
      else if (b.dim() == 2 && a.dim() > 2) ga = transpose(matmul(g, b, false, !tb), -1, -2);
      else ga = matmul(b, g, tb, true);
    }
    if (needs(1)) {
      if (b.dim() == 2 && a.dim() > 2) {
        // Shared 2-D b: flatten a's batch into rows when possible (one GEMM), else sum over batch.
        if (!ta) {
          Tensor a2 = f32c(a).view({-1, a.size(-1)}), g2 = f32c(g).view({-1, g.size(-1)});
          gb = tb ? matmul(g2, a2, true, false) : matmul(a2, g2, true, false);
        } else {
          Tensor full = tb ? matmul(g, a, true, true) : matmul(a, g, false, false);
          gb = sum_to(full, b.shape());
        }
      } else {
        gb = tb ? matmul(g, a, true, ta) : matmul(a, g, !ta, false);
      }
    }
    return {ga, gb};
  }
};

struct LinearNode : Node {
  const char* name() const override { return "linear"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor &x = inputs[0], &w = inputs[1];
    int64_t in = w.size(1), out = w.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
    Tensor g = f32c(g_in);
    Tensor gx, gw, gb;
    if (needs(0)) {  // dX[rows×in] = dY[rows×out] · W[out×in]
      gx = Tensor::empty(x.shape());
      gemm_w(false, false, rows, in, out, 1.f, g.data<float>(), out, w, 0.f, gx.data<float>(), in);
    }
    if (needs(1)) {  // dW[out×in] = dYᵀ · X   (skipped entirely for frozen weights)
      Tensor xc = f32c(x);
      gw = Tensor::empty({out, in});
      gemm_f32(true, false, out, in, rows, 1.f, g.data<float>(), out, xc.data<float>(), in, 0.f, gw.data<float>(), in);
    }
    if (inputs.size() > 2 && needs(2)) {
      NoGradGuard ng;
      gb = sum(g.view({rows, out}), {0});
    }
    std::vector<Tensor> r = {gx, gw};
    if (inputs.size() > 2) r.push_back(gb);
    return r;
  }
};

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in, bool ta, bool tb) {
  FT_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "matmul: needs tensors of rank >= 2, got ", a_in.shape_str(), " and ", b_in.shape_str());
  Tensor a = f32c(a_in), b = f32c(b_in);
  int64_t M = ta ? a.size(-1) : a.size(-2), K = ta ? a.size(-2) : a.size(-1);
  int64_t Kb = tb ? b.size(-1) : b.size(-2), N = tb ? b.size(-2) : b.size(-1);
  FT_CHECK(K == Kb, "matmul: inner dimensions differ: a ", a.shape_str(), (ta ? "ᵀ" : ""), " and b ", b.shape_str(), (tb ? "ᵀ" : ""));
  Shape batch(a.shape().begin(), a.shape().end() - 2);
  bool shared_b = b.dim() == 2;
  if (!shared_b) {
    Shape bb(b.shape().begin(), b.shape().end() - 2);
    FT_CHECK(bb == batch, "matmul: batch dims differ: a ", a.shape_str(), " and b ", b.shape_str());
  }
  int64_t nb = numel_of(batch);
  Shape os = batch;
  os.push_back(M);
  os.push_back(N);
  Tensor out = Tensor::empty(os);
  const float *pa = a.data<float>(), *pb = b.data<float>();
  float* po = out.data<float>();
  int64_t lda = a.size(-1), ldb = b.size(-1);
  if (shared_b && !ta) {
    gemm_f32(false, tb, nb * M, N, K, 1.f, pa, lda, pb, ldb, 0.f, po, N);
  } else {
    sgemm_batched(ta, tb, nb, M, N, K, 1.f, pa, lda, M * K, pb, ldb, shared_b ? 0 : K * N, 0.f, po, N, M * N);
  }
  if (should_record({&a_in, &b_in})) {
    auto node = std::make_shared<MatmulNode>();
    node->ta = ta;
    node->tb = tb;
    node->inputs = {a_in, b_in};
    return record(out, node);
  }
  return out;
}

Tensor linear(const Tensor& x_in, const Tensor& w, const Tensor& bias) {
  FT_CHECK(w.dim() == 2, "linear: weight must be [out, in], got ", w.shape_str());
  FT_CHECK(x_in.dim() >= 1 && x_in.size(-1) == w.size(1), "linear: input ", x_in.shape_str(), " does not match weight ", w.shape_str(), " (last dim must be ", w.size(1), ")");
  FT_CHECK(is_float(w.dtype()), "linear: weight dtype ", dtype_name(w.dtype()), " is not a float type");
  if (bias.defined()) FT_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias ", bias.shape_str(), " does not match weight ", w.shape_str());
  Tensor x = f32c(x_in);
  int64_t in = w.size(1), out = w.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
  Shape os = x.shape();
  os.back() = out;
  Tensor y = Tensor::empty(os);
  Tensor wc = w.contiguous();
  gemm_w(false, true, rows, out, in, 1.f, x.data<float>(), in, wc, 0.f, y.data<float>(), out);
  if (bias.defined()) {
    Tensor bc = f32c(bias);
    const float* pb = bc.data<float>();
    float* py = y.data<float>();
    parallel_range(rows, 64, [&](int64_t s, int64_t e) {
      for (int64_t r = s; r < e; ++r) for (int64_t o = 0; o < out; ++o) py[r * out + o] += pb[o];
    });
  }
  if (should_record({&x_in, &w, &bias})) {
    auto node = std::make_shared<LinearNode>();
    node->inputs = {x_in, w};
    if (bias.defined()) node->inputs.push_back(bias);
    return record(y, node);
  }
  return y;
}

}  // namespace ft
