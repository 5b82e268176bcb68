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
