#pragma once
// Tests that run a kernel on every ISA path this CPU has (FT_ISA levels, autograd/cpu.h).
#include <string>
#include <vector>

#include "autograd/cpu.h"

namespace ft::testing {

// "baseline", then each of "avx2", "avx512f", "avx512" (AVX-512 + BF16), "amx" (AMX tiles) the
// hardware supports.
inline std::vector<std::string> isa_levels() {
  std::vector<std::string> v = {"baseline"};
  const CpuFeatures& hw = cpu_features_hw();
  if (hw.avx2) v.push_back("avx2");
  if (hw.avx512f) v.push_back("avx512f");
  if (hw.avx512bf16) v.push_back("avx512");
  if (hw.amx) v.push_back("amx");
  return v;
}

// Restores the ISA in effect when the test started.
struct IsaGuard {
  std::string saved = isa_name();
  ~IsaGuard() { set_isa(saved); }
};

}  // namespace ft::testing
