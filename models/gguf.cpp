#include "models/gguf.h"


#include <cstring>

#include "autograd/error.h"
#include "autograd/file_io.h"

namespace ft {

namespace {

struct TypeInfo {
  GgmlType t;
  const char* name;
  int64_t block;
  size_t bytes;
};
constexpr TypeInfo kTypes[] = {
    {GgmlType::F32, "F32", 1, 4},         {GgmlType::F16, "F16", 1, 2},       {GgmlType::BF16, "BF16", 1, 2},
    {GgmlType::Q4_0, "Q4_0", 32, 18},     {GgmlType::Q4_1, "Q4_1", 32, 20},   {GgmlType::Q5_0, "Q5_0", 32, 22},
    {GgmlType::Q5_1, "Q5_1", 32, 24},     {GgmlType::Q8_0, "Q8_0", 32, 34},   {GgmlType::Q4_K, "Q4_K", 256, 144},
    {GgmlType::Q5_K, "Q5_K", 256, 176},   {GgmlType::Q6_K, "Q6_K", 256, 210},
};
const TypeInfo& info(GgmlType t) {
  for (const auto& i : kTypes)
    if (i.t == t) return i;
  throw Error(cat("unknown ggml type ", uint32_t(t)));
}

// Names of ggml types ft does not read, for messages ("type 16 (IQ2_XXS) is not supported").
const char* other_type_name(uint32_t v) {
  static const char* names[] = {"F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
                                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
                                "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
                                "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0"};
  return v < sizeof(names) / sizeof(names[0]) ? names[v] : "unknown";
}


}  // namespace

const char* ggml_type_name(GgmlType t) { return info(t).name; }
std::optional<GgmlType> ggml_type_from_u32(uint32_t v) {
  for (const auto& i : kTypes)
    if (uint32_t(i.t) == v) return i.t;
  return std::nullopt;
}
std::optional<GgmlType> ggml_type_from_name(const std::string& s) {
  std::string u;
  for (char c : s) u += char(std::toupper(static_cast<unsigned char>(c)));
  for (const auto& i : kTypes)
    if (u == i.name) return i.t;
  return std::nullopt;
}
int64_t ggml_block_size(GgmlType t) { return info(t).block; }
size_t ggml_block_bytes(GgmlType t) { return info(t).bytes; }
bool ggml_is_quantized(GgmlType t) { return info(t).block > 1; }

const char* gguf_type_name(GgufType t) {
  static const char* n[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                            "bool",  "string", "array", "uint64", "int64", "float64"};
  return uint32_t(t) < 13 ? n[uint32_t(t)] : "unknown";
}

GgufValue GgufValue::str_array(std::vector<std::string> v) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.elem = GgufType::STRING;
  x.strs = std::move(v);
  return x;
}
GgufValue GgufValue::f32_array(std::vector<double> v) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.elem = GgufType::F32;
  x.floats = std::move(v);
  return x;
}
GgufValue GgufValue::i32_array(std::vector<int64_t> v) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.elem = GgufType::I32;
  x.ints = std::move(v);
  return x;
}
size_t GgufValue::array_size() const {
  if (type != GgufType::ARRAY) return 0;
  return elem == GgufType::STRING ? strs.size() : (elem == GgufType::F32 || elem == GgufType::F64) ? floats.size() : ints.size();
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------- reader

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) { return from_image(FileImage::map(path), path); }

std::shared_ptr<GgufFile> GgufFile::from_bytes(std::vector<uint8_t> bytes, const std::string& name) {
  return from_image(FileImage::own(std::move(bytes)), name);
}

std::shared_ptr<GgufFile> GgufFile::from_image(FileImage image, const std::string& name) {
  std::shared_ptr<GgufFile> f(new GgufFile());
  f->path_ = name;
  f->image_ = std::move(image);
  f->base_ = f->image_.data();
  f->size_ = f->image_.size();
  f->parse();
  return f;
}

void GgufFile::release(const GgufTensorInfo& t) const { image_.release(t.data, t.nbytes); }

namespace {

// Bounds-checked little-endian cursor over the file image.
struct Cursor {
  const uint8_t* p;
  size_t size, pos = 0;
  const std::string& file;
  std::string where;  // what is being read, for messages

