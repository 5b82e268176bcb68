// ft's GEMM driver (see autograd/gemm.h): BLIS-style packing and cache blocking, TBB parallel
// over blocks of C, micro-kernels from the ISA files (gemm_avx512.cpp, gemm_avx2.cpp) or the
// portable SSE2 one below.
//
// Loop structure for C = alpha·op(A)·op(B) + beta·C, depth D (= K, or K-pairs in bf16 mode):
//   for each column block jc (NC wide, packed B of D×NC kept ~4 MiB so it stays in L3):
//     pack op(B)[:, jc] into NR-wide slivers (parallel)           -> shared, read-only
//     parallel over tasks = (row range of MR-panels) × (range of slivers):
//       for each depth block (DC deep):
//         pack op(A)[rows, depth block] into MR-tall panels (thread-local, ~L2 sized; or, when
//         A would be packed repeatedly and fits in 8 MiB, all of op(A) is packed once up front)
//         for each sliver (DC×NR, L1/L2): for each A panel: micro-kernel on an MR×NR tile of C
// The first depth block applies beta, later ones accumulate (beta = 1). The summation order of
// every C element depends only on the depth blocking, never on the thread count.
#include "autograd/gemm.h"

#include <emmintrin.h>  // SSE2: part of the x86-64 baseline
#include <tbb/parallel_for.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "autograd/cpu.h"
#include "autograd/dtype.h"
#include "autograd/error.h"
#include "autograd/gemm_kernels.h"
#include "autograd/gemv.h"
#include "autograd/quant.h"

namespace ft {
namespace {

using gemm_detail::Kernel;
using gemm_detail::Kernels;
using gemm_detail::kSrcBF16;
using gemm_detail::kSrcF16;
using gemm_detail::kSrcF32;
using gemm_detail::kSrcQuant;

// ---------------------------------------------------------------- portable kernel (SSE2, 6×8)
constexpr int kBaseMR = 6, kBaseNR = 8;

void base_kernel(int64_t depth, const void* ap, const void* bp, float* c, int64_t ldc, int m, int n,
                 float alpha, float beta) {
  const float* a = static_cast<const float*>(ap);
  const float* b = static_cast<const float*>(bp);
  __m128 acc0[kBaseMR], acc1[kBaseMR];
  for (int r = 0; r < kBaseMR; ++r) acc0[r] = acc1[r] = _mm_setzero_ps();
  for (int64_t d = 0; d < depth; ++d) {
    const __m128 b0 = _mm_load_ps(b), b1 = _mm_load_ps(b + 4);
    for (int r = 0; r < kBaseMR; ++r) {
      const __m128 av = _mm_set1_ps(a[r]);
      acc0[r] = _mm_add_ps(acc0[r], _mm_mul_ps(av, b0));
      acc1[r] = _mm_add_ps(acc1[r], _mm_mul_ps(av, b1));
    }
    a += kBaseMR;
    b += kBaseNR;
  }
  alignas(16) float t[kBaseMR][kBaseNR];
  const __m128 va = _mm_set1_ps(alpha);
  for (int r = 0; r < kBaseMR; ++r) {
    _mm_store_ps(t[r], _mm_mul_ps(acc0[r], va));
    _mm_store_ps(t[r] + 4, _mm_mul_ps(acc1[r], va));
  }
  for (int r = 0; r < m; ++r) {
    float* cr = c + r * ldc;
    if (beta != 0.0f)
      for (int j = 0; j < n; ++j) cr[j] = t[r][j] + beta * cr[j];
    else
      for (int j = 0; j < n; ++j) cr[j] = t[r][j];
  }
}

const Kernels kBaseKernels = {kBaseMR, kBaseNR, base_kernel, nullptr, nullptr, nullptr, nullptr, nullptr};

// ---------------------------------------------------------------- scratch memory
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Block = std::unique_ptr<uint32_t[], FreeDeleter>;

Block alloc_block(size_t elems) {
  size_t bytes = (elems * 4 + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, std::max<size_t>(bytes, 64));
  FT_CHECK(p, "gemm: out of memory allocating ", bytes, " bytes of packing scratch");
  return Block(static_cast<uint32_t*>(p));
}

struct Scratch {
  Block p;
  size_t cap = 0;
  uint32_t* get(size_t elems) {
    if (elems > cap) { p = alloc_block(elems); cap = elems; }
    return p.get();
  }
};

// Packed-B buffers, one per GEMM in flight (a pool, not thread_local: a thread waiting in
// parallel_for may run another GEMM's task, e.g. when GEMMs are called from parallel loops).
class ScratchPool {
 public:
  Scratch take() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return {};
    Scratch s = std::move(free_.back());
    free_.pop_back();
    return s;
  }
  void give(Scratch s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < 8) free_.push_back(std::move(s));
  }
 private:
  std::mutex mu_;
  std::vector<Scratch> free_;
};
ScratchPool& pool() { static ScratchPool p; return p; }

