// Fused, memory-efficient attention (flash-attention style) with its vector-Jacobian product.
//
// Work unit: one (batch b, kv head g) pair and a block of query positions. The n_rep = Hq/Hkv query
// heads that share kv head g are processed together: for a query position t their rows are
// adjacent in q ([B, Tq, Hq, D]), so a tile has M = positions × n_rep rows, row r = (t, head
// g·n_rep + r % n_rep), and every K/V block is read once for all of them (GQA without repeat_kv).
//
// Forward: for each visible key block, S = (scale·Q)·Kᵀ, softcap, mask, online softmax (running
// row max m and sum l, rescaling the output accumulator), O += P·V. Stores out and the row
// logsumexp lse = m + log l only: O(B·Tq·Hq) extra memory.
// Backward (two sweeps, no atomics): delta = rowsum(dO∘O); sweep 1 over (b, g, query block):
// recompute S, P = exp(S - lse), dP = dO·Vᵀ, dS = P∘(dP - delta) (∘ softcap derivative),
// dQ += scale·dS·K; sweep 2 over (b, g, key block): the same tiles, dV += Pᵀ·dO, dK += dSᵀ·(scale·Q).
// Each sweep owns its output rows, so GQA needs no reduction. Key/query blocks that the causal /
// sliding-window / segment masks hide completely are skipped. Tiles are GEMMs (autograd/gemm.h)
// plus the row kernels of autograd/attention_kernels.h (ISA-dispatched exp).
//
// Decode (few query blocks, e.g. Tq = 1 against a long KV cache): the key range is split over
// several tasks (flash-decoding) whose partial (m, l, O) are merged at the end.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "autograd/attention_decode.h"
#include "autograd/attention_kernels.h"
#include "autograd/cpu.h"
#include "autograd/gemm.h"
#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/profile.h"

namespace ft {

namespace {

using attn_detail::RowKernels;
constexpr float kInf = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------- portable row kernels
void softcap_ref(float* S, int64_t m, int64_t n, int64_t ld, float cap) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) S[i * ld + j] = cap * std::tanh(S[i * ld + j] / cap);
}
inline float exp_ref(float x) { return x < -87.0f ? 0.0f : std::exp(x); }
void online_softmax_ref(float* S, int64_t m, int64_t n, int64_t ld, float* mrow, float* lrow, float* corr) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = S + i * ld;
    float mx = mrow[i];
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, row[j]);
    if (mx == -kInf) {
      std::fill(row, row + n, 0.0f);
      corr[i] = 1.0f;
      continue;
    }
    float sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += row[j] = exp_ref(row[j] - mx);
    corr[i] = exp_ref(mrow[i] - mx);
    lrow[i] = lrow[i] * corr[i] + sum;
    mrow[i] = mx;
  }
}
void softmax_bwd_ref(float* S, float* dP, int64_t m, int64_t n, int64_t ld, const float* lse,
                     const float* delta, float cap) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float s = S[i * ld + j], p = exp_ref(s - lse[i]), ds = p * (dP[i * ld + j] - delta[i]);
      if (cap > 0) {
        float t = std::clamp(s / cap, -1.0f, 1.0f);
        ds *= 1.0f - t * t;
      }
      S[i * ld + j] = p;
      dP[i * ld + j] = ds;
    }
}
const RowKernels kRefKernels = {softcap_ref, online_softmax_ref, softmax_bwd_ref, nullptr, nullptr};

const RowKernels& row_kernels() {
  const CpuFeatures& f = cpu_features();
  return f.avx512f ? *attn_detail::row_kernels_avx512() : f.avx2 ? *attn_detail::row_kernels_avx2() : kRefKernels;
}

// Scratch memory: a tensor, so that memory_stats() counts it. Per-task scratch is allocated inside
// each task (a task may run nested GEMM tasks, so thread-local buffers could be reused under our feet).
struct Scratch {
  Tensor buf;
  explicit Scratch(size_t n) : buf(Tensor::empty({int64_t(n)})) {}
  float* get() const { return buf.data<float>(); }
};

int64_t g_test_tiles[2] = {0, 0};  // set_test_overrides
int g_test_backward = 0;

// ---------------------------------------------------------------- geometry and masks
struct Geo {
  int64_t B, Tq, Tk, Hq, Hkv, D, rep;
  float scale, cap;
  bool causal;
  int64_t window, q_off;
  const int32_t* seg = nullptr;  // [B, Tk] or null
  int64_t bq = 1, bk = 1;        // query positions per block, keys per block

