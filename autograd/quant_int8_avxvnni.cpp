// AVX-VNNI kernel (vpdpbusd on ymm; built with -mavxvnni, see CMakeLists.txt, and called only when
// the CPU has it) of the opt-in int8 decode GEMV; the code is autograd/quant_int8_avx2.h, shared with
// quant_int8_avx2.cpp.
#define FT_Q8_VNNI 1
#include "autograd/quant_int8_avx2.h"

namespace {
const ft::quant_detail::Int8Kernels kKernels = {prep, rows_any, gemm_any, 8, "avxvnni", true, false};
}  // namespace

const ft::quant_detail::Int8Kernels* ft::quant_detail::int8_kernels_avxvnni() { return &kKernels; }
