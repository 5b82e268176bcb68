// Quantised matrices (see autograd/quant.h): checks, MLX affine quantisation, dequantisation
// (portable code here, AVX2 / AVX-512 kernels in quant_avx2.cpp / quant_avx512.cpp) and the decode GEMV.
// Built with -ffp-contract=off (CMakeLists.txt): scale·q + bias is a rounded product then a
// rounded sum in every path, as in MLX's float kernels.
#include "autograd/quant.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/cpu.h"
#include "autograd/error.h"
#include "autograd/kernels.h"
#include "autograd/quant_kernels.h"

namespace ft {

using quant_detail::View;

const char* quant_format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::MlxAffine: return "affine";
  }
  return "?";
}

size_t QuantParams::nbytes() const {
  size_t n = 0;
  for (const Tensor* t : {&packed, &scales, &biases, &scale_codes, &bias_codes, &super_scales, &super_biases})
    if (t->defined()) n += t->nbytes();
  return n;
}

const QuantParams& quant_params(const Tensor& t) {
  FT_CHECK(is_quantized(t) && t.impl()->quant, "quant_params: tensor ", t.defined() ? t.shape_str() : "(undefined)", " is not quantized");
  return *t.impl()->quant;
}

bool quant_bits_supported(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8; }
bool quant_group_supported(int g) { return g == 32 || g == 64 || g == 128; }
bool quant_group_valid(int g) { return g == 16 || quant_group_supported(g); }

