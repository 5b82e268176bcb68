// Dev timer (issue 11): ft's bf16 GEMM with rounded A (gemm_bf16w round_a: AMX tiles where the CPU
// has them, vdpbf16ps on AVX512-BF16) against oneDNN's bf16 matmul at the training shapes of
// bench/RESULTS.md, and oneDNN's exactness and thread-count determinism. Built only when oneDNN
// (Debian libdnnl-dev) is found; it is not part of ft.
//   build/bench/gemm_dnnl [threads] [min_seconds] [ft]     ("ft": ft's GEMM alone, no oneDNN)
// oneDNN: A fp32 -> bf16 by a reorder primitive (RNE, as ft rounds), B bf16 as stored (weights [N,K]
// used transposed through strides, or [K,N]), C fp32; primitives created once per shape and thread
// count (outside the timing). "dnnl" times reorder + matmul, "mm" the matmul alone. Errors: max over
// sampled rows of |C - ref| / Σ|a·b| with ref the fp64 sum of products of bf16-rounded A and B (the
// contract of gemm_bf16w round_a; tests/test_gemm.cpp allows 1e-5·sqrt(K) of it).
// ft runs on TBB threads (FT_NUM_THREADS), oneDNN on OpenMP's (omp_set_num_threads here); both use
// the main thread, so ft's AMX kernel must (and does) reload its tile configuration after oneDNN's.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/cpu.h"
#include "autograd/dtype.h"
#include "autograd/gemm.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace {

struct Shape {
  const char* name;
  int64_t M, N, K;
  bool tb;  // B stored [N,K] (linear forward x·Wᵀ); else [K,N] (dX = dY·W)
};

const Shape kShapes[] = {
    {"1B gate/up fwd [1024x2048].[2048x8192]T", 1024, 8192, 2048, true},
    {"1B gate/up dX  [1024x8192].[8192x2048]", 1024, 2048, 8192, false},
    {"1B q/o fwd     [1024x2048].[2048x2048]T", 1024, 2048, 2048, true},
    {"135M g/u fwd   [1024x576].[576x1536]T", 1024, 1536, 576, true},
    {"135M g/u dX    [1024x1536].[1536x576]", 1024, 576, 1536, false},
    {"LM head fwd    [1024x576].[576x50304]T", 1024, 50304, 576, true},
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double median_seconds(const F& f, double min_seconds) {
  f();  // warm-up (packing scratch, JIT, page faults)
  f();
  std::vector<double> t;
  const double start = now();
  while (t.size() < 5 || (now() - start < min_seconds && t.size() < 200)) {
    const double t0 = now();
    f();
    t.push_back(now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Dnnl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::memory a32, a16, b16, c32;
  dnnl::reorder cvt;
  dnnl::matmul mm;
  std::string impl;

  Dnnl(const Shape& s, float* A, uint16_t* B, float* C) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::memory::dims ad{s.M, s.K}, bd{s.K, s.N}, cd{s.M, s.N};
    dnnl::memory::desc a32d(ad, dt::f32, tag::ab), a16d(ad, dt::bf16, tag::ab);
    dnnl::memory::desc b16d(bd, dt::bf16, s.tb ? tag::ba : tag::ab);  // [N,K] stored: strides {1, K}
    dnnl::memory::desc c32d(cd, dt::f32, tag::ab);
    a32 = dnnl::memory(a32d, eng, A);
    a16 = dnnl::memory(a16d, eng);
    b16 = dnnl::memory(b16d, eng, B);
    c32 = dnnl::memory(c32d, eng, C);
    cvt = dnnl::reorder(a32, a16);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a16d, b16d, c32d), eng);
    impl = pd.impl_info_str();
    mm = dnnl::matmul(pd);
  }
  void convert() { cvt.execute(strm, a32, a16); }
  void matmul() {
    mm.execute(strm, {{DNNL_ARG_SRC, a16}, {DNNL_ARG_WEIGHTS, b16}, {DNNL_ARG_DST, c32}});
    strm.wait();
  }
};