  void need(size_t n) const {
    FT_CHECK(n <= size - pos, file, ": truncated file: ", where, " needs ", n, " bytes at offset ", pos, " but the file has ",
             size, " bytes");
  }
  template <class T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str() {
    uint64_t n = get<uint64_t>();
    FT_CHECK(n <= size - pos, file, ": truncated file: ", where, " is a string of ", n, " bytes at offset ", pos,
             " but only ", size - pos, " bytes remain");
    std::string s(reinterpret_cast<const char*>(p + pos), size_t(n));
    pos += size_t(n);
    return s;
  }
};

size_t scalar_bytes(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

// Reads one scalar of type t into v (integers in i, U64 in u and i, floats in f).
void read_scalar(Cursor& c, GgufType t, int64_t& i, uint64_t& u, double& f) {
  switch (t) {
    case GgufType::U8: i = c.get<uint8_t>(); break;
    case GgufType::I8: i = c.get<int8_t>(); break;
    case GgufType::BOOL: i = c.get<uint8_t>() != 0; break;
    case GgufType::U16: i = c.get<uint16_t>(); break;
    case GgufType::I16: i = c.get<int16_t>(); break;
    case GgufType::U32: i = c.get<uint32_t>(); break;
    case GgufType::I32: i = c.get<int32_t>(); break;
    case GgufType::F32: f = c.get<float>(); break;
    case GgufType::U64: u = c.get<uint64_t>(); i = u > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(u); break;
    case GgufType::I64: i = c.get<int64_t>(); break;
    case GgufType::F64: f = c.get<double>(); break;
    default: break;
  }
}

bool valid_type(uint32_t t) { return t <= 12; }

}  // namespace

void GgufFile::parse() {
  const std::string& F = path_;
  Cursor c{base_, size_, 0, F, "the header"};
  FT_CHECK(size_ >= 4 && std::memcmp(base_, "GGUF", 4) == 0, F, ": not a GGUF file (the first 4 bytes are not 'GGUF')");
  c.pos = 4;
  version_ = c.get<uint32_t>();
  FT_CHECK(version_ == 2 || version_ == 3, F, ": GGUF version ", version_, " is not supported (ft reads versions 2 and 3)");
  uint64_t n_tensors = c.get<uint64_t>(), n_kv = c.get<uint64_t>();
  // Each metadata pair takes at least 12 bytes and each tensor info at least 28: counts beyond the
  // file are corrupt (checked before anything is reserved).
  FT_CHECK(n_kv <= (size_ - c.pos) / 12, F, ": metadata count ", n_kv, " is larger than the file can hold (", size_,
           " bytes): corrupt header");
  FT_CHECK(n_tensors <= (size_ - c.pos) / 28, F, ": tensor count ", n_tensors, " is larger than the file can hold (",
           size_, " bytes): corrupt header");
  for (uint64_t k = 0; k < n_kv; ++k) {
    c.where = cat("metadata entry ", k);
    std::string key = c.str();
    c.where = cat("metadata key '", key, "'");
    uint32_t t = c.get<uint32_t>();
    FT_CHECK(valid_type(t), F, ": metadata key '", key, "' has unknown value type ", t);
    GgufValue v;
    v.type = GgufType(t);
    if (v.type == GgufType::STRING) {
      v.s = c.str();
    } else if (v.type == GgufType::ARRAY) {
      uint32_t et = c.get<uint32_t>();
      FT_CHECK(valid_type(et) && et != uint32_t(GgufType::ARRAY), F, ": metadata key '", key, "' is an array of unsupported type ", et);
      v.elem = GgufType(et);
      uint64_t n = c.get<uint64_t>();
      size_t eb = v.elem == GgufType::STRING ? 8 : scalar_bytes(v.elem);
      FT_CHECK(n <= (size_ - c.pos) / eb, F, ": metadata key '", key, "' claims ", n, " elements, more than the file holds");
      if (v.elem == GgufType::STRING) {
        v.strs.reserve(size_t(n));
        for (uint64_t j = 0; j < n; ++j) v.strs.push_back(c.str());
      } else if (v.elem == GgufType::F32 || v.elem == GgufType::F64) {
        v.floats.resize(size_t(n));
        int64_t i;
        uint64_t u;
        for (uint64_t j = 0; j < n; ++j) read_scalar(c, v.elem, i, u, v.floats[size_t(j)]);
      } else {
        v.ints.resize(size_t(n));
        uint64_t u;
        double f;
        for (uint64_t j = 0; j < n; ++j) read_scalar(c, v.elem, v.ints[size_t(j)], u, f);
      }
    } else {
      read_scalar(c, v.type, v.i, v.u, v.f);
    }
    FT_CHECK(!kv_index_.count(key), F, ": metadata key '", key, "' appears twice");
    kv_index_[key] = kv_.size();
    kv_.emplace_back(std::move(key), std::move(v));
  }
  uint64_t align = 32;
  if (const GgufValue* a = find("general.alignment")) {
    FT_CHECK(a->type != GgufType::ARRAY && a->type != GgufType::STRING && a->i > 0 && (a->i & (a->i - 1)) == 0 &&
                 a->i <= (1 << 20),
             F, ": general.alignment must be a power of two up to 2^20");
    align = uint64_t(a->i);
  }
  tensors_.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    c.where = cat("tensor info ", k);
    GgufTensorInfo ti;
    ti.name = c.str();
    c.where = cat("tensor '", ti.name, "'");
    uint32_t nd = c.get<uint32_t>();
    FT_CHECK(nd >= 1 && nd <= 4, F, ": tensor '", ti.name, "' has ", nd, " dimensions (GGUF allows 1 to 4)");
    int64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      uint64_t e = c.get<uint64_t>();
      FT_CHECK(e >= 1 && e <= (uint64_t(1) << 40) && uint64_t(numel) <= (uint64_t(1) << 42) / e, F, ": tensor '", ti.name,
               "' has an invalid dimension ", e);
      ti.ne.push_back(int64_t(e));
      numel *= int64_t(e);
    }
    uint32_t tt = c.get<uint32_t>();
    auto gt = ggml_type_from_u32(tt);
    FT_CHECK(gt, F, ": tensor '", ti.name, "' has ggml type ", tt, " (", other_type_name(tt),
             "), which ft does not read (it reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K); "
             "re-quantise the model to one of these with llama.cpp's llama-quantize");
    ti.type = *gt;
    int64_t bs = ggml_block_size(ti.type);
    FT_CHECK(ti.ne[0] % bs == 0, F, ": tensor '", ti.name, "' has rows of ", ti.ne[0], " elements, not a multiple of the ",
             ggml_type_name(ti.type), " block size ", bs);
    ti.nbytes = size_t(numel / bs) * ggml_block_bytes(ti.type);
    ti.offset = c.get<uint64_t>();
    FT_CHECK(ti.offset % align == 0, F, ": tensor '", ti.name, "' offset ", ti.offset, " is not a multiple of the alignment ", align);
    FT_CHECK(!tensor_index_.count(ti.name), F, ": tensor '", ti.name, "' appears twice");
    tensor_index_[ti.name] = tensors_.size();
    tensors_.push_back(std::move(ti));
  }
  uint64_t data_start = (uint64_t(c.pos) + align - 1) / align * align;
  for (auto& ti : tensors_) {
    FT_CHECK(data_start <= size_ && ti.offset <= size_ - data_start && ti.nbytes <= size_ - data_start - ti.offset, F,
             ": tensor '", ti.name, "' (", ggml_type_name(ti.type), ", ", ti.nbytes, " bytes at data offset ", ti.offset,
             ") extends past the end of the file (", size_, " bytes): truncated or corrupt file");
    ti.data = base_ + data_start + ti.offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}
