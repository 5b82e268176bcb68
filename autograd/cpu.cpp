#include "autograd/cpu.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>

#include "autograd/error.h"

namespace ft {
namespace {

// AMX-TILE and AMX-BF16 in CPUID, the tile state enabled in XCR0, and Linux's permission to
// use it (since 5.16 a process must ask: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)).
bool amx_usable() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tile = d & (1u << 24), bf16 = d & (1u << 22);
  if (!tile || !bf16) return false;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return false;  // XTILECFG and XTILEDATA
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
  __builtin_cpu_init();  // libgcc also checks XCR0, i.e. that the OS saves YMM/ZMM state
  f.fma = __builtin_cpu_supports("fma");
  unsigned a = 0, b = 0, c = 0, d = 0;  // F16C via cpuid: clang's __builtin_cpu_supports lacks "f16c"
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
  f.avx2 = __builtin_cpu_supports("avx2") && f.fma && f16c;
  f.avx512f = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  f.avx512bf16 = f.avx512f && __builtin_cpu_supports("avx512bf16");
  f.fast_bf16_dot = f.avx512bf16 && __builtin_cpu_is("amd");
  f.amx = f.avx512bf16 && amx_usable();
  f.avx512vnni = f.avx512f && __builtin_cpu_supports("avx512vnni");
  f.amx_int8 = f.amx && f.avx512vnni && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 25));
  // AVX-VNNI: CPUID.(EAX=7, ECX=1):EAX bit 4 (GCC 12's __builtin_cpu_supports has no name for it)
  f.avxvnni = f.avx2 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
  return f;
}

CpuFeatures capped(const CpuFeatures& hw, const std::string& level) {
  CpuFeatures f = hw;
  if (level == "amx" || level == "native" || level.empty()) return f;
  if (level == "avx512") { f.amx = f.amx_int8 = false; return f; }
  if (level == "avx512f") { f.avx512bf16 = f.fast_bf16_dot = f.amx = f.amx_int8 = f.avx512vnni = f.avxvnni = false; return f; }
  if (level == "avx2" || level == "avx2vnni") {
    f.avx512f = f.avx512bf16 = f.fast_bf16_dot = f.amx = f.amx_int8 = f.avx512vnni = false;
    if (level == "avx2") f.avxvnni = false;
    return f;
  }
  if (level == "baseline") return CpuFeatures{};
  throw Error(cat("ISA level '", level,
                  "' is unknown (FT_ISA / set_isa accept baseline, avx2, avx2vnni, avx512f, avx512, amx, native)"));
}

CpuFeatures& current() {
  static CpuFeatures f = [] {
    const char* e = std::getenv("FT_ISA");
    return capped(cpu_features_hw(), e ? e : "");
  }();
  return f;
}

}  // namespace

const CpuFeatures& cpu_features_hw() {
  static const CpuFeatures hw = detect();
  return hw;
}

const CpuFeatures& cpu_features() { return current(); }

void set_isa(const std::string& level) { current() = capped(cpu_features_hw(), level); }

const char* isa_name() {
  const CpuFeatures& f = cpu_features();
  return f.amx          ? "amx"
         : f.avx512bf16 ? "avx512"
         : f.avx512f    ? "avx512f"
         : f.avx2       ? (f.avxvnni ? "avx2vnni" : "avx2")
                        : "baseline";
}

namespace {
std::mutex g_threads_mu;
std::unique_ptr<tbb::global_control> g_threads;
}  // namespace

int num_threads() {
  int n = tbb::this_task_arena::max_concurrency();
  int cap = int(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
  return std::max(1, cap > 0 ? std::min(n, cap) : n);
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(g_threads_mu);
  g_threads.reset();
  if (n > 0)
    g_threads = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                      size_t(n));
}

}  // namespace ft