  // Element strides of the batch and time dims of q, k, v as the forward reads them (views such as
  // a KV-cache prefix need no copy; heads and head_dim are dense). The backward reads contiguous
  // copies, with the default strides set by make_geo.
  int64_t qsb = 0, qst = 0, ksb = 0, kst = 0, vsb = 0, vst = 0;
  // Visible keys of query position t before segments: [lo(t), hi(t)) (may be empty).
  int64_t lo(int64_t t) const { return window > 0 ? std::max<int64_t>(0, q_off + t - window + 1) : 0; }
  int64_t hi(int64_t t) const { return causal ? std::clamp<int64_t>(q_off + t + 1, 0, Tk) : Tk; }
  int32_t qseg(int64_t b, int64_t t) const { return seg[b * Tk + q_off + t]; }
};

// Whether any (t, j) in positions [t0, t1) × keys [j0, j1) may be visible, and whether all are
// visible (then the tile needs no masking).
struct TileVis { bool any, all; };
TileVis tile_vis(const Geo& g, int64_t b, int64_t t0, int64_t t1, int64_t j0, int64_t j1) {
  if (j0 >= g.hi(t1 - 1) || j1 <= g.lo(t0)) return {false, false};
  bool all = j0 >= g.lo(t1 - 1) && j1 <= g.hi(t0);
  if (g.seg) {
    int32_t qmin = INT32_MAX, qmax = INT32_MIN, kmin = INT32_MAX, kmax = INT32_MIN;
    for (int64_t t = t0; t < t1; ++t) { int32_t s = g.qseg(b, t); qmin = std::min(qmin, s); qmax = std::max(qmax, s); }
    const int32_t* ks = g.seg + b * g.Tk;
    for (int64_t j = j0; j < j1; ++j) { kmin = std::min(kmin, ks[j]); kmax = std::max(kmax, ks[j]); }
    if (qmax < kmin || kmax < qmin) return {false, false};
    all = all && qmin == qmax && kmin == kmax && qmin == kmin;
  }
  return {true, all};
}

// Sets S[r][c] = -inf where key j0 + c is hidden from row r (position t0 + r / rep).
void apply_mask(const Geo& g, int64_t b, int64_t t0, int64_t nt, int64_t j0, int64_t n, float* S, int64_t ld) {
  const int32_t* ks = g.seg ? g.seg + b * g.Tk + j0 : nullptr;
  for (int64_t tt = 0; tt < nt; ++tt) {
    const int64_t t = t0 + tt;
    const int64_t a = std::clamp<int64_t>(g.lo(t) - j0, 0, n), e = std::clamp<int64_t>(g.hi(t) - j0, a, n);
    const int32_t qs = ks ? g.qseg(b, t) : 0;
    for (int64_t r = 0; r < g.rep; ++r) {
      float* row = S + (tt * g.rep + r) * ld;
      std::fill(row, row + a, -kInf);
      std::fill(row + e, row + n, -kInf);
      if (ks)
        for (int64_t c = a; c < e; ++c)
          if (ks[c] != qs) row[c] = -kInf;
    }
  }
}

