#pragma once
// Model -> GGUF as llama.cpp loads it (what convert_hf_to_gguf.py writes for the same checkpoint):
// architecture keys, tokenizer (byte-level BPE as `gpt2` with merges and tokenizer.ggml.pre;
// SentencePiece-style BPE as `llama` with scores, token types and byte tokens), special ids,
// add-BOS/EOS flags, chat template, and each family's conventions:
//   llama/mistral  q/k rows permuted to llama.cpp's interleaved RoPE pairs (gguf_permute_rows)
//   llama3 rope    rope_freqs.weight (one divisor per frequency pair)
//   gemma*         RMSNorm weights stored as 1 + w; query_pre_attn_scalar != head_dim folded into
//                  the queries (llama.cpp scales by head_dim^-0.5)
//   phi3           fused attn_qkv / ffn_up, rope_factors_long/short + attn_factor
#include <string>
#include <vector>

#include "models/gguf.h"
#include "models/model.h"

namespace ft {

// llama.cpp's architecture name for a config: llama (Llama, Mistral), qwen2, qwen3, gemma,
// gemma2, gemma3, phi3. Throws for a family llama.cpp has no match for.
std::string gguf_arch(const ModelConfig& c);

// HF module path of a projection (model.layers.3.self_attn.q_proj) -> GGUF tensor base name
// (blk.3.attn_q); "" for names outside the decoder layers.
std::string gguf_tensor_base(const ModelConfig& c, const std::string& hf_module);

// True when llama.cpp runs this architecture with interleaved RoPE pairs, so q/k rows are permuted.
bool gguf_permutes_qk(const ModelConfig& c);
// Reorders the rows of a [rows, cols] row-major matrix (or a [rows] bias with cols = 1) from HF's
// rotate-half layout to llama.cpp's interleaved one, per head of rows / n_head rows. inverse = back.
std::vector<float> gguf_permute_rows(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head,
                                     bool inverse = false);
// The row order that undoes gguf_permute_rows: HF row i is llama.cpp row order[i].
std::vector<int64_t> gguf_unpermute_order(int64_t rows, int64_t n_head);
// Multiplier folded into the queries so that llama.cpp's head_dim^-0.5 gives ft's attn_scale (1 when equal).
double gguf_query_fold(const ModelConfig& c);

struct GgufExportOptions {
  // f32, f16, bf16, q8_0, q4_0, q4_k, q6_k; "" = the checkpoint's float type (a quantised model: a
  // GGUF source's own type when it is one of these, else f32). Quantised matrices are dequantised
  // one at a time and re-quantised to this type.
  std::string outtype;
  std::string name;     // general.name ("" = the model directory's name)
};

// Writes `path`. Returns notes on what llama.cpp cannot represent for this config (e.g. a sliding
// window on an architecture llama.cpp runs without one) and on tensors kept at higher precision
// because their rows do not fill the quantisation blocks; empty when the file is exact.
std::vector<std::string> export_gguf(const Model& m, const std::string& path, const GgufExportOptions& opt = {});

// The tokenizer + chat template metadata of a model directory as GGUF keys (tokenizer.ggml.*),
// with `n_vocab` tokens (ids the tokenizer lacks become unused [PAD<i>] tokens).
void gguf_add_tokenizer(GgufWriter& w, const std::string& model_dir, int64_t n_vocab, std::vector<std::string>& notes);

}  // namespace ft
