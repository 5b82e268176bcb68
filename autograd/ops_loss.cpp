// Cross-entropy over a vocabulary, fused with its gradient: never copies or materialises softmax.
//
// Forward, per row: m = max(x), s = Σ exp(x − m) (fp32 lanes), loss = (m − x[t]) + log s. Only m and
// log s are kept (O(N)). Backward writes (softmax − onehot)·g row by row straight into the gradient,
// the only V-sized allocation. Row kernels: autograd/simd.h (vector exp; AVX-512 / AVX2 / SSE2 clones).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/gemm.h"
#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/quant.h"
#include "autograd/simd.h"

namespace ft {

namespace {

// Row max and Σ exp(x − max): fp32 vector lanes, flushed into a double every 64 vectors, so long rows
// (V ~ 10^5) keep ~1e-7 relative accuracy. The tail is padded with −inf (contributes exactly nothing).
template <int N>
FT_INLINE void row_stats(const float* x, int64_t n, float* max_out, float* sum_out) {
  using V = simd::Vec<N>;
  const int64_t full = n - n % N;
  typename V::F mv = V::splat(-INFINITY);
  for (int64_t i = 0; i < full; i += N) mv = V::max(mv, V::load(x + i));
  if (full < n) mv = V::max(mv, V::load_part(x + full, n - full, -INFINITY));
  const float m = V::hmax(mv);
  double s = 0;
  for (int64_t b = 0; b < full; b += 64 * N) {
    typename V::F acc = V::splat(0.f);
    for (int64_t i = b, e = std::min(full, b + 64 * N); i < e; i += N) acc += V::exp(V::load(x + i) - m);
    s += V::hsum(acc);
  }
  if (full < n) s += V::hsum(V::exp(V::load_part(x + full, n - full, -INFINITY) - m));
  *max_out = m;
  *sum_out = float(s);
}

// o = exp((x − m) − logs)·f: the softmax row, scaled by f.
template <int N>
FT_INLINE void softmax_row(const float* x, float* o, int64_t n, float m, float logs, float f) {
  using V = simd::Vec<N>;
  const int64_t full = n - n % N;
  for (int64_t i = 0; i < full; i += N) V::store(o + i, V::exp((V::load(x + i) - m) - logs) * f);
  if (full < n) V::store_part(o + full, V::exp((V::load_part(x + full, n - full, 0.f) - m) - logs) * f, n - full);
}

// The fused LM head's row in place: m = max(x), x ← exp(x − m) with s = Σ x (flushed into a double
// every 64 vectors, as row_stats), then x ← x · (1/s) when `normalise`: the softmax row with one exp
// an element (row_stats then softmax_row take two).
template <int N>
FT_INLINE void softmax_in_place(float* x, int64_t n, bool normalise, float* max_out, float* sum_out) {
  using V = simd::Vec<N>;
  const int64_t full = n - n % N;
  typename V::F mv = V::splat(-INFINITY);
  for (int64_t i = 0; i < full; i += N) mv = V::max(mv, V::load(x + i));
  if (full < n) mv = V::max(mv, V::load_part(x + full, n - full, -INFINITY));
  const float m = V::hmax(mv);
  double s = 0;
  for (int64_t b = 0; b < full; b += 64 * N) {
    typename V::F acc = V::splat(0.f);
    for (int64_t i = b, e = std::min(full, b + 64 * N); i < e; i += N) {
      const typename V::F ex = V::exp(V::load(x + i) - m);
      V::store(x + i, ex);
      acc += ex;
    }
    s += V::hsum(acc);
  }
  if (full < n) {
    const typename V::F ex = V::exp(V::load_part(x + full, n - full, -INFINITY) - m);
    V::store_part(x + full, ex, n - full);
    s += V::hsum(ex);
  }
  *max_out = m;
  *sum_out = float(s);
  if (!normalise) return;
  const typename V::F inv = V::splat(float(1.0 / s));
  for (int64_t i = 0; i < full; i += N) V::store(x + i, V::load(x + i) * inv);
  if (full < n) V::store_part(x + full, V::load_part(x + full, n - full, 0.f) * inv, n - full);
}

FT_SIMD_KERNEL(ce_softmax_in_place, softmax_in_place, (float* x, int64_t n, bool normalise, float* m, float* s),
               (x, n, normalise, m, s))
FT_SIMD_KERNEL(ce_row_stats, row_stats, (const float* x, int64_t n, float* m, float* s), (x, n, m, s))
FT_SIMD_KERNEL(ce_softmax_row, softmax_row, (const float* x, float* o, int64_t n, float m, float ls, float f),
               (x, o, n, m, ls, f))

// Logits as rows of V floats `pitch` apart. No copy for float32 with a unit last stride (contiguous,
// or a 2-D view with any row stride, e.g. a slice of positions); anything else is converted once.
struct Rows {
  Tensor hold;
  const float* p = nullptr;
  int64_t n = 0, v = 0, pitch = 0;
};
Rows logit_rows(const Tensor& logits) {
  Rows r;
  r.v = logits.size(-1);
  r.n = r.v ? logits.numel() / r.v : 0;
  r.hold = logits;
  bool direct = logits.dtype() == DType::F32 &&
                (logits.is_contiguous() || (logits.dim() == 2 && logits.strides()[1] == 1 && logits.strides()[0] >= r.v));
  if (!direct) r.hold = f32c(logits);
  r.pitch = r.hold.dim() == 2 ? r.hold.strides()[0] : r.v;
  r.p = r.hold.data<float>();
  return r;
}

struct CrossEntropyNode : Node {
  int32_t ignore = -100;
  float factor = 1;  // 1 (sum) or 1/count (mean)
  const char* name() const override { return "cross_entropy"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    Rows x = logit_rows(inputs[0]);
    const int32_t* pt = saved[0].data<int32_t>();
    const float* st = saved[1].data<float>();  // [N, 2]: max, log Σ exp
    float f = f32c(g_in).data<float>()[0] * factor;
    Tensor gx = Tensor::empty(inputs[0].shape());
    float* po = gx.data<float>();
    const int64_t V = x.v;
    parallel_range(x.n, std::max<int64_t>(1, 16384 / V), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        float* o = po + r * V;
        if (pt[r] == ignore) {
          std::memset(o, 0, size_t(V) * sizeof(float));
          continue;
        }
        ce_softmax_row(x.p + r * x.pitch, o, V, st[2 * r], st[2 * r + 1], f);
        o[pt[r]] -= f;
      }
    });
    return {gx};
  }
};