// Copies the rep·D values of positions [t0, t0+nt) of group g of q (contiguous per position) into
// a dense [nt·rep, D] buffer, times s.
void gather_q(const Geo& g, const float* q, int64_t b, int64_t grp, int64_t t0, int64_t nt, float s, float* dst) {
  const int64_t w = g.rep * g.D;
  for (int64_t tt = 0; tt < nt; ++tt) {
    const float* p = q + b * g.qsb + (t0 + tt) * g.qst + grp * w;
    float* o = dst + tt * w;
    for (int64_t i = 0; i < w; ++i) o[i] = s * p[i];
  }
}
void scatter_rows(const Geo& g, const float* src, int64_t b, int64_t grp, int64_t t0, int64_t nt, float s, float* dst) {
  const int64_t w = g.rep * g.D;
  for (int64_t tt = 0; tt < nt; ++tt) {
    float* o = dst + ((b * g.Tq + t0 + tt) * g.Hq + grp * g.rep) * g.D;
    const float* p = src + tt * w;
    for (int64_t i = 0; i < w; ++i) o[i] = s * p[i];
  }
}
// ---------------------------------------------------------------- tile GEMMs
// With the ISA's tile GEMM (rk.gemm) when there is one, else ft::sgemm.
// The right operand of S = A·Bᵀ (B: n rows of D floats, row stride ldr): the rows themselves for
// sgemm, or their transpose [D × n] (in tbuf, row stride ldt) for rk.gemm.
struct BT { const float* p; int64_t ld; };
BT prep_bt(const RowKernels& rk, const float* rows, int64_t ldr, int64_t n, int64_t D, float* tbuf, int64_t ldt) {
  if (!rk.gemm) return {rows, ldr};
  rk.transpose(rows, ldr, n, D, tbuf, ldt);
  return {tbuf, ldt};
}
// C[M×n] = A[M×D] · Bᵀ
void mm_abt(const RowKernels& rk, int64_t M, int64_t n, int64_t D, const float* A, BT b, float* C, int64_t ldc) {
  if (rk.gemm) rk.gemm(M, n, D, A, D, 1, b.p, b.ld, C, ldc, false);
  else sgemm(false, true, M, n, D, 1.0f, A, D, b.p, b.ld, 0.0f, C, ldc);
}
// C[M×N] += A[M×K] · B[K×N] (row strides lda, ldb, ldc)
void mm_ab_acc(const RowKernels& rk, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, float* C, int64_t ldc) {
  if (rk.gemm) rk.gemm(M, N, K, A, lda, 1, B, ldb, C, ldc, true);
  else sgemm(false, false, M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
}
// C[N×D] += A[M×N]ᵀ · B[M×D]
void mm_atb_acc(const RowKernels& rk, int64_t N, int64_t D, int64_t M, const float* A, int64_t lda, const float* B,
                int64_t ldb, float* C, int64_t ldc) {
  if (rk.gemm) rk.gemm(N, D, M, A, 1, lda, B, ldb, C, ldc, true);
  else sgemm(true, false, N, D, M, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
}

// ---------------------------------------------------------------- forward
// S = Qbuf·Kᵀ for keys [j0, j0+n) (kt: see prep_bt), then softcap and mask.
void scores(const Geo& g, const RowKernels& rk, const float* Qbuf, int64_t M, BT kt, int64_t b, int64_t t0,
            int64_t nt, int64_t j0, int64_t n, bool full, float* S) {
  mm_abt(rk, M, n, g.D, Qbuf, kt, S, g.bk);
  if (g.cap > 0) rk.softcap(S, M, n, g.bk, g.cap);
  if (!full) apply_mask(g, b, t0, nt, j0, n, S, g.bk);
}
const float* k_row(const Geo& g, const float* k, int64_t b, int64_t j, int64_t grp) { return k + b * g.ksb + j * g.kst + grp * g.D; }
const float* v_row(const Geo& g, const float* v, int64_t b, int64_t j, int64_t grp) { return v + b * g.vsb + j * g.vst + grp * g.D; }

// Attention of positions [t0, t0+nt) of (b, grp) over keys [ka, kb). Writes the unnormalised
// accumulator O [M, D] and the row state m, l (rows with no visible key: m = -inf, l = 0).
void forward_tile(const Geo& g, const RowKernels& rk, const float* q, const float* k, const float* v,
                  int64_t b, int64_t grp, int64_t t0, int64_t nt, int64_t ka, int64_t kb,
                  float* O, float* mrow, float* lrow, float* work) {
  const int64_t M = nt * g.rep, D = g.D;
  float* Qbuf = work;
  float* S = Qbuf + M * D;
  float* corr = S + M * g.bk;
  float* tbuf = corr + M;
  gather_q(g, q, b, grp, t0, nt, g.scale, Qbuf);
  std::fill(O, O + M * D, 0.0f);
  std::fill(mrow, mrow + M, -kInf);
  std::fill(lrow, lrow + M, 0.0f);
  for (int64_t j0 = ka; j0 < kb; j0 += g.bk) {
    const int64_t n = std::min(g.bk, kb - j0);
    const TileVis vis = tile_vis(g, b, t0, t0 + nt, j0, j0 + n);
    if (!vis.any) continue;
    const BT kt = prep_bt(rk, k_row(g, k, b, j0, grp), g.kst, n, D, tbuf, g.bk);
    scores(g, rk, Qbuf, M, kt, b, t0, nt, j0, n, vis.all, S);
    rk.online_softmax(S, M, n, g.bk, mrow, lrow, corr);
    for (int64_t r = 0; r < M; ++r)
      if (corr[r] != 1.0f)
        for (int64_t d = 0; d < D; ++d) O[r * D + d] *= corr[r];
    mm_ab_acc(rk, M, D, n, S, g.bk, v_row(g, v, b, j0, grp), g.vst, O, D);
  }
}

size_t forward_work(const Geo& g) { return size_t(g.bq * g.rep) * size_t(g.D + g.bk + 1) + size_t(g.D * g.bk); }

void attention_forward(const Geo& g, const float* q, const float* k, const float* v, float* out, float* lse) {
  const RowKernels& rk = row_kernels();
  const int64_t nqb = (g.Tq + g.bq - 1) / g.bq, M = g.bq * g.rep, D = g.D;
  const int64_t units = g.B * g.Hkv * nqb;
  // Split the keys over tasks (at least 2 key blocks each) when there are too few query blocks to
  // keep many cores busy. Independent of the thread count, so results are too.
  const int64_t nsplit = units >= 64 ? 1 : std::clamp<int64_t>((64 + units - 1) / units, 1, std::max<int64_t>(1, g.Tk / (2 * g.bk)));
  if (nsplit == 1) {
    parallel_range(units, 1, [&](int64_t u0, int64_t u1) {
      Scratch w(size_t(M) * (2 * size_t(D) + 2) + forward_work(g));
      float *O = w.get(), *mrow = O + M * D, *lrow = mrow + M, *work = lrow + M;
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t qb = u % nqb, bg = u / nqb, b = bg / g.Hkv, grp = bg % g.Hkv;
        const int64_t t0 = qb * g.bq, nt = std::min(g.bq, g.Tq - t0), m = nt * g.rep;
        forward_tile(g, rk, q, k, v, b, grp, t0, nt, g.lo(t0), g.hi(t0 + nt - 1), O, mrow, lrow, work);
        for (int64_t r = 0; r < m; ++r) {
          const float inv = lrow[r] > 0 ? 1.0f / lrow[r] : 0.0f;
          for (int64_t d = 0; d < D; ++d) O[r * D + d] *= inv;
        }
        scatter_rows(g, O, b, grp, t0, nt, 1.0f, out);
        if (lse)
          for (int64_t r = 0; r < m; ++r)
            lse[(b * g.Tq + t0 + r / g.rep) * g.Hq + grp * g.rep + r % g.rep] =
                lrow[r] > 0 ? mrow[r] + std::log(lrow[r]) : -kInf;
      }
    });
    return;
  }
  // Split-K: partial results per (unit, split): O [M, D], m [M], l [M].
  const int64_t stride = M * (D + 2);
  Scratch part_buf(size_t(units * nsplit * stride));
  float* part = part_buf.get();
  parallel_range(units * nsplit, 1, [&](int64_t s0, int64_t s1) {
    Scratch w(forward_work(g));
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t u = s / nsplit, sp = s % nsplit;
      const int64_t qb = u % nqb, bg = u / nqb, b = bg / g.Hkv, grp = bg % g.Hkv;
      const int64_t t0 = qb * g.bq, nt = std::min(g.bq, g.Tq - t0);
      const int64_t lo = g.lo(t0), hi = std::max(lo, g.hi(t0 + nt - 1));
      const int64_t nblk = (hi - lo + g.bk - 1) / g.bk;
      const int64_t ka = std::min(hi, lo + nblk * sp / nsplit * g.bk), kb = std::min(hi, lo + nblk * (sp + 1) / nsplit * g.bk);
      float* P = part + s * stride;
      forward_tile(g, rk, q, k, v, b, grp, t0, nt, ka, kb, P, P + M * D, P + M * D + M, w.get());
    }
  });
  parallel_range(units, 1, [&](int64_t u0, int64_t u1) {
    Scratch w(size_t(M * D));
    float* O = w.get();
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t qb = u % nqb, bg = u / nqb, b = bg / g.Hkv, grp = bg % g.Hkv;
      const int64_t t0 = qb * g.bq, nt = std::min(g.bq, g.Tq - t0), m = nt * g.rep;
      for (int64_t r = 0; r < m; ++r) {
        float mx = -kInf, l = 0;
        for (int64_t sp = 0; sp < nsplit; ++sp) mx = std::max(mx, part[(u * nsplit + sp) * stride + M * D + r]);
        float* o = O + r * D;
        std::fill(o, o + D, 0.0f);
        if (mx > -kInf)
          for (int64_t sp = 0; sp < nsplit; ++sp) {
            const float* P = part + (u * nsplit + sp) * stride;
            const float ms = P[M * D + r], ls = P[M * D + M + r];
            if (ls == 0) continue;
            const float c = std::exp(ms - mx);
            l += ls * c;
            for (int64_t d = 0; d < D; ++d) o[d] += c * P[r * D + d];
          }
        const float inv = l > 0 ? 1.0f / l : 0.0f;
        for (int64_t d = 0; d < D; ++d) o[d] *= inv;
        if (lse) lse[(b * g.Tq + t0 + r / g.rep) * g.Hq + grp * g.rep + r % g.rep] = l > 0 ? mx + std::log(l) : -kInf;
      }
      scatter_rows(g, O, b, grp, t0, nt, 1.0f, out);
    }
  });
}