// A panels: thread-local is safe here because a task body never waits on other tasks.
Scratch& a_scratch() { thread_local Scratch s; return s; }

// ---------------------------------------------------------------- the job and its packers
struct Job {
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
  const float* A;
  int64_t lda;
  const void* B;  // float, or uint16_t bits of bf16 / fp16 (b_type)
  int64_t ldb;
  int b_type;     // kSrcF32 | kSrcBF16 | kSrcF16
  bool round_a;   // op(A) rounded to bf16 (gemm_bf16w's round_a)
  bool pairs;     // bf16 dot-product mode (round_a on AMX / vdpbf16ps): depth unit is a k-pair,
                  // panels hold bf16 pairs
  float* C;
  int64_t ldc;
  const QuantParams* q = nullptr;  // b_type == kSrcQuant

  float a(int64_t i, int64_t k) const { return ta ? A[k * lda + i] : A[i * lda + k]; }
};

inline uint32_t pair(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

// Portable packer (semantics: gemm_detail::PackFn).
void pack_portable(const void* src, int64_t ld, int src_type, bool lanes_are_rows, bool pairs,
                   int w, int n, int64_t kc, uint32_t* dst) {
  const float* sf = static_cast<const float*>(src);
  const uint16_t* sh = static_cast<const uint16_t*>(src);
  auto idx = [&](int64_t k, int64_t x) { return lanes_are_rows ? x * ld + k : k * ld + x; };
  auto at = [&](int64_t k, int64_t x) {
    return src_type == kSrcBF16 ? bf16_to_f32(sh[idx(k, x)])
         : src_type == kSrcF16  ? f16_to_f32(sh[idx(k, x)])
                                : sf[idx(k, x)];
  };
  auto bits = [&](int64_t k, int64_t x) -> uint16_t {  // bf16 of element (k, x); 0 past kc
    if (k >= kc) return 0;
    return src_type == kSrcBF16 ? sh[idx(k, x)] : f32_to_bf16(sf[idx(k, x)]);
  };
  const int64_t units = pairs ? (kc + 1) / 2 : kc;
  for (int x0 = 0; x0 < n; x0 += w, dst += units * w) {
    const int nn = std::min(w, n - x0);
    if (!pairs) {
      float* o = reinterpret_cast<float*>(dst);
      if (lanes_are_rows) {
        for (int x = 0; x < nn; ++x)
          for (int64_t k = 0; k < kc; ++k) o[k * w + x] = at(k, x0 + x);
      } else {
        for (int64_t k = 0; k < kc; ++k)
          for (int x = 0; x < nn; ++x) o[k * w + x] = at(k, x0 + x);
      }
      for (int64_t k = 0; k < kc; ++k)
        for (int x = nn; x < w; ++x) o[k * w + x] = 0.0f;
      continue;
    }
    for (int64_t d = 0; d < units; ++d) {
      uint32_t* od = dst + d * w;
      for (int x = 0; x < nn; ++x) od[x] = pair(bits(2 * d, x0 + x), bits(2 * d + 1, x0 + x));
      for (int x = nn; x < w; ++x) od[x] = 0;
    }
  }
}

// op(A) rows [i0, i0+m) × depth units [d0, d0+dc) into ceil(m/mr) panels of dc×mr.
void pack_a(const Job& g, const Kernels& kr, int64_t i0, int64_t m, int64_t d0, int64_t dc,
            uint32_t* dst) {
  const gemm_detail::PackFn pk = g.pairs && kr.pack_a_pairs ? kr.pack_a_pairs : kr.pack ? kr.pack : pack_portable;
  const int64_t k0 = g.pairs ? 2 * d0 : d0, kc = std::min(g.pairs ? 2 * dc : dc, g.K - k0);
  const float* src = g.ta ? g.A + k0 * g.lda + i0 : g.A + i0 * g.lda + k0;
  pk(src, g.lda, kSrcF32, !g.ta, g.pairs, kr.mr, int(m), kc, dst);
  // round_a without bf16 dot products: the fp32 panels rounded to bf16 values (padding stays 0)
  if (g.round_a && !g.pairs) round_to_bf16(reinterpret_cast<float*>(dst), (m + kr.mr - 1) / kr.mr * kr.mr * kc);
}

// Quantised B: op(B)[k][j] = W[j][k] (trans_b) or W[k][j]. The block of W under this task is
// dequantised (autograd/quant.h, the ISA's vector unpacker) into a thread-local fp32 buffer, a
// depth block of kQuantDepth at a time (it stays in L1/L2), and each sliver is then packed from it
// by the ISA's float packer — the packer a float B would get, so the layout, the zero padding and,
// under round_a with bf16 dot products (pairs), the RNE rounding to bf16 pairs are those of
// gemm_bf16w(round_a) on the bf16-rounded dequantised matrix. Under round_a without pairs the
// dequantised values are rounded to bf16 values first (the weight is a matmul input like any
// other, as bitsandbytes' QLoRA dequantises to its bf16 compute dtype). d0/dc are in depth units
// (k-pairs when g.pairs).
constexpr int64_t kQuantDepth = 256;  // even: a depth block never splits a k-pair
void pack_b_quant(const Job& g, const Kernels& kr, int64_t d0, int64_t dc, int64_t j0, int n, uint32_t* dst) {
  thread_local std::vector<float> buf;
  const int w = kr.nr;
  const gemm_detail::PackFn pk = kr.pack ? kr.pack : pack_portable;
  const int64_t k0 = g.pairs ? 2 * d0 : d0, kc = std::min(g.pairs ? 2 * dc : dc, g.K - k0);
  const int64_t units = g.pairs ? (kc + 1) / 2 : kc;
  buf.resize(size_t(kQuantDepth) * size_t(n));
  float* t = buf.data();
  for (int64_t kb = 0; kb < kc; kb += kQuantDepth) {
    const int64_t kk = std::min(kQuantDepth, kc - kb);
    if (g.tb)  // t [n × kQuantDepth]: lane x = weight row j0 + x, depth k = column k0 + kb + k
      dequantize_block(*g.q, j0, j0 + n, k0 + kb, k0 + kb + kk, t, kQuantDepth);
    else       // t [kk × n]: depth k = weight row k0 + kb + k, lane x = column j0 + x
      dequantize_block(*g.q, k0 + kb, k0 + kb + kk, j0, j0 + n, t, n);
    if (g.round_a && !g.pairs) {
      if (g.tb)
        for (int x = 0; x < n; ++x) round_to_bf16(t + x * kQuantDepth, kk);
      else
        round_to_bf16(t, kk * n);
    }
    const int64_t u0 = g.pairs ? kb / 2 : kb;
    for (int x0 = 0; x0 < n; x0 += w) {
      const int nn = std::min(w, n - x0);
      uint32_t* out = dst + (x0 / w) * units * w + u0 * w;
      if (g.tb) pk(t + x0 * kQuantDepth, kQuantDepth, kSrcF32, true, g.pairs, w, nn, kk, out);
      else      pk(t + x0, n, kSrcF32, false, g.pairs, w, nn, kk, out);
    }
  }
}

// op(B) depth units [d0, d0+dc) × columns [j0, j0+n) into ceil(n/nr) consecutive dc×nr slivers.
void pack_b(const Job& g, const Kernels& kr, int64_t d0, int64_t dc, int64_t j0, int n,
            uint32_t* dst) {
  if (g.b_type == kSrcQuant) return pack_b_quant(g, kr, d0, dc, j0, n, dst);
  const gemm_detail::PackFn pk = g.b_type == kSrcF16 ? (kr.pack_f16 ? kr.pack_f16 : pack_portable)
                                                     : (kr.pack ? kr.pack : pack_portable);
  const int64_t k0 = g.pairs ? 2 * d0 : d0, kc = std::min(g.pairs ? 2 * dc : dc, g.K - k0);
  const int64_t off = g.tb ? j0 * g.ldb + k0 : k0 * g.ldb + j0;
  const void* src = g.b_type != kSrcF32
                        ? static_cast<const void*>(static_cast<const uint16_t*>(g.B) + off)
                        : static_cast<const void*>(static_cast<const float*>(g.B) + off);
  pk(src, g.ldb, g.b_type, g.tb, g.pairs, kr.nr, n, kc, dst);
}

// ---------------------------------------------------------------- blocking and parallel driver
// Cache blocking from the L2 size: the A block (MC rows × DC depth units) takes half of L2, the
// B sliver (DC × NR) a quarter at most. One depth block up to 1536 (fewer passes over C) with
// MC shrunk to fit; MC at most 12 panels. Tuned on Zen 5 (1 MiB L2): DC=1536/MC=84 beat
// DC=768/MC=168 by ~5% at K=1536, and was flat otherwise.
int64_t l2_bytes() {
  static const int64_t b = [] {
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);  // 0 or -1 where unknown (some VMs)
    return std::clamp<int64_t>(v > 0 ? v : (1 << 20), 256 << 10, 4 << 20);
  }();
  return b;
}
constexpr int64_t kMaxDepthBlock = 1536;
constexpr int64_t kMaxPanelsPerBlock = 12;
constexpr int64_t kPackedBElems = 1 << 20;   // packed B per column block: 4 MiB (L3) per 4 threads
constexpr int64_t kPackedAElems = 1 << 21;   // op(A) packed once up front if it fits in 8 MiB
constexpr double kParallelFlops = 1 << 21;   // below this a GEMM runs on the calling thread

