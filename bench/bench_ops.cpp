// Model-op throughput: rms_norm, rope and cross-entropy at SmolLM-135M-like shapes (1024 tokens,
// hidden 576, 9 heads of 64, vocab 49152; GPT-2 vocab 50257), forward and backward.
//   build/bench/bench_ops [--benchmark_filter=CrossEntropy]
// The last argument of each benchmark is the ISA level (0 baseline SSE2, 1 AVX2, 2 AVX-512; capped to
// the hardware). Counter "bytes/s": bytes the op must move at least (each input read once, each output
// written once), per second. Threads: all cores (FT_NUM_THREADS is not read here; use taskset).
#include <benchmark/benchmark.h>

#include "autograd/cpu.h"
#include "autograd/ops.h"

using namespace ft;

namespace {

const char* kIsa[] = {"baseline", "avx2", "avx512"};

void set_level(benchmark::State& st, int64_t level) {
  set_isa(kIsa[level]);
  st.SetLabel(isa_name());
}

void RmsNormFwd(benchmark::State& st) {
  const int64_t R = st.range(0), D = st.range(1);
  set_level(st, st.range(2));
  Tensor x = Tensor::randn({R, D}, 1), w = Tensor::randn({D}, 2);
  NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(rms_norm(x, w, 1e-5f).raw());
  st.counters["bytes/s"] = benchmark::Counter(double(st.iterations()) * 2.0 * double(R * D) * 4, benchmark::Counter::kIsRate);
}

// Backward through the recorded node (dx and dw): reads x and g, writes dx.
void RmsNormBwd(benchmark::State& st) {
  const int64_t R = st.range(0), D = st.range(1);
  set_level(st, st.range(2));
  Tensor x = Tensor::randn({R, D}, 1).set_requires_grad(), w = Tensor::randn({D}, 2).set_requires_grad();
  Tensor y = rms_norm(x, w, 1e-5f), g = Tensor::randn({R, D}, 3);
  NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(y.grad_fn()->backward(g));
  st.counters["bytes/s"] = benchmark::Counter(double(st.iterations()) * 3.0 * double(R * D) * 4, benchmark::Counter::kIsRate);
}

void RopeFwdBwd(benchmark::State& st, bool backward) {
  const int64_t B = st.range(0), T = st.range(1), H = st.range(2), D = st.range(3);
  set_level(st, st.range(4));
  Tensor x = Tensor::randn({B, T, H, D}, 1).set_requires_grad();
  Tensor c = Tensor::uniform({T, D}, 2, -1, 1), s = Tensor::uniform({T, D}, 3, -1, 1);
  Tensor y = rope(x, c, s), g = Tensor::randn({B, T, H, D}, 4);
  NoGradGuard ng;
  for (auto _ : st) {
    if (backward) benchmark::DoNotOptimize(y.grad_fn()->backward(g));
    else benchmark::DoNotOptimize(rope(x, c, s).raw());
  }
  st.counters["bytes/s"] = benchmark::Counter(double(st.iterations()) * 2.0 * double(x.numel()) * 4, benchmark::Counter::kIsRate);
}
void RopeFwd(benchmark::State& st) { RopeFwdBwd(st, false); }
void RopeBwd(benchmark::State& st) { RopeFwdBwd(st, true); }

// Forward (reads the logits) + backward (reads the logits, writes the gradient): 3·N·V·4 bytes.
void CrossEntropy(benchmark::State& st) {
  const int64_t N = st.range(0), V = st.range(1);
  set_level(st, st.range(2));
  Tensor logits = Tensor::randn({N, V}, 1, 3.f).set_requires_grad();
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) t[size_t(i)] = int32_t((i * 7919) % V);
  Tensor targets = Tensor::from_ids(t, {N}), one = Tensor::full({}, 1.f);
  for (auto _ : st) {
    Tensor loss = cross_entropy(logits, targets);
    benchmark::DoNotOptimize(loss.grad_fn()->backward(one));
  }
  st.counters["bytes/s"] = benchmark::Counter(double(st.iterations()) * 3.0 * double(N * V) * 4, benchmark::Counter::kIsRate);
}

void CrossEntropyFwd(benchmark::State& st) {
  const int64_t N = st.range(0), V = st.range(1);
  set_level(st, st.range(2));
  Tensor logits = Tensor::randn({N, V}, 1, 3.f);
  Tensor targets = Tensor::zeros({N}, DType::I32);
  for (auto _ : st) benchmark::DoNotOptimize(cross_entropy(logits, targets).item());
  st.counters["bytes/s"] = benchmark::Counter(double(st.iterations()) * double(N * V) * 4, benchmark::Counter::kIsRate);
}

void isas(benchmark::internal::Benchmark* b, std::vector<int64_t> dims) {
  for (int64_t l = 0; l < 3; ++l) {
    std::vector<int64_t> a = dims;
    a.push_back(l);
    b->Args(a);
  }
  b->Unit(benchmark::kMicrosecond)->MeasureProcessCPUTime()->UseRealTime();
}

}  // namespace

BENCHMARK(RmsNormFwd)->Apply([](auto* b) { isas(b, {1024, 576}); });
BENCHMARK(RmsNormBwd)->Apply([](auto* b) { isas(b, {1024, 576}); });
BENCHMARK(RopeFwd)->Apply([](auto* b) { isas(b, {4, 256, 9, 64}); });
BENCHMARK(RopeBwd)->Apply([](auto* b) { isas(b, {4, 256, 9, 64}); });
BENCHMARK(CrossEntropyFwd)->Apply([](auto* b) { isas(b, {1024, 49152}); isas(b, {1024, 50257}); });
BENCHMARK(CrossEntropy)->Apply([](auto* b) { isas(b, {1024, 49152}); isas(b, {1024, 50257}); });
