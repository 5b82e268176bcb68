// The fuzz entry points (tests/fuzz/fuzz_targets.h) over their seed corpus tests/fuzz/corpus/<target>/
// and over every input a fuzzer ever crashed on, tests/data/fuzz/<target>/: each must return normally
// (accepted, or rejected with ft::Error inside the entry point). Under FT_SANITIZE this also checks
// the inputs for memory errors, UB and leaks.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/fuzz/fuzz_targets.h"

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> inputs(const std::string& target, bool corpus) {
  fs::path dir = corpus ? fs::path(FT_TEST_DATA) / ".." / "fuzz" / "corpus" / target : fs::path(FT_TEST_DATA) / "fuzz" / target;
  std::vector<fs::path> r;
  if (fs::is_directory(dir))
    for (auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) r.push_back(e.path());
  std::sort(r.begin(), r.end());
  return r;
}

std::vector<uint8_t> bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

void replay(const std::string& target, bool corpus) {
  const auto& ts = ft::fuzz::targets();
  auto t = std::find_if(ts.begin(), ts.end(), [&](const ft::fuzz::Target& x) { return target == x.name; });
  ASSERT_NE(t, ts.end()) << target;
  auto files = inputs(target, corpus);
  if (corpus) EXPECT_GE(files.size(), 5u) << "seed corpus of " << target << " is missing";
  for (const fs::path& p : files) {
    std::vector<uint8_t> b = bytes(p);
    EXPECT_NO_THROW(t->fn(b.data(), b.size())) << p;
  }
  // The empty input and a few degenerate ones.
  for (std::string s : {std::string(), std::string(1, '\0'), std::string("{}"), std::string(64, '\xff')})
    EXPECT_NO_THROW(t->fn(reinterpret_cast<const uint8_t*>(s.data()), s.size())) << target;
}

}  // namespace

TEST(FuzzCorpus, Safetensors) { replay("safetensors", true); }
TEST(FuzzCorpus, Config) { replay("config", true); }
TEST(FuzzCorpus, TokenizerLoad) { replay("tokenizer_load", true); }
TEST(FuzzCorpus, TokenizerEncode) { replay("tokenizer_encode", true); }
TEST(FuzzCorpus, ChatTemplate) { replay("chat_template", true); }
TEST(FuzzCorpus, Jsonl) { replay("jsonl", true); }
TEST(FuzzRegressions, AllTargets) {
  for (const auto& t : ft::fuzz::targets()) replay(t.name, false);
}
