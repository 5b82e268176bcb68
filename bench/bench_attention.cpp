// Fused attention (autograd/ops.h: attention) at SmolLM2-135M shapes: 9 query heads, 3 kv heads,
// head_dim 64, causal. Forward, forward+backward and decode (Tq = 1 against a KV cache).
//
// GFLOP/s counts the useful work of the visible (causal) score pairs P = B·Hq·T(T+1)/2:
// forward 2 matmuls = 4·D·P flops, forward+backward 7 matmuls (2 forward + 5 backward) = 14·D·P
// (the backward's recomputation of the scores is not counted). "GFLOP/s" is per wall-clock second;
// "GFLOP/cpu-s" per second of process CPU time (all threads), i.e. per-core efficiency, which stays
// meaningful on a loaded machine. FT_NUM_THREADS=n limits the threads.
//   FT_NUM_THREADS=1 ./build/bench/bench_attention --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <ctime>
#include <cstdlib>

#include "autograd/cpu.h"
#include "autograd/ops.h"

namespace {

constexpr int64_t kHq = 9, kHkv = 3, kD = 64;

const bool kThreadsSet = [] {
  if (const char* e = std::getenv("FT_NUM_THREADS")) ft::set_num_threads(std::atoi(e));
  return true;
}();

// Times the loop body with the process CPU clock as well (all threads).
template <class F>
void timed_loop(benchmark::State& st, double flops, F body) {
  const std::clock_t c0 = std::clock();
  for (auto _ : st) body();
  const double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
  st.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GFLOP/cpu-s"] = cpu > 0 ? flops * double(st.iterations()) * 1e-9 / cpu : 0.0;
  st.counters["threads"] = ft::num_threads();
}

double pairs(int64_t B, int64_t Tq, int64_t Tk, int64_t q_off) {
  double p = 0;
  for (int64_t i = 0; i < Tq; ++i) p += double(std::min<int64_t>(Tk, q_off + i + 1));
  return double(B) * double(kHq) * p;
}

void BM_AttentionForward(benchmark::State& st) {
  const int64_t B = st.range(0), T = st.range(1);
  ft::Tensor q = ft::Tensor::randn({B, T, kHq, kD}, 1), k = ft::Tensor::randn({B, T, kHkv, kD}, 2);
  ft::Tensor v = ft::Tensor::randn({B, T, kHkv, kD}, 3);
  timed_loop(st, 4.0 * kD * pairs(B, T, T, 0), [&] { benchmark::DoNotOptimize(ft::attention(q, k, v).raw()); });
}

void BM_AttentionForwardBackward(benchmark::State& st) {
  const int64_t B = st.range(0), T = st.range(1);
  ft::Tensor q = ft::Tensor::randn({B, T, kHq, kD}, 1), k = ft::Tensor::randn({B, T, kHkv, kD}, 2);
  ft::Tensor v = ft::Tensor::randn({B, T, kHkv, kD}, 3), g = ft::Tensor::randn({B, T, kHq, kD}, 4);
  for (ft::Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
  timed_loop(st, 14.0 * kD * pairs(B, T, T, 0), [&] {
    ft::attention(q, k, v).backward(g);
    for (ft::Tensor* t : {&q, &k, &v}) t->zero_grad();
  });
}

// One new token against a cache of Tk keys (no autograd).
void BM_AttentionDecode(benchmark::State& st) {
  const int64_t B = st.range(0), Tk = st.range(1);
  ft::Tensor q = ft::Tensor::randn({B, 1, kHq, kD}, 1), k = ft::Tensor::randn({B, Tk, kHkv, kD}, 2);
  ft::Tensor v = ft::Tensor::randn({B, Tk, kHkv, kD}, 3);
  ft::AttentionOptions o;
  o.q_offset = Tk - 1;
  timed_loop(st, 4.0 * kD * pairs(B, 1, Tk, Tk - 1), [&] { benchmark::DoNotOptimize(ft::attention(q, k, v, o).raw()); });
  st.counters["GB/s"] = benchmark::Counter(2.0 * double(B * Tk * kHkv * kD * 4) * 1e-9,
                                           benchmark::Counter::kIsIterationInvariantRate);
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int64_t B : {1, 4})
    for (int64_t T : {256, 1024, 2048}) b->Args({B, T});
  b->ArgNames({"B", "T"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_AttentionForward)->Apply(shapes);
BENCHMARK(BM_AttentionForwardBackward)->Apply(shapes);
BENCHMARK(BM_AttentionDecode)->Args({1, 2048})->Args({1, 8192})->Args({4, 8192})->ArgNames({"B", "Tk"})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