const GgufTensorInfo* GgufFile::tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
bool is_int(GgufType t) {
  return t == GgufType::U8 || t == GgufType::I8 || t == GgufType::U16 || t == GgufType::I16 || t == GgufType::U32 ||
         t == GgufType::I32 || t == GgufType::U64 || t == GgufType::I64;
}
}  // namespace

std::optional<int64_t> GgufFile::opt_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  FT_CHECK(is_int(v->type), path_, ": metadata key '", key, "' must be an integer, got ", gguf_type_name(v->type));
  return v->i;
}
std::optional<double> GgufFile::opt_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (is_int(v->type)) return double(v->i);
  FT_CHECK(v->type == GgufType::F32 || v->type == GgufType::F64, path_, ": metadata key '", key, "' must be a number, got ",
           gguf_type_name(v->type));
  return v->f;
}
std::optional<std::string> GgufFile::opt_str(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  FT_CHECK(v->type == GgufType::STRING, path_, ": metadata key '", key, "' must be a string, got ", gguf_type_name(v->type));
  return v->s;
}
std::optional<bool> GgufFile::opt_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  FT_CHECK(v->type == GgufType::BOOL || is_int(v->type), path_, ": metadata key '", key, "' must be a bool, got ",
           gguf_type_name(v->type));
  return v->i != 0;
}
std::string GgufFile::get_str(const std::string& key) const {
  auto v = opt_str(key);
  FT_CHECK(v, path_, ": metadata key '", key, "' is missing");
  return *v;
}
int64_t GgufFile::get_int(const std::string& key) const {
  auto v = opt_int(key);
  FT_CHECK(v, path_, ": metadata key '", key, "' is missing");
  return *v;
}
double GgufFile::get_float(const std::string& key) const {
  auto v = opt_float(key);
  FT_CHECK(v, path_, ": metadata key '", key, "' is missing");
  return *v;
}
bool GgufFile::get_bool(const std::string& key) const {
  auto v = opt_bool(key);
  FT_CHECK(v, path_, ": metadata key '", key, "' is missing");
  return *v;
}