template <class F>
void parallel_tasks(int64_t n, bool par, const F& f) {
  if (!par || n == 1) {
    for (int64_t t = 0; t < n; ++t) f(t);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1),
                    [&](const tbb::blocked_range<int64_t>& r) {
                      for (int64_t t = r.begin(); t < r.end(); ++t) f(t);
                    },
                    tbb::simple_partitioner());
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Splits mp A-panels × sp B-slivers into nmb × nnb tasks for P threads, minimising the
// estimated makespan (tasks run in waves of P; packing A costs ~half a sliver per panel).
void partition(int64_t mp, int64_t sp, int64_t max_panels, int P, int64_t& nmb, int64_t& nnb) {
  const int64_t nmb0 = ceil_div(mp, max_panels);
  nmb = nmb0;
  nnb = 1;
  if (P <= 1) return;
  double best = 1e300;
  for (int64_t a = nmb0; a <= std::min(mp, nmb0 * 4 * P); ++a) {
    for (int64_t b = 1; b <= std::min<int64_t>(sp, 4 * P); ++b) {
      const double pm = double(ceil_div(mp, a)), sq = double(ceil_div(sp, b));
      const double waves = double(ceil_div(a * b, P));
      const double cost = waves * (pm * sq + 0.5 * pm + 1.0);
      if (cost < best * 0.999) { best = cost; nmb = a; nnb = b; }
    }
  }
}

