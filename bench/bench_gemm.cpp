// GEMM throughput at real model shapes: ft::sgemm / ft::gemm_bf16w / ft::gemm_f16w vs Eigen (OpenMP threads)
// and OpenBLAS (pthreads), plus this machine's fp32 FMA and bf16 dot-product peaks.
// This file alone is compiled with -march=native -fopenmp (bench/CMakeLists.txt) so Eigen gets
// the machine's best ISA; ftlib itself stays portable and dispatches at run time.
//   build/bench/bench_gemm --benchmark_filter=<impl>   (one implementation per process: the
//   OpenMP and OpenBLAS thread pools spin after each call and would slow the next library down)
// Counter "FLOPS" is 2·M·N·K per second of wall-clock time; "CPU" is the process CPU time (with
// one thread, flops / CPU time is the per-core throughput even on a busy machine; with more
// threads it includes the libraries' spin-waiting). Threads: all cores (FT_NUM_THREADS /
// OMP_NUM_THREADS / OPENBLAS_NUM_THREADS are honoured by the respective libraries).
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <tbb/parallel_for.h>

#include <Eigen/Core>
#include <atomic>
#include <cstdlib>
#include <ctime>
#include <random>
#include <vector>

#include "autograd/cpu.h"
#include "autograd/dtype.h"
#include "autograd/gemm.h"
#include "autograd/quant.h"
#include "autograd/tensor.h"

#ifdef FT_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace {

struct Shape {
  const char* name;
  int64_t M, N, K;
  bool ta, tb;
};

// SmolLM-135M-like layer (hidden 576, MLP 1536, vocab 49152) at 1024 tokens.
// "A·Bᵀ" means the weight is stored [out, in] and used transposed (linear forward).
const Shape kShapes[] = {
    {"up_fwd_1024x576.576x1536", 1024, 1536, 576, false, true},     // x·Wᵀ, gate/up proj
    {"up_dX_1024x1536.1536x576", 1024, 576, 1536, false, false},    // dY·W
    {"up_dW_1536x1024.1024x576", 1536, 576, 1024, true, false},     // dYᵀ·X
    {"attn_fwd_1024x576.576x576", 1024, 576, 576, false, true},     // q/o proj
    {"down_fwd_1024x1536.1536x576", 1024, 576, 1536, false, true},  // down proj
    {"lm_head_1024x576.576x49152", 1024, 49152, 576, false, true},
    // a chunk of the fused LM head + cross-entropy (autograd/ops_loss.cpp): logits, then dh = dlogits·W
    {"lm_head_256x576.576x49152", 256, 49152, 576, false, true},
    {"lm_head_dX_256x49152.49152x576", 256, 576, 49152, false, false},
    // Llama-1B shape (hidden 2048, MLP 8192) at 1024 tokens (bench/train_bench.py --shape 1b)
    {"1b_up_fwd_1024x2048.2048x8192", 1024, 8192, 2048, false, true},
    {"1b_up_dX_1024x8192.8192x2048", 1024, 2048, 8192, false, false},
    {"1b_attn_fwd_1024x2048.2048x2048", 1024, 2048, 2048, false, true},
};

struct Data {
  std::vector<float> A, B, C;
  std::vector<uint16_t> Bh, Bf16;  // B's values as bf16 bits, and as fp16 bits (the same values)
  explicit Data(const Shape& s) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    A.resize(size_t(s.M * s.K));
    B.resize(size_t(s.K * s.N));
    C.resize(size_t(s.M * s.N));
    Bh.resize(B.size());
    for (float& x : A) x = u(rng);
    for (size_t i = 0; i < B.size(); ++i) {
      Bh[i] = ft::f32_to_bf16(u(rng));
      B[i] = ft::bf16_to_f32(Bh[i]);
    }
    Bf16.resize(B.size());
    for (size_t i = 0; i < B.size(); ++i) Bf16[i] = ft::f32_to_f16(B[i]);
  }
};

void set_flops(benchmark::State& st, const Shape& s) {
  st.counters["FLOPS"] = benchmark::Counter(2.0 * double(s.M) * double(s.N) * double(s.K),
                                            benchmark::Counter::kIsIterationInvariantRate);
  st.counters["threads"] = double(ft::num_threads());
}

