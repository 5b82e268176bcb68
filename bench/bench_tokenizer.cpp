// Tokenizer throughput: encode 1 MB of Shakespeare (tests/data/tokenizers/tinyshakespeare.txt) with the
// GPT-2 (byte-level BPE) and Llama 2 (SentencePiece BPE) tokenizers, one thread. The unit test
// Tokenizer.OneMegabyteEncodesLosslessly checks the result; this times it (target: under 1 s per MB).
//   build/bench/bench_tokenizer
#include <benchmark/benchmark.h>

#include <fstream>
#include <string>

#include "data/tokenizer.h"

namespace {

const std::string kDir = std::string(FT_SOURCE_DIR) + "/tests/data/tokenizers/";

void BM_Encode1MB(benchmark::State& state, const char* which) {
  std::ifstream f(kDir + "tinyshakespeare.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(f)), {});
  ft::Tokenizer t = ft::Tokenizer::from_dir(kDir + which);
  t.set_clean_up_tokenization_spaces(false);
  size_t n = 0;
  for (auto _ : state) n = t.encode(text, false).size();
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["tokens"] = double(n);
}
BENCHMARK_CAPTURE(BM_Encode1MB, gpt2, "gpt2")->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(BM_Encode1MB, llama2, "llama2")->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