Tensor cross_entropy_impl(const Tensor& logits, const Tensor& targets_in, int32_t ignore, bool mean) {
  FT_PROFILE_SCOPE("cross_entropy");
  const char* op = mean ? "cross_entropy" : "cross_entropy_sum";
  FT_CHECK(logits.defined() && targets_in.defined(), op, ": logits and targets must be defined");
  FT_CHECK(logits.dim() >= 1 && is_float(logits.dtype()), op, ": logits must be a float tensor [N, V], got ",
           logits.shape_str(), " ", dtype_name(logits.dtype()));
  FT_CHECK(targets_in.dtype() == DType::I32 || targets_in.dtype() == DType::I64, op,
           ": targets must be int32 (or int64), got ", dtype_name(targets_in.dtype()));
  Rows x = logit_rows(logits);
  const int64_t N = x.n, V = x.v;
  FT_CHECK(V > 0, op, ": logits ", logits.shape_str(), " have an empty vocabulary dim");
  FT_CHECK(targets_in.numel() == N, op, ": targets ", targets_in.shape_str(), " do not match logits ",
           logits.shape_str(), " (need one target per row of V = ", V, " logits)");
  Tensor targets = targets_in.contiguous().to(DType::I32);
  const int32_t* pt = targets.data<int32_t>();
  int64_t count = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (pt[r] == ignore) continue;
    FT_CHECK(pt[r] >= 0 && pt[r] < V, op, ": target id ", pt[r], " at row ", r, " is outside the vocabulary [0, ", V,
             ") and is not ignore_index (", ignore, "); check the tokenizer/labels against the model's vocab size");
    ++count;
  }

  Tensor stats = Tensor::empty({N, 2});
  float* st = stats.data<float>();
  std::vector<double> row_loss(size_t(N), 0.0);
  parallel_range(N, std::max<int64_t>(1, 16384 / std::max<int64_t>(V, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      st[2 * r] = st[2 * r + 1] = 0;
      if (pt[r] == ignore) continue;
      const float* xr = x.p + r * x.pitch;
      float m, s;
      ce_row_stats(xr, V, &m, &s);
      float logs = std::log(s);
      st[2 * r] = m;
      st[2 * r + 1] = logs;
      row_loss[size_t(r)] = (double(m) - double(xr[pt[r]])) + double(logs);  // exact when t is the argmax
    }
  });
  double total = 0;  // fixed order: deterministic for any thread count
  for (double l : row_loss) total += l;
  float factor = mean ? (count > 0 ? 1.f / float(count) : 0.f) : 1.f;
  Tensor out = Tensor::full({}, float(total * factor));
  if (should_record({&logits})) {
    auto node = std::make_shared<CrossEntropyNode>();
    node->ignore = ignore;
    node->factor = factor;
    node->inputs = {logits};
    node->saved = {targets, stats};
    return record(out, node);
  }
  return out;
}

}  // namespace