static bool scale_storage_ok(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

void check_quant_params(const QuantParams& p, const std::string& what) {
  FT_CHECK(p.format == QuantFormat::MlxAffine, what, ": unsupported quantization format");
  FT_CHECK(quant_bits_supported(p.bits), what, ": ", p.bits, "-bit quantization is not supported (affine: 2, 3, 4, 5, 6 or 8 bits)");
  FT_CHECK(quant_group_valid(p.group_size), what, ": group size ", p.group_size, " is not supported (16, 32, 64 or 128)");
  FT_CHECK(p.rows >= 0 && p.cols > 0, what, ": bad quantized shape [", p.rows, ", ", p.cols, "]");
  FT_CHECK(p.cols % p.group_size == 0, what, ": the input dimension ", p.cols, " is not a multiple of the group size ", p.group_size);
  FT_CHECK(p.cols % 32 == 0, what, ": the input dimension ", p.cols, " is not a multiple of 32 (the kernels' step)");
  const Shape ws{p.rows, p.words_per_row()}, gs{p.rows, p.groups_per_row()};
  FT_CHECK(p.packed.defined() && p.packed.dtype() == DType::I32 && p.packed.is_contiguous(), what,
           ": packed weights must be contiguous uint32 words");
  FT_CHECK(p.packed.shape() == ws, what, ": packed weight has shape ", p.packed.shape_str(), " but ", p.bits, "-bit codes of a [", p.rows,
           ", ", p.cols, "] matrix need ", shape_str(ws), " uint32 words (", p.cols, " · ", p.bits, " / 32 per row)");
  if (p.two_level()) {
    const int64_t gpr = p.groups_per_row();
    FT_CHECK(p.super_group % 4 == 0 && gpr % p.super_group == 0, what, ": two-level scales with ", p.super_group,
             " groups per super-group do not divide a row's ", gpr, " groups in whole words of codes");
    FT_CHECK(!p.scales.defined() && !p.biases.defined(), what, ": two-level scales have no one-level scales/biases");
    const Shape cs{p.rows, gpr / 4}, ss{p.rows, gpr / p.super_group};
    for (const Tensor* t : {&p.scale_codes, &p.bias_codes, &p.super_scales, &p.super_biases}) {
      const bool codes = t == &p.scale_codes || t == &p.bias_codes;
      const char* nm = t == &p.scale_codes ? "scale codes" : t == &p.bias_codes ? "bias codes" : t == &p.super_scales ? "super-scales" : "super-biases";
      FT_CHECK(t->defined() && t->dtype() == (codes ? DType::I32 : DType::F32) && t->is_contiguous(), what, ": ", nm, " must be contiguous ",
               codes ? "int32 words of 8-bit codes" : "float32");
      FT_CHECK(t->shape() == (codes ? cs : ss), what, ": ", nm, " have shape ", t->shape_str(), " but a [", p.rows, ", ", p.cols,
               "] matrix in groups of ", p.group_size, " with ", p.super_group, " groups per super-group needs ", shape_str(codes ? cs : ss));
    }
    FT_CHECK(p.rows == 0 || reinterpret_cast<uintptr_t>(p.packed.raw()) % 4 == 0, what, ": packed weights are not 4-byte aligned");
    return;
  }
  FT_CHECK(p.super_group == 0, what, ": super_group ", p.super_group, " (negative)");
  if (p.bias_from_scale) {
    FT_CHECK(p.bias_from_scale == -(1 << (p.bits - 1)), what, ": biases derived from the scales must be -2^(bits-1) times them (",
             -(1 << (p.bits - 1)), " for ", p.bits, "-bit codes), not ", p.bias_from_scale);
    FT_CHECK(!p.biases.defined(), what, ": biases derived from the scales are not stored as well");
  }
  for (const Tensor* t : {&p.scales, &p.biases}) {
    if (t == &p.biases && p.bias_from_scale) continue;
    const char* nm = t == &p.scales ? "scales" : "biases";
    FT_CHECK(t->defined() && scale_storage_ok(t->dtype()) && t->is_contiguous(), what, ": ", nm,
             " must be contiguous float32, float16 or bfloat16 in memory");
    FT_CHECK(t->dtype() == p.scales.dtype(), what, ": scales are ", dtype_name(p.scales.dtype()), " but biases are ",
             dtype_name(t->dtype()), " (both must have one dtype)");
    FT_CHECK(t->shape() == gs, what, ": ", nm, " have shape ", t->shape_str(), " but a [", p.rows, ", ", p.cols, "] matrix in groups of ",
             p.group_size, " needs ", shape_str(gs));
  }
  FT_CHECK(p.rows == 0 || reinterpret_cast<uintptr_t>(p.packed.raw()) % 4 == 0, what, ": packed weights are not 4-byte aligned");
  for (const Tensor* t : {&p.scales, &p.biases})
    FT_CHECK(p.rows == 0 || !t->defined() || reinterpret_cast<uintptr_t>(t->raw()) % dtype_size(t->dtype()) == 0, what,
             ": scales/biases are not aligned to their element size");
}

Tensor make_quantized(QuantParams p, const std::string& what) {
  check_quant_params(p, what);
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = {p.rows, p.cols};
  impl->strides = contiguous_strides(impl->shape);
  impl->dtype = DType::Q;
  impl->storage = p.packed.impl()->storage;
  impl->quant = std::make_shared<const QuantParams>(std::move(p));
  return Tensor(impl);
}

namespace {

const quant_detail::Kernels* isa_kernels(int) {
  const CpuFeatures& f = cpu_features();
  return f.avx512f ? quant_detail::kernels_avx512() : f.avx2 ? quant_detail::kernels_avx2() : nullptr;
}

// dst[i] = src[i] (16-bit float of dtype t) widened to fp32, exactly.
void widen16(const uint16_t* src, DType t, float* dst, int64_t n) {
  if (cpu_features().avx2) return quant_detail::widen16_avx2(src, dst, n, t == DType::BF16);
  for (int64_t i = 0; i < n; ++i) dst[i] = t == DType::BF16 ? bf16_to_f32(src[i]) : f16_to_f32(src[i]);
}

// The View of rows [j0, ...) of q for a kernel that reads 16-bit scales itself (View::skind): the
// stored scales and biases as they are, nothing widened.
View view_direct(const QuantParams& q, int64_t j0) {
  const int64_t gpr = q.groups_per_row();
  View v{q.bits, q.group_size, q.cols, q.words_per_row(), gpr, static_cast<const uint32_t*>(q.packed.raw()) + j0 * q.words_per_row(),
         nullptr, nullptr};
  const DType t = q.scales.dtype();
  const Tensor& bt = q.bias_from_scale ? q.scales : q.biases;
  v.bias_mul = float(q.bias_from_scale);
  if (t == DType::F32) {
    v.scales = static_cast<const float*>(q.scales.raw()) + j0 * gpr;
    v.biases = static_cast<const float*>(bt.raw()) + j0 * gpr;
  } else {
    v.skind = t == DType::F16 ? 1 : 2;
    v.scales16 = static_cast<const uint16_t*>(q.scales.raw()) + j0 * gpr;
    v.biases16 = static_cast<const uint16_t*>(bt.raw()) + j0 * gpr;
  }
  return v;
}

// The kernels' View of rows [j0, j0 + n) of q (row 0 of the View is row j0), with fp32 scales and
// biases for groups [g0, g1) of those rows: pointers into F32 storage, or the 16-bit values widened
// (exactly) into buf (n × gpr floats each; only groups [g0, g1) are filled). A View is only valid
// while buf is not resized.
View view_rows(const QuantParams& q, int64_t j0, int64_t n, int64_t g0, int64_t g1, std::vector<float>& buf) {
  if (q.two_level()) {  // the products super · code (quant.h), rows [j0, j0 + n), groups [g0, g1)
    const int64_t gpr = q.groups_per_row(), sg = q.super_group, spr = gpr / sg;
    if (buf.size() < size_t(2 * n * gpr)) buf.resize(size_t(2 * n * gpr));
    float* s = buf.data();
    float* b = s + n * gpr;
    const int8_t* sc = static_cast<const int8_t*>(q.scale_codes.raw()) + j0 * gpr;
    const int8_t* bc = static_cast<const int8_t*>(q.bias_codes.raw()) + j0 * gpr;
    const float* ss = q.super_scales.data<float>() + j0 * spr;
    const float* sb = q.super_biases.data<float>() + j0 * spr;
    // whole runs of 8 groups by vector code where they share a multiplier (Q4_K, Q5_K: 8 groups per
    // super-block, Q6_K: 16), the ends one by one: the same products either way
    const bool v512 = cpu_features().avx512f && (sg == 8 || sg % 16 == 0), vec = v512 || (cpu_features().avx2 && sg % 8 == 0);
    const int64_t w = v512 ? 16 : 8;
    const int64_t a0 = vec ? std::min(g1, (g0 + w - 1) / w * w) : g1, a1 = vec ? std::max(a0, g1 / w * w) : g1;
    const auto expand = v512 ? quant_detail::expand_codes_avx512 : quant_detail::expand_codes_avx2;
    for (int64_t j = 0; j < n; ++j) {
      auto one = [&](int64_t g) {
        s[j * gpr + g] = ss[j * spr + g / sg] * float(sc[j * gpr + g]);
        b[j * gpr + g] = sb[j * spr + g / sg] * float(bc[j * gpr + g]);
      };
      for (int64_t g = g0; g < a0; ++g) one(g);
      if (a1 > a0) {
        expand(sc + j * gpr + a0, ss + j * spr, a0, a1 - a0, int(sg), s + j * gpr + a0);
        expand(bc + j * gpr + a0, sb + j * spr, a0, a1 - a0, int(sg), b + j * gpr + a0);
      }
      for (int64_t g = a1; g < g1; ++g) one(g);
    }
    return View{q.bits, q.group_size, q.cols, q.words_per_row(), gpr, static_cast<const uint32_t*>(q.packed.raw()) + j0 * q.words_per_row(),
                s, b};
  }
  View v = view_direct(q, j0);
  if (v.skind == 0 && v.bias_mul == 0.0f) return v;
  const DType t = q.scales.dtype();
  const int64_t gpr = v.gpr;
  if (buf.size() < size_t(2 * n * gpr)) buf.resize(size_t(2 * n * gpr));
  float* s = buf.data();
  float* b = s + n * gpr;
  // whole rows: the block at once; otherwise row by row
  const bool whole = g0 == 0 && g1 == gpr;
  for (int64_t j = 0; j < (whole ? 1 : n); ++j) {
    const int64_t o = j * gpr + g0, k = whole ? n * gpr : g1 - g0;
    if (v.skind == 0) std::copy(v.scales + o, v.scales + o + k, s + o);
    else widen16(v.scales16 + o, t, s + o, k);
    if (v.bias_mul != 0.0f)
      for (int64_t g = 0; g < k; ++g) b[o + g] = v.bias_mul * s[o + g];  // exact: a power of two times the scale
    else if (v.skind == 0) std::copy(v.biases + o, v.biases + o + k, b + o);
    else widen16(v.biases16 + o, t, b + o, k);
  }
  v.skind = 0;
  v.bias_mul = 0.0f;
  v.scales16 = v.biases16 = nullptr;
  v.scales = s;
  v.biases = b;
  return v;
}

// Rows of W [j0, j0 + n) through a GEMV kernel, call(v, r0, nr) per block: the View's row 0 is row
// r0. Kernels that read 16-bit scales themselves (direct) get all the rows at once; for the others
// 16-bit scales are widened into fp32 a block of rows at a time (scale_block_rows), and two-level
// scales (QuantParams::two_level) are always expanded so, whatever the kernel.
template <class F>
void for_scale_blocks(const QuantParams& W, int64_t j0, int64_t n, bool direct, const F& call);

// Rows per call of a GEMV kernel whose 16-bit scales are widened: blocks of whole 4-row steps whose
// widened scales and biases fit ~16 KiB (they stay in L1).
// Two-level scales get blocks 4× larger (~64 KiB, L2): the kernels' prefetch of the next rows stops at a
// block's end (1B-shaped Q4_K decode, 2 threads: 26.0–26.6 tok/s with the 16 KiB blocks, 28.8–29.2 with these).
int64_t scale_block_rows(const QuantParams& q) {
  const int64_t floats = q.two_level() ? 8192 : 2048;
  return std::max<int64_t>(4, floats / std::max<int64_t>(1, q.groups_per_row()) / 4 * 4);
}

thread_local std::vector<float> t_scale_buf;  // view_rows' buffer (kernels never nest: one per thread is enough)

template <class F>
void for_scale_blocks(const QuantParams& W, int64_t j0, int64_t n, bool direct, const F& call) {
  if (!W.two_level() && (direct || (W.scales.dtype() == DType::F32 && !W.bias_from_scale))) return call(view_direct(W, j0), j0, n);
  const int64_t R = scale_block_rows(W), gpr = W.groups_per_row();
  for (int64_t r0 = j0; r0 < j0 + n; r0 += R) {
    const int64_t nr = std::min(R, j0 + n - r0);
    call(view_rows(W, r0, nr, 0, gpr, t_scale_buf), r0, nr);
  }
}

inline uint32_t code_at(const uint32_t* row, int bits, int64_t c) {
  const int64_t bit = c * bits;
  const int64_t w = bit >> 5;
  const int sh = int(bit & 31);
  uint32_t v = row[w] >> sh;
  if (sh + bits > 32) v |= row[w + 1] << (32 - sh);
  return v & ((1u << bits) - 1u);
}

inline float deq(float s, uint32_t q, float b) {
  const float p = s * float(q);  // rounded product, then rounded sum (see the top of the file)
  return p + b;
}

// out[c - c0] = W[r][c], any c0 <= c1.
void dequant_portable(const View& v, int64_t r, int64_t c0, int64_t c1, float* out) {
  const uint32_t* row = v.packed + r * v.wpr;
  const float* s = v.scales + r * v.gpr;
  const float* b = v.biases + r * v.gpr;
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t g = c / v.group;
    out[c - c0] = deq(s[g], code_at(row, v.bits, c), b[g]);
  }
}

// Portable GEMV rows (x in natural order): per group s·(Σ q·x) then + Σ_g b·xs at the end.
void rows_portable(const View& v, int m, int64_t j0, int64_t n, float alpha, const float* XP, int64_t ldxp, const float* XS,
                   int64_t ldxs, float beta, float* C, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t* row = v.packed + (j0 + j) * v.wpr;
    const float* s = v.scales + (j0 + j) * v.gpr;
    const float* b = v.biases + (j0 + j) * v.gpr;
    for (int i = 0; i < m; ++i) {
      const float* x = XP + i * ldxp;
      float acc = 0.0f, bacc = 0.0f;
      for (int64_t g = 0; g < v.gpr; ++g) {
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t c = g * v.group; c < (g + 1) * v.group; c += 4)
          for (int u = 0; u < 4; ++u) d[u] += float(code_at(row, v.bits, c + u)) * x[c + u];
        acc += s[g] * ((d[0] + d[1]) + (d[2] + d[3]));
        bacc += b[g] * XS[i * ldxs + g];
      }
      const float val = alpha * (acc + bacc);
      float* c = C + i * ldc + j;
      *c = beta != 0.0f ? val + beta * *c : val;
    }
  }
}

