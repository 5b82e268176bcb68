#pragma once
// Gradient sums that do not depend on how a batch's rows are grouped: into micro-batches, into the
// slices of data-parallel ranks (optim/data_parallel.h), or among threads.
//
// While a GradSum64 is current on this thread (GradSum64::Scope), an op that supports it (lora_linear, for the
// adapter's A and B) computes a parameter's gradient as fp32 partial sums over fixed chunks of each
// sequence (rows [j·kGradRowChunk, (j+1)·kGradRowChunk) from the sequence's start, so a sequence's
// partials are the same bits in whichever batch or rank it is computed) and adds them, in chunk
// order, to the parameter's fp64 sum instead of returning an fp32 gradient. Other ops' fp32
// gradients are folded in by absorb(). The sums of all micro-batches (and, under MPI, of all ranks,
// summed in fp64) are rounded to fp32 once, by finish(): the same gradient to within fp64
// reassociation, which almost never changes the fp32 result.
#include <cstdint>
#include <functional>
#include <vector>

#include "autograd/tensor.h"

namespace ft {

constexpr int64_t kGradRowChunk = 64;

class GradSum64 {
 public:
  // Tracks these leaves (parameters).
  explicit GradSum64(const std::vector<Tensor>& params);
  GradSum64(const GradSum64&) = delete;
  GradSum64& operator=(const GradSum64&) = delete;

  // Makes `sums` (may be null: none) this thread's current GradSum64 for the scope's lifetime.
  class Scope {
   public:
    explicit Scope(GradSum64* sums);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    GradSum64* prev_;
  };

  // The fp64 sum of t (marked as having a gradient), or nullptr when t is not tracked.
  double* sum_of(const Tensor& t);
  // Folds every tracked parameter's fp32 .grad() into its sum and clears the .grad().
  void absorb();
  // absorb(), then sets every parameter that received a gradient to its sum rounded to fp32 (the
  // others get none), and zeroes the sums for the next step.
  void finish();

  size_t size() const { return params_.size(); }
  std::vector<double>& sum(size_t i) { return sums_[i]; }
  bool has(size_t i) const { return has_[i] != 0; }
  void set_has(size_t i, bool h) { has_[i] = h; }

 private:
  std::vector<Tensor> params_;
  std::vector<std::vector<double>> sums_;
  std::vector<char> has_;
};

// This thread's current GradSum64, or nullptr.
GradSum64* current_grad_sum64();

// acc[0..n) += Σ over the row chunks of `rows` rows (sequences of `seq` rows, cut at kGradRowChunk
// from each sequence's start) of part(lo, hi, out): an fp32 partial of n values written to `out`
// (zeroed), added in chunk order whatever the thread count.
void add_row_chunks64(int64_t rows, int64_t seq, size_t n, double* acc,
                      const std::function<void(int64_t lo, int64_t hi, float* out)>& part);

}  // namespace ft
