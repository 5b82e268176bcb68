#pragma once
// What several subcommands share: loading a model directory with its tokenizer, chat template and
// optional adapter (the public API's load, include/ft), with errors that name the file.
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "ft/detail/session.h"

namespace ft::cli {

// The loaded model, tokenizer, chat template and adapter: the public API's session state.
using Loaded = api::detail::SessionState;

// need_tokenizer: a missing/broken tokenizer is an error (else recorded in tokenizer_error).
// quantize > 0: quantise the base on load (bits; MLX affine with group_size, see models/model.h LoadOptions).
inline Loaded load_all(const std::string& model_dir, const std::string& adapter_dir, const std::string& dtype, bool need_tokenizer,
                       int quantize = 0, int group_size = 64) {
  return api::detail::load_state(model_dir, adapter_dir, dtype, need_tokenizer, quantize, group_size);
}
// Adds --quantize and --group-size to a subcommand.
void add_quantize_options(CLI::App* sub, int& quantize, int& group_size);
// "4-bit, group 64 (210 matrices)" or "" for a float model.
std::string quant_summary(const Model& m);
// --compute for generate/eval: float32, bfloat16 or int8, checked against the loaded model (bfloat16
// needs bf16 weights; int8 needs quantised matrices that qgemv_int8 supports), with the error naming what to add.
void check_compute(const std::string& compute, const Model& m, const std::string& model_path);
// The --compute help text (what each value changes).
extern const char* const kComputeHelp;

std::string human_bytes(double bytes);
std::string human_count(double n);

}  // namespace ft::cli
