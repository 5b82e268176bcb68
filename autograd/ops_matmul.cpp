// matmul (batched, transposes) and linear (x·Wᵀ + b) with their vector-Jacobian products.
// All GEMMs go through the dispatched kernels in autograd/gemm.h.
#include "autograd/cpu.h"
#include "autograd/gemm.h"
#include "autograd/gemv.h"
#include "autograd/grad_sum.h"
#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/quant.h"
#include "autograd/simd.h"

#include <algorithm>
#include <vector>

namespace ft {

namespace {

void gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// B given as a weight tensor [rows, cols] that may be bf16 or fp16 (frozen base weights): widened
// while packing, never copied. round_bf16 (autocast_bf16()): a bf16 or quantised B's product rounds A (and the dequantised B) to bf16.
void gemm_w(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const Tensor& B, float beta, float* C, int64_t ldc, bool round_bf16) {
  if (is_quantized(B)) return gemm_qw(ta, tb, M, N, K, alpha, A, lda, quant_params(B), beta, C, ldc, round_bf16);
  if (B.dtype() == DType::BF16)
    return gemm_bf16w(ta, tb, M, N, K, alpha, A, lda, B.data<uint16_t>(), B.size(1), beta, C, ldc, round_bf16);
  if (B.dtype() == DType::F16) return gemm_f16w(ta, tb, M, N, K, alpha, A, lda, B.data<uint16_t>(), B.size(1), beta, C, ldc);
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
  bool f16 = false;   // autocast: round the returned gradients to fp16
  bool bf16 = false;  // autocast_bf16: dX's GEMM rounds dY to bf16
  const char* name() const override { return "linear"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor &x = inputs[0], &w = inputs[1];
    int64_t in = w.size(1), out = w.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
    Tensor g = f32c(g_in);
    Tensor gx, gw, gb;
    if (needs(0)) {  // dX[rows×in] = dY[rows×out] · W[out×in]
      gx = Tensor::empty(x.shape());
      gemm_w(false, false, rows, in, out, 1.f, g.data<float>(), out, w, 0.f, gx.data<float>(), in, bf16);
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
    if (f16)
      for (Tensor& t : r) round_to_f16(t);
    return r;
  }
};

// y [rows, out] += bias [out] (each row) and/or residual [rows, out]; either may be undefined.
void add_bias(float* py, const Tensor& bias, int64_t rows, int64_t out, const Tensor& residual = Tensor()) {
  Tensor bc = bias.defined() ? f32c(bias) : Tensor(), rc = residual.defined() ? f32c(residual) : Tensor();
  const float* pb = bc.defined() ? bc.data<float>() : nullptr;
  const float* pr = rc.defined() ? rc.data<float>() : nullptr;
  parallel_range(rows, 64, [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      float* y = py + r * out;
      if (pb) for (int64_t o = 0; o < out; ++o) y[o] += pb[o];
      if (pr) for (int64_t o = 0; o < out; ++o) y[o] += pr[r * out + o];
    }
  });
}

// ---- the rank-r parts of a LoRA projection (r is small: 4..64), off the packed GEMM path
//
// Backward, one pass over the output gradient g [rows, out] for rows [i0, i1):
//   gu[i][k]   = s · Σ_o g[i][o] · Bt[k][o]          (the gradient at the bottleneck), k < r
//   gBt[k][o] += s · Σ_i uT[k][i] · g[i][o]           (Bᵀ's gradient, accumulated)
// Rows go in pairs, k in blocks of 4 (Bt and gBt have r4 = r rounded up to 4 rows; Bt's extra rows
// are zero): 8 dot-product accumulators, and every g, Bt and gBt vector loaded once per (pair,
// k-block). Bt / gBt are r4 × out (L1/L2 resident).
template <int N>
FT_INLINE void lora_bwd_rows(const float* g, int64_t out, const float* Bt, const float* uT, int64_t ldu, int64_t r,
                             float s, int64_t i0, int64_t i1, float* gu, float* gBt) {
  using V = simd::Vec<N>;
  using F = typename V::F;
  const int64_t full = out - out % N;
  for (int64_t i = i0; i < i1; i += 2) {
    const bool two = i + 1 < i1;
    const float* g0 = g + i * out;
    const float* g1 = two ? g0 + out : g0;  // a lone last row pairs with itself, with zero factors
    for (int64_t k0 = 0; k0 < r; k0 += 4) {
      F acc0[4], acc1[4], f0[4], f1[4];
      float sacc0[4] = {0, 0, 0, 0}, sacc1[4] = {0, 0, 0, 0}, sf0[4], sf1[4];
      for (int kk = 0; kk < 4; ++kk) {
        acc0[kk] = acc1[kk] = V::splat(0.f);
        const bool on = k0 + kk < r;
        sf0[kk] = on ? s * uT[(k0 + kk) * ldu + i] : 0.f;
        sf1[kk] = on && two ? s * uT[(k0 + kk) * ldu + i + 1] : 0.f;
        f0[kk] = V::splat(sf0[kk]);
        f1[kk] = V::splat(sf1[kk]);
      }
      const float* bt = Bt + k0 * out;
      float* gb = gBt + k0 * out;
      for (int64_t o = 0; o < full; o += N) {
        const F a0 = V::load(g0 + o), a1 = V::load(g1 + o);
#pragma GCC unroll 4
        for (int kk = 0; kk < 4; ++kk) {
          const F b = V::load(bt + kk * out + o);
          acc0[kk] += a0 * b;
          acc1[kk] += a1 * b;
          V::store(gb + kk * out + o, V::load(gb + kk * out + o) + f0[kk] * a0 + f1[kk] * a1);
        }
      }
      for (int64_t o = full; o < out; ++o)
        for (int kk = 0; kk < 4; ++kk) {
          sacc0[kk] += g0[o] * bt[kk * out + o];
          sacc1[kk] += g1[o] * bt[kk * out + o];
          gb[kk * out + o] += sf0[kk] * g0[o] + sf1[kk] * g1[o];
        }
      for (int kk = 0; kk < 4 && k0 + kk < r; ++kk) {
        gu[i * r + k0 + kk] = s * float(V::hsum(acc0[kk]) + double(sacc0[kk]));
        if (two) gu[(i + 1) * r + k0 + kk] = s * float(V::hsum(acc1[kk]) + double(sacc1[kk]));
      }
    }
  }
}
FT_SIMD_KERNEL(lora_bwd_kernel, lora_bwd_rows,
               (const float* g, int64_t out, const float* Bt, const float* uT, int64_t ldu, int64_t r, float s, int64_t i0,
                int64_t i1, float* gu, float* gBt),
               (g, out, Bt, uT, ldu, r, s, i0, i1, gu, gBt))
// gu's part from columns [0, n) of g (rows ldg apart) and of Bt (rows ldb apart), rows [i0, i1):
// gt[(i - i0)·r + k] = Σ_o g[i][o] · Bt[k][o] (written, unscaled). The dot products of lora_bwd_rows
// without its gBᵀ updates, for a column tile (lora_bwd64).
template <int N>
FT_INLINE void gu_tile_rows(const float* g, int64_t ldg, int64_t n, const float* Bt, int64_t ldb, int64_t r, int64_t i0,
                            int64_t i1, float* gt) {
  using V = simd::Vec<N>;
  using F = typename V::F;
  const int64_t full = n - n % N;
  for (int64_t i = i0; i < i1; i += 2) {
    const bool two = i + 1 < i1;
    const float* g0 = g + i * ldg;
    const float* g1 = two ? g0 + ldg : g0;
    for (int64_t k0 = 0; k0 < r; k0 += 4) {
      const int64_t kn = std::min<int64_t>(4, r - k0);
      F acc0[4], acc1[4];
      float sacc0[4] = {0, 0, 0, 0}, sacc1[4] = {0, 0, 0, 0};
      for (int kk = 0; kk < 4; ++kk) acc0[kk] = acc1[kk] = V::splat(0.f);
      const float* bt = Bt + k0 * ldb;
      for (int64_t o = 0; o < full; o += N) {
        const F a0 = V::load(g0 + o), a1 = V::load(g1 + o);
#pragma GCC unroll 4
        for (int kk = 0; kk < 4; ++kk) {
          const F b = kk < kn ? V::load(bt + kk * ldb + o) : V::splat(0.f);
          acc0[kk] += a0 * b;
          acc1[kk] += a1 * b;
        }
      }
      for (int64_t o = full; o < n; ++o)
        for (int64_t kk = 0; kk < kn; ++kk) {
          sacc0[kk] += g0[o] * bt[kk * ldb + o];
          sacc1[kk] += g1[o] * bt[kk * ldb + o];
        }
      for (int64_t kk = 0; kk < kn; ++kk) {
        gt[(i - i0) * r + k0 + kk] = float(V::hsum(acc0[kk]) + double(sacc0[kk]));
        if (two) gt[(i + 1 - i0) * r + k0 + kk] = float(V::hsum(acc1[kk]) + double(sacc1[kk]));
      }
    }
  }
}
FT_SIMD_KERNEL(gu_tile_kernel, gu_tile_rows,
               (const float* g, int64_t ldg, int64_t n, const float* Bt, int64_t ldb, int64_t r, int64_t i0, int64_t i1,
                float* gt),
               (g, ldg, n, Bt, ldb, r, i0, i1, gt))

// A rank-r product summed over rows [i0, i1): part[k][j] = Σ_i L(i, k) · X[i][j] for j < in (X's
// rows ldx apart, part's ldp apart; written), each sum taken over i in order, L(i, k) = l[i·li + k·lk].
// A's gradient is L = gu [rows, r], X = x; Bᵀ's is L = uT [r, rows], X = g. The rows' block of X is
// read r/4 times from L1/L2, never packed (the packed GEMM copied all of x per call and computed a
// whole register panel for r = 8 rows; lora_bwd_rows read and wrote all of gBᵀ for every pair of rows).
template <int N>
FT_INLINE void rank_rows(const float* l, int64_t li, int64_t lk, int64_t r, const float* x, int64_t ldx, int64_t in,
                         int64_t i0, int64_t i1, float* part, int64_t ldp) {
  using V = simd::Vec<N>;
  using F = typename V::F;
  for (int64_t k0 = 0; k0 < r; k0 += 4) {
    const int64_t kn = std::min<int64_t>(4, r - k0);
    for (int64_t j0 = 0; j0 < in; j0 += 2 * N) {
      const int64_t n0 = std::min<int64_t>(N, in - j0), n1 = std::clamp<int64_t>(in - j0 - N, 0, N);
      F acc0[4], acc1[4];
      for (int kk = 0; kk < 4; ++kk) acc0[kk] = acc1[kk] = V::splat(0.f);
      for (int64_t i = i0; i < i1; ++i) {
        const float* xr = x + i * ldx + j0;
        const F a = n0 == N ? V::load(xr) : V::load_part(xr, n0, 0.f);
        const F b = n1 == N ? V::load(xr + N) : n1 > 0 ? V::load_part(xr + N, n1, 0.f) : V::splat(0.f);
        const float* g = l + i * li + k0 * lk;
#pragma GCC unroll 4
        for (int kk = 0; kk < 4; ++kk) {
          const F gv = V::splat(kk < kn ? g[kk * lk] : 0.f);
          acc0[kk] += gv * a;
          acc1[kk] += gv * b;
        }
      }
      for (int64_t kk = 0; kk < kn; ++kk) {
        float* o = part + (k0 + kk) * ldp + j0;
        if (n0 == N) V::store(o, acc0[kk]);
        else V::store_part(o, acc0[kk], n0);
        if (n1 == N) V::store(o + N, acc1[kk]);
        else if (n1 > 0) V::store_part(o + N, acc1[kk], n1);
      }
    }
  }
}
FT_SIMD_KERNEL(rank_kernel, rank_rows,
               (const float* l, int64_t li, int64_t lk, int64_t r, const float* x, int64_t ldx, int64_t in, int64_t i0,
                int64_t i1, float* part, int64_t ldp),
               (l, li, lk, r, x, ldx, in, i0, i1, part, ldp))

// Columns of g (or x) per task in the rank-r kernels under fp64 sums (lora_bwd64, dA): a tile of a
// 64-row chunk is 128 KiB, in L2 for the two passes over it.
constexpr int64_t kLoraTile = 512;

// gu [rows, r] and gB [out, r] (see lora_bwd_rows); rows split into one range per thread, each with
// its own gBᵀ partial, summed in a fixed order (deterministic for a given thread count).
void lora_bwd(const float* g, int64_t rows, int64_t out, const float* B, const float* uT, int64_t r, float s, float* gu, float* gB) {
  const int64_t r4 = (r + 3) / 4 * 4;
  std::vector<float> Bt(size_t(r4 * out), 0.f);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < r; ++k) Bt[size_t(k * out + o)] = B[o * r + k];
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(num_threads(), rows / 64));
  std::vector<float> gBt(size_t(parts * r4 * out), 0.f);
  parallel_range(parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      lora_bwd_kernel(g, out, Bt.data(), uT, rows, r, s, rows * p / parts, rows * (p + 1) / parts, gu, gBt.data() + p * r4 * out);
  });
  parallel_range(out, 256, [&](int64_t o0, int64_t o1) {  // the partials summed in part order
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t k = 0; k < r; ++k) {
        float acc = 0;
        for (int64_t p = 0; p < parts; ++p) acc += gBt[size_t((p * r4 + k) * out + o)];
        gB[o * r + k] = acc;
      }
  });
}

