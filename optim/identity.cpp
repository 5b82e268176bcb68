#include "optim/identity.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>


#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tbb/parallel_for.h>

#include "autograd/error.h"
#include "models/gguf.h"
#include "models/gguf_load.h"
#include "models/safetensors.h"
#include "optim/state.h"
#include "optim/trainer.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- hashing ------------------------------------------------------------------------------------

namespace {

constexpr uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL, P3 = 0x165667B19E3779F9ULL,
                   P4 = 0x85EBCA77C2B2AE63ULL, P5 = 0x27D4EB2F165667C5ULL;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t rd64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }  // memcpy: no misaligned load
inline uint32_t rd32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint64_t round64(uint64_t acc, uint64_t in) { return rotl(acc + in * P2, 31) * P1; }
inline uint64_t merge64(uint64_t acc, uint64_t v) { return (acc ^ round64(0, v)) * P1 + P4; }

// XXH64 (the reference algorithm; little-endian reads, as on every machine ft runs on).
uint64_t xxh64(const uint8_t* p, size_t n, uint64_t seed) {
  const uint8_t* end = p + n;
  uint64_t h;
  if (n >= 32) {
    uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    const uint8_t* limit = end - 32;
    do {
      v1 = round64(v1, rd64(p)); v2 = round64(v2, rd64(p + 8));
      v3 = round64(v3, rd64(p + 16)); v4 = round64(v4, rd64(p + 24));
      p += 32;
    } while (p <= limit);
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge64(h, v1); h = merge64(h, v2); h = merge64(h, v3); h = merge64(h, v4);
  } else {
    h = seed + P5;
  }
  h += uint64_t(n);
  for (; p + 8 <= end; p += 8) h = rotl(h ^ round64(0, rd64(p)), 27) * P1 + P4;
  if (p + 4 <= end) h = rotl(h ^ (uint64_t(rd32(p)) * P1), 23) * P2 + P3, p += 4;
  for (; p < end; ++p) h = rotl(h ^ (uint64_t(*p) * P5), 11) * P1;
  h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32;
  return h;
}

std::string hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

std::string content_hash(const void* data, size_t n) {
  constexpr size_t kChunk = size_t(1) << 20;
  const auto* p = static_cast<const uint8_t*>(data);
  const size_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<uint64_t> h(chunks);
  tbb::parallel_for(size_t(0), chunks, [&](size_t i) {
    const size_t b = i * kChunk;
    h[i] = xxh64(p + b, std::min(kChunk, n - b), 0);
  });
  // The chunk hashes as little-endian bytes, hashed once more with the total length as the seed.
  std::vector<uint8_t> bytes(chunks * 8);
  if (chunks) std::memcpy(bytes.data(), h.data(), bytes.size());
  return hex(xxh64(bytes.data(), bytes.size(), uint64_t(n)));
}

std::string file_hash(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FT_CHECK(fd >= 0, "cannot read '", path, "' to fingerprint it: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(cat("cannot stat '", path, "': ", std::strerror(errno)));
  }
  const size_t n = size_t(st.st_size);
  if (n == 0) {
    ::close(fd);
    return content_hash(nullptr, 0);
  }
  void* m = ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  FT_CHECK(m != MAP_FAILED, "cannot map '", path, "' to fingerprint it: ", std::strerror(errno));
  std::string r = content_hash(m, n);
  ::munmap(m, n);
  return r;
}

// ---- fingerprints -------------------------------------------------------------------------------