// ---------------------------------------------------------------------------------------------- writer

void GgufWriter::set(const std::string& key, GgufValue v) {
  if (key == "general.alignment") alignment_ = uint64_t(v.i);
  for (auto& [k, old] : kv_)
    if (k == key) { old = std::move(v); return; }
  kv_.emplace_back(key, std::move(v));
}

void GgufWriter::add_tensor(const std::string& name, std::vector<int64_t> ne, GgmlType type, const void* data, size_t nbytes) {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  FT_CHECK(!ne.empty() && ne.size() <= 4 && ne[0] % ggml_block_size(type) == 0, "GGUF writer: tensor '", name, "' has rows of ",
           ne.empty() ? 0 : ne[0], " elements, not a multiple of the ", ggml_type_name(type), " block size");
  FT_CHECK(size_t(n / ggml_block_size(type)) * ggml_block_bytes(type) == nbytes, "GGUF writer: tensor '", name, "' has ", nbytes,
           " bytes, expected ", size_t(n / ggml_block_size(type)) * ggml_block_bytes(type));
  for (auto& t : tensors_) FT_CHECK(t.name != name, "GGUF writer: tensor '", name, "' added twice");
  tensors_.push_back({name, std::move(ne), type, std::string(static_cast<const char*>(data), nbytes)});
}

namespace {
template <class T>
void put(std::string& o, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  o.append(b, sizeof(T));
}
void put_str(std::string& o, const std::string& s) {
  put<uint64_t>(o, s.size());
  o += s;
}
void put_scalar(std::string& o, GgufType t, int64_t i, uint64_t u, double f) {
  switch (t) {
    case GgufType::U8: put<uint8_t>(o, uint8_t(i)); break;
    case GgufType::I8: put<int8_t>(o, int8_t(i)); break;
    case GgufType::BOOL: put<uint8_t>(o, i ? 1 : 0); break;
    case GgufType::U16: put<uint16_t>(o, uint16_t(i)); break;
    case GgufType::I16: put<int16_t>(o, int16_t(i)); break;
    case GgufType::U32: put<uint32_t>(o, uint32_t(i)); break;
    case GgufType::I32: put<int32_t>(o, int32_t(i)); break;
    case GgufType::F32: put<float>(o, float(f)); break;
    case GgufType::U64: put<uint64_t>(o, u ? u : uint64_t(i)); break;
    case GgufType::I64: put<int64_t>(o, i); break;
    case GgufType::F64: put<double>(o, f); break;
    default: break;
  }
}
}  // namespace

std::string GgufWriter::serialize() const {
  std::string o = "GGUF";
  put<uint32_t>(o, 3);
  put<uint64_t>(o, tensors_.size());
  put<uint64_t>(o, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_str(o, k);
    put<uint32_t>(o, uint32_t(v.type));
    if (v.type == GgufType::STRING) {
      put_str(o, v.s);
    } else if (v.type == GgufType::ARRAY) {
      put<uint32_t>(o, uint32_t(v.elem));
      put<uint64_t>(o, v.array_size());
      if (v.elem == GgufType::STRING) for (const auto& s : v.strs) put_str(o, s);
      else if (v.elem == GgufType::F32 || v.elem == GgufType::F64) for (double f : v.floats) put_scalar(o, v.elem, 0, 0, f);
      else for (int64_t i : v.ints) put_scalar(o, v.elem, i, 0, 0);
    } else {
      put_scalar(o, v.type, v.i, v.u, v.f);
    }
  }
  uint64_t off = 0;
  std::vector<uint64_t> offs;
  for (const auto& t : tensors_) {
    put_str(o, t.name);
    put<uint32_t>(o, uint32_t(t.ne.size()));
    for (int64_t d : t.ne) put<uint64_t>(o, uint64_t(d));
    put<uint32_t>(o, uint32_t(t.type));
    put<uint64_t>(o, off);
    offs.push_back(off);
    off += (t.bytes.size() + alignment_ - 1) / alignment_ * alignment_;
  }
  o.resize((o.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
  for (const auto& t : tensors_) {
    o += t.bytes;
    o.resize((o.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
  }
  return o;
}

void GgufWriter::write(const std::string& path) const { write_file_atomic(path, serialize()); }

}  // namespace ft