// Portable int8 GEMV rows (qgemv_int8; XQ natural order, XD one d per block of 32): per block the
// exact int32 sum, d_b·sum summed over the group's blocks, s_g· that, then + Σ_g b_g·xs_g, each step a
// fused multiply-add (std::fma: one rounding; the AMX GEMM computes exactly this, quant_int8_amx.cpp).
void rows_int8_portable(const View& v, int m, int64_t j0, int64_t n, float alpha, const int8_t* XQ, int64_t ldxq, const float* XD,
                        int64_t ldxd, const float* XS, int64_t ldxs, float beta, float* C, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t* row = v.packed + (j0 + j) * v.wpr;
    const float* s = v.scales + (j0 + j) * v.gpr;
    const float* b = v.biases + (j0 + j) * v.gpr;
    for (int i = 0; i < m; ++i) {
      const int8_t* xq = XQ + i * ldxq;
      float acc = 0.0f, bacc = 0.0f;
      for (int64_t g = 0; g < v.gpr; ++g) {
        float ga = 0.0f;
        for (int64_t c0 = g * v.group; c0 < (g + 1) * v.group; c0 += 32) {
          int32_t isum = 0;
          for (int64_t c = c0; c < c0 + 32; ++c) isum += int32_t(code_at(row, v.bits, c)) * int32_t(xq[c]);
          ga = std::fma(XD[i * ldxd + c0 / 32], float(isum), ga);
        }
        acc = std::fma(s[g], ga, acc);
        bacc = std::fma(b[g], XS[i * ldxs + g], bacc);
      }
      const float val = alpha * (acc + bacc);
      float* c = C + i * ldc + j;
      *c = beta != 0.0f ? val + beta * *c : val;
    }
  }
}