void run(const Job& g, bool allow_parallel) {
  const CpuFeatures& f = cpu_features();
  const Kernels& kr = g.pairs && f.amx ? *gemm_detail::kernels_amx()
                    : f.avx512f ? *gemm_detail::kernels_avx512()
                    : f.avx2    ? *gemm_detail::kernels_avx2()
                                : kBaseKernels;
  const Kernel kern = g.pairs ? kr.bf16 : kr.f32;
  FT_CHECK(kern, "gemm: no bf16 kernel for ISA ", isa_name());
  const int MR = kr.mr, NR = kr.nr;
  const int64_t M = g.M, N = g.N;

  const int64_t D = g.pairs ? (g.K + 1) / 2 : g.K;
  const int64_t a_elems = l2_bytes() / 8;  // half of L2, 4-byte elements
  // AMX: depth blocks are whole tiles (16 pairs) but for the last. (Blocks of 256 pairs, to keep a
  // B sliver in L1, measured 17-37% slower on the 16-core Xeon: C then makes 4-16 trips to memory.)
  const bool amx = g.pairs && f.amx;
  const int64_t dmax = std::clamp<int64_t>(a_elems / (4 * MR), 256, kMaxDepthBlock);
  const int64_t DC = amx ? ceil_div(ceil_div(D, ceil_div(D, dmax)), 16) * 16 : ceil_div(D, ceil_div(D, dmax));
  const int64_t nd = ceil_div(D, DC);
  const double flops = 2.0 * double(M) * double(N) * double(g.K);
  const int P = allow_parallel && flops >= kParallelFlops ? num_threads() : 1;
  const bool par = P > 1;

  // Column blocks: fewer, wider ones with more threads (fewer barriers; lm head on 16 Sapphire
  // Rapids cores: +40% with 16 MiB instead of 4 MiB, while 2 threads preferred 4 MiB).
  const int64_t b_elems = kPackedBElems * std::clamp<int64_t>(P / 4, 1, 4);
  const int64_t ncmax = std::max<int64_t>(NR, b_elems / D / NR * NR);
  const int64_t NC = ceil_div(ceil_div(N, ceil_div(N, ncmax)), NR) * NR;

  Scratch bbuf = pool().take(), abuf;
  uint32_t* Bp = bbuf.get(size_t(D) * size_t(NC));
  const int64_t mp = ceil_div(M, MR);
  const int64_t max_panels = std::clamp<int64_t>(a_elems / (DC * MR), 1, kMaxPanelsPerBlock);

  // Pack all of op(A) once when it would otherwise be packed repeatedly (several column
  // blocks or several column ranges per row block) and fits: depth block at d0 holds the
  // mp panels of dc×MR at Apk + d0·mp·MR.
  int64_t nmb, nnb;
  partition(mp, ceil_div(std::min(NC, N), NR), max_panels, P, nmb, nnb);
  uint32_t* Apk = nullptr;
  if ((N > NC || nnb > 1) && mp * MR * D <= kPackedAElems) {
    abuf = pool().take();
    Apk = abuf.get(size_t(mp * MR) * size_t(D));
    const int64_t pg = ceil_div(mp, std::max<int64_t>(1, 4 * P / nd));  // panels per task
    const int64_t ng = ceil_div(mp, pg);
    parallel_tasks(ng * nd, par, [&](int64_t t) {
      const int64_t p0 = (t / nd) * pg, p1 = std::min(mp, p0 + pg);
      const int64_t d0 = (t % nd) * DC, dc = std::min(DC, D - d0);
      pack_a(g, kr, p0 * MR, std::min(M, p1 * MR) - p0 * MR, d0, dc,
             Apk + d0 * mp * MR + p0 * MR * dc);
    });
  }

  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc), sp = ceil_div(nc, NR);
    // Packed B of this column block, per depth block d0: sp slivers of dc×NR at Bp + d0·sp·NR.
    // A task packs up to 8 slivers per depth block, so rows of a non-transposed B are read in
    // long runs.
    const int64_t gs = std::clamp<int64_t>(ceil_div(sp, 4 * P), 1, 8), ng = ceil_div(sp, gs);
    parallel_tasks(ng * nd, par && ng * nd > 1 && double(nc) * D > 32768, [&](int64_t t) {
      const int64_t s0 = (t / nd) * gs, s1 = std::min(sp, s0 + gs);
      const int64_t d0 = (t % nd) * DC, dc = std::min(DC, D - d0);
      pack_b(g, kr, d0, dc, jc + s0 * NR, int(std::min(nc, s1 * NR) - s0 * NR),
             Bp + d0 * sp * NR + s0 * dc * NR);
    });
    partition(mp, sp, max_panels, P, nmb, nnb);
    parallel_tasks(nmb * nnb, par, [&](int64_t t) {
      const int64_t mb = t / nnb, nb = t % nnb;
      const int64_t p0 = mb * mp / nmb, p1 = (mb + 1) * mp / nmb;
      const int64_t s0 = nb * sp / nnb, s1 = (nb + 1) * sp / nnb;
      if (p0 == p1 || s0 == s1) return;
      if (kr.prepare) kr.prepare();
      const int64_t i0 = p0 * MR, m = std::min(M, p1 * MR) - i0;
      uint32_t* At = Apk ? nullptr : a_scratch().get(size_t((p1 - p0) * MR) * size_t(DC));
      for (int64_t d0 = 0; d0 < D; d0 += DC) {
        const int64_t dc = std::min(DC, D - d0);
        const uint32_t* Ap = Apk ? Apk + d0 * mp * MR + p0 * MR * dc : At;
        if (!Apk) pack_a(g, kr, i0, m, d0, dc, At);
        const float beta = d0 == 0 ? g.beta : 1.0f;
        for (int64_t s = s0; s < s1; ++s) {
          const uint32_t* bs = Bp + d0 * sp * NR + s * dc * NR;
          const int nn = int(std::min<int64_t>(NR, nc - s * NR));
          float* cs = g.C + jc + s * NR;
          for (int64_t p = p0; p < p1; ++p) {
            const int mm = int(std::min<int64_t>(MR, M - p * MR));
            kern(dc, Ap + (p - p0) * MR * dc, bs, cs + p * MR * g.ldc, g.ldc, mm, nn, g.alpha, beta);
          }
        }
      }
    });
  }
  if (Apk) pool().give(std::move(abuf));
  pool().give(std::move(bbuf));
}