namespace {

// A GGUF file: its metadata (config, tokenizer, chat template) as one "file", every tensor by name,
// ggml type, shape and bytes.
json gguf_fingerprint(const std::string& path) {
  auto f = GgufFile::open(path);
  json meta = json::array();
  for (const auto& [k, v] : f->metadata())
    meta.push_back({k, int(v.type), int(v.elem), v.i, v.u, v.f, v.s, v.strs, v.ints, v.floats});
  std::string m;
  try {
    m = meta.dump();
  } catch (const json::exception&) {  // a string that is not UTF-8: hash the values' bytes as they are
    auto put = [&m](const void* p, size_t n) { m.append(static_cast<const char*>(p), n); };
    auto put_str = [&](const std::string& x) { const uint64_t n = x.size(); put(&n, 8); put(x.data(), x.size()); };
    m = "gguf-metadata-bytes";
    for (const auto& [k, v] : f->metadata()) {
      put_str(k);
      const int t[2] = {int(v.type), int(v.elem)};
      put(t, sizeof t), put(&v.i, 8), put(&v.u, 8), put(&v.f, 8), put_str(v.s);
      const uint64_t sizes[3] = {v.strs.size(), v.ints.size(), v.floats.size()};
      put(sizes, sizeof sizes);
      for (const std::string& x : v.strs) put_str(x);
      put(v.ints.data(), v.ints.size() * 8), put(v.floats.data(), v.floats.size() * 8);
    }
  }
  json cfg = {{fs::path(path).filename().string() + " (metadata)", content_hash(m.data(), m.size())}};
  json w = json::array();
  for (const GgufTensorInfo& t : f->tensors())
    w.push_back({t.name, ggml_type_name(t.type), t.shape(), content_hash(t.data, t.nbytes)});
  return {{"config", cfg}, {"weights", w}};
}

}  // namespace

json model_fingerprint(const std::string& model_dir, bool from_scratch) {
  if (!from_scratch && is_gguf_file(model_dir)) return gguf_fingerprint(model_dir);
  json cfg = json::object();
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                        "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "added_tokens.json"}) {
    fs::path p = fs::path(model_dir) / f;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) cfg[f] = file_hash(p.string());
  }
  json j = {{"config", cfg}};
  if (from_scratch) {
    j["weights"] = "random init";
    return j;
  }
  CheckpointReader ck = CheckpointReader::open(model_dir);
  json w = json::array();
  for (const std::string& name : ck.names()) {
    const TensorRecord& r = ck.get(name);
    w.push_back({name, st_dtype_name(r.st_dtype), r.shape, content_hash(r.data, r.nbytes)});
  }
  j["weights"] = w;
  return j;
}

json data_fingerprint(const std::vector<std::string>& files) {
  json d = json::array();
  for (const std::string& f : files) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    FT_CHECK(!ec, "cannot read the size of data file '", f, "': ", ec.message());
    d.push_back({{"name", fs::path(f).filename().string()}, {"bytes", size}, {"hash", file_hash(f)}});
  }
  return d;
}

const std::vector<std::string>& resumable_keys() {
  static const std::vector<std::string> k = {
      "model", "data", "adapter_path", "resume", "overwrite", "resume_adapter",  // model and data: by content
      "iters", "epochs", "steps_per_report", "steps_per_eval", "val_batches", "save_every", "metrics_file",
      "progress", "sample_prompt", "sample_max_tokens", "merged_path", "save_dtype"};
  return k;
}

json identity_settings(const TrainConfig& c) {
  json j = c.to_json();
  for (const std::string& k : resumable_keys()) j.erase(k);
  return j;
}

// ---- differences --------------------------------------------------------------------------------

namespace {

std::string show(const json& v) { return v.is_null() ? std::string("(not set)") : v.dump(); }

// At most `max` names, then "and N more".
std::string some(const std::vector<std::string>& names, size_t max = 4) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > max) s += cat(" and ", names.size() - max, " more");
  return s;
}

