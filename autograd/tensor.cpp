#include "autograd/tensor.h"
#include "autograd/quant.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <mutex>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include <tbb/parallel_for.h>

#include "autograd/autograd.h"
#include "autograd/profile.h"
#include "autograd/random.h"

namespace ft {

namespace {
std::atomic<int64_t> g_current{0}, g_peak{0}, g_high_water{0};
void count_alloc(int64_t n) {
  int64_t cur = g_current.fetch_add(n) + n;
  int64_t p = g_peak.load();
  while (cur > p && !g_peak.compare_exchange_weak(p, cur)) {}
  int64_t h = g_high_water.load();
  while (cur > h && !g_high_water.compare_exchange_weak(h, cur)) {}
}
}  // namespace

MemoryStats memory_stats() { return {g_current.load(), g_peak.load(), g_high_water.load()}; }
void reset_peak_memory() { g_peak.store(g_current.load()); }

int64_t peak_rss_bytes() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;
}

int64_t current_rss_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long pages = 0, rss = 0;
  if (std::fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
  std::fclose(f);
  return int64_t(rss) * int64_t(sysconf(_SC_PAGESIZE));
}

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) { st[i] = s; s *= shape[i]; }
  return st;
}

Storage::~Storage() {
  if (counted) g_current.fetch_sub(int64_t(nbytes));
}

namespace {

// Large blocks freed by tensors are kept for the next tensor of the same size (a training step
// allocates the same activation and gradient sizes every step). Without this, each such block is a
// fresh mmap from the C library: the kernel faults in and zeroes every page on first touch, and
// with many threads faulting at once they queue on the process's memory map lock. A request that
// finds no block of its size first frees cached blocks until live + cached bytes are back within
// the process's high-water mark of live bytes (plus a slack of 5%, at most 128 MiB), so resident
// memory stays where it would be without the cache.
// Off under AddressSanitizer (it would hide use after free) and with FT_STORAGE_CACHE=0.
constexpr size_t kCacheMinBytes = size_t(1) << 20;
constexpr size_t kCacheRound = size_t(64) << 10;  // sizes rounded up to 64 KiB: at most 6% slack
constexpr size_t kCacheMaxBlocks = 512;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCacheBuilt = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCacheBuilt = false;
#else
constexpr bool kCacheBuilt = true;
#endif
#else
constexpr bool kCacheBuilt = true;
#endif

class BlockCache {
 public:
  static BlockCache& get() {
    static BlockCache* c = new BlockCache;  // never destroyed: tensors may die during static destruction
    return *c;
  }
  bool on() const { return on_; }
  // A cached block for n bytes: one of exactly n, else the smallest of at most 2n (its own size
  // returned in *got), else null, after freeing (smallest first: the large ones are the most
  // expensive to fault in again) as many cached blocks as keep live + cached + n bytes within the
  // high-water mark of live bytes plus a slack.
  void* take(size_t n, size_t* got) {
    std::vector<void*> evict;
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      size_t best = blocks_.size();
      for (size_t i = blocks_.size(); i-- > 0;) {  // newest first: most likely still in cache
        const size_t m = blocks_[i].n;
        if (m == n) { best = i; break; }
        if (m > n && m <= 2 * n && (best == blocks_.size() || m < blocks_[best].n)) best = i;
      }
      if (best < blocks_.size()) {
        p = blocks_[best].p;
        *got = blocks_[best].n;
        bytes_ -= *got;
        blocks_.erase(blocks_.begin() + std::ptrdiff_t(best));
      } else {
        std::sort(blocks_.begin(), blocks_.end(), [](const Entry& x, const Entry& y) { return x.n > y.n; });
        // Live + cached bytes may pass the process's high-water mark of live bytes (not the peak
        // that reset_peak_memory restarts, which the trainer does every step) by a little slack
        // (5%, at most 128 MiB): the blocks a step's high point needs then stay cached instead of
        // being freed and faulted in again at every step (135M bf16 training: ~28K page faults a
        // step -> ~0, peak RSS +0.7%).
        const int64_t peak = g_high_water.load(), slack = std::min<int64_t>(peak / 20, int64_t(128) << 20);
        const int64_t over = g_current.load() + int64_t(bytes_) + int64_t(n) - (peak + slack);
        size_t freed = 0;
        while (over > 0 && !blocks_.empty() && int64_t(freed) < over) {
          freed += blocks_.back().n;
          evict.push_back(blocks_.back().p);
          blocks_.pop_back();
        }
        bytes_ -= freed;
      }
    }
    for (void* q : evict) std::free(q);
    return p;
  }
  void give(void* p, size_t n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (blocks_.size() < kCacheMaxBlocks) {
        blocks_.push_back({p, n});
        bytes_ += n;
        return;
      }
    }
    std::free(p);
  }
  size_t release() {
    std::vector<Entry> all;
    size_t b;
    {
      std::lock_guard<std::mutex> lock(mu_);
      all.swap(blocks_);
      b = bytes_;
      bytes_ = 0;
    }
    for (const Entry& e : all) std::free(e.p);
    return b;
  }
  size_t bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return bytes_;
  }

 private:
  BlockCache() {
    const char* e = std::getenv("FT_STORAGE_CACHE");
    on_ = kCacheBuilt && !(e && std::strcmp(e, "0") == 0);
  }
  struct Entry {
    void* p;
    size_t n;
  };
  std::mutex mu_;
  std::vector<Entry> blocks_;
  size_t bytes_ = 0;
  bool on_ = true;
};

}  // namespace