// C = beta·C on M×N (beta == 0 writes zeros without reading C).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  if (beta == 1.0f) return;
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.0f)
      std::fill(c, c + N, 0.0f);
    else
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
  }
}

void check_args(const char* op, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A,
                int64_t lda, const void* B, int64_t ldb, const float* C, int64_t ldc) {
  FT_CHECK(M >= 0 && N >= 0 && K >= 0, op, ": negative size M=", M, " N=", N, " K=", K);
  const int64_t wa = ta ? M : K, wb = tb ? K : N;
  FT_CHECK(lda >= std::max<int64_t>(1, wa), op, ": lda=", lda, " is smaller than the row width ",
           wa, " of A (", ta ? "trans_a, A is K×M" : "A is M×K", ", M=", M, " K=", K, ")");
  FT_CHECK(ldb >= std::max<int64_t>(1, wb), op, ": ldb=", ldb, " is smaller than the row width ",
           wb, " of B (", tb ? "trans_b, B is N×K" : "B is K×N", ", K=", K, " N=", N, ")");
  FT_CHECK(ldc >= std::max<int64_t>(1, N), op, ": ldc=", ldc, " is smaller than N=", N);
  FT_CHECK(M == 0 || N == 0 || C, op, ": C is null for a ", M, "×", N, " result");
  FT_CHECK(M == 0 || N == 0 || K == 0 || (A && B), op, ": A or B is null (M=", M, " N=", N,
           " K=", K, ")");
}

