#pragma once
// Tensor: shape, dtype, 64-byte-aligned storage (owned, or a view into a mapped file), autograd links.
//
// Storage is shared; a Tensor has shape + strides (elements) + offset, so views are cheap.
// Views that never copy: Tensor::view (reshape of a contiguous tensor), Tensor::slice, Tensor::transpose.
// contiguous() copies only when the strides are not row-major. Kernels read contiguous inputs;
// autograd ops (autograd/ops.h) return fresh contiguous tensors.
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/dtype.h"
#include "autograd/error.h"

namespace ft {

using Shape = std::vector<int64_t>;
struct Node;
struct QuantParams;

int64_t numel_of(const Shape& s);

struct Storage {
  void* ptr = nullptr;
  size_t nbytes = 0;
  std::shared_ptr<void> owner;  // frees the memory (or keeps a mapping alive)
  bool counted = false;         // counted in the allocator statistics
  ~Storage();
  static std::shared_ptr<Storage> allocate(size_t nbytes);  // 64-byte aligned, uninitialised
  static std::shared_ptr<Storage> external(void* ptr, size_t nbytes, std::shared_ptr<void> owner);
};

// Bytes currently held in owned tensor storage, the high-water mark since reset_peak_memory(), and
// the process's high-water mark (never reset).
struct MemoryStats { int64_t current, peak, high_water; };
MemoryStats memory_stats();
void reset_peak_memory();
// Large tensor blocks (1 MiB and up) are kept after their tensors die, for the next tensor of the
// same size (no page faults for the kernel to serve again); a request that finds none first frees
// cached blocks of other sizes while live + cached bytes would pass the process's high-water mark
// (MemoryStats::high_water) plus 5% (at most 128 MiB). The bytes held so far, and a way to hand them all back to the C
// library (e.g. after training, before a long idle time). FT_STORAGE_CACHE=0 turns the cache off.
size_t cached_storage_bytes();
size_t release_cached_storage();
// Process resident memory (peak and current) from the OS, in bytes.
int64_t peak_rss_bytes();
int64_t current_rss_bytes();

struct TensorImpl {
  Shape shape, strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  std::shared_ptr<Storage> storage;
  bool requires_grad = false;       // leaf parameter, or result of a recorded op
  std::shared_ptr<Node> grad_fn;    // null for leaves
  std::shared_ptr<TensorImpl> grad; // accumulated gradient of a leaf
  std::shared_ptr<const QuantParams> quant;  // dtype Q only: packed codes + group parameters (autograd/quant.h)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  static Tensor full(const Shape& shape, float value, DType dtype = DType::F32);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);
  static Tensor from_ids(const std::vector<int32_t>& v, const Shape& shape);
  // A view of memory owned elsewhere (e.g. an mmap'd safetensors file); `owner` keeps it alive.
  static Tensor from_external(const void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner);
  // Seeded normal / uniform values (fp32), reproducible across runs and thread counts.
  static Tensor randn(const Shape& shape, uint64_t seed, float stddev = 1.f);
  static Tensor uniform(const Shape& shape, uint64_t seed, float lo, float hi);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  const Shape& strides() const { return impl_->strides; }
  int64_t dim() const { return int64_t(impl_->shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return numel_of(impl_->shape); }
  DType dtype() const { return impl_->dtype; }
  size_t nbytes() const;  // a quantized matrix: its packed codes + scales + biases
  bool is_contiguous() const;

  void* raw() const;  // pointer to the first element
  template <class T> T* data() const { return static_cast<T*>(raw()); }

  // Raw views (no autograd): see autograd/ops.h for the differentiable versions.
  Tensor view(const Shape& shape) const;  // contiguous only; one dim may be -1
  Tensor slice(int64_t dim, int64_t start, int64_t end) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor contiguous() const;  // self if already contiguous
  Tensor clone() const;       // always a contiguous copy (no autograd)
  Tensor to(DType dtype) const;  // self if same dtype
  void copy_(const Tensor& src); // same shape; converts dtype
  void fill_(float v);

  // Autograd.
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  Tensor& set_requires_grad(bool r = true);
  Tensor grad() const { return impl_->grad ? Tensor(impl_->grad) : Tensor(); }
  void set_grad(const Tensor& g) { impl_->grad = g.impl_; }
  void zero_grad() { impl_->grad.reset(); }
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  Tensor detach() const;  // same storage, no history
  void backward(const Tensor& grad = Tensor()) const;

  float item() const;  // single element, as float
  std::vector<float> to_vector() const;
  std::vector<int32_t> to_ids() const;
  std::string shape_str() const { return ft::shape_str(shape()); }

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

Shape contiguous_strides(const Shape& shape);

}  // namespace ft
