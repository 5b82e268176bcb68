// ft::gemv (see autograd/gemv.h): argument checks, the portable row kernel, and the TBB driver
// over blocks of weight rows. ISA kernels: gemv_avx512.cpp, gemv_avx2.cpp.
#include "autograd/gemv.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "autograd/cpu.h"
#include "autograd/error.h"
#include "autograd/gemm.h"
#include "autograd/gemv_kernels.h"
#include "autograd/kernels.h"

namespace ft {
namespace {

using gemv_detail::RowsFn;

// Portable kernel (semantics: gemv_detail::RowsFn, modes 0, 1, 3): 8 partial sums per output,
// which the compiler keeps in SSE2 registers.
template <int MODE>
void rows_portable_t(int m, int64_t n, int64_t K, float alpha, const float* A, int64_t lda, const void* W,
                     int64_t ldw, float beta, float* C, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    const float* wf = static_cast<const float*>(W) + j * ldw;
    const uint16_t* wh = static_cast<const uint16_t*>(W) + j * ldw;
    auto w = [&](int64_t k) { return MODE == 1 ? bf16_to_f32(wh[k]) : MODE == 3 ? f16_to_f32(wh[k]) : wf[k]; };
    for (int i = 0; i < m; ++i) {
      const float* a = A + i * lda;
      float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t k = 0;
      for (; k + 8 <= K; k += 8)
        for (int u = 0; u < 8; ++u) s[u] += a[k + u] * w(k + u);
      for (int u = 0; k < K; ++k, ++u) s[u] += a[k] * w(k);
      const float v = alpha * (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
      float* c = C + i * ldc + j;
      *c = beta != 0.0f ? v + beta * *c : v;
    }
  }
}

void rows_portable(int mode, int m, int64_t n, int64_t K, float alpha, const void* A, int64_t lda,
                   const void* W, int64_t ldw, float beta, float* C, int64_t ldc) {
  const float* a = static_cast<const float*>(A);
  if (mode == 0) rows_portable_t<0>(m, n, K, alpha, a, lda, W, ldw, beta, C, ldc);
  else if (mode == 1) rows_portable_t<1>(m, n, K, alpha, a, lda, W, ldw, beta, C, ldc);
  else rows_portable_t<3>(m, n, K, alpha, a, lda, W, ldw, beta, C, ldc);
}

constexpr int64_t kTaskBytes = 32 << 10;  // least weight bytes per parallel task

}  // namespace

void gemv(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const void* W,
          DType w_dtype, int64_t ldw, float beta, float* C, int64_t ldc, bool allow_parallel, bool round_a) {
  FT_CHECK(is_float(w_dtype), "gemv: weight dtype ", dtype_name(w_dtype), " is not supported (float32, bfloat16 or float16)");
  FT_CHECK(M >= 0 && N >= 0 && K >= 0, "gemv: negative size M=", M, " N=", N, " K=", K);
  FT_CHECK(lda >= std::max<int64_t>(1, K), "gemv: lda=", lda, " is smaller than K=", K, " (A is M×K, M=", M, ")");
  FT_CHECK(ldw >= std::max<int64_t>(1, K), "gemv: ldw=", ldw, " is smaller than K=", K, " (W is N×K, N=", N, ")");
  FT_CHECK(ldc >= std::max<int64_t>(1, N), "gemv: ldc=", ldc, " is smaller than N=", N);
  FT_CHECK(M == 0 || N == 0 || C, "gemv: C is null for a ", M, "×", N, " result");
  FT_CHECK(M == 0 || N == 0 || K == 0 || (A && W), "gemv: A or W is null (M=", M, " N=", N, " K=", K, ")");
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {  // C = beta·C; A and W are not read
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }

  const CpuFeatures& f = cpu_features();
  const RowsFn rows = f.avx512f ? gemv_detail::rows_avx512() : f.avx2 ? gemv_detail::rows_avx2() : rows_portable;
  round_a = round_a && w_dtype == DType::BF16;
  const int mode = w_dtype == DType::F32 ? 0 : w_dtype == DType::F16 ? 3 : round_a && f.fast_bf16_dot ? 2 : 1;
  const size_t esz = w_dtype == DType::F32 ? 4 : 2;

  // round_a: A rounded to bf16 (as gemm_bf16w does), rows K apart: bf16 bits for mode 2
  // (vdpbf16ps), the rounded fp32 values for mode 1.
  const void* a = A;
  int64_t la = lda;
  std::vector<uint16_t> a_bits;
  std::vector<float> a_rounded;
  if (round_a && mode == 2) {
    a_bits.resize(size_t(M * K));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) a_bits[size_t(i * K + k)] = f32_to_bf16(A[i * lda + k]);
    a = a_bits.data();
    la = K;
  } else if (round_a) {
    a_rounded.resize(size_t(M * K));
    for (int64_t i = 0; i < M; ++i) std::memcpy(a_rounded.data() + i * K, A + i * lda, size_t(K) * sizeof(float));
    round_to_bf16(a_rounded.data(), M * K);
    a = a_rounded.data();
    la = K;
  }
  const size_t a_esz = mode == 2 ? 2 : 4;

  // Blocks of weight rows: at least kTaskBytes each, up to 4 per thread (load balance on a busy
  // machine), each group of kGemvMaxRows rows of A per block in turn (W block then comes from L2).
  const int P = allow_parallel ? num_threads() : 1;
  const int64_t row_bytes = K * int64_t(esz);
  const int64_t min_rows = std::max<int64_t>(1, kTaskBytes / row_bytes);
  const int64_t tasks = row_task_count(N, min_rows, P);
  const int64_t chunk = (N + tasks - 1) / tasks;
  auto block = [&](int64_t t) {
    const int64_t j0 = t * chunk, n = std::min(chunk, N - j0);
    if (n <= 0) return;
    const void* w = static_cast<const char*>(W) + size_t(j0 * ldw) * esz;
    for (int64_t i0 = 0; i0 < M; i0 += kGemvMaxRows) {
      const int m = int(std::min(kGemvMaxRows, M - i0));
      rows(mode, m, n, K, alpha, static_cast<const char*>(a) + size_t(i0 * la) * a_esz, la, w, ldw, beta,
           C + i0 * ldc + j0, ldc);
    }
  };
  if (tasks == 1) return block(0);
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, tasks, 1),
                    [&](const tbb::blocked_range<int64_t>& r) {
                      for (int64_t t = r.begin(); t < r.end(); ++t) block(t);
                    },
                    tbb::simple_partitioner());
}

}  // namespace ft