// x rounded to int8 per block of 32 (K a multiple of 32; see qgemv_int8 in quant.h): d[b], xq in
// natural order and bs[b] = Σ xq over the block. Rounding to nearest even by adding and subtracting 1.5·2²³ (exact for |r| < 2²²;
// the operands are in [−127, 127]); a NaN product clamps to −127 (no undefined conversion).
void quantize_x_int8(const float* x, int64_t K, int8_t* q, float* d, int32_t* bs) {
  for (int64_t b0 = 0; b0 < K; b0 += 32) {
    float amax = 0.0f;
    for (int c = 0; c < 32; ++c) {
      const float a = std::fabs(x[b0 + c]);
      amax = a > amax ? a : amax;
    }
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    d[b0 / 32] = db;
    int32_t sum = 0;
    for (int c = 0; c < 32; ++c) {
      float r = x[b0 + c] * id;
      r = r > -127.0f ? r : -127.0f;
      r = r < 127.0f ? r : 127.0f;
      r = (r + 12582912.0f) - 12582912.0f;
      q[b0 + c] = int8_t(int(r));
      sum += int(r);
    }
    bs[b0 / 32] = sum;
  }
}

const quant_detail::Int8Kernels* int8_kernels() {
  const CpuFeatures& f = cpu_features();
  if (f.avx512f && f.avx512vnni) return quant_detail::int8_kernels_avx512vnni();
  if (f.avx2) return f.avxvnni ? quant_detail::int8_kernels_avxvnni() : quant_detail::int8_kernels_avx2();
  return nullptr;
}

// The int8 GEMM's kernels (qgemm_int8): AMX tiles where the CPU has AMX-INT8, else the GEMV's.
const quant_detail::Int8Kernels* int8_gemm_kernels() {
  return cpu_features().amx_int8 ? quant_detail::int8_kernels_amx() : int8_kernels();
}

// Rows of W split into tasks of whole 4-row steps (the kernels' row groups), each at least ~32 KiB
// of codes; block(j0, n) runs rows [j0, j0 + n). Which rows a task gets never changes an output.
template <class F>
void for_row_tasks(int64_t N, int64_t K, int bits, bool allow_parallel, const F& block) {
  const int P = allow_parallel ? num_threads() : 1;
  const int64_t row_bytes = std::max<int64_t>(1, K * bits / 8);
  const int64_t min_rows = std::max<int64_t>(1, (int64_t(32) << 10) / row_bytes);
  const int64_t tasks = row_task_count(N, min_rows, P);
  const int64_t chunk = ((N + tasks - 1) / tasks + 3) / 4 * 4;  // whole 4-row steps of the kernels
  auto run = [&](int64_t t) {
    const int64_t j0 = t * chunk, n = std::min(chunk, N - j0);
    if (n > 0) block(j0, n);
  };
  if (tasks == 1) return run(0);
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, tasks, 1),
                    [&](const tbb::blocked_range<int64_t>& r) {
                      for (int64_t t = r.begin(); t < r.end(); ++t) run(t);
                    },
                    tbb::simple_partitioner());
}

thread_local bool t_int8_compute = false;

}  // namespace

uint32_t quant_code(const QuantParams& q, int64_t r, int64_t c) {
  FT_CHECK(r >= 0 && r < q.rows && c >= 0 && c < q.cols, "quant_code: (", r, ", ", c, ") outside [", q.rows, ", ", q.cols, "]");
  return code_at(static_cast<const uint32_t*>(q.packed.raw()) + r * q.words_per_row(), q.bits, c);
}

void dequantize_block(const QuantParams& q, int64_t r0, int64_t r1, int64_t c0, int64_t c1, float* out, int64_t ldo) {
  FT_CHECK(0 <= r0 && r0 <= r1 && r1 <= q.rows && 0 <= c0 && c0 <= c1 && c1 <= q.cols, "dequantize_block: rows [", r0, ", ", r1,
           ") × cols [", c0, ", ", c1, ") outside [", q.rows, ", ", q.cols, "]");
  if (r0 == r1 || c0 == c1) return;
  const quant_detail::Kernels* kr = isa_kernels(q.bits);
  const int64_t a0 = std::min(c1, (c0 + 7) / 8 * 8), a1 = std::max(a0, c1 / 8 * 8);
  const int64_t g0 = c0 / q.group_size, g1 = (c1 + q.group_size - 1) / q.group_size;
  for (int64_t r = r0; r < r1; ++r) {
    const View v = view_rows(q, r, 1, g0, g1, t_scale_buf);  // row 0 of v is row r
    float* o = out + (r - r0) * ldo;
    if (!kr) {
      dequant_portable(v, 0, c0, c1, o);
      continue;
    }
    dequant_portable(v, 0, c0, a0, o);
    if (a1 > a0) kr->dequant(v, 0, a0, a1, o + (a0 - c0));
    dequant_portable(v, 0, a1, c1, o + (a1 - c0));
  }
}