// ---------------------------------------------------------------- backward
// One backward tile: given Qbuf (scale·q rows), dObuf, lse (+inf for empty rows), delta of M rows
// and keys [j0, j0+n): leaves P in S and dS (w.r.t. the scaled, uncapped scores) in dP.
// kt, vt: the key / value block prepared by prep_bt.
void backward_tile(const Geo& g, const RowKernels& rk, const float* Qbuf, const float* dObuf,
                   const float* lse, const float* delta, int64_t M, BT kt, BT vt, int64_t b, int64_t t0,
                   int64_t nt, int64_t j0, int64_t n, bool full, float* S, float* dP) {
  scores(g, rk, Qbuf, M, kt, b, t0, nt, j0, n, full, S);
  mm_abt(rk, M, n, g.D, dObuf, vt, dP, g.bk);
  rk.softmax_bwd(S, dP, M, n, g.bk, lse, delta, g.cap);
}

// Backward inputs regrouped once per call, group-major: row ((b·Hkv + g)·Tq + t)·rep + r holds
// query head g·rep + r of position t, so the rows of any tile are one dense block (no per-tile
// gathers from the strided [B, T, H, D] layout). qs = scale·q, dO; lse (+inf for rows without a
// visible key, so that P = exp(S - lse) = 0) and delta = rowsum(dO∘O).
struct BwdData {
  Scratch buf;
  float *qs, *dos, *lse, *delta;
  BwdData(const Geo& g, const float* q, const float* dout, const float* out, const float* lse_in)
      : buf(size_t(g.B * g.Tq * g.Hq) * size_t(2 * g.D + 2)) {
    const int64_t rows = g.B * g.Tq * g.Hq, D = g.D, w = g.rep * D;
    qs = buf.get();
    dos = qs + rows * D;
    lse = dos + rows * D;
    delta = lse + rows;
    parallel_range(g.B * g.Tq, 16, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t b = p / g.Tq, t = p % g.Tq;
        for (int64_t grp = 0; grp < g.Hkv; ++grp) {
          const int64_t src = (p * g.Hq + grp * g.rep) * D, row = ((b * g.Hkv + grp) * g.Tq + t) * g.rep;
          for (int64_t i = 0; i < w; ++i) qs[row * D + i] = g.scale * q[src + i];
          std::copy(dout + src, dout + src + w, dos + row * D);
          for (int64_t r = 0; r < g.rep; ++r) {
            const float* o = out + src + r * D;
            const float* d = dout + src + r * D;
            float acc = 0;
            for (int64_t c = 0; c < D; ++c) acc += o[c] * d[c];
            delta[row + r] = acc;
            const float l = lse_in[p * g.Hq + grp * g.rep + r];
            lse[row + r] = l == -kInf ? kInf : l;
          }
        }
      }
    });
  }
  int64_t row(const Geo& g, int64_t b, int64_t grp, int64_t t) const { return ((b * g.Hkv + grp) * g.Tq + t) * g.rep; }
};