void BM_ft_sgemm(benchmark::State& st, Shape s) {
  Data d(s);
  for (auto _ : st) {
    ft::sgemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, d.A.data(), s.ta ? s.M : s.K, d.B.data(),
              s.tb ? s.K : s.N, 0.0f, d.C.data(), s.N);
    benchmark::ClobberMemory();
  }
  set_flops(st, s);
  st.SetLabel(ft::isa_name());
}

void BM_ft_bf16w(benchmark::State& st, Shape s) {
  Data d(s);
  for (auto _ : st) {
    ft::gemm_bf16w(s.ta, s.tb, s.M, s.N, s.K, 1.0f, d.A.data(), s.ta ? s.M : s.K, d.Bh.data(),
                   s.tb ? s.K : s.N, 0.0f, d.C.data(), s.N);
    benchmark::ClobberMemory();
  }
  set_flops(st, s);
  st.SetLabel(ft::isa_name());
}

void BM_ft_f16w(benchmark::State& st, Shape s) {
  Data d(s);
  for (auto _ : st) {
    ft::gemm_f16w(s.ta, s.tb, s.M, s.N, s.K, 1.0f, d.A.data(), s.ta ? s.M : s.K, d.Bf16.data(),
                  s.tb ? s.K : s.N, 0.0f, d.C.data(), s.N);
    benchmark::ClobberMemory();
  }
  set_flops(st, s);
  st.SetLabel(ft::isa_name());
}

// bf16 autocast (round_a, `--dtype bfloat16` training): a bf16 weight, and the same matrix held
// quantised (MLX affine, group 64; QLoRA), whose GEMM dequantises in its packing step.
void BM_ft_bf16w_autocast(benchmark::State& st, Shape s) {
  Data d(s);
  for (auto _ : st) {
    ft::gemm_bf16w(s.ta, s.tb, s.M, s.N, s.K, 1.0f, d.A.data(), s.ta ? s.M : s.K, d.Bh.data(),
                   s.tb ? s.K : s.N, 0.0f, d.C.data(), s.N, true);
    benchmark::ClobberMemory();
  }
  set_flops(st, s);
  st.SetLabel(ft::isa_name());
}

// bits > 0: bf16 scales kept in 16 bits (as ft holds an MLX bf16 checkpoint's); bits < 0: the same
// values widened to fp32 in memory (the layout before 2026-12-05).
void BM_ft_qw_autocast(benchmark::State& st, Shape s, int bits) {
  Data d(s);
  const int64_t rows = s.tb ? s.N : s.K, cols = s.tb ? s.K : s.N;
  ft::Tensor w = ft::Tensor::empty({rows, cols});
  std::copy(d.B.begin(), d.B.end(), w.data<float>());
  const ft::Tensor q = ft::quantize_affine(w, bits > 0 ? bits : -bits, 64, ft::DType::BF16);
  ft::QuantParams qp = ft::quant_params(q);
  if (bits < 0) {
    qp.scales = qp.scales.to(ft::DType::F32).contiguous();
    qp.biases = qp.biases.to(ft::DType::F32).contiguous();
  }
  for (auto _ : st) {
    ft::gemm_qw(s.ta, s.tb, s.M, s.N, s.K, 1.0f, d.A.data(), s.ta ? s.M : s.K, qp, 0.0f, d.C.data(), s.N, true);
    benchmark::ClobberMemory();
  }
  set_flops(st, s);
  st.SetLabel(ft::isa_name());
}

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void BM_eigen(benchmark::State& st, Shape s) {
  Data d(s);
  Eigen::Map<const RowMat> A(d.A.data(), s.ta ? s.K : s.M, s.ta ? s.M : s.K);
  Eigen::Map<const RowMat> B(d.B.data(), s.tb ? s.N : s.K, s.tb ? s.K : s.N);
  Eigen::Map<RowMat> C(d.C.data(), s.M, s.N);
  for (auto _ : st) {
    if (!s.ta && !s.tb) C.noalias() = A * B;
    else if (!s.ta) C.noalias() = A * B.transpose();
    else if (!s.tb) C.noalias() = A.transpose() * B;
    else C.noalias() = A.transpose() * B.transpose();
    benchmark::ClobberMemory();
  }
  set_flops(st, s);
  st.counters["threads"] = Eigen::nbThreads();
}

