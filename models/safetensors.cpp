#include "models/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "autograd/error.h"
#include "autograd/file_io.h"
#include "autograd/json_file.h"

namespace ft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the reference reader's limit

struct DtypeInfo { StDtype t; const char* name; size_t bits; };
constexpr DtypeInfo kDtypes[] = {
    {StDtype::BOOL, "BOOL", 8},       {StDtype::F4, "F4", 4},           {StDtype::F6_E2M3, "F6_E2M3", 6},
    {StDtype::F6_E3M2, "F6_E3M2", 6}, {StDtype::U8, "U8", 8},           {StDtype::I8, "I8", 8},
    {StDtype::F8_E5M2, "F8_E5M2", 8}, {StDtype::F8_E4M3, "F8_E4M3", 8}, {StDtype::F8_E8M0, "F8_E8M0", 8},
    {StDtype::I16, "I16", 16},        {StDtype::U16, "U16", 16},        {StDtype::F16, "F16", 16},
    {StDtype::BF16, "BF16", 16},      {StDtype::I32, "I32", 32},        {StDtype::U32, "U32", 32},
    {StDtype::F32, "F32", 32},        {StDtype::C64, "C64", 64},        {StDtype::F64, "F64", 64},
    {StDtype::I64, "I64", 64},        {StDtype::U64, "U64", 64},
};

std::string json_type(const json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

std::string errno_str() { return std::strerror(errno); }

// Writes all of [p, p+n) to fd; throws naming `path`.
void write_all(int fd, const void* p, size_t n, const std::string& path) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0 && errno == EINTR) continue;
    FT_CHECK(w > 0, path, ": write failed: ", errno_str(), " (disk full?)");
    c += w;
    n -= size_t(w);
  }
}

// The header JSON exactly as the reference writer emits it (serde_json compact).
std::string header_json(const std::vector<const TensorRecord*>& order, const std::vector<uint64_t>& begins,
                        const SafetensorsMetadata& metadata) {
  auto str = [](const std::string& s) {
    try {
      return json(s).dump();
    } catch (const json::exception&) {
      throw Error(cat("safetensors writer: name or metadata '", s, "' is not valid UTF-8"));
    }
  };
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool f2 = true;
    for (auto& [k, v] : metadata) {
      h += (f2 ? "" : ",") + str(k) + ":" + str(v);
      f2 = false;
    }
    h += "}";
    first = false;
  }
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorRecord& r = *order[i];
    h += (first ? "" : ",") + str(r.name) + ":{\"dtype\":\"" + st_dtype_name(r.st_dtype) + "\",\"shape\":[";
    for (size_t d = 0; d < r.shape.size(); ++d) h += (d ? "," : "") + std::to_string(r.shape[d]);
    h += "],\"data_offsets\":[" + std::to_string(begins[i]) + "," + std::to_string(begins[i] + r.nbytes) + "]}";
    first = false;
  }
  h += "}";
  h.resize((h.size() + 7) / 8 * 8, ' ');
  return h;
}

// Validates the records, orders them as the reference does and computes offsets.
std::string prepare(const std::vector<TensorRecord>& tensors, const SafetensorsMetadata& metadata,
                    const TensorProducer& produce, std::vector<const TensorRecord*>& order) {
  std::set<std::string> seen;
  for (const TensorRecord& r : tensors) {
    FT_CHECK(!r.name.empty() && r.name != "__metadata__", "safetensors writer: invalid tensor name '", r.name, "'");
    FT_CHECK(seen.insert(r.name).second, "safetensors writer: tensor '", r.name, "' is given twice");
    uint64_t numel = 1;
    for (int64_t d : r.shape) {
      FT_CHECK(d >= 0, "safetensors writer: tensor '", r.name, "' has negative dimension in shape ", shape_str(r.shape));
      numel *= uint64_t(d);
    }
    uint64_t bits = numel * st_dtype_bits(r.st_dtype);
    FT_CHECK(bits % 8 == 0 && bits / 8 == r.nbytes, "safetensors writer: tensor '", r.name, "' has ", r.nbytes,
             " bytes but shape ", shape_str(r.shape), " of ", st_dtype_name(r.st_dtype), " needs ", bits / 8.0);
    FT_CHECK(r.data || r.nbytes == 0 || produce, "safetensors writer: tensor '", r.name,
             "' has no data and no producer was given");
    order.push_back(&r);
  }
  std::sort(order.begin(), order.end(), [](const TensorRecord* a, const TensorRecord* b) {
    if (a->st_dtype != b->st_dtype) return a->st_dtype > b->st_dtype;
    return a->name < b->name;
  });
  std::vector<uint64_t> begins;
  uint64_t off = 0;
  for (auto* r : order) { begins.push_back(off); off += r->nbytes; }
  std::string h = header_json(order, begins, metadata);
  FT_CHECK(h.size() <= kMaxHeader, "safetensors writer: header of ", h.size(), " bytes exceeds the 100 MB limit");
  return h;
}