// Backward of key block kb of (b, grp) against every query block that sees it: dK, dV of the block
// are accumulated and written out (when dk / dv); with dQacc (dense [Tq·rep, D] rows of (b, grp),
// row t·rep + r) also dQacc += dS·K. work: bkv_work() floats.
struct BwdCtx {
  const Geo& g;
  const RowKernels& rk;
  const BwdData& d;
  const float *k, *v;
  float *dk, *dv;
};
size_t bkv_work(const Geo& g) {
  const int64_t M = g.bq * g.rep;
  return 2 * size_t(M) * size_t(g.bk) + 4 * size_t(g.bk) * size_t(g.D);
}
void backward_key_block(const BwdCtx& c, int64_t b, int64_t grp, int64_t kb, float* work, float* dQacc) {
  const Geo& g = c.g;
  const RowKernels& rk = c.rk;
  const int64_t M = g.bq * g.rep, D = g.D;
  float *S = work, *dP = S + M * g.bk, *dK = dP + M * g.bk, *dV = dK + g.bk * D, *kbuf = dV + g.bk * D,
        *vbuf = kbuf + g.bk * D;
  const int64_t j0 = kb * g.bk, n = std::min(g.bk, g.Tk - j0);
  std::fill(dK, dK + n * D, 0.0f);
  std::fill(dV, dV + n * D, 0.0f);
  const float* krows = k_row(g, c.k, b, j0, grp);
  const BT kt = prep_bt(rk, krows, g.kst, n, D, kbuf, g.bk);
  const BT vt = prep_bt(rk, v_row(g, c.v, b, j0, grp), g.vst, n, D, vbuf, g.bk);
  // Query positions that can see a key of [j0, j0+n): causal needs q_off + t >= j0, the window
  // needs q_off + t - (j0 + n - 1) < window.
  const int64_t ta = g.causal ? std::max<int64_t>(0, j0 - g.q_off) : 0;
  const int64_t tb = g.window > 0 ? std::min<int64_t>(g.Tq, j0 + n - 1 + g.window - g.q_off) : g.Tq;
  for (int64_t t0 = ta; t0 < tb; t0 += g.bq) {
    const int64_t nt = std::min(g.bq, tb - t0), m = nt * g.rep;
    const TileVis vis = tile_vis(g, b, t0, t0 + nt, j0, j0 + n);
    if (!vis.any) continue;
    const int64_t r0 = c.d.row(g, b, grp, t0);
    const float *Q = c.d.qs + r0 * D, *dO = c.d.dos + r0 * D;
    backward_tile(g, rk, Q, dO, c.d.lse + r0, c.d.delta + r0, m, kt, vt, b, t0, nt, j0, n, vis.all, S, dP);
    if (c.dv) mm_atb_acc(rk, n, D, m, S, g.bk, dO, D, dV, D);
    if (c.dk) mm_atb_acc(rk, n, D, m, dP, g.bk, Q, D, dK, D);
    if (dQacc) mm_ab_acc(rk, m, D, n, dP, g.bk, krows, g.kst, dQacc + t0 * g.rep * D, D);
  }
  for (int64_t j = 0; j < n; ++j) {
    const int64_t off = ((b * g.Tk + j0 + j) * g.Hkv + grp) * D;
    if (c.dk) std::copy(dK + j * D, dK + (j + 1) * D, c.dk + off);
    if (c.dv) std::copy(dV + j * D, dV + (j + 1) * D, c.dv + off);
  }
}