void gemm_any(const char* op, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const void* B, int b_type, int64_t ldb, float beta,
              float* C, int64_t ldc, bool allow_parallel, bool round_a = false, const QuantParams* q = nullptr) {
  check_args(op, ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) return scale_c(M, N, beta, C, ldc);
  if (q && tb && M > kGemvMaxRows && int8_compute() && qgemv_int8_supported(*q)) {
    // the opt-in int8 activations for a prefill-sized x·Wᵀ (autograd/quant.h qgemm_int8): each row's
    // output bit for bit what the decode's qgemv_int8 gives for that row alone; round_a is moot (x is
    // rounded to int8)
    std::vector<float> at;
    if (ta) {  // op(A) rows: A is stored K×M
      at.resize(size_t(M * K));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < M; ++i) at[size_t(i * K + k)] = A[k * lda + i];
      A = at.data();
      lda = K;
    }
    return qgemm_int8(M, A, lda, *q, alpha, beta, C, ldc, allow_parallel);
  }
  if (tb && M <= kGemvMaxRows) {  // decode-time x·Wᵀ: streams W once (autograd/gemv.h)
    std::vector<float> at;
    if (ta) {  // op(A) is at most kGemvMaxRows × K: copy it to rows
      at.resize(size_t(M * K));
      for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < K; ++k) at[size_t(i * K + k)] = A[k * lda + i];
      A = at.data();
      lda = K;
    }
    if (q) {  // the opt-in int8 activations (--compute int8, autograd/quant.h Int8ComputeGuard) or exact fp32
      if (int8_compute()) return qgemv_int8(M, A, lda, *q, alpha, beta, C, ldc, allow_parallel);
      return qgemv(M, A, lda, *q, alpha, beta, C, ldc, allow_parallel);
    }
    return gemv(M, N, K, alpha, A, lda, B,
                b_type == kSrcBF16 ? DType::BF16 : b_type == kSrcF16 ? DType::F16 : DType::F32, ldb, beta, C,
                ldc, allow_parallel, round_a);
  }
  const CpuFeatures& f = cpu_features();
  Job g{ta, tb, M, N, K, alpha, beta, A, lda, B, ldb, b_type, round_a,
        round_a && (f.amx || f.fast_bf16_dot), C, ldc, q};
  run(g, allow_parallel);
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc) {
  gemm_any("sgemm", trans_a, trans_b, M, N, K, alpha, A, lda, B, kSrcF32, ldb, beta, C, ldc, true);
}