#ifdef FT_HAVE_OPENBLAS
void BM_openblas(benchmark::State& st, Shape s) {
  Data d(s);
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans,
                int(s.M), int(s.N), int(s.K), 1.0f, d.A.data(), int(s.ta ? s.M : s.K), d.B.data(),
                int(s.tb ? s.K : s.N), 0.0f, d.C.data(), int(s.N));
    benchmark::ClobberMemory();
  }
  set_flops(st, s);
  st.counters["threads"] = openblas_get_num_threads();
  st.SetLabel(openblas_get_corename());
}
#endif

// ---- peaks: independent FMA / vdpbf16ps chains on every core at once (24 chains per core:
// more than latency × ports of either instruction on current x86 cores).
constexpr int kChains = 24;
#if defined(__AVX512F__)
void fma_chains(int64_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-3f);
  for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  benchmark::DoNotOptimize(s);
}
constexpr double kFmaFlopsPerIter = kChains * 16 * 2;
#endif
#if defined(__AVX512BF16__)
void dpbf16_chains(int64_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3a83);
  for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  benchmark::DoNotOptimize(s);
}
constexpr double kDpbf16FlopsPerIter = kChains * 32 * 2;
#endif

double thread_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// FLOPS: wall-clock rate of all cores together. per_core_FLOPS: flops per second of CPU time each
// worker actually got (robust when other processes share the cores); peak = per_core × cores.
void BM_peak(benchmark::State& st, void (*f)(int64_t), double flops_per_iter) {
  const int P = ft::num_threads();
  const int64_t iters = 1 << 20;
  std::atomic<double> cpu{0.0};
  int64_t calls = 0;
  for (auto _ : st) {
    tbb::parallel_for(0, P, [&](int) {
      const double t0 = thread_cpu_seconds();
      f(iters);
      double d = thread_cpu_seconds() - t0, cur = cpu.load();
      while (!cpu.compare_exchange_weak(cur, cur + d)) {}
    }, tbb::static_partitioner());
    calls += P;
  }
  const double flops_per_call = double(iters) * flops_per_iter;
  st.counters["FLOPS"] = benchmark::Counter(double(P) * flops_per_call,
                                            benchmark::Counter::kIsIterationInvariantRate);
  st.counters["per_core_FLOPS"] = double(calls) * flops_per_call / cpu.load();
  st.counters["threads"] = P;
}

int register_all() {
  if (const char* t = std::getenv("FT_NUM_THREADS")) ft::set_num_threads(std::atoi(t));
#if defined(__AVX512F__)
  benchmark::RegisterBenchmark("peak/fp32_fma_avx512", BM_peak, fma_chains, kFmaFlopsPerIter)
      ->UseRealTime();
#endif
#if defined(__AVX512BF16__)
  benchmark::RegisterBenchmark("peak/bf16_dp_avx512", BM_peak, dpbf16_chains, kDpbf16FlopsPerIter)
      ->UseRealTime();
#endif
  for (const Shape& s : kShapes) {
    benchmark::RegisterBenchmark((std::string("ft_sgemm/") + s.name).c_str(), BM_ft_sgemm, s)
        ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("ft_bf16w/") + s.name).c_str(), BM_ft_bf16w, s)
        ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("ft_f16w/") + s.name).c_str(), BM_ft_f16w, s)
        ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("ft_bf16w_autocast/") + s.name).c_str(), BM_ft_bf16w_autocast, s)
        ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    for (int bits : {4, 8, -4})
      benchmark::RegisterBenchmark((std::string("ft_q") + std::to_string(bits < 0 ? -bits : bits) + (bits < 0 ? "w32s" : "w") + "_autocast/" + s.name).c_str(),
                                   BM_ft_qw_autocast, s, bits)
          ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("eigen/") + s.name).c_str(), BM_eigen, s)
        ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
#ifdef FT_HAVE_OPENBLAS
    benchmark::RegisterBenchmark((std::string("openblas/") + s.name).c_str(), BM_openblas, s)
        ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
#endif
  }
  return 0;
}
const int registered = register_all();

}  // namespace