// max over sampled rows of |C - ref| / Σ|a·b| (ref: bf16-rounded A times B, fp64).
double max_rel_err(const Shape& s, const std::vector<float>& A, const std::vector<uint16_t>& B,
                   const std::vector<float>& C) {
  double worst = 0;
  std::vector<double> ar(size_t(s.K));
#pragma omp parallel for reduction(max : worst) private(ar) schedule(dynamic)
  for (int64_t r = 0; r < 32; ++r) {
    const int64_t i = (r * 997) % s.M;
    ar.resize(size_t(s.K));
    for (int64_t k = 0; k < s.K; ++k) ar[size_t(k)] = ft::bf16_to_f32(ft::f32_to_bf16(A[size_t(i * s.K + k)]));
    for (int64_t j = 0; j < s.N; ++j) {
      double v = 0, sa = 0;
      for (int64_t k = 0; k < s.K; ++k) {
        const double b = ft::bf16_to_f32(B[size_t(s.tb ? j * s.K + k : k * s.N + j)]);
        v += ar[size_t(k)] * b;
        sa += std::fabs(ar[size_t(k)] * b);
      }
      worst = std::max(worst, std::fabs(double(C[size_t(i * s.N + j)]) - v) / (sa + 1e-300));
    }
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : ft::num_threads();
  const double min_s = argc > 2 ? std::atof(argv[2]) : 1.0;
  const bool ft_only = argc > 3 && std::string(argv[3]) == "ft";
  ft::set_num_threads(threads);
  const bool isa_ok = dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx512_core_amx) == dnnl::status::success;
  omp_set_num_threads(threads);
  std::printf("threads %d (ft %d, omp %d); ft isa %s, bf16 path %s; oneDNN %d.%d.%d, max isa amx %s\n",
              threads, ft::num_threads(), omp_get_max_threads(), ft::isa_name(), ft::gemm_bf16_dot_path(),
              dnnl::version()->major, dnnl::version()->minor, dnnl::version()->patch, isa_ok ? "set" : "refused");
  std::printf("%-42s %9s %9s %9s %7s %10s %10s %7s  %s\n", "shape", "ft GF/s", "dnnl GF/s", "mm GF/s",
              "dnnl/ft", "ft err", "dnnl err", "1..T", "oneDNN impl");
  for (const Shape& s : kShapes) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> A(size_t(s.M * s.K)), Cf(size_t(s.M * s.N)), Cd(Cf.size()), Ct(Cf.size());
    std::vector<uint16_t> B(size_t(s.K * s.N));
    for (float& x : A) x = u(rng);
    for (uint16_t& x : B) x = ft::f32_to_bf16(u(rng));
    const double flops = 2.0 * double(s.M) * double(s.N) * double(s.K);

    auto ft_run = [&] {
      ft::gemm_bf16w(false, s.tb, s.M, s.N, s.K, 1.0f, A.data(), s.K, B.data(), s.tb ? s.K : s.N, 0.0f,
                     Cf.data(), s.N, /*round_a=*/true);
    };
    if (ft_only) {
      const double t = median_seconds(ft_run, min_s);
      std::printf("%-42s %9.0f %9s %9s %7s %10.2e\n", s.name, flops / t * 1e-9, "-", "-", "-", max_rel_err(s, A, B, Cf));
      std::fflush(stdout);
      continue;
    }
    omp_set_num_threads(threads);
    Dnnl d(s, A.data(), B.data(), Cd.data());
    // Three rounds in turn (the host's speed drifts); the best median of each.
    double t_ft = 1e30, t_dn = 1e30, t_mm = 1e30;
    for (int round = 0; round < 3; ++round) {
      t_ft = std::min(t_ft, median_seconds(ft_run, min_s / 3));
      t_dn = std::min(t_dn, median_seconds([&] { d.convert(); d.matmul(); }, min_s / 3));
      t_mm = std::min(t_mm, median_seconds([&] { d.matmul(); }, min_s / 3));
    }
    ft_run();
    d.convert();
    d.matmul();

    // Thread-count determinism: the same bits with 1, 2, 3, 7 threads (primitives made per count).
    bool same = true;
    for (int t : {1, 2, 3, 7}) {
      if (t >= threads) continue;
      omp_set_num_threads(t);
      Dnnl dt(s, A.data(), B.data(), Ct.data());
      dt.convert();
      dt.matmul();
      same = same && std::memcmp(Ct.data(), Cd.data(), Cd.size() * sizeof(float)) == 0;
    }
    omp_set_num_threads(threads);

    const double ef = max_rel_err(s, A, B, Cf), ed = max_rel_err(s, A, B, Cd);
    std::printf("%-42s %9.0f %9.0f %9.0f %6.2fx %10.2e %10.2e %7s  %s\n", s.name, flops / t_ft * 1e-9,
                flops / t_dn * 1e-9, flops / t_mm * 1e-9, t_ft / t_dn, ef, ed, same ? "same" : "DIFFER",
                d.impl.c_str());
    std::fflush(stdout);
  }
  return 0;
}