void le64(uint8_t* p, uint64_t v) { for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i)); }

// Writes body(fd, tmp) output through autograd/file_io.h's replace_file_atomic (tmp, fsync, rename).
template <class F>
void atomic_write(const std::string& path, F&& body) {
  replace_file_atomic(path, [&](const std::string& tmp) {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FT_CHECK(fd >= 0, "cannot create ", tmp, ": ", errno_str());
    try {
      body(fd, tmp);
    } catch (...) {
      ::close(fd);
      throw;
    }
    FT_CHECK(::close(fd) == 0, tmp, ": close failed: ", errno_str());
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------- dtypes

const char* st_dtype_name(StDtype t) { return kDtypes[size_t(t)].name; }
size_t st_dtype_bits(StDtype t) { return kDtypes[size_t(t)].bits; }

std::optional<StDtype> st_dtype_from_name(const std::string& s) {
  for (auto& d : kDtypes)
    if (s == d.name) return d.t;
  return std::nullopt;
}

std::optional<DType> to_dtype(StDtype t) {
  switch (t) {
    case StDtype::F32: return DType::F32;
    case StDtype::BF16: return DType::BF16;
    case StDtype::F16: return DType::F16;
    case StDtype::I32: return DType::I32;
    case StDtype::I64: return DType::I64;
    default: return std::nullopt;
  }
}

StDtype to_st_dtype(DType t) {
  switch (t) {
    case DType::F32: return StDtype::F32;
    case DType::BF16: return StDtype::BF16;
    case DType::F16: return StDtype::F16;
    case DType::I32: return StDtype::I32;
    case DType::I64: return StDtype::I64;
    case DType::Q: break;
  }
  throw Error("to_st_dtype: unknown dtype");
}

int64_t TensorRecord::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

DType TensorRecord::weight_dtype() const {
  FT_CHECK(st_dtype == StDtype::F32 || st_dtype == StDtype::BF16 || st_dtype == StDtype::F16,
           file.empty() ? "" : file + ": ", "unsupported dtype ", st_dtype_name(st_dtype), " for tensor '", name,
           "'; ft reads F32, BF16, F16 (convert the checkpoint, e.g. dequantize it, first)");
  return dtype;
}

TensorRecord TensorRecord::view(std::string name, DType dtype, std::vector<int64_t> shape, const void* data) {
  TensorRecord r;
  r.name = std::move(name);
  r.dtype = dtype;
  r.st_dtype = to_st_dtype(dtype);
  r.shape = std::move(shape);
  r.data = data;
  for (int64_t d : r.shape) FT_CHECK(d >= 0, "tensor '", r.name, "': negative dimension in shape ", shape_str(r.shape));
  r.nbytes = size_t(r.numel()) * dtype_size(dtype);
  return r;
}

// ---------------------------------------------------------------------------------------------- reader

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  return from_image(FileImage::map(path), path);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_bytes(std::vector<uint8_t> bytes, const std::string& name) {
  return from_image(FileImage::own(std::move(bytes)), name);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_image(FileImage image, const std::string& name) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = f->label_ = name;
  f->image_ = std::move(image);
  f->base_ = f->image_.data();
  f->size_ = f->image_.size();
  f->parse();
  return f;
}

void SafetensorsFile::parse() {
  const std::string& F = label_;
  FT_CHECK(size_ >= 8, F, ": file is ", size_, " bytes, too short for the 8-byte safetensors header length ",
           "(empty or truncated file?)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base_[i];
  FT_CHECK(n <= kMaxHeader, F, ": header length ", n, " exceeds the 100 MB limit (not a safetensors file, or corrupted)");
  FT_CHECK(8 + n <= size_, F, ": header length ", n, " runs past the end of the file (", size_,
           " bytes): truncated file?");
  const char* hb = reinterpret_cast<const char*>(base_ + 8);
  FT_CHECK(n > 0 && hb[0] == '{', F, ": header does not start with '{' (not a safetensors file)");
  {  // a valid header nests 3 levels deep; refuse absurd nesting before a recursive parser sees it
    int depth = 0;
    bool in_str = false;
    for (uint64_t i = 0; i < n; ++i) {
      char ch = hb[i];
      if (in_str) {
        if (ch == '\\') ++i;
        else if (ch == '"') in_str = false;
      } else if (ch == '"') {
        in_str = true;
      } else if (ch == '{' || ch == '[') {
        FT_CHECK(++depth <= 16, F, ": header JSON is nested too deeply (corrupted file?)");
      } else if (ch == '}' || ch == ']') {
        --depth;
      }
    }
  }
  json h;
  try {
    h = json::parse(hb, hb + n);
  } catch (const json::exception& e) {
    throw Error(cat(F, ": header is not valid JSON: ", e.what()));
  }
  FT_CHECK(h.is_object(), F, ": header is not a JSON object");
  const uint64_t buf_size = size_ - 8 - n;

  struct Pending { uint64_t begin, end; TensorRecord rec; };
  std::vector<Pending> pend;
  pend.reserve(h.size());
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (v.is_null()) continue;
      FT_CHECK(v.is_object(), F, ": __metadata__ must be an object of strings, got ", json_type(v));
      for (auto m = v.begin(); m != v.end(); ++m) {
        FT_CHECK(m.value().is_string(), F, ": __metadata__ value for '", m.key(), "' must be a string, got ",
                 json_type(m.value()));
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string T = cat(F, ": tensor '", name, "': ");
    FT_CHECK(v.is_object(), T, "entry must be an object, got ", json_type(v));
    auto dt = v.find("dtype"), sh = v.find("shape"), of = v.find("data_offsets");
    FT_CHECK(dt != v.end() && sh != v.end() && of != v.end(), T, "entry needs dtype, shape and data_offsets");
    FT_CHECK(dt->is_string(), T, "dtype must be a string, got ", json_type(*dt));
    auto st = st_dtype_from_name(dt->get<std::string>());
    FT_CHECK(st.has_value(), T, "unknown dtype '", dt->get<std::string>(), "'");
    TensorRecord r;
    r.name = name;
    r.st_dtype = *st;
    r.dtype = to_dtype(*st).value_or(DType::F32);
    r.file = F;
    FT_CHECK(sh->is_array(), T, "shape must be an array, got ", json_type(*sh));
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : *sh) {
      FT_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), T,
               "shape must hold non-negative integers, got ", d.dump());
      uint64_t u = d.get<uint64_t>();
      FT_CHECK(u <= uint64_t(INT64_MAX), T, "dimension ", u, " is too large");
      r.shape.push_back(int64_t(u));
      overflow |= __builtin_mul_overflow(numel, u, &numel);
    }
    uint64_t bits = 0;
    overflow |= __builtin_mul_overflow(numel, uint64_t(st_dtype_bits(*st)), &bits);
    FT_CHECK(!overflow, T, "shape ", shape_str(r.shape), " overflows when computing its size");
    FT_CHECK(bits % 8 == 0, T, "shape ", shape_str(r.shape), " of ", st_dtype_name(*st), " is not a whole number of bytes");
    FT_CHECK(of->is_array() && of->size() == 2, T, "data_offsets must be [begin, end], got ", of->dump());
    for (const json& o : *of)
      FT_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0), T,
               "data_offsets must be non-negative integers, got ", of->dump());
    uint64_t b = (*of)[0].get<uint64_t>(), e = (*of)[1].get<uint64_t>();
    std::string offs = cat("data_offsets [", b, ", ", e, "]");
    FT_CHECK(e >= b, T, offs, " end before they begin");
    FT_CHECK(e - b == bits / 8, T, offs, " hold ", e - b, " bytes but shape ", shape_str(r.shape), " of ",
             st_dtype_name(*st), " needs ", bits / 8, " bytes");
    FT_CHECK(e <= buf_size, T, offs, " lie outside the data buffer of ", buf_size, " bytes (truncated file?)");
    r.nbytes = size_t(e - b);
    r.data = base_ + 8 + n + b;
    pend.push_back({b, e, std::move(r)});
  }
  std::sort(pend.begin(), pend.end(),
            [](const Pending& a, const Pending& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t pos = 0;
  for (size_t i = 0; i < pend.size(); ++i) {
    const Pending& p = pend[i];
    if (p.begin != pos) {
      std::string offs = cat("data_offsets [", p.begin, ", ", p.end, "]");
      if (i == 0) throw Error(cat(F, ": tensor '", p.rec.name, "': ", offs, " leave a hole at the start of the data buffer"));
      throw Error(cat(F, ": tensor '", p.rec.name, "': ", offs, p.begin < pos ? " overlap" : " leave a hole after",
                      " tensor '", pend[i - 1].rec.name, "' (which ends at ", pos, ")"));
    }
    pos = p.end;
  }
  FT_CHECK(pos == buf_size, F, ": the tensors cover ", pos, " bytes but the data buffer holds ", buf_size,
           " bytes (", pos < buf_size ? "trailing bytes after the last tensor" : "truncated file", ")",
           pend.empty() ? "" : cat("; last tensor '", pend.back().rec.name, "'"));
  tensors_.reserve(pend.size());
  for (auto& p : pend) {
    index_.emplace(p.rec.name, tensors_.size());
    tensors_.push_back(std::move(p.rec));
  }
}

const TensorRecord* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorRecord& SafetensorsFile::get(const std::string& name) const {
  const TensorRecord* r = find(name);
  FT_CHECK(r, label_, ": no tensor named '", name, "' (the file holds ", tensors_.size(), " tensors)");
  return *r;
}

// ---------------------------------------------------------------------------------------------- checkpoint

CheckpointReader CheckpointReader::open(const std::string& path) {
  CheckpointReader c;
  c.path_ = path;
  std::error_code ec;
  fs::path p(path);
  std::vector<std::string> files;
  std::unordered_map<std::string, std::string> weight_map;
  std::string index_path;
  if (fs::is_regular_file(p, ec)) {
    files.push_back(path);
  } else {
    FT_CHECK(fs::is_directory(p, ec), path, ": no such checkpoint file or directory");
    if (fs::is_regular_file(p / "model.safetensors", ec)) {
      files.push_back((p / "model.safetensors").string());
    } else if (fs::is_regular_file(p / "model.safetensors.index.json", ec)) {
      index_path = (p / "model.safetensors.index.json").string();
      json j = read_json_file(index_path);
      FT_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), index_path,
               ": needs an object 'weight_map' {tensor name: shard file}");
      std::set<std::string> seen;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        FT_CHECK(it.value().is_string(), index_path, ": weight_map entry for tensor '", it.key(),
                 "' must be a file name string, got ", json_type(it.value()));
        std::string f = it.value().get<std::string>();
        fs::path fp(f);
        bool safe = !f.empty() && fp.is_relative();
        for (auto& part : fp) safe = safe && part != "..";
        FT_CHECK(safe, index_path, ": weight_map entry for tensor '", it.key(), "' names an invalid file '", f, "'");
        weight_map[it.key()] = (p / fp).string();
        if (seen.insert(f).second) {
          FT_CHECK(fs::is_regular_file(p / fp, ec), index_path, ": shard '", f, "' (holding tensor '", it.key(),
                   "') does not exist in ", path);
          files.push_back((p / fp).string());
        }
      }
      FT_CHECK(!files.empty(), index_path, ": weight_map is empty");
    } else {
      std::string hint;
      for (const char* alt : {"pytorch_model.bin", "pytorch_model.bin.index.json", "model.gguf"})
        if (fs::exists(p / alt, ec)) hint = cat(" (found ", alt, ": ft reads safetensors only; convert it first)");
      throw Error(cat(path, ": no model.safetensors or model.safetensors.index.json in this directory", hint));
    }
  }
  for (const std::string& f : files) {
    auto file = SafetensorsFile::open(f);
    uint32_t fi = uint32_t(c.files_.size());
    for (uint32_t ri = 0; ri < file->tensors().size(); ++ri) {
      const std::string& name = file->tensors()[ri].name;
      auto [it, fresh] = c.where_.emplace(name, std::make_pair(fi, ri));
      FT_CHECK(fresh, path, ": tensor '", name, "' appears in two shards: ", c.files_[it->second.first]->path(),
               " and ", f);
    }
    c.files_.push_back(std::move(file));
  }
  for (auto& [name, f] : weight_map) {
    auto it = c.where_.find(name);
    FT_CHECK(it != c.where_.end() && c.files_[it->second.first]->path() == f, index_path, ": weight_map puts tensor '",
             name, "' in '", fs::path(f).filename().string(), "' but ",
             it == c.where_.end() ? std::string("no shard holds it")
                                  : cat("it is in '", c.files_[it->second.first]->path(), "'"));
  }
  return c;
}