void attention_backward(const Geo& g, const float* q, const float* k, const float* v, const float* out,
                        const float* lse_in, const float* dout, float* dq, float* dk, float* dv) {
  const RowKernels& rk = row_kernels();
  const int64_t D = g.D;
  const BwdData data(g, q, dout, out, lse_in);
  const BwdCtx ctx{g, rk, data, k, v, dk, dv};
  const int64_t M = g.bq * g.rep, nkb = (g.Tk + g.bk - 1) / g.bk, groups = g.B * g.Hkv;
  const int64_t P = num_threads();
  const bool one_pass = g_test_backward ? g_test_backward == 2 : groups >= 2 * P || (groups >= P && groups % P == 0);
  if (dq && (dk || dv) && one_pass) {
    // Enough (b, g) pairs to keep every core busy: one pass, one task per pair, which owns its dQ
    // rows (accumulated densely, then scaled into dq). 5 tile GEMMs instead of 3 + 4.
    parallel_range(groups, 1, [&](int64_t u0, int64_t u1) {
      Scratch w(bkv_work(g) + size_t(g.Tq * g.rep * D));
      float* dQ = w.get() + bkv_work(g);
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t b = u / g.Hkv, grp = u % g.Hkv;
        std::fill(dQ, dQ + g.Tq * g.rep * D, 0.0f);
        for (int64_t kb = 0; kb < nkb; ++kb) backward_key_block(ctx, b, grp, kb, w.get(), dQ);
        scatter_rows(g, dQ, b, grp, 0, g.Tq, g.scale, dq);
      }
    });
    return;
  }
  if (dq) {  // sweep 1: dQ, one task per (b, g, query block)
    const int64_t nqb = (g.Tq + g.bq - 1) / g.bq;
    parallel_range(groups * nqb, 1, [&](int64_t u0, int64_t u1) {
      Scratch w(size_t(M) * size_t(D + 2 * g.bk) + 2 * size_t(D * g.bk));
      float *dQ = w.get(), *S = dQ + M * D, *dP = S + M * g.bk, *kbuf = dP + M * g.bk, *vbuf = kbuf + D * g.bk;
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t qb = u % nqb, bg = u / nqb, b = bg / g.Hkv, grp = bg % g.Hkv;
        const int64_t t0 = qb * g.bq, nt = std::min(g.bq, g.Tq - t0), m = nt * g.rep;
        const int64_t r0 = data.row(g, b, grp, t0);
        std::fill(dQ, dQ + m * D, 0.0f);
        // Key blocks aligned to multiples of bk as in backward_key_block: the same tiles, so dq is
        // bitwise the same with either schedule.
        for (int64_t j0 = g.lo(t0) / g.bk * g.bk, kb = g.hi(t0 + nt - 1); j0 < kb; j0 += g.bk) {
          const int64_t n = std::min(g.bk, g.Tk - j0);
          const TileVis vis = tile_vis(g, b, t0, t0 + nt, j0, j0 + n);
          if (!vis.any) continue;
          const float* krows = k_row(g, k, b, j0, grp);
          const BT kt = prep_bt(rk, krows, g.kst, n, D, kbuf, g.bk);
          const BT vt = prep_bt(rk, v_row(g, v, b, j0, grp), g.vst, n, D, vbuf, g.bk);
          backward_tile(g, rk, data.qs + r0 * D, data.dos + r0 * D, data.lse + r0, data.delta + r0, m, kt, vt, b,
                        t0, nt, j0, n, vis.all, S, dP);
          mm_ab_acc(rk, m, D, n, dP, g.bk, krows, g.kst, dQ, D);
        }
        scatter_rows(g, dQ, b, grp, t0, nt, g.scale, dq);
      }
    });
  }
  if (dk || dv) {  // sweep 2: dK and dV, one task per (b, g, key block)
    parallel_range(groups * nkb, 1, [&](int64_t u0, int64_t u1) {
      Scratch w(bkv_work(g));
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t kb = u % nkb, bg = u / nkb;
        backward_key_block(ctx, bg / g.Hkv, bg % g.Hkv, kb, w.get(), nullptr);
      }
    });
  }
}

