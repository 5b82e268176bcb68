// The training step's hot ops at the SmolLM2-135M benchmark shape (batch 4 × 256 = 1024 tokens,
// hidden 576, intermediate 1536, 9/3 heads of 64, vocab 50304, LoRA rank 8), fused vs unfused:
//   build/bench/bench_train_ops [--benchmark_filter=Lora]      (one thread: taskset -c 1 ...)
// Forward + backward of each op per iteration, as the training step runs it. Counter "FLOPS": the
// op's multiply-add work (2 per FMA) per second of CPU time; compare with bench_gemm's peak/*.
#include <benchmark/benchmark.h>

#include "autograd/ops.h"
#include "autograd/quant.h"

using namespace ft;

namespace {

constexpr int64_t kRows = 1024, kRank = 8;

// LoRA projection [in -> out]: y = x·Wᵀ + 2·(x·Aᵀ)·Bᵀ, backward for x, A, B (W frozen).
void Lora(benchmark::State& st, bool fused, bool bf16) {
  const int64_t in = st.range(0), out = st.range(1);
  Tensor x = Tensor::randn({kRows, in}, 1).set_requires_grad(), W = Tensor::randn({out, in}, 2, 0.02f);
  if (bf16) W = W.to(DType::BF16);
  Tensor A = Tensor::randn({kRank, in}, 3, 0.05f).set_requires_grad(), B = Tensor::randn({out, kRank}, 4, 0.05f).set_requires_grad();
  Tensor g = Tensor::randn({kRows, out}, 5);
  for (auto _ : st) {
    Tensor y = fused ? lora_linear(x, W, Tensor(), A, B, 2.f) : add(linear(x, W), scale(linear(linear(x, A), B), 2.f));
    y.backward(g);
    x.zero_grad(), A.zero_grad(), B.zero_grad();
  }
  const double flops = 2.0 * 2 * kRows * in * out + 2.0 * 2 * 3 * kRows * kRank * (in + out) / 2;
  st.counters["FLOPS"] = benchmark::Counter(double(st.iterations()) * flops, benchmark::Counter::kIsRate);
}
void LoraFused(benchmark::State& st) { Lora(st, true, false); }
void LoraUnfused(benchmark::State& st) { Lora(st, false, false); }
void LoraFusedBf16(benchmark::State& st) { Lora(st, true, true); }

// LM head + cross-entropy, forward + backward for h (tied, frozen embedding). Args: V, rows per
// chunk of the fused op (0 = its default).
void LmHeadCe(benchmark::State& st, bool fused) {
  const int64_t H = 576, V = st.range(0);
  Tensor h = Tensor::randn({kRows, H}, 1).set_requires_grad(), W = Tensor::randn({V, H}, 2, 0.02f);
  std::vector<int32_t> t(kRows);
  for (int64_t i = 0; i < kRows; ++i) t[size_t(i)] = int32_t((i * 7919) % V);
  Tensor targets = Tensor::from_ids(t, {kRows});
  for (auto _ : st) {
    Tensor l = fused ? linear_cross_entropy_sum(h, W, targets, -100, 0.f, st.range(1)) : cross_entropy_sum(linear(h, W), targets);
    l.backward();
    h.zero_grad();
  }
  st.counters["FLOPS"] = benchmark::Counter(double(st.iterations()) * 2.0 * 2 * kRows * H * V, benchmark::Counter::kIsRate);
}
void LmHeadCeFused(benchmark::State& st) { LmHeadCe(st, true); }

// The same under `--dtype bfloat16` (autocast), the head bf16 or 4-bit (group 64; QLoRA). Args: V,
// bits (16 = bf16), rows per chunk (0 = the op's default).
void LmHeadCeBf16(benchmark::State& st) {
  const int64_t H = 576, V = st.range(0);
  Tensor h = Tensor::randn({kRows, H}, 1).set_requires_grad(), W = Tensor::randn({V, H}, 2, 0.02f);
  W = st.range(1) == 16 ? W.to(DType::BF16) : quantize_affine(W, int(st.range(1)), 64, DType::BF16);
  std::vector<int32_t> t(kRows);
  for (int64_t i = 0; i < kRows; ++i) t[size_t(i)] = int32_t((i * 7919) % V);
  Tensor targets = Tensor::from_ids(t, {kRows});
  AutocastBF16Guard ac;
  for (auto _ : st) {
    Tensor l = linear_cross_entropy_sum(h, W, targets, -100, 0.f, st.range(2));
    l.backward();
    h.zero_grad();
  }
  st.counters["FLOPS"] = benchmark::Counter(double(st.iterations()) * 2.0 * 2 * kRows * H * V, benchmark::Counter::kIsRate);
}
void LmHeadCeUnfused(benchmark::State& st) { LmHeadCe(st, false); }

// Causal GQA attention [4, 256, 9|3, 64], forward + backward.
void Attention(benchmark::State& st) {
  const int64_t B = 4, T = st.range(0), Hq = 9, Hkv = 3, D = 64;
  Tensor q = Tensor::randn({B, T, Hq, D}, 1).set_requires_grad(), k = Tensor::randn({B, T, Hkv, D}, 2).set_requires_grad(),
         v = Tensor::randn({B, T, Hkv, D}, 3).set_requires_grad();
  Tensor g = Tensor::randn({B, T, Hq, D}, 4);
  for (auto _ : st) {
    attention(q, k, v).backward(g);
    q.zero_grad(), k.zero_grad(), v.zero_grad();
  }
  // Causal: half of the T×T scores; forward 2 GEMMs, backward 5 (recompute S, dP, dV, dQ, dK).
  st.counters["FLOPS"] = benchmark::Counter(double(st.iterations()) * 7.0 * B * Hq * T * T * D, benchmark::Counter::kIsRate);
}

void GatedSilu(benchmark::State& st) {
  Tensor gate = Tensor::randn({kRows, 1536}, 1).set_requires_grad(), up = Tensor::randn({kRows, 1536}, 2).set_requires_grad();
  Tensor g = Tensor::randn({kRows, 1536}, 3);
  for (auto _ : st) {
    gated_act(gate, up, Activation::SiLU).backward(g);
    gate.zero_grad(), up.zero_grad();
  }
}

}  // namespace

// {in, out}: q/o (576 -> 576), k/v (576 -> 192), gate/up (576 -> 1536), down (1536 -> 576).
#define LORA_SHAPES ->Args({576, 576})->Args({576, 192})->Args({576, 1536})->Args({1536, 576})->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond)
BENCHMARK(LoraFused) LORA_SHAPES;
BENCHMARK(LoraUnfused) LORA_SHAPES;
BENCHMARK(LoraFusedBf16) LORA_SHAPES;
BENCHMARK(LmHeadCeFused)->Args({50304, 0})->Args({50304, 128})->Args({50304, 256})->Args({50304, 512})->Args({50304, 1024})->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
BENCHMARK(LmHeadCeBf16)->ArgsProduct({{49152}, {16, 4}, {128, 170, 205, 256, 342}})->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
BENCHMARK(LmHeadCeUnfused)->Args({50304, 0})->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
BENCHMARK(Attention)->Arg(256)->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
BENCHMARK(GatedSilu)->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