// lora_bwd with gB added into an fp64 sum (autograd/grad_sum.h): one fp32 partial of gB per row chunk
// of each sequence of `seq` rows (the same bits in whichever batch or rank the sequence is computed),
// added in chunk order.
void lora_bwd64(const float* g, int64_t rows, int64_t seq, int64_t out, const float* B, const float* uT, int64_t r, float s,
                float* gu, double* gB64) {
  const int64_t r4 = (r + 3) / 4 * 4;
  std::vector<float> Bt(size_t(r4 * out), 0.f);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < r; ++k) Bt[size_t(k * out + o)] = B[o * r + k];
  // Per row chunk, g's columns in tiles of kLoraTile, the tiles in parallel too (a chunk is the
  // fixed unit of the fp64 sums: at 16 threads and 1024 rows there is one chunk a thread, and each
  // would otherwise run alone): gBᵀ's columns of the tile straight into the chunk's part, gu's dot
  // products of the tile into a partial per tile, summed in tile order afterwards (the same bits
  // with any thread count).
  add_row_chunks64(rows, seq, size_t(out * r), gB64, [&](int64_t lo, int64_t hi, float* part) {
    const int64_t m = hi - lo, tiles = (out + kLoraTile - 1) / kLoraTile;
    std::vector<float> gts(size_t(tiles * m * r));  // per tile: Σ_o g[i][o] · Bt[k][o] over its columns [m, r]
    parallel_range(tiles, 1, [&](int64_t t0, int64_t t1) {
      thread_local std::vector<float> gBt;  // the tile's Σ_i uT[k][i] · g[i][o] [r, kLoraTile]
      gBt.resize(size_t(r * kLoraTile));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t o0 = t * kLoraTile, n = std::min(kLoraTile, out - o0);
        gu_tile_kernel(g + o0, out, n, Bt.data() + o0, out, r, lo, hi, gts.data() + t * m * r);
        rank_kernel(uT, 1, rows, r, g + o0, out, n, lo, hi, gBt.data(), kLoraTile);
        for (int64_t o = 0; o < n; ++o)
          for (int64_t k = 0; k < r; ++k) part[(o0 + o) * r + k] = s * gBt[size_t(k * kLoraTile + o)];
      }
    });
    for (int64_t e = 0; e < m * r; ++e) {
      float acc = 0;
      for (int64_t t = 0; t < tiles; ++t) acc += gts[size_t(t * m * r + e)];
      gu[lo * r + e] = s * acc;
    }
  });
}

