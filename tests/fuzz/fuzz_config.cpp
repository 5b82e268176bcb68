// config.json / generation_config.json: any text is a config whose derived data (weight list,
// RoPE frequencies) can be computed, or an ft::Error.
#include <string>

#include "autograd/error.h"
#include "models/config.h"
#include "models/rope.h"
#include "tests/fuzz/fuzz_targets.h"

namespace ft::fuzz {

int config(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    ModelConfig c = parse_model_config(text, "fuzz/config.json");
    FT_FUZZ_ASSERT(int64_t(c.layers.size()) == c.num_layers, "layers.size() != num_hidden_layers");
    FT_FUZZ_ASSERT(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.num_heads > 0 &&
                       c.num_kv_heads > 0 && c.head_dim > 0 && c.num_heads % c.num_kv_heads == 0,
                   "a parsed config has a non-positive size");
    auto w = expected_weights(c);
    FT_FUZZ_ASSERT(!w.empty(), "no weights");
    for (const LayerSpec& l : c.layers) {
      (void)rope_inv_freq(l.rope, int(c.head_dim));
      (void)rope_inv_freq(l.rope, int(c.head_dim), c.max_position_embeddings + 1);
    }
  } catch (const Error&) {
  }
  try {
    (void)parse_generation_config(text, "fuzz/generation_config.json");
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace ft::fuzz