Tensor dequantize(const Tensor& w) {
  const QuantParams& q = quant_params(w);
  Tensor out = Tensor::empty({q.rows, q.cols});
  float* p = out.data<float>();
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, q.rows, 16), [&](const tbb::blocked_range<int64_t>& r) {
    dequantize_block(q, r.begin(), r.end(), 0, q.cols, p + r.begin() * q.cols, q.cols);
  });
  return out;
}

Tensor quant_slice_rows(const Tensor& w, int64_t r0, int64_t r1) {
  const QuantParams& q = quant_params(w);
  FT_CHECK(0 <= r0 && r0 <= r1 && r1 <= q.rows, "quant_slice_rows: [", r0, ", ", r1, ") outside ", q.rows, " rows");
  QuantParams s = q;
  s.rows = r1 - r0;
  s.packed = q.packed.slice(0, r0, r1);
  for (Tensor* t : {&s.scales, &s.biases, &s.scale_codes, &s.bias_codes, &s.super_scales, &s.super_biases})
    if (t->defined()) *t = t->slice(0, r0, r1);
  auto impl = std::make_shared<TensorImpl>(*w.impl());
  impl->shape = {s.rows, s.cols};
  impl->grad_fn.reset();
  impl->grad.reset();
  impl->requires_grad = false;
  impl->quant = std::make_shared<const QuantParams>(std::move(s));
  return Tensor(impl);
}

Tensor quantize_affine(const Tensor& w_in, int bits, int group_size, DType scale_dtype, const std::string& what) {
  FT_CHECK(w_in.dim() == 2 && is_float(w_in.dtype()), what, ": only a float matrix can be quantized, got ", dtype_name(w_in.dtype()), " ",
           w_in.shape_str());
  FT_CHECK(is_float(scale_dtype), what, ": scales must be stored as a float dtype");
  QuantParams p;
  p.bits = bits;
  p.group_size = group_size;
  p.rows = w_in.size(0);
  p.cols = w_in.size(1);
  p.scale_dtype = scale_dtype;
  FT_CHECK(quant_bits_supported(bits), what, ": ", bits, "-bit quantization is not supported (2, 3, 4, 5, 6 or 8)");
  FT_CHECK(quant_group_valid(group_size), what, ": group size ", group_size, " is not supported (16, 32, 64 or 128)");
  FT_CHECK(p.cols % 32 == 0, what, ": the input dimension ", p.cols, " is not a multiple of 32");
  FT_CHECK(p.cols % group_size == 0, what, ": the input dimension ", p.cols, " is not a multiple of the group size ", group_size);
  p.packed = Tensor::zeros({p.rows, p.words_per_row()}, DType::I32);
  // Stored as MLX stores them: in scale_dtype (fp32 for an fp32 input, else 16 bits).
  const DType st = scale_dtype == DType::BF16 || scale_dtype == DType::F16 ? scale_dtype : DType::F32;
  p.scales = Tensor::empty({p.rows, p.groups_per_row()}, st);
  p.biases = Tensor::empty({p.rows, p.groups_per_row()}, st);
  const Tensor w = w_in.contiguous();
  const size_t es = dtype_size(w.dtype());
  const char* src = static_cast<const char*>(w.raw());
  uint32_t* packed = static_cast<uint32_t*>(p.packed.raw());
  void* scales = p.scales.raw();
  void* biases = p.biases.raw();
  const int64_t wpr = p.words_per_row(), gpr = p.groups_per_row(), cols = p.cols;
  auto put = [&](void* dst, int64_t i, float x) {  // the stored value (MLX stores scales/biases in the input's dtype)
    if (st == DType::BF16) static_cast<uint16_t*>(dst)[i] = f32_to_bf16(x);
    else if (st == DType::F16) static_cast<uint16_t*>(dst)[i] = f32_to_f16(x);
    else static_cast<float*>(dst)[i] = x;
  };
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, p.rows, 8), [&](const tbb::blocked_range<int64_t>& rr) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = rr.begin(); r < rr.end(); ++r) {
      convert(src + size_t(r * cols) * es, w.dtype(), row.data(), DType::F32, size_t(cols));
      uint32_t* out = packed + r * wpr;
      const float n_bins = float((1 << bits) - 1), eps = 1e-7f;
      for (int64_t g = 0; g < gpr; ++g) {
        const float* x = row.data() + g * group_size;
        float w_min = std::numeric_limits<float>::infinity(), w_max = -w_min;
        for (int j = 0; j < group_size; ++j) {
          w_max = std::max(w_max, x[j]);
          w_min = std::min(w_min, x[j]);
        }
        const bool mask = std::abs(w_min) > std::abs(w_max);
        float scale = std::max((w_max - w_min) / n_bins, eps);
        scale = mask ? scale : -scale;
        const float edge = mask ? w_min : w_max;
        const float q0 = std::rint(edge / scale);
        float bias = 0.0f;
        if (q0 != 0.0f) {
          scale = edge / q0;
          bias = edge;
        }
        for (int j = 0; j < group_size; ++j) {
          float v = std::rint((x[j] - bias) / scale);
          v = std::min(std::max(v, 0.0f), n_bins);
          const uint64_t code = uint64_t(v);
          const int64_t bit = (g * group_size + j) * bits;
          const int64_t wi = bit >> 5;
          const int sh = int(bit & 31);
          out[wi] |= uint32_t(code << sh);
          if (sh + bits > 32) out[wi + 1] |= uint32_t(code >> (32 - sh));
        }
        put(scales, r * gpr + g, scale);
        put(biases, r * gpr + g, bias);
      }
    }
  });
  return make_quantized(std::move(p), what);
}