// uT [r, rows] = A·xᵀ through ft::gemv (x is streamed once, never packed; its blocks stay in L2
// for the later groups of four rows of A; one parallel loop).
void lora_down(const float* x, int64_t rows, int64_t in, const float* A, int64_t r, float* uT) {
  gemv(r, rows, in, 1.f, A, in, x, DType::F32, in, 0.f, uT, rows);
}

// inputs: {x, w, bias, A, B, xa, residual} (bias / xa / residual may be undefined: none / xa = x /
// none; residual is a graph edge); saved: {uT = A·xaᵀ [r, rows]}.
struct LoraLinearNode : Node {
  float s = 1;
  bool f16 = false;   // autocast: round the returned gradients to fp16
  bool bf16 = false;  // autocast_bf16: dX's GEMM with the base weight rounds dY to bf16
  const char* name() const override { return "lora_linear"; }
  std::vector<Tensor> backward(const Tensor& g_in) override {
    const Tensor &x = inputs[0], &w = inputs[1], &a = inputs[3], &b = inputs[4];
    const bool sep = inputs[5].defined();
    const int64_t in = w.size(1), out = w.size(0), r = a.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
    Tensor g = f32c(g_in), uT = saved[0], ac = f32c(a), bc = f32c(b);
    Tensor xa = sep ? f32c(inputs[5]) : Tensor();
    const float* pg = g.data<float>();
    Tensor gx, gw, gbias, ga, gb, gxa;
    // Under a GradSum64 (not with fp16 autocast, whose gradients are rounded to fp16), A's and B's
    // gradients go into their fp64 sums, by row chunks of each sequence (x [..., seq, in]).
    GradSum64* sums = f16 ? nullptr : current_grad_sum64();
    double* a64 = sums && needs(3) ? sums->sum_of(a) : nullptr;
    double* b64 = sums && needs(4) ? sums->sum_of(b) : nullptr;
    const int64_t seq = x.dim() >= 3 ? x.size(-2) : rows;
    // gu = s·g·B [rows, r] (the gradient at the adapter's bottleneck) and gB = s·gᵀ·u, in one pass over g.
    Tensor gu = Tensor::empty({rows, r});
    if (FT_PROFILE_SCOPE("adapter gB"); b64) {
      lora_bwd64(pg, rows, seq, out, bc.data<float>(), uT.data<float>(), r, s, gu.data<float>(), b64);
    } else {
      gb = Tensor::empty(b.shape());
      lora_bwd(pg, rows, out, bc.data<float>(), uT.data<float>(), r, s, gu.data<float>(), gb.data<float>());
      if (!needs(4)) gb = Tensor();
    }
    if (needs(0)) {  // dX = dY·W (+ gu·A when the adapter reads x itself)
      gx = Tensor::empty(x.shape());
      {
        FT_PROFILE_SCOPE("base dX");
        gemm_w(false, false, rows, in, out, 1.f, pg, out, w, 0.f, gx.data<float>(), in, bf16);
      }
      FT_PROFILE_SCOPE("adapter dX");
      if (!sep) sgemm(false, false, rows, in, r, 1.f, gu.data<float>(), r, ac.data<float>(), in, 1.f, gx.data<float>(), in);
    }
    if (sep && needs(5)) {
      gxa = Tensor::empty(inputs[5].shape());
      sgemm(false, false, rows, in, r, 1.f, gu.data<float>(), r, ac.data<float>(), in, 0.f, gxa.data<float>(), in);
    }
    if (needs(1)) {  // dW = dYᵀ·X (full fine-tuning of a base weight that also carries an adapter)
      Tensor xc = f32c(x);
      gw = Tensor::empty({out, in});
      sgemm(true, false, out, in, rows, 1.f, pg, out, xc.data<float>(), in, 0.f, gw.data<float>(), in);
    }
    if (needs(2)) {
      NoGradGuard ng;
      gbias = sum(g.view({rows, out}), {0});
    }
    if (needs(3)) {  // dA = guᵀ·xa
      FT_PROFILE_SCOPE("adapter dA");
      Tensor xs = sep ? xa : f32c(x);
      const float *pu = gu.data<float>(), *px = xs.data<float>();
      if (a64) {
        add_row_chunks64(rows, seq, size_t(r * in), a64, [&](int64_t lo, int64_t hi, float* part) {
          // column tiles in parallel too (as lora_bwd64): each writes its own columns of the part
          parallel_range((in + kLoraTile - 1) / kLoraTile, 1, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
              const int64_t j0 = t * kLoraTile;
              rank_kernel(pu, r, 1, r, px + j0, in, std::min(kLoraTile, in - j0), lo, hi, part + j0, in);
            }
          });
        });
      } else {
        ga = Tensor::empty(a.shape());
        sgemm(true, false, r, in, rows, 1.f, pu, r, px, in, 0.f, ga.data<float>(), in);
      }
    }
    std::vector<Tensor> res = {gx, gw, gbias, ga, gb, gxa};
    if (f16)
      for (Tensor& t : res) round_to_f16(t);
    res.push_back(needs(6) ? g.view(inputs[6].shape()) : Tensor());  // the residual's path stays fp32
    return res;
  }
};

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in, bool ta, bool tb) {
  FT_PROFILE_SCOPE("matmul");
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
  FT_PROFILE_SCOPE("linear");
  FT_CHECK(w.dim() == 2, "linear: weight must be [out, in], got ", w.shape_str());
  FT_CHECK(x_in.dim() >= 1 && x_in.size(-1) == w.size(1), "linear: input ", x_in.shape_str(), " does not match weight ", w.shape_str(), " (last dim must be ", w.size(1), ")");
  FT_CHECK(is_float(w.dtype()) || is_quantized(w), "linear: weight dtype ", dtype_name(w.dtype()), " is not a float type");
  if (bias.defined()) FT_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias ", bias.shape_str(), " does not match weight ", w.shape_str());
  Tensor x = f32c(x_in);
  int64_t in = w.size(1), out = w.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
  Shape os = x.shape();
  os.back() = out;
  Tensor y = Tensor::empty(os);
  Tensor wc = w.contiguous();
  const bool bf16 = autocast_bf16();
  gemm_w(false, true, rows, out, in, 1.f, x.data<float>(), in, wc, 0.f, y.data<float>(), out, bf16);
  if (bias.defined()) add_bias(y.data<float>(), bias, rows, out);
  const bool f16 = autocast_f16();
  if (f16) round_to_f16(y);
  if (should_record({&x_in, &w, &bias})) {
    auto node = std::make_shared<LinearNode>();
    node->f16 = f16;
    node->bf16 = bf16;
    node->inputs = {x_in, w};
    if (bias.defined()) node->inputs.push_back(bias);
    return record(y, node);
  }
  return y;
}

