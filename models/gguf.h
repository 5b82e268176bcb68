#pragma once
// GGUF (llama.cpp / ollama): the container — reader (mmap, every count, offset and size checked
// against the file before use) and writer (atomic). Format: shared/docs/formats.md "GGUF" and
// ggml's docs/gguf.md; the block layouts of the quantised types are in models/gguf_quant.h.
//
//   "GGUF", u32 version (2 or 3), u64 tensor count, u64 metadata count,
//   metadata: (u64 len + key bytes, u32 value type, value)*,
//   tensor infos: (u64 len + name, u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset)*,
//   padding to general.alignment (default 32), tensor data (each offset a multiple of the alignment).
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autograd/file_io.h"

namespace ft {

// ggml tensor types ft reads or writes.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q4_K = 12, Q5_K = 13, Q6_K = 14, BF16 = 30
};
const char* ggml_type_name(GgmlType t);                  // "F32", "Q4_K", ...
std::optional<GgmlType> ggml_type_from_u32(uint32_t v);  // nullopt for types ft does not know
std::optional<GgmlType> ggml_type_from_name(const std::string& s);  // "f16", "q4_k", ... (any case)
int64_t ggml_block_size(GgmlType t);   // elements per block (1 for F32/F16/BF16)
size_t ggml_block_bytes(GgmlType t);   // bytes per block
bool ggml_is_quantized(GgmlType t);

// GGUF metadata value types.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12
};
const char* gguf_type_name(GgufType t);

// One metadata value. Scalars: integers and bools in `i` (U64 in `u`), floats in `f`, strings in `s`.
// Arrays: `elem` is the element type; strings in `strs`, integers/bools in `ints`, floats in `floats`.
struct GgufValue {
  GgufType type = GgufType::U32;
  GgufType elem = GgufType::U32;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string s;
  std::vector<std::string> strs;
  std::vector<int64_t> ints;
  std::vector<double> floats;

  static GgufValue u32(uint32_t v) { GgufValue x; x.type = GgufType::U32; x.i = v; return x; }
  static GgufValue i32(int32_t v) { GgufValue x; x.type = GgufType::I32; x.i = v; return x; }
  static GgufValue f32(float v) { GgufValue x; x.type = GgufType::F32; x.f = v; return x; }
  static GgufValue boolean(bool v) { GgufValue x; x.type = GgufType::BOOL; x.i = v; return x; }
  static GgufValue str(std::string v) { GgufValue x; x.type = GgufType::STRING; x.s = std::move(v); return x; }
  static GgufValue str_array(std::vector<std::string> v);
  static GgufValue f32_array(std::vector<double> v);
  static GgufValue i32_array(std::vector<int64_t> v);
  size_t array_size() const;  // elements of an ARRAY (0 for scalars)
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // dims, innermost first (ggml order): a [rows, cols] matrix has ne {cols, rows}
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;      // from the start of the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const;
  std::vector<int64_t> shape() const { return {ne.rbegin(), ne.rend()}; }  // row-major (outermost first)
};

// An open GGUF file (read-only mapping kept alive by the shared_ptr). Every error names the file
// and the key or tensor.
class GgufFile : public std::enable_shared_from_this<GgufFile> {
 public:
  static std::shared_ptr<GgufFile> open(const std::string& path);
  // Parses an in-memory image (takes ownership); `name` is used in messages (the fuzz target).
  static std::shared_ptr<GgufFile> from_bytes(std::vector<uint8_t> bytes, const std::string& name);
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* tensor(const std::string& name) const;
  std::shared_ptr<const void> keep_alive() const { return shared_from_this(); }
  // Tells the kernel that t's bytes will not be read again soon (a mapped file: its whole pages
  // leave this process's resident memory; they are read back from the file if touched again).
  void release(const GgufTensorInfo& t) const;

  // Typed getters: throw "<file>: metadata key 'K' is missing" / "... must be <type>, got <type>".
  std::string get_str(const std::string& key) const;
  int64_t get_int(const std::string& key) const;       // any integer type
  double get_float(const std::string& key) const;      // F32/F64 (or an integer)
  bool get_bool(const std::string& key) const;
  std::optional<int64_t> opt_int(const std::string& key) const;
  std::optional<double> opt_float(const std::string& key) const;
  std::optional<std::string> opt_str(const std::string& key) const;
  std::optional<bool> opt_bool(const std::string& key) const;

 private:
  GgufFile() = default;
  static std::shared_ptr<GgufFile> from_image(FileImage image, const std::string& name);
  void parse();
  std::string path_;
  FileImage image_;
  const uint8_t* base_ = nullptr;  // image_'s bytes
  size_t size_ = 0;
  uint32_t version_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF file in memory: metadata in insertion order, tensors in insertion order, each
// aligned to `alignment` bytes (written as general.alignment when not 32).
class GgufWriter {
 public:
  void set(const std::string& key, GgufValue v);  // replaces an existing key in place
  // `data` is copied; nbytes must equal ne's element count in `type`'s blocks.
  void add_tensor(const std::string& name, std::vector<int64_t> ne, GgmlType type, const void* data, size_t nbytes);
  std::string serialize() const;
  void write(const std::string& path) const;  // atomic (tmp + fsync + rename)
  size_t tensor_count() const { return tensors_.size(); }

 private:
  struct T {
    std::string name;
    std::vector<int64_t> ne;
    GgmlType type;
    std::string bytes;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<T> tensors_;
  uint64_t alignment_ = 32;
};

}  // namespace ft