void diff_model(const json& a, const json& b, const IdentitySides& l, std::vector<std::string>& out) {
  const json ca = a.value("config", json::object()), cb = b.value("config", json::object());
  for (auto& [f, h] : ca.items())
    if (!cb.contains(f)) out.push_back(cat("model file ", f, ": ", l.a_model, ", absent ", l.b));
    else if (cb[f] != h) out.push_back(cat("model file ", f, ": different content"));
  for (auto& [f, h] : cb.items())
    if (!ca.contains(f)) out.push_back(cat("model file ", f, ": absent ", l.from_a_model, ", present ", l.b));
  const json wa = a.value("weights", json()), wb = b.value("weights", json());
  if (!wa.is_array() || !wb.is_array()) {
    if (wa != wb) out.push_back(cat("model weights: ", wa.is_array() ? "loaded from the model directory" : show(wa), " ", l.a, ", ",
                                    wb.is_array() ? "loaded from the model directory" : show(wb), " ", l.b));
    return;
  }
  std::map<std::string, json> ma, mb;
  for (auto& w : wa) ma[w[0].get<std::string>()] = w;
  for (auto& w : wb) mb[w[0].get<std::string>()] = w;
  std::vector<std::string> gone, extra, bytes;
  for (auto& [n, w] : ma) {
    auto it = mb.find(n);
    if (it == mb.end()) { gone.push_back(n); continue; }
    const json& v = it->second;
    if (w[1] != v[1]) out.push_back(cat("model weight ", n, ": dtype ", w[1].get<std::string>(), " ", l.a, ", ", v[1].get<std::string>(), " ", l.b));
    else if (w[2] != v[2]) out.push_back(cat("model weight ", n, ": shape ", w[2].dump(), " ", l.a, ", ", v[2].dump(), " ", l.b));
    else if (w[3] != v[3]) bytes.push_back(n);
  }
  for (auto& [n, w] : mb)
    if (!ma.count(n)) extra.push_back(n);
  if (!bytes.empty()) out.push_back(cat("model weights with different values: ", some(bytes)));
  if (!gone.empty()) out.push_back(cat("model weights ", l.a_model, ", absent ", l.b, ": ", some(gone)));
  if (!extra.empty()) out.push_back(cat("model weights absent ", l.from_a_model, ": ", some(extra)));
}

void diff_data(const json& a, const json& b, const IdentitySides& l, std::vector<std::string>& out) {
  std::map<std::string, json> ma, mb;
  for (auto& f : a) ma[f.value("name", "")] = f;
  for (auto& f : b) mb[f.value("name", "")] = f;
  for (auto& [n, f] : ma) {
    auto it = mb.find(n);
    if (it == mb.end()) { out.push_back(cat("data file ", n, ": read ", l.a_run, ", not ", l.b)); continue; }
    const json& g = it->second;
    if (f["bytes"] != g["bytes"]) out.push_back(cat("data file ", n, ": ", f["bytes"].dump(), " bytes ", l.a_run_bytes, ", ", g["bytes"].dump(), " ", l.b));
    else if (f["hash"] != g["hash"]) out.push_back(cat("data file ", n, ": same size, different content"));
  }
  for (auto& [n, f] : mb)
    if (!ma.count(n)) out.push_back(cat("data file ", n, ": read ", l.b, ", not ", l.a_run));
}

}  // namespace

IdentitySides IdentitySides::ranks(const std::string& a, const std::string& b) {
  return {a, b, a, a, a, a};
}

std::vector<std::string> identity_differences(const json& saved, const json& now, const IdentitySides& l) {
  std::vector<std::string> out;
  const json sa = saved.value("settings", json::object()), sb = now.value("settings", json::object());
  std::set<std::string> keys;
  for (auto& [k, v] : sa.items()) keys.insert(k);
  for (auto& [k, v] : sb.items()) keys.insert(k);
  for (const std::string& k : keys) {
    const json x = sa.contains(k) ? sa[k] : json(), y = sb.contains(k) ? sb[k] : json();
    if (x != y) out.push_back(cat(k, ": ", show(x), " ", l.a, ", ", show(y), " ", l.b));
  }
  diff_model(saved.value("model", json::object()), now.value("model", json::object()), l, out);
  diff_data(saved.value("data", json::array()), now.value("data", json::array()), l, out);
  return out;
}

void check_resume_identity(const std::string& path, const TrainingState& st, const json& identity,
                           const std::function<void(const std::string&)>& warn) {
  if (st.identity.empty()) {
    if (warn)
      warn(cat("warning: ", path, " was written by an older ft and records no run identity: its model, data and ",
               "settings cannot be checked"));
    return;
  }
  const std::vector<std::string> d = identity_differences(st.identity, identity);
  if (d.empty()) return;
  std::string lines, may;
  for (auto& x : d) lines += "\n  " + x;
  for (auto& k : resumable_keys()) may += (may.empty() ? "" : ", ") + k;
  throw Error(cat("--resume: ", path, " belongs to a different run (", d.size(), d.size() == 1 ? " difference" : " differences", "):",
                  lines, "\nResume with the model, data and settings of that run (these may change: ", may,
                  "), or start a new run with another --adapter-path (or --overwrite without --resume)."));
}

}  // namespace ft