// ---------------------------------------------------------------- op

Geo make_geo(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  Geo g;
  g.B = q.size(0);
  g.Tq = q.size(1);
  g.Hq = q.size(2);
  g.D = q.size(3);
  g.Tk = k.size(1);
  g.Hkv = k.size(2);
  g.rep = g.Hq / g.Hkv;
  g.scale = opt.scale != 0 ? opt.scale : 1.0f / std::sqrt(float(g.D));
  g.cap = opt.softcap;
  g.causal = opt.causal;
  g.window = opt.window;
  g.q_off = opt.q_offset;
  g.qsb = q.strides()[0];
  g.qst = q.strides()[1];
  g.ksb = k.strides()[0];
  g.kst = k.strides()[1];
  g.vsb = v.strides()[0];
  g.vst = v.strides()[1];
  // Tiles: bk keys × (bq positions · rep heads) rows, ~128 × 128 (the working set of a tile stays
  // in L2). Through ft::sgemm (no ISA tile GEMM), each GEMM of a tile is kept <= 2^19
  // multiply-adds so that sgemm stays on the calling thread.
  g.bk = std::clamp<int64_t>(g.Tk, 1, 128);
  const int64_t rows = std::max<int64_t>(
      g.rep, row_kernels().gemm ? 128 : std::min<int64_t>(128, (int64_t(1) << 19) / (g.bk * g.D)));
  g.bq = std::clamp<int64_t>(rows / g.rep, 1, std::max<int64_t>(1, g.Tq));
  if (g_test_tiles[0] > 0) g.bq = g_test_tiles[0];
  if (g_test_tiles[1] > 0) g.bk = g_test_tiles[1];
  return g;
}

struct AttentionNode : Node {
  Geo g;
  const char* name() const override { return "attention"; }
  std::vector<Tensor> backward(const Tensor& g_out) override {
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    if (saved[5].defined()) g.seg = saved[5].data<int32_t>();
    Tensor dout = f32c(g_out);
    Tensor dq, dk, dv;
    if (needs(0)) dq = Tensor::empty(q.shape());
    if (needs(1)) dk = Tensor::empty(k.shape());
    if (needs(2)) dv = Tensor::empty(v.shape());
    auto ptr = [](const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; };
    if (q.numel() == 0 || k.numel() == 0) {  // nothing attended: zero gradients
      for (Tensor* t : {&dq, &dk, &dv})
        if (t->defined()) t->fill_(0);
    } else {
      attention_backward(g, q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(), lse.data<float>(),
                         dout.data<float>(), ptr(dq), ptr(dk), ptr(dv));
    }
    return {dq, dk, dv};
  }
};

}  // namespace

void attn_detail::set_test_overrides(int64_t positions, int64_t keys, int backward) {
  g_test_tiles[0] = positions;
  g_test_tiles[1] = keys;
  g_test_backward = backward;
}