const TensorRecord* CheckpointReader::find(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) return nullptr;
  return &files_[it->second.first]->tensors()[it->second.second];
}

const TensorRecord& CheckpointReader::get(const std::string& name) const {
  const TensorRecord* r = find(name);
  FT_CHECK(r, path_, ": checkpoint has no tensor named '", name, "' (", where_.size(),
           " tensors; is this the right model family / weight prefix?)");
  return *r;
}

const std::shared_ptr<SafetensorsFile>& CheckpointReader::file_of(const std::string& name) const {
  auto it = where_.find(name);
  FT_CHECK(it != where_.end(), path_, ": checkpoint has no tensor named '", name, "'");
  return files_[it->second.first];
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> v;
  v.reserve(where_.size());
  for (auto& [n, _] : where_) v.push_back(n);
  std::sort(v.begin(), v.end());
  return v;
}

uint64_t CheckpointReader::total_bytes() const {
  uint64_t t = 0;
  for (auto& f : files_)
    for (auto& r : f->tensors()) t += r.nbytes;
  return t;
}

// ---------------------------------------------------------------------------------------------- writer

std::vector<uint8_t> serialize_safetensors(const std::vector<TensorRecord>& tensors, const SafetensorsMetadata& metadata,
                                           const TensorProducer& produce) {
  std::vector<const TensorRecord*> order;
  std::string h = prepare(tensors, metadata, produce, order);
  size_t total = 8 + h.size();
  for (auto* r : order) total += r->nbytes;
  std::vector<uint8_t> out(total);
  le64(out.data(), h.size());
  std::memcpy(out.data() + 8, h.data(), h.size());
  uint8_t* p = out.data() + 8 + h.size();
  for (auto* r : order) {
    if (r->nbytes == 0) continue;
    if (r->data) std::memcpy(p, r->data, r->nbytes);
    else produce(*r, p);
    p += r->nbytes;
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorRecord>& tensors,
                       const SafetensorsMetadata& metadata, const TensorProducer& produce) {
  std::vector<const TensorRecord*> order;
  std::string h = prepare(tensors, metadata, produce, order);
  atomic_write(path, [&](int fd, const std::string& tmp) {
    uint8_t len[8];
    le64(len, h.size());
    write_all(fd, len, 8, tmp);
    write_all(fd, h.data(), h.size(), tmp);
    std::vector<uint8_t> buf;
    for (auto* r : order) {
      if (r->nbytes == 0) continue;
      if (r->data) {
        write_all(fd, r->data, r->nbytes, tmp);
      } else {
        buf.resize(r->nbytes);
        produce(*r, buf.data());
        write_all(fd, buf.data(), buf.size(), tmp);
      }
    }
  });
}

std::vector<std::string> write_safetensors_sharded(const std::string& dir, const std::vector<TensorRecord>& tensors,
                                                   uint64_t max_shard_bytes, const SafetensorsMetadata& metadata,
                                                   const TensorProducer& produce, const std::string& prefix) {
  FT_CHECK(max_shard_bytes > 0, "write_safetensors_sharded: max_shard_bytes must be positive");
  fs::path d(dir);
  std::error_code ec;
  fs::create_directories(d, ec);
  FT_CHECK(fs::is_directory(d), dir, ": cannot create output directory: ", ec.message());
  std::vector<std::vector<TensorRecord>> shards(1);
  uint64_t cur = 0, total = 0;
  for (const TensorRecord& r : tensors) {
    if (!shards.back().empty() && cur + r.nbytes > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(r);
    cur += r.nbytes;
    total += r.nbytes;
  }
  const std::string single = prefix + ".safetensors", index = prefix + ".safetensors.index.json";
  std::vector<std::string> names;
  if (shards.size() == 1) {
    write_safetensors((d / single).string(), shards[0], metadata, produce);
    names.push_back(single);
  } else {
    json wm = json::object();
    char buf[64];
    for (size_t i = 0; i < shards.size(); ++i) {
      std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      names.push_back(prefix + buf);
      write_safetensors((d / names.back()).string(), shards[i], metadata, produce);
      for (auto& r : shards[i]) wm[r.name] = names.back();
    }
    json j = {{"metadata", {{"total_size", total}}}, {"weight_map", wm}};
    std::string text = j.dump(2) + "\n";
    atomic_write((d / index).string(), [&](int fd, const std::string& tmp) { write_all(fd, text.data(), text.size(), tmp); });
    names.push_back(index);
  }
  // Remove files of an earlier save that readers would otherwise pick up (model.safetensors wins over an index).
  std::regex shard_re(std::regex_replace(prefix, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                      R"(-\d{5}-of-\d{5}\.safetensors)");
  std::set<std::string> keep(names.begin(), names.end());
  for (auto& e : fs::directory_iterator(d, ec)) {
    std::string f = e.path().filename().string();
    bool stale = (f == single || f == index || std::regex_match(f, shard_re)) && !keep.count(f);
    if (stale) fs::remove(e.path(), ec);
  }
  return names;
}

}  // namespace ft