size_t cached_storage_bytes() { return BlockCache::get().bytes(); }
size_t release_cached_storage() { return BlockCache::get().release(); }

std::shared_ptr<Storage> Storage::allocate(size_t nbytes) {
  auto s = std::make_shared<Storage>();
  size_t n = (std::max<size_t>(nbytes, 1) + 63) / 64 * 64;
  BlockCache& cache = BlockCache::get();
  const bool cached = cache.on() && n >= kCacheMinBytes;
  if (cached) n = (n + kCacheRound - 1) / kCacheRound * kCacheRound;
  void* p = cached ? cache.take(n, &n) : nullptr;
  if (!p) p = std::aligned_alloc(64, n);
  if (!p) throw Error(cat("out of memory allocating ", nbytes, " bytes"));
  s->ptr = p;
  s->nbytes = nbytes;
  if (cached) s->owner = std::shared_ptr<void>(p, [n](void* q) { BlockCache::get().give(q, n); });
  else s->owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  s->counted = true;
  count_alloc(int64_t(nbytes));
  return s;
}

std::shared_ptr<Storage> Storage::external(void* ptr, size_t nbytes, std::shared_ptr<void> owner) {
  auto s = std::make_shared<Storage>();
  s->ptr = ptr;
  s->nbytes = nbytes;
  s->owner = std::move(owner);
  return s;
}

