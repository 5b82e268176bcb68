#pragma once
// Fuzz entry points, one per input surface. Each takes arbitrary bytes and returns 0 when the input
// was accepted or rejected with an ft::Error; anything else is a bug: another exception (a broken
// invariant throws std::logic_error), a crash, a hang, a leak or a sanitizer report.
//
// Built two ways: as libFuzzer executables fuzz_<name> (tests/fuzz/CMakeLists.txt, FT_FUZZ=ON,
// clang, ASan+UBSan) and into ft_tests, where tests/test_fuzz_regressions.cpp replays the seed
// corpus tests/fuzz/corpus/<name>/ and the crash inputs tests/data/fuzz/<name>/ through them.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ft::fuzz {

int safetensors(const uint8_t* data, size_t size);       // SafetensorsFile::from_bytes + writer round trip
int config(const uint8_t* data, size_t size);            // parse_model_config / parse_generation_config
int tokenizer_load(const uint8_t* data, size_t size);    // tokenizer.json [NUL tokenizer_config.json] -> from_dir
int tokenizer_encode(const uint8_t* data, size_t size);  // text through fixed tokenizers (encode/decode/stream)
int chat_template(const uint8_t* data, size_t size);     // a template source rendered with fixed messages
int jsonl(const uint8_t* data, size_t size);             // dataset rows: read_rows + detect_format + make_dataset
int gguf(const uint8_t* data, size_t size);              // GgufFile::from_bytes + writer round trip + model loader

struct Target {
  const char* name;
  int (*fn)(const uint8_t*, size_t);
};
inline const std::vector<Target>& targets() {
  static const std::vector<Target> t = {{"safetensors", safetensors},
                                        {"config", config},
                                        {"tokenizer_load", tokenizer_load},
                                        {"tokenizer_encode", tokenizer_encode},
                                        {"chat_template", chat_template},
                                        {"jsonl", jsonl},
                                        {"gguf", gguf}};
  return t;
}

// A broken invariant: throws std::logic_error (libFuzzer reports the uncaught exception as a crash).
#define FT_FUZZ_ASSERT(cond, what) \
  do { if (!(cond)) throw std::logic_error(std::string("fuzz invariant failed: ") + (what)); } while (0)

// A per-process scratch directory (created on first use, removed at exit) for APIs that read files.
const std::string& scratch_dir();
// Writes bytes to scratch_dir()/name and returns the path.
std::string write_scratch(const std::string& name, const void* data, size_t size);

}  // namespace ft::fuzz
