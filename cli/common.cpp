#include "cli/common.h"

#include <cstdio>
#include <filesystem>
#include <map>

#include "autograd/quant.h"

namespace ft::cli {

namespace fs = std::filesystem;

void add_quantize_options(CLI::App* sub, int& quantize, int& group_size) {
  sub->add_option("--quantize", quantize, "Quantize the base on load: 4 or 8 bits (MLX affine; 2, 3, 5, 6 also work)")
      ->check(CLI::IsMember({2, 3, 4, 5, 6, 8}));
  sub->add_option("--group-size", group_size, "With --quantize: weights per group (32, 64 or 128)")->check(CLI::IsMember({32, 64, 128}));
}

std::string quant_summary(const Model& m) {
  std::map<std::pair<int, int>, int> n;
  auto qs = m.quantized_matrices();
  for (auto& [name, t] : qs) n[{quant_params(*t).bits, quant_params(*t).group_size}]++;
  std::string s;
  for (auto& [k, c] : n) s += cat(s.empty() ? "" : ", ", k.first, "-bit group ", k.second, " (", c, " matrices)");
  return s;
}

const char* const kComputeHelp =
    "Matmul precision: float32 (default: exact fp32 on every CPU, as transformers with dtype=float32), bfloat16 "
    "(bf16-weight matmuls round their inputs to bf16 and sum in fp32: faster on CPUs with AMX or AVX512-BF16; needs "
    "--dtype bfloat16) or int8 (quantised weights only: the products with them, prompt and eval batches as well as each "
    "decode step, round their input to int8 per block of 32 and sum integer products, as llama.cpp does for its "
    "quantised types; faster, not exact; 4- and 8-bit matrices with groups of 32/64/128, others stay exact)";

void check_compute(const std::string& compute, const Model& m, const std::string& model_path) {
  FT_CHECK(compute != "bfloat16" || m.lm_head.dtype() == DType::BF16, "--compute bfloat16 rounds the inputs of matmuls with "
           "bfloat16 weights, but this model's weights are held in ", dtype_name(m.lm_head.dtype()), ": add --dtype bfloat16");
  if (compute != "int8") return;
  const auto qs = m.quantized_matrices();
  FT_CHECK(!qs.empty(), "--compute int8 rounds the inputs of quantised weights' products to int8, but ", model_path,
           " has no quantised weights: add --quantize 4 (or 8), or load an MLX-quantised checkpoint or a quantised GGUF file");
  bool any = false;
  for (auto& [name, t] : qs) any = any || qgemv_int8_supported(quant_params(*t));
  FT_CHECK(any, "--compute int8 supports 4- and 8-bit matrices with groups of 32, 64 or 128, but ", model_path, " has only ",
           quant_summary(m), ": drop --compute int8 (these stay exact fp32 anyway)");
}

std::string human_bytes(double b) {
  char buf[32];
  const char* u[] = {"B", "KB", "MB", "GB", "TB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, ++i;
  std::snprintf(buf, sizeof buf, i ? "%.1f %s" : "%.0f %s", b, u[i]);
  return buf;
}

std::string human_count(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.1fM", n / 1e6);
  else if (n >= 1e3) std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

}  // namespace ft::cli
