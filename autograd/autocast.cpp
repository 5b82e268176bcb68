// float16 autocast and bfloat16 compute (see autograd/ops.h): the per-thread modes and the fp16
// rounding kernel.
#include <immintrin.h>

#include "autograd/dtype.h"
#include "autograd/kernels.h"
#include "autograd/ops.h"
#include "autograd/simd.h"

namespace ft {

namespace {
thread_local bool t_autocast_f16 = false;
thread_local bool t_autocast_bf16 = false;

// Round trip through fp16 with F16C (vcvtps2ph: round to nearest even, overflow to inf,
// subnormal results kept; exactly f16_to_f32(f32_to_f16(x)), see tests/test_fp16.cpp).
// GCC's AVX-512 headers initialise their "undefined" vectors from themselves (see CMakeLists.txt).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
FT_TARGET_AVX512 void round_w16(float* p, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(p + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(p + i), _MM_FROUND_TO_NEAREST_INT)));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(p + i, m, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, p + i), _MM_FROUND_TO_NEAREST_INT)));
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
FT_TARGET_AVX2 void round_w8(float* p, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(p + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(p + i), _MM_FROUND_TO_NEAREST_INT)));
  for (; i < n; ++i) p[i] = f16_to_f32(f32_to_f16(p[i]));
}
void round_w4(float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = f16_to_f32(f32_to_f16(p[i]));
}
}  // namespace

bool autocast_f16() { return t_autocast_f16; }
AutocastF16Guard::AutocastF16Guard(bool on) : prev(t_autocast_f16) { t_autocast_f16 = on; }
AutocastF16Guard::~AutocastF16Guard() { t_autocast_f16 = prev; }
bool autocast_bf16() { return t_autocast_bf16; }
AutocastBF16Guard::AutocastBF16Guard(bool on) : prev(t_autocast_bf16) { t_autocast_bf16 = on; }
AutocastBF16Guard::~AutocastBF16Guard() { t_autocast_bf16 = prev; }

void round_to_f16(float* p, int64_t n) {
  const int w = simd::width();
  parallel_range(n, 1 << 15, [&](int64_t b, int64_t e) {
    if (w == 16) round_w16(p + b, e - b);
    else if (w == 8) round_w8(p + b, e - b);
    else round_w4(p + b, e - b);
  });
}

Tensor round_to_f16(Tensor t) {
  if (t.defined() && t.numel() > 0) {
    FT_CHECK(t.dtype() == DType::F32 && t.is_contiguous(), "round_to_f16: needs a contiguous float32 tensor, got ",
             dtype_name(t.dtype()), " ", t.shape_str());
    round_to_f16(t.data<float>(), t.numel());
  }
  return t;
}

}  // namespace ft
