// The run identity's content hash (optim/identity.h: XXH64 over 1 MiB chunks, chunks in parallel) over
// 256 MiB in memory, at 1 thread and all threads: what fingerprinting a model's weights costs per GB.
//   build/bench/bench_hash
#include <benchmark/benchmark.h>

#include <tbb/global_control.h>
#include <tbb/info.h>

#include <vector>

#include "optim/identity.h"

namespace {

void BM_ContentHash(benchmark::State& state) {
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism, size_t(state.range(0)));
  std::vector<unsigned char> v(size_t(256) << 20);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<unsigned char>(i * 2654435761u >> 13);
  for (auto _ : state) benchmark::DoNotOptimize(ft::content_hash(v.data(), v.size()));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(v.size()));
}
BENCHMARK(BM_ContentHash)->Arg(1)->Arg(tbb::info::default_concurrency())->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
