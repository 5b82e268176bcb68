// Batch-1 decode GEMV, one matrix: bf16 weights (ft::gemv) against quantised ones (ft::qgemv, the
// regrouped affine kernel, exact fp32; and ft::qgemv_int8, the opt-in int8-activation kernel of
// `--compute int8`) of the same shape. Args: N (rows), K (cols), kind (0 = bf16, else the bits),
// int8 (0 = qgemv, 1 = qgemv_int8), group size. The SmolLM2-135M shapes (q/o 576×576 is the smallest; MLP 1536×576 and 576×1536;
// the tied LM head 49152×576) and a Llama-1B MLP (8192×2048). One thread unless FT_NUM_THREADS is
// set; FT_ISA picks the kernel path. Results in bench/RESULTS.md.
// BM_QGemm: the prefill-sized product (M = 64 rows of x) on a quantised matrix, the exact GEMM
// (ft::gemm_qw, dequantising W while packing) against the int8 GEMM (ft::qgemm_int8, `--compute
// int8`). Args: N, K, bits, int8, group, M.
//   build/bench/bench_qgemv --benchmark_min_time=0.2
//   build/bench/bench_qgemv --benchmark_filter=QGemm --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "autograd/cpu.h"
#include "autograd/gemm.h"
#include "autograd/gemv.h"
#include "autograd/quant.h"
#include "autograd/tensor.h"

namespace {

using namespace ft;

void BM_Gemv(benchmark::State& st) {
  const int64_t N = st.range(0), K = st.range(1);
  const int kind = int(st.range(2));
  const bool int8 = st.range(3) != 0;
  const int group = int(st.range(4));
  set_num_threads(std::getenv("FT_NUM_THREADS") ? std::atoi(std::getenv("FT_NUM_THREADS")) : 1);
  Tensor w = Tensor::randn({N, K}, 1, 0.02f);
  Tensor wb = w.to(DType::BF16);
  Tensor q = kind ? quantize_affine(w, kind, group, DType::BF16) : Tensor();
  Tensor x = Tensor::randn({1, K}, 2);
  std::vector<float> y(static_cast<size_t>(N));
  double best = 1e30;
  for (auto _ : st) {
    const auto t0 = std::chrono::steady_clock::now();
    if (kind && int8)
      qgemv_int8(1, x.data<float>(), K, quant_params(q), 1.f, 0.f, y.data(), N);
    else if (kind)
      qgemv(1, x.data<float>(), K, quant_params(q), 1.f, 0.f, y.data(), N);
    else
      gemv(1, N, K, 1.f, x.data<float>(), K, wb.raw(), DType::BF16, K, 0.f, y.data(), N);
    benchmark::DoNotOptimize(y.data());
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  // best-of: the fastest single call (robust to other processes on a shared machine)
  st.counters["best_Gw/s"] = double(N * K) * 1e-9 / best;
  st.counters["Gweights/s"] = benchmark::Counter(double(N * K) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GB/s"] = benchmark::Counter(double(kind ? quant_params(q).nbytes() : wb.nbytes()) * 1e-9,
                                           benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::string(isa_name()) +
              (kind ? " q" + std::to_string(kind) + " g" + std::to_string(group) + (int8 ? std::string(" int8 ") + qgemv_int8_path() : "")
                    : " bf16"));
}

void shapes(benchmark::internal::Benchmark* b) {
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}, {8192, 2048}})
    for (int kind : {0, 8, 4, 3})
      for (int int8 : {0, 1})
        for (int group : {64, 32})
          if ((kind != 0 || (int8 == 0 && group == 64)) && (kind != 3 || int8 == 0)) b->Args({n, k, kind, int8, group});
}
BENCHMARK(BM_Gemv)->Apply(shapes);
// A matrix larger than the last-level cache (75 MB at 4 bits): the weights stream from memory, as in the
// decode of a 1B+ model.
BENCHMARK(BM_Gemv)->Args({65536, 2048, 0, 0, 64})->Args({65536, 2048, 4, 1, 32})->Args({65536, 2048, 8, 1, 32})
    ->Args({65536, 2048, 4, 1, 64})->Args({65536, 2048, 4, 0, 32});

void BM_QGemm(benchmark::State& st) {
  const int64_t N = st.range(0), K = st.range(1), M = st.range(5);
  const int bits = int(st.range(2)), group = int(st.range(4));
  const bool int8 = st.range(3) != 0;
  set_num_threads(std::getenv("FT_NUM_THREADS") ? std::atoi(std::getenv("FT_NUM_THREADS")) : 1);
  Tensor w = Tensor::randn({N, K}, 1, 0.02f);
  Tensor q = quantize_affine(w, bits, group, DType::BF16);
  Tensor x = Tensor::randn({M, K}, 2);
  std::vector<float> y(size_t(M * N));
  double best = 1e30;
  for (auto _ : st) {
    const auto t0 = std::chrono::steady_clock::now();
    if (int8)
      qgemm_int8(M, x.data<float>(), K, quant_params(q), 1.f, 0.f, y.data(), N);
    else
      gemm_qw(false, true, M, N, K, 1.f, x.data<float>(), K, quant_params(q), 0.f, y.data(), N);
    benchmark::DoNotOptimize(y.data());
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  st.counters["best_GMAC/s"] = double(M * N * K) * 1e-9 / best;
  st.counters["GMAC/s"] = benchmark::Counter(double(M * N * K) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::string(isa_name()) + " q" + std::to_string(bits) + " g" + std::to_string(group) +
              (int8 ? std::string(" int8 ") + qgemm_int8_path() : " exact"));
}

void gemm_shapes(benchmark::internal::Benchmark* b) {
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{1536, 576}, {576, 1536}, {8192, 2048}, {2048, 8192}})
    for (int bits : {8, 4})
      for (int int8 : {0, 1}) b->Args({n, k, bits, int8, 32, 64});
}
BENCHMARK(BM_QGemm)->Apply(gemm_shapes);

}  // namespace