Tensor quant_group_params(const QuantParams& p, bool biases, int64_t r0, int64_t r1) {
  FT_CHECK(0 <= r0 && r0 <= r1 && r1 <= p.rows, "quant_group_params: rows [", r0, ", ", r1, ") outside ", p.rows);
  const int64_t gpr = p.groups_per_row();
  Tensor out = Tensor::empty({r1 - r0, gpr});
  if (!p.two_level() && !(biases && p.bias_from_scale)) {
    const Tensor& src = biases ? p.biases : p.scales;
    convert(static_cast<const char*>(src.raw()) + size_t(r0 * gpr) * dtype_size(src.dtype()), src.dtype(), out.data<float>(), DType::F32,
            size_t((r1 - r0) * gpr));
    return out;
  }
  std::vector<float> buf;
  for (int64_t r = r0; r < r1; r += 256) {
    const int64_t n = std::min<int64_t>(256, r1 - r);
    const View v = view_rows(p, r, n, 0, gpr, buf);
    std::copy(biases ? v.biases : v.scales, (biases ? v.biases : v.scales) + n * gpr, out.data<float>() + (r - r0) * gpr);
  }
  return out;
}
Tensor quant_group_params(const QuantParams& p, bool biases) { return quant_group_params(p, biases, 0, p.rows); }

void compact_quant_scales(QuantParams& p) {
  if (p.two_level() || p.scales.dtype() != DType::F32 || p.rows == 0) return;
  const int64_t n = p.rows * p.groups_per_row();
  const float* s = p.scales.data<float>();
  const float* b = p.bias_from_scale ? s : p.biases.data<float>();
  auto exact_in = [&](DType t) {
    for (const float* x : {s, b})
      for (int64_t i = 0; i < n; ++i) {
        const float back = t == DType::F16 ? f16_to_f32(f32_to_f16(x[i])) : bf16_to_f32(f32_to_bf16(x[i]));
        if (f32_to_bits(back) != f32_to_bits(x[i])) return false;
      }
    return true;
  };
  for (DType t : {DType::F16, DType::BF16})
    if (exact_in(t)) {
      p.scales = p.scales.to(t).contiguous();
      if (!p.bias_from_scale) p.biases = p.biases.to(t).contiguous();
      return;
    }
}

void qgemv(int64_t M, const float* A, int64_t lda, const QuantParams& W, float alpha, float beta, float* C, int64_t ldc,
           bool allow_parallel) {
  const int64_t N = W.rows, K = W.cols;
  FT_CHECK(M >= 0 && lda >= K && ldc >= std::max<int64_t>(1, N), "qgemv: bad arguments M=", M, " lda=", lda, " ldc=", ldc, " for W [",
           N, ", ", K, "]");
  if (M == 0 || N == 0) return;
  if (alpha == 0.0f) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  const quant_detail::Kernels* kr = isa_kernels(W.bits);
  const quant_detail::RowsFn rows = kr ? kr->rows : rows_portable;
  // Each row of A once: x in the kernel's unpack order (zero-padded to whole blocks) and its group sums.
  const int lanes = kr ? kr->lanes : 0;
  const bool perm = quant_detail::permuted_layout(lanes, W.bits);
  const int cpl = 32 / W.bits;
  const int64_t blk = perm ? int64_t(lanes) * cpl : 32;
  const int64_t ldxp = (K + blk - 1) / blk * blk, gpr = W.groups_per_row(), G = W.group_size;
  std::vector<float> xp(size_t(M * ldxp)), xs(size_t(M * gpr));
  for (int64_t i = 0; i < M; ++i) {
    const float* a = A + i * lda;
    float* p = xp.data() + i * ldxp;
    if (perm) {
      const int64_t full = K / blk * blk;  // whole blocks: no bounds checks
      for (int64_t b0 = 0; b0 < full; b0 += blk)
        for (int k = 0; k < cpl; ++k)
          for (int l = 0; l < lanes; ++l) p[b0 + int64_t(k) * lanes + l] = a[b0 + int64_t(l) * cpl + k];
      for (int64_t b0 = full; b0 < ldxp; b0 += blk)
        for (int k = 0; k < cpl; ++k)
          for (int l = 0; l < lanes; ++l) {
            const int64_t c = b0 + int64_t(l) * cpl + k;
            p[b0 + int64_t(k) * lanes + l] = c < K ? a[c] : 0.0f;
          }
    } else {
      std::copy(a, a + K, p);
      std::fill(p + K, p + ldxp, 0.0f);
    }
    // group sums in 8 interleaved partial sums (groups are multiples of 16), then a fixed tree
    for (int64_t g = 0; g < gpr; ++g) {
      float t[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t c = g * G; c < (g + 1) * G; c += 8)
        for (int u = 0; u < 8; ++u) t[u] += a[c + u];
      xs[size_t(i * gpr + g)] = ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]));
    }
  }
  const bool direct = kr && ((kr->rows16_bits >> W.bits) & 1u);
  for_row_tasks(N, K, W.bits, allow_parallel, [&](int64_t j0, int64_t n) {
    for_scale_blocks(W, j0, n, direct, [&](const View& v, int64_t r0, int64_t nr) {
      for (int64_t i0 = 0; i0 < M; i0 += 4) {
        const int m = int(std::min<int64_t>(4, M - i0));
        rows(v, m, 0, nr, alpha, xp.data() + i0 * ldxp, ldxp, xs.data() + i0 * gpr, gpr, beta, C + i0 * ldc + r0, ldc);
      }
    });
  });
}

bool int8_compute() { return t_int8_compute; }
Int8ComputeGuard::Int8ComputeGuard(bool on) : prev(t_int8_compute) { t_int8_compute = on; }
Int8ComputeGuard::~Int8ComputeGuard() { t_int8_compute = prev; }

