// AVX2 kernel (no VNNI: vpmaddubsw / widening vpmaddwd) of the opt-in int8 decode GEMV; the code is
// autograd/quant_int8_avx2.h, shared with quant_int8_avxvnni.cpp.
#define FT_Q8_VNNI 0
#include "autograd/quant_int8_avx2.h"

namespace {
const ft::quant_detail::Int8Kernels kKernels = {prep, rows_any, gemm_any, 8, "avx2", true, false};
}  // namespace

const ft::quant_detail::Int8Kernels* ft::quant_detail::int8_kernels_avx2() { return &kKernels; }