Tensor cross_entropy_sum(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
  return cross_entropy_impl(logits, targets, ignore_index, false);
}
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
  return cross_entropy_impl(logits, targets, ignore_index, true);
}

namespace {

// C = op(A)·op(B) with B a weight that may be bf16 or fp16 (W [V, H] of the LM head).
// round_bf16 (autocast_bf16()): a bf16 or quantised W's product rounds A (and the dequantised W) to bf16.
void gemm_weight(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const Tensor& w, float beta,
                 float* C, int64_t ldc, bool round_bf16) {
  if (is_quantized(w)) return gemm_qw(ta, tb, M, N, K, 1.f, A, lda, quant_params(w), beta, C, ldc, round_bf16);
  if (w.dtype() == DType::BF16)
    return gemm_bf16w(ta, tb, M, N, K, 1.f, A, lda, w.data<uint16_t>(), w.size(1), beta, C, ldc, round_bf16);
  if (w.dtype() == DType::F16) return gemm_f16w(ta, tb, M, N, K, 1.f, A, lda, w.data<uint16_t>(), w.size(1), beta, C, ldc);
  Tensor w32 = f32c(w);  // no copy for float32 rows (a slice of whole rows is contiguous)
  sgemm(ta, tb, M, N, K, 1.f, A, lda, w32.data<float>(), w.size(1), beta, C, ldc);
}

// Gradients computed in forward; backward scales them by the incoming (scalar) gradient.
struct LinearCrossEntropyNode : Node {
  bool f16 = false;  // autocast: round the returned gradients to fp16
  const char* name() const override { return "linear_cross_entropy"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const float f = f32c(g_in).data<float>()[0];
    NoGradGuard ng;
    Tensor gh = saved[0].defined() ? scale(saved[0], f).view(inputs[0].shape()) : Tensor();
    Tensor gw = saved[1].defined() ? scale(saved[1], f) : Tensor();
    if (f16) round_to_f16(gh), round_to_f16(gw);
    return {gh, gw};
  }
};

// Depth of one dh = G·W product: the GEMM packs all of its depth per column block, so a large K
// (the vocabulary) leaves narrow column blocks and re-packs G for each; 2048 keeps G's block
// (<= 1024 rows) packed once.
constexpr int64_t kVocabBlock = 2048;

// Rows of logits per chunk: at most about 32M floats (128 MB; at least 16 rows), in equal chunks of a
// multiple of 32 rows (the GEMM's row panels). Every chunk re-packs W for its two GEMMs: at a 1B shape
// (V = 50304, 1024 rows) 8M-float chunks (166 rows, 7 chunks) made the LM head 1.5-2x slower than two
// chunks of 512 rows, for 90 MB more peak memory.
int64_t ce_chunk_rows(int64_t n, int64_t v) {
  const int64_t most = std::max<int64_t>(16, (int64_t(1) << 25) / std::max<int64_t>(v, 1));
  const int64_t chunks = (n + most - 1) / most, rows = (n + chunks - 1) / std::max<int64_t>(chunks, 1);
  return std::min(n, (rows + 31) / 32 * 32);
}

}  // namespace