Tensor attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const AttentionOptions& opt) {
  FT_PROFILE_SCOPE("attention");
  FT_CHECK(q_in.defined() && k_in.defined() && v_in.defined(), "attention: q, k and v must be defined tensors");
  FT_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4,
           "attention: q must be [B, Tq, Hq, D] and k, v [B, Tk, Hkv, D]; got q ", q_in.shape_str(), ", k ",
           k_in.shape_str(), ", v ", v_in.shape_str());
  FT_CHECK(k_in.shape() == v_in.shape(), "attention: k ", k_in.shape_str(), " and v ", v_in.shape_str(), " must have the same shape");
  FT_CHECK(q_in.size(0) == k_in.size(0) && q_in.size(3) == k_in.size(3),
           "attention: q ", q_in.shape_str(), " and k ", k_in.shape_str(), " differ in batch or head_dim");
  FT_CHECK(q_in.size(3) >= 1, "attention: head_dim must be at least 1, got q ", q_in.shape_str());
  FT_CHECK(k_in.size(2) >= 1 && q_in.size(2) % k_in.size(2) == 0,
           "attention: query heads (", q_in.size(2), ") must be a multiple of kv heads (", k_in.size(2), "); q ",
           q_in.shape_str(), ", k ", k_in.shape_str());
  for (const Tensor* t : {&q_in, &k_in, &v_in})
    FT_CHECK(is_float(t->dtype()), "attention: q, k, v must be float tensors, got ", dtype_name(t->dtype()));
  FT_CHECK(opt.window >= 0, "attention: window must be >= 0 (0 = off), got ", opt.window);
  FT_CHECK(opt.softcap >= 0 && std::isfinite(opt.softcap), "attention: softcap must be >= 0 (0 = off), got ", opt.softcap);
  FT_CHECK(std::isfinite(opt.scale), "attention: scale must be finite (0 = 1/sqrt(head_dim)), got ", opt.scale);
  const bool rec = should_record({&q_in, &k_in, &v_in});
  // Without autograd, float32 views whose heads and head_dim are dense (a KV-cache prefix
  // cache.slice(1, 0, len), q/k/v slices of a fused projection) are read in place; otherwise (and
  // for the tensors the backward saves) contiguous float32 copies.
  // The decode path (one query position) also reads bf16 keys/values (a bf16 KV cache) in place.
  auto dense_heads = [](const Tensor& t) {
    return (t.size(3) == 1 || t.strides()[3] == 1) && (t.size(2) == 1 || t.strides()[2] == t.size(3));
  };
  auto prep = [&](const Tensor& t) { return !rec && t.dtype() == DType::F32 && dense_heads(t) ? t : f32c(t); };
  const bool kv_bf16 = !rec && q_in.size(1) == 1 && k_in.dtype() == DType::BF16 && v_in.dtype() == DType::BF16 &&
                       dense_heads(k_in) && dense_heads(v_in);
  Tensor q = prep(q_in), k = kv_bf16 ? k_in : prep(k_in), v = kv_bf16 ? v_in : prep(v_in);
  Geo g = make_geo(q, k, v, opt);
  Tensor seg;
  if (opt.segment_ids.defined()) {
    seg = opt.segment_ids.contiguous();
    FT_CHECK(seg.dtype() == DType::I32 && seg.dim() == 2 && seg.size(0) == g.B && seg.size(1) == g.Tk,
             "attention: segment_ids must be int32 [B, Tk] = [", g.B, ", ", g.Tk, "], got ", dtype_name(seg.dtype()),
             " ", seg.shape_str());
    FT_CHECK(g.q_off >= 0 && g.q_off + g.Tq <= g.Tk, "attention: with segment_ids, queries use segment_ids[:, q_offset + i], so ",
             "q_offset (", g.q_off, ") + Tq (", g.Tq, ") must be within Tk (", g.Tk, ")");
    g.seg = seg.data<int32_t>();
  }
  Tensor out = Tensor::empty(q.shape());
  Tensor lse = rec ? Tensor::empty({g.B, g.Tq, g.Hq}) : Tensor();
  if (q.numel() == 0) {
  } else if (k.numel() == 0) {
    out.fill_(0);
    if (rec) lse.fill_(-kInf);
  } else if (g.Tq == 1) {  // decode: one position over a KV cache (attention_decode.h)
    attn_detail::DecodeArgs d;
    d.B = g.B, d.Tk = g.Tk, d.Hq = g.Hq, d.Hkv = g.Hkv, d.D = g.D;
    d.q = q.data<float>(), d.qsb = g.qsb;
    d.kv_bf16 = kv_bf16;
    d.k = k.raw(), d.ksb = g.ksb, d.kst = g.kst;
    d.v = v.raw(), d.vsb = g.vsb, d.vst = g.vst;
    d.out = out.data<float>(), d.lse = rec ? lse.data<float>() : nullptr;
    d.scale = g.scale, d.cap = g.cap, d.causal = g.causal, d.window = g.window, d.q_off = g.q_off, d.seg = g.seg;
    attn_detail::attention_decode(d);
  } else {
    attention_forward(g, q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(),
                      rec ? lse.data<float>() : nullptr);
  }
  if (rec) {
    auto node = std::make_shared<AttentionNode>();
    node->g = g;
    node->g.seg = nullptr;  // re-pointed from saved[5] in backward
    node->inputs = {q_in, k_in, v_in};
    node->saved = {q.detach(), k.detach(), v.detach(), out.detach(), lse, seg};
    return record(out, node);
  }
  return out;
}

}  // namespace ft
