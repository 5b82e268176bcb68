#pragma once
// safetensors: zero-copy reader (mmap), checkpoint directories (single file or sharded), atomic writer.
//
// Format (https://github.com/huggingface/safetensors): u64 LE header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}), then the
// data buffer. The reader validates exactly what the reference reader validates (header <= 100 MB,
// tensors cover the buffer without holes or overlaps, sizes match shape x dtype, buffer ends at EOF)
// and names the file and tensor in every error. The writer reproduces the reference layout byte for
// byte: compact JSON, tensors ordered by descending dtype alignment then name, header padded with
// spaces to a multiple of 8 (so an mmap'd buffer is aligned for every dtype).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "autograd/dtype.h"
#include "autograd/file_io.h"

namespace ft {

// Every element type of the safetensors format, in the reference's (ascending alignment) order.
enum class StDtype : uint8_t {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64
};
const char* st_dtype_name(StDtype t);                          // "BF16", "F8_E4M3", ...
std::optional<StDtype> st_dtype_from_name(const std::string& s);
size_t st_dtype_bits(StDtype t);                               // 4, 6, 8, 16, 32, 64
std::optional<DType> to_dtype(StDtype t);                      // F32/BF16/F16/I32/I64, else nullopt
StDtype to_st_dtype(DType t);

using SafetensorsMetadata = std::map<std::string, std::string>;

// One tensor of a safetensors file: a view into the mapping (or, for writing, into caller memory).
struct TensorRecord {
  std::string name;
  DType dtype = DType::F32;       // meaningful only when to_dtype(st_dtype) has a value
  StDtype st_dtype = StDtype::F32;  // the raw safetensors dtype ("F8_E4M3", "U8", ...)
  std::vector<int64_t> shape;
  const void* data = nullptr;     // row-major little-endian; 8-byte aligned when the writer padded
  size_t nbytes = 0;
  std::string file;               // file name the record came from (for error messages); may be empty

  int64_t numel() const;
  bool has_dtype() const { return to_dtype(st_dtype).has_value(); }
  // The dtype to load this record as a model weight: F32, BF16 or F16; anything else is an ft::Error
  // "unsupported dtype X for tensor Y; ft reads F32, BF16, F16".
  DType weight_dtype() const;
  // A view of caller memory for the writer (nbytes = numel x dtype size).
  static TensorRecord view(std::string name, DType dtype, std::vector<int64_t> shape, const void* data);
};

// An open safetensors file. The mapping lives as long as the shared_ptr (wrap records into tensors
// that hold keep_alive() to share ownership without copying).
class SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  // mmap's the file read-only (MAP_PRIVATE) and validates the header; throws ft::Error.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  // Parses an in-memory file image (takes ownership); `name` is used in error messages.
  static std::shared_ptr<SafetensorsFile> from_bytes(std::vector<uint8_t> bytes, const std::string& name);
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorRecord>& tensors() const { return tensors_; }  // in data-offset order
  const TensorRecord* find(const std::string& name) const;
  const TensorRecord& get(const std::string& name) const;  // throws naming the file and tensor
  const SafetensorsMetadata& metadata() const { return metadata_; }
  size_t file_size() const { return size_; }
  std::shared_ptr<const void> keep_alive() const { return shared_from_this(); }
  // Drops the resident pages of a tensor whose bytes were copied/converted (the loader's quantise on
  // load, scale widening, dtype conversion) so they stop counting in the RSS; a later read maps them
  // in again from the file. Only whole pages inside the tensor's range; no-op for in-memory images.
  void release(const TensorRecord& r) const { image_.release(r.data, r.nbytes); }

 private:
  SafetensorsFile() = default;
  static std::shared_ptr<SafetensorsFile> from_image(FileImage image, const std::string& name);
  void parse();
  std::string path_, label_;
  FileImage image_;
  const uint8_t* base_ = nullptr;  // image_'s bytes
  size_t size_ = 0;
  std::vector<TensorRecord> tensors_;
  std::unordered_map<std::string, size_t> index_;
  SafetensorsMetadata metadata_;
};

// A model checkpoint: `dir/model.safetensors`, or the shards listed by
// `dir/model.safetensors.index.json`, or a single .safetensors file path. Lookup by name across shards.
class CheckpointReader {
 public:
  static CheckpointReader open(const std::string& path);
  const TensorRecord* find(const std::string& name) const;
  const TensorRecord& get(const std::string& name) const;  // throws naming the checkpoint and tensor
  // The open file holding `name` (to keep its mapping alive); throws if absent.
  const std::shared_ptr<SafetensorsFile>& file_of(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  size_t size() const { return where_.size(); }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  const std::string& path() const { return path_; }
  uint64_t total_bytes() const;

 private:
  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>> where_;  // name -> (file, record)
};

// Called for a record whose `data` is null: write exactly rec.nbytes bytes to dst (lets merges compute
// one tensor at a time instead of holding the whole model).
using TensorProducer = std::function<void(const TensorRecord& rec, void* dst)>;

// Serialises tensors in the reference layout (see top). Tensor names must be unique and non-empty;
// nbytes must equal numel x dtype size.
std::vector<uint8_t> serialize_safetensors(const std::vector<TensorRecord>& tensors,
                                           const SafetensorsMetadata& metadata = {},
                                           const TensorProducer& produce = {});
// Writes `path` atomically: to `path.tmp`, fsync, rename over `path`, fsync the directory.
void write_safetensors(const std::string& path, const std::vector<TensorRecord>& tensors,
                       const SafetensorsMetadata& metadata = {}, const TensorProducer& produce = {});

// Writes a checkpoint into `dir` the way transformers' save_pretrained does: one `<prefix>.safetensors`
// if everything fits in max_shard_bytes, else `<prefix>-0000k-of-0000n.safetensors` (tensors kept in the
// given order, a new shard when the next tensor would overflow; an oversized tensor gets its own shard)
// plus `<prefix>.safetensors.index.json` {"metadata": {"total_size": N}, "weight_map": {...}}.
// Every shard carries `metadata`. Returns the file names written.
std::vector<std::string> write_safetensors_sharded(const std::string& dir, const std::vector<TensorRecord>& tensors,
                                                   uint64_t max_shard_bytes,
                                                   const SafetensorsMetadata& metadata = {{"format", "pt"}},
                                                   const TensorProducer& produce = {},
                                                   const std::string& prefix = "model");

}  // namespace ft