Tensor linear_cross_entropy_sum(const Tensor& h, const Tensor& w, const Tensor& targets_in, int32_t ignore, float softcap,
                                int64_t chunk_rows) {
  FT_PROFILE_SCOPE("linear_cross_entropy");
  const char* op = "linear_cross_entropy_sum";
  FT_CHECK(h.defined() && w.defined() && targets_in.defined(), op, ": h, W and targets must be defined");
  FT_CHECK(w.dim() == 2 && (is_float(w.dtype()) || is_quantized(w)), op, ": W must be a float matrix [V, H], got ", w.shape_str());
  FT_CHECK(h.dim() >= 1 && h.size(-1) == w.size(1) && is_float(h.dtype()), op, ": h ", h.shape_str(),
           " does not match W ", w.shape_str(), " (last dim must be ", w.size(1), ")");
  FT_CHECK(targets_in.dtype() == DType::I32 || targets_in.dtype() == DType::I64, op, ": targets must be int32 (or int64), got ",
           dtype_name(targets_in.dtype()));
  FT_CHECK(softcap >= 0, op, ": softcap must be >= 0, got ", softcap);
  FT_CHECK(chunk_rows >= 0, op, ": chunk_rows must be >= 0 (0 = automatic), got ", chunk_rows);
  const int64_t H = w.size(1), V = w.size(0), N = H ? h.numel() / H : 0;
  FT_CHECK(V > 0, op, ": W ", w.shape_str(), " has an empty vocabulary dim");
  FT_CHECK(targets_in.numel() == N, op, ": targets ", targets_in.shape_str(), " do not match h ", h.shape_str(), " (need one target per row)");
  Tensor targets = targets_in.contiguous().to(DType::I32);
  const int32_t* pt = targets.data<int32_t>();
  for (int64_t r = 0; r < N; ++r)
    FT_CHECK(pt[r] == ignore || (pt[r] >= 0 && pt[r] < V), op, ": target id ", pt[r], " at row ", r, " is outside the vocabulary [0, ", V,
             ") and is not ignore_index (", ignore, "); check the tokenizer/labels against the model's vocab size");

  const bool rec = should_record({&h, &w}), f16 = autocast_f16(), bf16 = autocast_bf16();
  const bool need_gh = rec && h.requires_grad(), need_gw = rec && w.requires_grad();
  Tensor hc = f32c(h), wc = w.contiguous();
  const float* ph = hc.data<float>();
  Tensor gh = need_gh ? Tensor::empty({N, H}) : Tensor();
  Tensor gw = need_gw ? (N ? Tensor::empty({V, H}) : Tensor::zeros({V, H})) : Tensor();
  // A quantised W is dequantised again in the packing of every chunk's two GEMMs, so it gets chunks of
  // at least 256 rows: an 8B model's LM head (128256 × 4096) would otherwise be unpacked 16 times for
  // 512 rows (65-row chunks), a quarter of a QLoRA step; the buffer grows to 256 × V floats (131 MB).
  int64_t chunk = chunk_rows > 0 ? std::min(chunk_rows, std::max<int64_t>(N, 1)) : ce_chunk_rows(N, V);
  if (chunk_rows == 0 && is_quantized(w)) chunk = std::min(std::max<int64_t>(N, 1), std::max<int64_t>(chunk, 256));
  Tensor buf = Tensor::empty({std::max<int64_t>(chunk, 1), V});
  float* L = buf.data<float>();
  std::vector<double> row_loss(size_t(N), 0.0);
  for (int64_t c0 = 0; c0 < N; c0 += chunk) {
    const int64_t m = std::min(chunk, N - c0);
    {
      FT_PROFILE_SCOPE("logits");
      gemm_weight(false, true, m, V, H, ph + c0 * H, H, wc, 0.f, L, V, bf16);  // logits of rows [c0, c0 + m)
    }
    if (f16) round_to_f16(L, m * V);
    if (FT_PROFILE_SCOPE("softmax"); true) parallel_range(m, std::max<int64_t>(1, 16384 / V), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        float* x = L + i * V;
        const int32_t t = pt[c0 + i];
        if (t == ignore) {
          if (need_gh || need_gw) std::memset(x, 0, size_t(V) * sizeof(float));
          continue;
        }
        if (softcap > 0)
          for (int64_t j = 0; j < V; ++j) x[j] = softcap * std::tanh(x[j] / softcap);
        float mx, s;
        if (softcap == 0 && (need_gh || need_gw)) {  // the gradient row (softmax − onehot) in place: one exp an element
          const float lt = x[t];
          ce_softmax_in_place(x, V, true, &mx, &s);
          row_loss[size_t(c0 + i)] = (double(mx) - double(lt)) + double(std::log(s));
          x[t] -= 1.f;
          continue;
        }
        ce_row_stats(x, V, &mx, &s);
        const float logs = std::log(s), lt = x[t];
        row_loss[size_t(c0 + i)] = (double(mx) - double(lt)) + double(logs);
        if (!need_gh && !need_gw) continue;
        // The row's gradient: softmax − onehot, times d/dz of cap·tanh(z/cap) = 1 − (l/cap)² with softcap.
        if (softcap > 0) {
          for (int64_t j = 0; j < V; ++j) {
            const float c = x[j] / softcap;
            x[j] = std::exp((x[j] - mx) - logs) * (1.f - c * c);
          }
          x[t] -= 1.f - (lt / softcap) * (lt / softcap);
        } else {
          ce_softmax_row(x, x, V, mx, logs, 1.f);
          x[t] -= 1.f;
        }
      }
    });
    FT_PROFILE_SCOPE("dh");
    if (need_gh)  // dh = G·W, over vocabulary blocks: one GEMM with K = V would re-pack G for every few columns
      for (int64_t v0 = 0; v0 < V; v0 += kVocabBlock)
        gemm_weight(false, false, m, H, std::min(kVocabBlock, V - v0), L + v0, V, wc.slice(0, v0, std::min(V, v0 + kVocabBlock)),
                    v0 == 0 ? 0.f : 1.f, gh.data<float>() + c0 * H, H, bf16);
    if (need_gw) sgemm(true, false, V, H, m, 1.f, L, V, ph + c0 * H, H, c0 == 0 ? 0.f : 1.f, gw.data<float>(), H);  // dW += Gᵀ·h
  }
  double total = 0;  // fixed order: deterministic for any thread count
  for (double l : row_loss) total += l;
  Tensor out = Tensor::full({}, float(total));
  if (rec) {
    auto node = std::make_shared<LinearCrossEntropyNode>();
    node->f16 = f16;
    node->inputs = {h, w};
    node->saved = {gh, gw};
    return record(out, node);
  }
  return out;
}

}  // namespace ft