Tensor lora_linear(const Tensor& x_in, const Tensor& w, const Tensor& bias, const Tensor& a, const Tensor& b, float s,
                   const Tensor& xa_in, const Tensor& residual, bool graph_only) {
  FT_PROFILE_SCOPE("lora_linear");
  FT_CHECK(w.dim() == 2, "lora_linear: weight must be [out, in], got ", w.shape_str());
  const int64_t in = w.size(1), out = w.size(0);
  FT_CHECK(x_in.dim() >= 1 && x_in.size(-1) == in, "lora_linear: input ", x_in.shape_str(), " does not match weight ", w.shape_str());
  FT_CHECK(is_float(w.dtype()) || is_quantized(w), "lora_linear: weight dtype ", dtype_name(w.dtype()), " is not a float type");
  FT_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == in && b.size(0) == out && b.size(1) == a.size(0),
           "lora_linear: adapter A ", a.shape_str(), " / B ", b.shape_str(), " do not fit weight ", w.shape_str(),
           " (need A [r, ", in, "], B [", out, ", r])");
  if (bias.defined()) FT_CHECK(bias.dim() == 1 && bias.size(0) == out, "lora_linear: bias ", bias.shape_str(), " does not match weight ", w.shape_str());
  if (xa_in.defined()) FT_CHECK(xa_in.shape() == x_in.shape(), "lora_linear: adapter input ", xa_in.shape_str(), " differs from input ", x_in.shape_str());
  const bool sep = xa_in.defined() && xa_in.impl() != x_in.impl();
  const int64_t r = a.size(0);
  Tensor x = f32c(x_in), xa = sep ? f32c(xa_in) : x, ac = f32c(a), bc = f32c(b);
  const int64_t rows = x.numel() / std::max<int64_t>(in, 1);
  Shape os = x.shape();
  os.back() = out;
  if (residual.defined())
    FT_CHECK(numel_of(residual.shape()) == rows * out && residual.size(-1) == out, "lora_linear: residual ", residual.shape_str(),
             " does not match the output ", shape_str(os));
  const bool rec = should_record({&x_in, &w, &bias, &a, &b, &xa_in, &residual});
  Tensor uT = Tensor::empty({r, rows});
  if (FT_PROFILE_SCOPE("adapter down"); true) lora_down(xa.data<float>(), rows, in, ac.data<float>(), r, uT.data<float>());
  const bool f16 = autocast_f16(), bf16 = autocast_bf16();
  Tensor y;
  if (graph_only && rec) {  // the node alone: an output without data
    auto impl = std::make_shared<TensorImpl>();
    impl->shape = os;
    impl->strides = contiguous_strides(os);
    y = Tensor(impl);
  } else {
    y = Tensor::empty(os);
    if (FT_PROFILE_SCOPE("base"); true)
      gemm_w(false, true, rows, out, in, 1.f, x.data<float>(), in, w.contiguous(), 0.f, y.data<float>(), out, bf16);
    FT_PROFILE_SCOPE("adapter up");
    sgemm(true, true, rows, out, r, s, uT.data<float>(), rows, bc.data<float>(), r, 1.f, y.data<float>(), out);  // y += s·u·Bᵀ
    if (f16) {  // autocast: the projection's output is fp16; the residual is added in fp32 after
      if (bias.defined()) add_bias(y.data<float>(), bias, rows, out);
      round_to_f16(y);
      if (residual.defined()) add_bias(y.data<float>(), Tensor(), rows, out, residual);
    } else if (bias.defined() || residual.defined()) {
      add_bias(y.data<float>(), bias, rows, out, residual);
    }
  }
  if (rec) {
    auto node = std::make_shared<LoraLinearNode>();
    node->s = s;
    node->f16 = f16;
    node->bf16 = bf16;
    node->inputs = {x_in, w, bias, a, b, sep ? xa_in : Tensor(), graph_edge(residual)};
    node->saved = {uT};
    return record(y, node);
  }
  return y;
}

}  // namespace ft