bool qgemv_int8_supported(const QuantParams& W) {
  return W.format == QuantFormat::MlxAffine && (W.bits == 4 || W.bits == 8) && quant_group_supported(W.group_size);
}

const char* qgemv_int8_path() {
  const quant_detail::Int8Kernels* kr = int8_kernels();
  return kr ? kr->name : "portable";
}

const char* qgemm_int8_path() {
  const quant_detail::Int8Kernels* kr = int8_gemm_kernels();
  return kr ? kr->name : "portable";
}

namespace {

// Every row of A rounded to int8 once per call, in the layout of kernel kr (quant_kernels.h; nullptr:
// the portable one): XQ, XD and the group sums XS of the rounded x. Rows are independent (a row's
// values never depend on M or on which task prepares it); many rows are prepared in parallel.
struct Int8X {
  int64_t ldxq = 0, ldxd = 0, gpr = 0;
  std::vector<int8_t> xq;
  std::vector<float> xd, xs;
};

void prepare_int8_x(const quant_detail::Int8Kernels* kr, int64_t M, const float* A, int64_t lda, const QuantParams& W, bool allow_parallel,
                    Int8X& X) {
  const int64_t K = W.cols, G = W.group_size;
  const bool tiled = kr && kr->tiled;
  const int L = kr ? kr->lanes : 0, cpl = 32 / W.bits;
  const int64_t CH = L ? int64_t(L) * cpl : 32, nch = (K + CH - 1) / CH, nb = K / 32;
  const int64_t Mp = tiled ? (M + 15) / 16 * 16 : M;  // tiles of 16 rows, zero-padded
  X.ldxq = nch * CH;
  X.ldxd = L ? nch * L : nb;
  X.gpr = W.groups_per_row();
  X.xq.assign(size_t(Mp * X.ldxq), 0);
  X.xd.assign(size_t(Mp * X.ldxd), 0.0f);
  X.xs.assign(size_t(Mp * X.gpr), 0.0f);
  const int64_t dstride = L ? W.bits : 1;  // XD holds one d per lane: W.bits lanes per block
  auto rows = [&](int64_t i0, int64_t i1) {
    std::vector<int32_t> bs(static_cast<size_t>(nb));
    std::vector<int8_t> nq(static_cast<size_t>(tiled ? K : 0));
    std::vector<float> nd(static_cast<size_t>(tiled ? nb : 0)), ns(static_cast<size_t>(tiled ? X.gpr : 0));
    for (int64_t i = i0; i < i1; ++i) {
      int8_t* q = tiled ? nq.data() : X.xq.data() + i * X.ldxq;
      float* dd = tiled ? nd.data() : X.xd.data() + i * X.ldxd;
      float* xs = tiled ? ns.data() : X.xs.data() + i * X.gpr;
      if (kr) kr->prep(A + i * lda, K, W.bits, q, dd, bs.data());  // vectorised, the same values
      else quantize_x_int8(A + i * lda, K, q, dd, bs.data());
      // the group sums of the rounded x: Σ_{b∈g} d_b·Σ xq (the bias terms then see the same x as the codes)
      for (int64_t g = 0; g < X.gpr; ++g) {
        float t = 0.0f;
        for (int64_t b = g * (G / 32); b < (g + 1) * (G / 32); ++b) t += dd[b * dstride] * float(bs[size_t(b)]);
        xs[g] = t;
      }
      if (!tiled) continue;
      // scatter into row i's lane of its tile (quant_kernels.h Int8Kernels::tiled)
      const int64_t t0 = i / 16 * 16, l = i % 16;
      int8_t* xq = X.xq.data() + t0 * K;
      for (int64_t b = 0; b < nb; ++b) {
        int8_t blk[32];  // the block in the codes' order: 4-bit evens, then odds
        if (W.bits == 4)
          for (int p = 0; p < 16; ++p) {
            blk[p] = q[b * 32 + 2 * p];
            blk[16 + p] = q[b * 32 + 2 * p + 1];
          }
        else std::memcpy(blk, q + b * 32, 32);
        for (int r = 0; r < 8; ++r) std::memcpy(xq + b * 512 + r * 64 + 4 * l, blk + 4 * r, 4);
      }
      for (int64_t b = 0; b < nb; ++b) X.xd[size_t(t0 * nb + b * 16 + l)] = dd[b];
      for (int64_t g = 0; g < X.gpr; ++g) X.xs[size_t(t0 * X.gpr + g * 16 + l)] = xs[g];
    }
  };
  if (!allow_parallel || num_threads() <= 1 || M * K < (int64_t(1) << 16)) return rows(0, M);
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, M, 16), [&](const tbb::blocked_range<int64_t>& r) { rows(r.begin(), r.end()); });
}

bool int8_trivial(int64_t M, int64_t N, float alpha, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return true;
  if (alpha != 0.0f) return false;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
  return true;
}

}  // namespace

void qgemv_int8(int64_t M, const float* A, int64_t lda, const QuantParams& W, float alpha, float beta, float* C, int64_t ldc,
                bool allow_parallel) {
  if (!qgemv_int8_supported(W)) return qgemv(M, A, lda, W, alpha, beta, C, ldc, allow_parallel);
  const int64_t N = W.rows, K = W.cols;
  FT_CHECK(M >= 0 && lda >= K && ldc >= std::max<int64_t>(1, N), "qgemv_int8: bad arguments M=", M, " lda=", lda, " ldc=", ldc,
           " for W [", N, ", ", K, "]");
  if (M > 4) return qgemm_int8(M, A, lda, W, alpha, beta, C, ldc, allow_parallel);  // the same bits, cache-blocked
  if (int8_trivial(M, N, alpha, beta, C, ldc)) return;
  const quant_detail::Int8Kernels* kr = int8_kernels();
  const quant_detail::Int8RowsFn rows = kr ? kr->rows : rows_int8_portable;
  Int8X X;
  prepare_int8_x(kr, M, A, lda, W, false, X);
  const bool direct = kr && kr->reads16;
  for_row_tasks(N, K, W.bits, allow_parallel, [&](int64_t j0, int64_t n) {
    for_scale_blocks(W, j0, n, direct, [&](const View& v, int64_t r0, int64_t nr) {
      rows(v, int(M), 0, nr, alpha, X.xq.data(), X.ldxq, X.xd.data(), X.ldxd, X.xs.data(), X.gpr, beta, C + r0, ldc);
    });
  });
}