void gemm_bf16w(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                const float* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
                int64_t ldc, bool round_a) {
  gemm_any("gemm_bf16w", trans_a, trans_b, M, N, K, alpha, A, lda, B, kSrcBF16, ldb, beta, C, ldc,
           true, round_a);
}

void gemm_f16w(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
               int64_t ldc) {
  gemm_any("gemm_f16w", trans_a, trans_b, M, N, K, alpha, A, lda, B, kSrcF16, ldb, beta, C, ldc,
           true);
}

const char* gemm_bf16_dot_path() {
  const CpuFeatures& f = cpu_features();
  return f.amx ? "amx" : f.fast_bf16_dot ? "avx512bf16" : "fp32";
}

void round_to_bf16(float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {  // f32_to_bf16 then back, branch-free (vectorises)
    uint32_t u;
    std::memcpy(&u, p + i, 4);
    const uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    u = nan ? (u | 0x00400000u) : u + 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    std::memcpy(p + i, &u, 4);
  }
}

void gemm_qw(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const QuantParams& B, float beta, float* C, int64_t ldc, bool round_a) {
  const int64_t rows = trans_b ? N : K, cols = trans_b ? K : N;
  FT_CHECK(B.rows == rows && B.cols == cols, "gemm_qw: quantized B [", B.rows, ", ", B.cols, "] does not fit ",
           trans_b ? "N×K = [" : "K×N = [", rows, ", ", cols, "]");
  gemm_any("gemm_qw", trans_a, trans_b, M, N, K, alpha, A, lda, B.packed.defined() && B.rows ? B.packed.raw() : nullptr, kSrcQuant,
           cols, beta, C, ldc, true, round_a, &B);
}

void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                   float alpha, const float* A, int64_t lda, int64_t stride_a, const float* B,
                   int64_t ldb, int64_t stride_b, float beta, float* C, int64_t ldc,
                   int64_t stride_c) {
  FT_CHECK(batch >= 0, "sgemm_batched: negative batch ", batch);
  if (batch == 0) return;
  const int P = num_threads();
  // Many items: one task per item (each runs serially). Few: items in turn, each parallel.
  const bool per_item = P > 1 && batch >= 2 * P;
  auto item = [&](int64_t b) {
    gemm_any("sgemm_batched", trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda,
             B + b * stride_b, kSrcF32, ldb, beta, C + b * stride_c, ldc, !per_item);
  };
  if (!per_item) {
    for (int64_t b = 0; b < batch; ++b) item(b);
    return;
  }
  tbb::parallel_for(int64_t(0), batch, item);
}

}  // namespace ft
