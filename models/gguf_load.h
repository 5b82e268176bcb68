#pragma once
// GGUF -> Model: `--model m.gguf` wherever a model directory is accepted. The file's metadata is
// turned into what a HF directory holds (config.json from the architecture keys, tokenizer.json and
// tokenizer_config.json from tokenizer.ggml.*, encoding as llama.cpp does for that
// tokenizer.ggml.pre), and the tensors are mapped back to HF names with the export's conventions
// undone (llama q/k permutation, Gemma's 1 + w norms; llama3 rope_freqs are read as per-frequency
// factors). Every type of GgmlType is read; quantised matrices stay packed (re-expressed exactly as
// DType::Q affine groups, models/gguf_packed.h; rows of q/k reordered), float ones are stored in
// --dtype (or quantised with --quantize); 1-D tensors (norms, biases) are float32.
#include <memory>
#include <string>

#include "data/tokenizer.h"
#include "models/gguf.h"
#include "models/model.h"

namespace ft {

// A regular file starting with the GGUF magic.
bool is_gguf_file(const std::string& path);

// The HF texts equivalent to a GGUF file's metadata. Errors name the file and key.
struct GgufHfTexts {
  std::string config_json, tokenizer_json, tokenizer_config_json;
};
GgufHfTexts gguf_hf_texts(const GgufFile& f);

// The tokenizer of a model: a GGUF file's metadata, else Tokenizer::from_dir(path).
Tokenizer load_model_tokenizer(const std::string& path);

// Loads the model (m.dir = path). Errors name the file and the key or tensor.
Model load_gguf_model(const std::string& path, const LoadOptions& opt = {});

}  // namespace ft