// The int8 GEMM. Each row of A is rounded once (prepare_int8_x, in parallel), then the work is cut
// into tasks of (a block of rows of A) × (a chunk of rows of W):
//   - a block of A holds at most kInt8ABlockBytes of prepared x (int8 values, block scales, group
//     sums) so that it stays in L2 while a chunk of W passes over it;
//   - inside a task the kernel walks W in panels of a few rows (kept in L1) and runs every row of
//     the A block over each panel (register tiles of 4 rows of A × 4 rows of W on AVX512-VNNI;
//     the decode kernel's 4-row steps elsewhere), so W is read from memory once per A block;
//   - with one thread a task is an A block × all of W; with P threads W is cut into chunks of
//     whole panels so that there are about 4·P tasks (and A's blocks are made smaller while W has
//     too few rows for that).
// Every output is computed by the same operations in the same order as qgemv_int8 for its row of
// A alone, so the result never depends on M, the blocking or the thread count.
void qgemm_int8(int64_t M, const float* A, int64_t lda, const QuantParams& W, float alpha, float beta, float* C, int64_t ldc,
                bool allow_parallel) {
  if (!qgemv_int8_supported(W)) return qgemv(M, A, lda, W, alpha, beta, C, ldc, allow_parallel);
  const int64_t N = W.rows, K = W.cols;
  FT_CHECK(M >= 0 && lda >= K && ldc >= std::max<int64_t>(1, N), "qgemm_int8: bad arguments M=", M, " lda=", lda, " ldc=", ldc,
           " for W [", N, ", ", K, "]");
  if (int8_trivial(M, N, alpha, beta, C, ldc)) return;
  const quant_detail::Int8Kernels* kr = int8_gemm_kernels();
  const quant_detail::Int8RowsFn rows = kr ? kr->rows : rows_int8_portable;
  const quant_detail::Int8RowsFn gemm = kr ? kr->gemm : nullptr;
  const bool tiled = kr && kr->tiled;  // AMX: rows of A in tiles of 16, W in panels of 16 rows
  const bool direct = kr && kr->reads16 && (!gemm || tiled);  // the VNNI gemm tiles read fp32 scales (16-bit ones widened per block of rows)
  const int P = allow_parallel ? num_threads() : 1;
  Int8X X;
  prepare_int8_x(kr, M, A, lda, W, P > 1, X);
  constexpr int64_t kInt8ABlockBytes = int64_t(256) << 10;
  const int64_t kPanel = tiled ? 16 : 4;  // W's rows per panel, and A's rows per block a multiple of it (the kernels' tiles)
  const int64_t x_bytes = X.ldxq + 4 * (X.ldxd + X.gpr);
  int64_t mb = std::max<int64_t>(kInt8ABlockBytes / x_bytes / kPanel * kPanel, kPanel);
  if (mb >= M) mb = M;
  const int64_t panels = (N + kPanel - 1) / kPanel;
  int64_t wchunks = 1;
  if (P > 1) {
    const int64_t want = 4 * int64_t(P);
    const int64_t ablocks = (M + mb - 1) / mb;
    wchunks = std::clamp<int64_t>((want + ablocks - 1) / ablocks, 1, panels);
    if (ablocks * wchunks < want)  // few rows of W: smaller blocks of A
      mb = std::min(mb, std::max<int64_t>((M * wchunks + want - 1) / want / kPanel * kPanel, kPanel));
  }
  const int64_t ablocks = (M + mb - 1) / mb;
  const int64_t chunk = (panels + wchunks - 1) / wchunks * kPanel;
  wchunks = (N + chunk - 1) / chunk;
  auto task = [&](int64_t t) {
    const int64_t i0 = t / wchunks * mb, m = std::min(mb, M - i0);
    const int64_t j0 = t % wchunks * chunk, n = std::min(chunk, N - j0);
    const int8_t* xq = X.xq.data() + i0 * X.ldxq;
    const float* xd = X.xd.data() + i0 * X.ldxd;
    const float* xs = X.xs.data() + i0 * X.gpr;
    float* c = C + i0 * ldc;
    for_scale_blocks(W, j0, n, direct, [&](const View& v, int64_t r0, int64_t nr) {  // v's row 0 is row r0 of W
      if (gemm) return gemm(v, int(m), 0, nr, alpha, xq, X.ldxq, xd, X.ldxd, xs, X.gpr, beta, c + r0, ldc);
      for (int64_t jp = 0; jp < nr; jp += kPanel) {
        const int64_t np = std::min(kPanel, nr - jp);
        for (int64_t i = 0; i < m; i += 4)
          rows(v, int(std::min<int64_t>(4, m - i)), jp, np, alpha, xq + i * X.ldxq, X.ldxq, xd + i * X.ldxd, X.ldxd, xs + i * X.gpr,
               X.gpr, beta, c + i * ldc + r0 + jp, ldc);
      }
    });
  };
  const int64_t tasks = ablocks * wchunks;
  if (P <= 1 || tasks == 1) {
    for (int64_t t = 0; t < tasks; ++t) task(t);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, tasks, 1),
                    [&](const tbb::blocked_range<int64_t>& r) {
                      for (int64_t t = r.begin(); t < r.end(); ++t) task(t);
                    },
                    tbb::simple_partitioner());
}

}  // namespace ft