static void check_shape(const Shape& shape) {
  for (int64_t d : shape) FT_CHECK(d >= 0, "negative dimension in shape ", ft::shape_str(shape));
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  check_shape(shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  impl->storage = Storage::allocate(size_t(numel_of(shape)) * dtype_size(dtype));
  return Tensor(impl);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  FT_CHECK(int64_t(v.size()) == numel_of(shape), "from_vector: ", v.size(), " values for shape ", ft::shape_str(shape));
  Tensor t = empty(shape);
  if (!v.empty()) std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::from_ids(const std::vector<int32_t>& v, const Shape& shape) {
  FT_CHECK(int64_t(v.size()) == numel_of(shape), "from_ids: ", v.size(), " ids for shape ", ft::shape_str(shape));
  Tensor t = empty(shape, DType::I32);
  if (!v.empty()) std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::from_external(const void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner) {
  check_shape(shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  impl->storage = Storage::external(const_cast<void*>(data), size_t(numel_of(shape)) * dtype_size(dtype), std::move(owner));
  return Tensor(impl);
}

Tensor Tensor::randn(const Shape& shape, uint64_t seed, float stddev) {
  Tensor t = empty(shape);
  float* p = t.data<float>();
  int64_t n = t.numel();
  tbb::parallel_for(int64_t(0), (n + 4095) / 4096, [&](int64_t blk) {
    for (int64_t i = blk * 4096, e = std::min(n, i + 4096); i < e; ++i) p[i] = stddev * normal_at(seed, uint64_t(i));
  });
  return t;
}

Tensor Tensor::uniform(const Shape& shape, uint64_t seed, float lo, float hi) {
  Tensor t = empty(shape);
  float* p = t.data<float>();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = lo + (hi - lo) * uniform_at(seed, uint64_t(i));
  return t;
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  FT_CHECK(d >= 0 && d < n, "dimension ", d, " out of range for shape ", ft::shape_str(shape()));
  return impl_->shape[size_t(d)];
}

bool Tensor::is_contiguous() const {
  int64_t s = 1;
  for (size_t i = impl_->shape.size(); i-- > 0;) {
    if (impl_->shape[i] != 1 && impl_->strides[i] != s) return false;
    s *= impl_->shape[i];
  }
  return true;
}

size_t Tensor::nbytes() const {
  if (impl_->dtype == DType::Q) return impl_->quant ? impl_->quant->nbytes() : 0;
  return size_t(numel()) * dtype_size(dtype());
}

void* Tensor::raw() const {
  FT_CHECK(impl_->storage, "tensor ", ft::shape_str(shape()), " holds no data (a graph edge kept only for its shape)");
  return static_cast<char*>(impl_->storage->ptr) + impl_->offset * int64_t(dtype_size(impl_->dtype));
}

Tensor Tensor::view(const Shape& shape_in) const {
  FT_CHECK(dtype() != DType::Q, "view of a quantized matrix ", ft::shape_str(shape()), " (it has no per-element layout)");
  FT_CHECK(is_contiguous(), "view of a non-contiguous tensor ", ft::shape_str(shape()), " (call contiguous() first)");
  Shape shape = shape_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) { FT_CHECK(infer < 0, "view: more than one -1 in ", ft::shape_str(shape_in)); infer = int64_t(i); }
    else known *= shape[i];
  }
  if (infer >= 0) {
    FT_CHECK(known > 0 && numel() % known == 0, "view: cannot reshape ", ft::shape_str(this->shape()), " to ", ft::shape_str(shape_in));
    shape[size_t(infer)] = numel() / known;
  }
  FT_CHECK(numel_of(shape) == numel(), "view: cannot reshape ", ft::shape_str(this->shape()), " (", numel(), " elements) to ", ft::shape_str(shape_in));
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->grad_fn.reset(); impl->grad.reset(); impl->requires_grad = false;
  return Tensor(impl);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  int64_t n = dim();
  if (d < 0) d += n;
  FT_CHECK(d >= 0 && d < n, "slice: dim ", d, " out of range for ", ft::shape_str(shape()));
  int64_t len = impl_->shape[size_t(d)];
  FT_CHECK(0 <= start && start <= end && end <= len, "slice: [", start, ", ", end, ") out of range for dim ", d, " of ", ft::shape_str(shape()));
  if (dtype() == DType::Q) {
    FT_CHECK(d == 0, "slice of a quantized matrix along dim ", d, " (only whole rows can be sliced)");
    return quant_slice_rows(*this, start, end);
  }
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->offset += start * impl_->strides[size_t(d)];
  impl->shape[size_t(d)] = end - start;
  impl->grad_fn.reset(); impl->grad.reset(); impl->requires_grad = false;
  return Tensor(impl);
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  int64_t n = dim();
  if (a < 0) a += n;
  if (b < 0) b += n;
  FT_CHECK(a >= 0 && a < n && b >= 0 && b < n, "transpose: dims ", a, ", ", b, " out of range for ", ft::shape_str(shape()));
  FT_CHECK(dtype() != DType::Q, "transpose of a quantized matrix (it has no per-element layout)");
  auto impl = std::make_shared<TensorImpl>(*impl_);
  std::swap(impl->shape[size_t(a)], impl->shape[size_t(b)]);
  std::swap(impl->strides[size_t(a)], impl->strides[size_t(b)]);
  impl->grad_fn.reset(); impl->grad.reset(); impl->requires_grad = false;
  return Tensor(impl);
}

namespace {
// Copies a strided tensor into contiguous memory of the same dtype.
void strided_copy(const Tensor& src, void* dst) {
  const size_t es = dtype_size(src.dtype());
  const Shape& sh = src.shape();
  const Shape& st = src.strides();
  int64_t nd = src.dim();
  if (nd == 0) { std::memcpy(dst, src.raw(), es); return; }
  int64_t inner = sh[size_t(nd - 1)], istride = st[size_t(nd - 1)];
  int64_t outer = src.numel() / std::max<int64_t>(inner, 1);
  if (inner == 0) return;
  const char* base = static_cast<const char*>(src.raw());
  char* out = static_cast<char*>(dst);
  tbb::parallel_for(int64_t(0), outer, [&](int64_t o) {
    int64_t rem = o, off = 0;
    for (int64_t d = nd - 2; d >= 0; --d) { off += (rem % sh[size_t(d)]) * st[size_t(d)]; rem /= sh[size_t(d)]; }
    const char* s = base + off * int64_t(es);
    char* dd = out + o * inner * int64_t(es);
    if (istride == 1) std::memcpy(dd, s, size_t(inner) * es);
    else for (int64_t i = 0; i < inner; ++i) std::memcpy(dd + i * int64_t(es), s + i * istride * int64_t(es), es);
  });
}
}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  FT_PROFILE_SCOPE("copy: contiguous");
  Tensor out = empty(shape(), dtype());
  strided_copy(*this, out.raw());
  return out;
}

Tensor Tensor::clone() const {
  if (dtype() == DType::Q) return *this;  // read-only: sharing is copying
  Tensor out = empty(shape(), dtype());
  if (is_contiguous()) std::memcpy(out.raw(), raw(), nbytes());
  else strided_copy(*this, out.raw());
  return out;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  FT_PROFILE_SCOPE("copy: to dtype");
  if (dtype() == DType::Q) {  // an explicit dequantised copy (merge, export); kernels never do this
    Tensor f = dequantize(*this);
    return dt == DType::F32 ? f : f.to(dt);
  }
  FT_CHECK(dt != DType::Q, "to(quantized): quantize with ft::quantize_affine (autograd/quant.h)");
  Tensor c = contiguous();
  Tensor out = empty(shape(), dt);
  convert(c.raw(), c.dtype(), out.raw(), dt, size_t(numel()));
  return out;
}

void Tensor::copy_(const Tensor& src) {
  FT_CHECK(src.shape() == shape(), "copy_: shape ", ft::shape_str(src.shape()), " into ", ft::shape_str(shape()));
  FT_CHECK(is_contiguous(), "copy_ into a non-contiguous tensor");
  Tensor c = src.dtype() == DType::Q ? src.to(DType::F32) : src.contiguous();
  convert(c.raw(), c.dtype(), raw(), dtype(), size_t(numel()));
}

void Tensor::fill_(float v) {
  FT_CHECK(is_contiguous(), "fill_ on a non-contiguous tensor");
  int64_t n = numel();
  switch (dtype()) {
    case DType::F32: { float* p = data<float>(); for (int64_t i = 0; i < n; ++i) p[i] = v; break; }
    case DType::BF16: { uint16_t b = f32_to_bf16(v), *p = data<uint16_t>(); for (int64_t i = 0; i < n; ++i) p[i] = b; break; }
    case DType::F16: { uint16_t b = f32_to_f16(v), *p = data<uint16_t>(); for (int64_t i = 0; i < n; ++i) p[i] = b; break; }
    case DType::I32: { int32_t* p = data<int32_t>(); for (int64_t i = 0; i < n; ++i) p[i] = int32_t(v); break; }
    case DType::I64: { int64_t* p = data<int64_t>(); for (int64_t i = 0; i < n; ++i) p[i] = int64_t(v); break; }
    case DType::Q: throw Error("fill_ on a quantized matrix (it is read-only)");
  }
}

Tensor& Tensor::set_requires_grad(bool r) {
 FT_CHECK(!r || dtype() != DType::Q, "a quantized weight ", ft::shape_str(shape()),
           " is frozen: it cannot be trained (train a LoRA/DoRA adapter on it, or load the model unquantized for full fine-tuning)");
  FT_CHECK(!r || is_float(dtype()), "requires_grad on a ", dtype_name(dtype()), " tensor: only float tensors have gradients");
  FT_CHECK(!impl_->grad_fn, "set_requires_grad on a non-leaf tensor (detach() it first)");
  impl_->requires_grad = r;
  return *this;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->grad_fn.reset(); impl->grad.reset(); impl->requires_grad = false;
  return Tensor(impl);
}

void Tensor::backward(const Tensor& grad) const { run_backward(*this, grad); }

float Tensor::item() const {
  FT_CHECK(numel() == 1, "item() on a tensor of shape ", ft::shape_str(shape()), " (needs exactly one element)");
  float v;
  convert(raw(), dtype(), &v, DType::F32, 1);
  return v;
}

std::vector<float> Tensor::to_vector() const {
  Tensor c = dtype() == DType::Q ? to(DType::F32) : contiguous();
  std::vector<float> v(static_cast<size_t>(numel()));
  convert(c.raw(), c.dtype(), v.data(), DType::F32, v.size());
  return v;
}

std::vector<int32_t> Tensor::to_ids() const {
  FT_CHECK(dtype() == DType::I32 || dtype() == DType::I64, "to_ids on a ", dtype_name(dtype()), " tensor");
  Tensor c = contiguous().to(DType::I32);
  const int32_t* p = c.data<int32_t>();
  return std::vector<int32_t>(p, p + numel());
}

}  // namespace ft
