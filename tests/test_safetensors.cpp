// safetensors reader/writer: byte-exact layout against files written by the reference implementation
// (python safetensors 0.8, tests/data/safetensors, generator: tests/data/models_config/gen_reference.py),
// every malformed-file rule of the reference reader, fuzzed truncations and byte flips, sharded checkpoints.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "autograd/error.h"
#include "models/safetensors.h"

namespace fs = std::filesystem;
using namespace ft;

namespace {

const std::string kData = std::string(FT_TEST_DATA) + "/safetensors/";

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("ft_st_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

std::vector<uint8_t> read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::string& p, const std::vector<uint8_t>& b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// A file image: 8-byte length + header text (unpadded unless asked) + data bytes.
std::vector<uint8_t> image(const std::string& header, size_t data_bytes, uint64_t len_override = UINT64_MAX) {
  std::vector<uint8_t> b(8 + header.size() + data_bytes, 0);
  uint64_t n = len_override == UINT64_MAX ? header.size() : len_override;
  for (int i = 0; i < 8; ++i) b[size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

// Expects open() of the image written to dir/name to throw an ft::Error containing every part.
void expect_bad(const TempDir& dir, const std::string& name, const std::vector<uint8_t>& bytes,
                const std::vector<std::string>& parts) {
  write_bytes(dir / name, bytes);
  try {
    SafetensorsFile::open(dir / name);
    ADD_FAILURE() << name << ": no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(name), std::string::npos) << m;
    for (auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "missing '" << p << "' in: " << m;
  }
}

// The tensors of reference.safetensors, rebuilt here: arange(n) * 0.5 - 3 in the tensor's dtype.
struct Owned {
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<TensorRecord> recs;
  void add(const std::string& name, StDtype st, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
    bufs.push_back(std::move(bytes));
    TensorRecord r;
    r.name = name;
    r.st_dtype = st;
    r.dtype = to_dtype(st).value_or(DType::F32);
    r.shape = std::move(shape);
    r.data = bufs.back().data();
    r.nbytes = bufs.back().size();
    recs.push_back(r);
  }
  template <class T>
  void add_vals(const std::string& name, StDtype st, std::vector<int64_t> shape, const std::vector<T>& v) {
    std::vector<uint8_t> b(v.size() * sizeof(T));
    if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
    add(name, st, std::move(shape), std::move(b));
  }
};

std::vector<double> seq(size_t n) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = double(i) * 0.5 - 3.0;
  return v;
}

Owned reference_tensors() {
  Owned o;
  auto s12 = seq(12), s3 = seq(3), s6 = seq(6), s2 = seq(2);
  std::vector<uint16_t> bf(12), hf(6);
  for (size_t i = 0; i < 12; ++i) bf[i] = f32_to_bf16(float(s12[i]));
  for (size_t i = 0; i < 6; ++i) hf[i] = f32_to_f16(float(s6[i]));
  std::vector<float> f3(s3.begin(), s3.end());
  o.add_vals("model.embed_tokens.weight", StDtype::BF16, {4, 3}, bf);
  o.add_vals("model.norm.weight", StDtype::F32, {3}, f3);
  o.add_vals("lm_head.weight", StDtype::F16, {2, 3}, hf);
  o.add_vals("ids", StDtype::I64, {5}, std::vector<int64_t>{0, 1, 2, 3, 4});
  o.add_vals("a.mask", StDtype::BOOL, {3}, std::vector<uint8_t>{1, 0, 1});
  o.add_vals("b.u8", StDtype::U8, {7}, std::vector<uint8_t>{0, 1, 2, 3, 4, 5, 6});
  o.add_vals("c.i32", StDtype::I32, {2, 2}, std::vector<int32_t>{-2, -1, 0, 1});
  o.add_vals("d.f64", StDtype::F64, {2}, s2);
  o.add_vals("e.scalar", StDtype::F32, {}, std::vector<float>{1.5f});
  o.add_vals("f.empty", StDtype::F32, {0, 4}, std::vector<float>{});
  return o;
}

}  // namespace

TEST(Safetensors, ReadsReferenceFile) {
  auto f = SafetensorsFile::open(kData + "reference.safetensors");
  EXPECT_EQ(f->metadata(), (SafetensorsMetadata{{"format", "pt"}}));
  ASSERT_EQ(f->tensors().size(), 10u);
  Owned want = reference_tensors();
  for (const TensorRecord& w : want.recs) {
    const TensorRecord* r = f->find(w.name);
    ASSERT_NE(r, nullptr) << w.name;
    EXPECT_EQ(r->st_dtype, w.st_dtype) << w.name;
    EXPECT_EQ(r->shape, w.shape) << w.name;
    ASSERT_EQ(r->nbytes, w.nbytes) << w.name;
    if (w.nbytes) { EXPECT_EQ(std::memcmp(r->data, w.data, w.nbytes), 0) << w.name; }
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r->data) % (st_dtype_bits(r->st_dtype) / 8), 0u) << w.name << " misaligned";
  }
  const TensorRecord& e = f->get("model.embed_tokens.weight");
  EXPECT_EQ(e.weight_dtype(), DType::BF16);
  EXPECT_EQ(bf16_to_f32(static_cast<const uint16_t*>(e.data)[5]), -0.5f);
  EXPECT_EQ(f->get("lm_head.weight").weight_dtype(), DType::F16);
  EXPECT_EQ(f->get("e.scalar").numel(), 1);
  EXPECT_EQ(f->get("f.empty").numel(), 0);
  // records are in data-offset order; the reference orders by descending alignment then name
  std::vector<std::string> order;
  for (auto& r : f->tensors()) order.push_back(r.name);
  EXPECT_EQ(order, (std::vector<std::string>{"ids", "d.f64", "e.scalar", "f.empty", "model.norm.weight", "c.i32",
                                             "model.embed_tokens.weight", "lm_head.weight", "b.u8", "a.mask"}));
  try {
    f->get("b.u8").weight_dtype();
    ADD_FAILURE();
  } catch (const Error& ex) {
    EXPECT_NE(std::string(ex.what()).find("unsupported dtype U8 for tensor 'b.u8'; ft reads F32, BF16, F16"),
              std::string::npos) << ex.what();
  }
  EXPECT_THROW(f->get("nope"), Error);
}

TEST(Safetensors, WriterIsByteExactWithReference) {
  Owned o = reference_tensors();
  EXPECT_EQ(serialize_safetensors(o.recs, {{"format", "pt"}}), read_bytes(kData + "reference.safetensors"));
  Owned p;
  std::vector<uint16_t> x(15);
  auto s15 = seq(15), s5 = seq(5);
  for (size_t i = 0; i < 15; ++i) x[i] = f32_to_bf16(float(s15[i]));
  p.add_vals("x", StDtype::BF16, {3, 5}, x);
  p.add_vals("y", StDtype::F32, {5}, std::vector<float>(s5.begin(), s5.end()));
  EXPECT_EQ(serialize_safetensors(p.recs), read_bytes(kData + "reference_nometa.safetensors"));
}

TEST(Safetensors, WriterMatchesSpecExamples) {
  // Expected bytes constructed by hand from the format spec: u64 LE length, compact JSON, space padding to 8.
  auto expect = [](const std::string& header_unpadded, const std::vector<uint8_t>& data) {
    std::string h = header_unpadded;
    while (h.size() % 8) h += ' ';
    std::vector<uint8_t> b = image(h, 0);
    b.insert(b.end(), data.begin(), data.end());
    return b;
  };
  std::vector<float> v{0, 1, 2, 3, 4, 5};
  std::vector<uint8_t> raw(24);
  std::memcpy(raw.data(), v.data(), 24);
  auto a = serialize_safetensors({TensorRecord::view("attn.0", DType::F32, {1, 2, 3}, v.data())});
  EXPECT_EQ(a, expect(R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})", raw));
  EXPECT_EQ(a.size(), 8u + 64 + 24);
  auto b = serialize_safetensors({TensorRecord::view("attn0", DType::F32, {1, 1, 2, 3}, v.data())});
  EXPECT_EQ(b, expect(R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})", raw));
  EXPECT_EQ(b[8 + 65], ' ');  // 65-byte JSON padded with 7 spaces
  EXPECT_EQ(serialize_safetensors({}), expect("{}", {}));
  EXPECT_EQ(serialize_safetensors({}, {{"framework", "pt"}}), expect(R"({"__metadata__":{"framework":"pt"}})", {}));
  // names with characters JSON must escape
  float one = 1;
  auto c = serialize_safetensors({TensorRecord::view("q\"\\\n\x01", DType::F32, {1}, &one)});
  EXPECT_EQ(c, expect(R"({"q\"\\\n\u0001":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                      {0x00, 0x00, 0x80, 0x3f}));
  auto back = SafetensorsFile::from_bytes(c, "mem");
  EXPECT_NE(back->find("q\"\\\n\x01"), nullptr);
}

TEST(Safetensors, RoundTripAtomicWriteAndProducer) {
  TempDir d;
  std::vector<float> w(6 * 5);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(float(i));
  std::vector<uint16_t> h(7);
  for (size_t i = 0; i < h.size(); ++i) h[i] = f32_to_bf16(float(i) - 3.25f);
  TensorRecord produced = TensorRecord::view("produced.weight", DType::F32, {4, 2}, nullptr);
  std::vector<TensorRecord> recs = {TensorRecord::view("w", DType::F32, {6, 5}, w.data()),
                                    TensorRecord::view("h", DType::BF16, {7}, h.data()), produced};
  int calls = 0;
  auto produce = [&](const TensorRecord& r, void* dst) {
    ++calls;
    EXPECT_EQ(r.name, "produced.weight");
    float* f = static_cast<float*>(dst);
    for (int i = 0; i < 8; ++i) f[i] = float(i) * 0.25f;
  };
  write_safetensors(d / "out.safetensors", recs, {{"format", "pt"}, {"a", "b"}}, produce);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(fs::exists(d / "out.safetensors.tmp"));
  auto f = SafetensorsFile::open(d / "out.safetensors");
  EXPECT_EQ(f->metadata().at("a"), "b");
  EXPECT_EQ(std::memcmp(f->get("w").data, w.data(), w.size() * 4), 0);
  EXPECT_EQ(std::memcmp(f->get("h").data, h.data(), h.size() * 2), 0);
  EXPECT_EQ(static_cast<const float*>(f->get("produced.weight").data)[7], 1.75f);
  // same bytes in memory and on disk
  EXPECT_EQ(serialize_safetensors(recs, {{"format", "pt"}, {"a", "b"}}, produce), read_bytes(d / "out.safetensors"));

  // the mapping outlives the file object through keep_alive()
  std::shared_ptr<const void> keep = f->keep_alive();
  const float* p = static_cast<const float*>(f->get("w").data);
  f.reset();
  EXPECT_EQ(p[3], w[3]);
  keep.reset();

  // writer rejects inconsistent input
  TensorRecord bad = TensorRecord::view("x", DType::F32, {2}, w.data());
  bad.nbytes = 4;
  EXPECT_THROW(serialize_safetensors({bad}), Error);
  EXPECT_THROW(serialize_safetensors({recs[0], recs[0]}), Error);
  EXPECT_THROW(serialize_safetensors({TensorRecord::view("p", DType::F32, {2}, nullptr)}), Error);
  EXPECT_THROW(write_safetensors((d.path / "no_such_dir" / "x.safetensors").string(), {recs[0]}), Error);
}

TEST(Safetensors, MalformedFilesGiveClearErrors) {
  TempDir d;
  const std::string T = R"("model.layers.0.mlp.up_proj.weight")";
  auto one = [&](const std::string& dtype, const std::string& shape, const std::string& offs) {
    return "{" + T + R"(:{"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offs + "}}";
  };
  expect_bad(d, "empty.safetensors", {}, {"too short"});
  expect_bad(d, "five.safetensors", {1, 2, 3, 4, 5}, {"too short"});
  expect_bad(d, "huge_len.safetensors", image("{}", 0, uint64_t(1) << 63), {"100 MB"});
  expect_bad(d, "over_limit.safetensors", image("{}", 0, 100'000'001), {"100 MB"});
  expect_bad(d, "past_eof.safetensors", image("{}", 0, 64), {"past the end"});
  expect_bad(d, "not_brace.safetensors", image("[1,2]   ", 0), {"'{'"});
  expect_bad(d, "broken_json.safetensors", image(R"({"a": {"dtype": )", 0), {"not valid JSON"});
  expect_bad(d, "bad_utf8.safetensors", image("{\"\xff\xfe\":1}", 0), {"not valid JSON"});
  expect_bad(d, "deep.safetensors", image("{\"a\":" + std::string(5000, '[') + std::string(5000, ']') + "}", 0),
             {"nested"});
  expect_bad(d, "meta_type.safetensors", image(R"({"__metadata__":{"format":1}})", 0), {"__metadata__", "format"});
  expect_bad(d, "meta_list.safetensors", image(R"({"__metadata__":[1]})", 0), {"__metadata__"});
  expect_bad(d, "not_obj.safetensors", image("{" + T + ":5}", 0), {"up_proj", "object"});
  expect_bad(d, "no_dtype.safetensors", image("{" + T + R"(:{"shape":[1],"data_offsets":[0,4]}})", 4),
             {"up_proj", "dtype"});
  expect_bad(d, "unknown_dtype.safetensors", image(one("F99", "[1]", "[0,4]"), 4), {"up_proj", "unknown dtype 'F99'"});
  expect_bad(d, "neg_shape.safetensors", image(one("F32", "[-1]", "[0,4]"), 4), {"up_proj", "non-negative"});
  expect_bad(d, "float_shape.safetensors", image(one("F32", "[1.5]", "[0,4]"), 4), {"up_proj", "non-negative"});
  expect_bad(d, "str_shape.safetensors", image(one("F32", "\"[1]\"", "[0,4]"), 4), {"up_proj", "shape"});
  expect_bad(d, "overflow.safetensors", image(one("F32", "[4294967296,4294967296]", "[0,4]"), 4),
             {"up_proj", "overflow"});
  expect_bad(d, "offs_len.safetensors", image(one("F32", "[1]", "[0,4,8]"), 4), {"up_proj", "data_offsets"});
  expect_bad(d, "offs_neg.safetensors", image(one("F32", "[1]", "[-4,0]"), 4), {"up_proj", "data_offsets"});
  expect_bad(d, "offs_rev.safetensors", image(one("F32", "[1]", "[4,0]"), 4), {"up_proj", "end before"});
  expect_bad(d, "size_mismatch.safetensors", image(one("BF16", "[8,16]", "[0,100]"), 100),
             {"tensor 'model.layers.0.mlp.up_proj.weight': data_offsets [0, 100] hold 100 bytes but shape [8, 16] "
              "of BF16 needs 256 bytes"});
  expect_bad(d, "subbyte.safetensors", image(one("F4", "[3]", "[0,1]"), 1), {"up_proj", "whole number of bytes"});
  expect_bad(d, "out_of_range.safetensors", image(one("F32", "[1]", "[1000000,1000004]"), 4), {"up_proj", "outside"});
  expect_bad(d, "start_hole.safetensors", image(one("F32", "[1]", "[4,8]"), 8), {"up_proj", "hole"});
  const std::string two = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],)"
                          R"("data_offsets":[12,16]}})";
  expect_bad(d, "hole.safetensors", image(two, 16), {"tensor 'b'", "hole after tensor 'a'"});
  const std::string ovl = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],)"
                          R"("data_offsets":[4,8]}})";
  expect_bad(d, "overlap.safetensors", image(ovl, 8), {"tensor 'b'", "overlap tensor 'a'"});
  expect_bad(d, "trailing.safetensors", image(one("F32", "[1]", "[0,4]"), 12), {"trailing bytes", "up_proj"});
  // a valid file cut short: the last tensor runs past the end
  auto good = read_bytes(kData + "reference.safetensors");
  good.erase(good.end() - 3, good.end());
  expect_bad(d, "truncated.safetensors", good, {"a.mask", "outside"});
  EXPECT_THROW(SafetensorsFile::open(d / "does_not_exist.safetensors"), Error);
  EXPECT_THROW(SafetensorsFile::open(d.path.string()), Error);  // a directory
}

TEST(Safetensors, FuzzTruncationsAndByteFlipsNeverCrash) {
  const auto good = read_bytes(kData + "reference.safetensors");
  ASSERT_NO_THROW(SafetensorsFile::from_bytes(good, "good"));
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> t(good.begin(), good.begin() + std::ptrdiff_t(n));
    EXPECT_THROW(SafetensorsFile::from_bytes(t, "cut"), Error) << "truncated to " << n;
  }
  std::mt19937 rng(1234);
  int ok = 0, rejected = 0;
  for (int it = 0; it < 4000; ++it) {
    auto b = good;
    int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      size_t pos = rng() % b.size();
      // half of the flips hit the length / header, where parsing decisions are made
      if (rng() % 2) pos = rng() % std::min<size_t>(b.size(), 8 + 250);
      b[pos] = rng() % 3 == 0 ? uint8_t(rng()) : uint8_t(b[pos] ^ (1u << (rng() % 8)));
    }
    try {
      auto f = SafetensorsFile::from_bytes(b, "fuzz");
      for (auto& r : f->tensors()) {  // touch every byte a record claims
        const uint8_t* p = static_cast<const uint8_t*>(r.data);
        volatile uint8_t acc = 0;
        for (size_t i = 0; i < r.nbytes; ++i) acc = uint8_t(acc ^ p[i]);
      }
      ++ok;
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(ok, 10);  // flips inside tensor data or harmless JSON bytes keep the file valid
}

TEST(Safetensors, CheckpointSingleAndSharded) {
  TempDir d;
  std::vector<std::vector<float>> data;
  std::vector<TensorRecord> recs;
  data.reserve(7);
  for (int i = 0; i < 7; ++i) {
    data.emplace_back(size_t(10 + i), float(i));
    recs.push_back(TensorRecord::view("model.layers." + std::to_string(i) + ".w", DType::F32, {10 + i}, data.back().data()));
  }
  // all fits -> one model.safetensors
  auto names = write_safetensors_sharded(d.path.string(), recs, 1 << 20);
  EXPECT_EQ(names, std::vector<std::string>{"model.safetensors"});
  auto c1 = CheckpointReader::open(d.path.string());
  EXPECT_EQ(c1.size(), 7u);
  EXPECT_EQ(c1.files().size(), 1u);

  // 99-byte shards: 40+44 | 48 | 52 | 56 | 60 | 64 bytes, HF naming and index
  names = write_safetensors_sharded(d.path.string(), recs, 99);
  ASSERT_EQ(names.size(), 7u);
  EXPECT_EQ(names[0], "model-00001-of-00006.safetensors");
  EXPECT_EQ(names.back(), "model.safetensors.index.json");
  EXPECT_FALSE(fs::exists(d / "model.safetensors"));  // stale single file removed (it would shadow the index)
  auto idx = nlohmann::json::parse(std::ifstream(d / "model.safetensors.index.json"));
  EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), (10u + 11 + 12 + 13 + 14 + 15 + 16) * 4);
  EXPECT_EQ(idx["weight_map"]["model.layers.1.w"], "model-00001-of-00006.safetensors");
  EXPECT_EQ(idx["weight_map"]["model.layers.6.w"], "model-00006-of-00006.safetensors");
  auto c = CheckpointReader::open(d.path.string());
  EXPECT_EQ(c.files().size(), 6u);
  EXPECT_EQ(c.names().size(), 7u);
  EXPECT_EQ(c.total_bytes(), idx["metadata"]["total_size"].get<uint64_t>());
  for (int i = 0; i < 7; ++i) {
    const TensorRecord& r = c.get("model.layers." + std::to_string(i) + ".w");
    EXPECT_EQ(r.shape, std::vector<int64_t>{10 + i});
    EXPECT_EQ(static_cast<const float*>(r.data)[9], float(i));
  }
  EXPECT_EQ(SafetensorsFile::open(d / "model-00002-of-00006.safetensors")->metadata().at("format"), "pt");
  EXPECT_EQ(c.find("missing"), nullptr);
  EXPECT_THROW(c.get("missing"), Error);
  EXPECT_EQ(c.file_of("model.layers.6.w")->path(), d / "model-00006-of-00006.safetensors");
  // a single .safetensors file path works too
  EXPECT_EQ(CheckpointReader::open(d / "model-00001-of-00006.safetensors").size(), 2u);

  auto expect_msg = [](const std::string& dir, const std::vector<std::string>& parts) {
    try {
      CheckpointReader::open(dir);
      ADD_FAILURE() << "no error for " << dir;
    } catch (const Error& e) {
      for (auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  // index names a tensor the shard does not hold
  auto text = idx.dump();
  auto j2 = idx;
  j2["weight_map"]["model.layers.0.w"] = "model-00003-of-00006.safetensors";
  std::ofstream(d / "model.safetensors.index.json") << j2.dump();
  expect_msg(d.path.string(), {"model.safetensors.index.json", "model.layers.0.w", "model-00003-of-00006.safetensors"});
  // missing shard
  std::ofstream(d / "model.safetensors.index.json") << text;
  fs::rename(d / "model-00004-of-00006.safetensors", d / "moved");
  expect_msg(d.path.string(), {"model-00004-of-00006.safetensors", "does not exist"});
  fs::rename(d / "moved", d / "model-00004-of-00006.safetensors");
  // a tensor in two shards
  write_safetensors(d / "model-00005-of-00006.safetensors", {recs[5], recs[0]});
  expect_msg(d.path.string(), {"model.layers.0.w", "two shards"});
  // path escapes and broken index files
  auto j4 = idx;
  j4["weight_map"]["model.layers.0.w"] = "../x.safetensors";
  std::ofstream(d / "model.safetensors.index.json") << j4.dump();
  expect_msg(d.path.string(), {"invalid file"});
  std::ofstream(d / "model.safetensors.index.json") << "{\"weight_map\": [";
  expect_msg(d.path.string(), {"model.safetensors.index.json", "invalid JSON"});
  // nothing to read
  TempDir e;
  std::ofstream(e / "pytorch_model.bin") << "x";
  expect_msg(e.path.string(), {"no model.safetensors", "pytorch_model.bin"});
  expect_msg(e / "nope", {"no such checkpoint"});
}

namespace {
// Resident KiB of this process's mappings of `path` (/proc/self/smaps), -1 where smaps is unreadable.
int64_t resident_kib_of(const std::string& path) {
  std::ifstream in("/proc/self/smaps");
  if (!in) return -1;
  const std::string canon = fs::canonical(path).string();
  std::string line;
  bool in_file = false;
  int64_t kib = 0;
  while (std::getline(in, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') != std::string::npos &&
        line.find(':') != std::string::npos && line.rfind("Rss:", 0) != 0) {
      in_file = line.size() >= canon.size() && line.compare(line.size() - canon.size(), canon.size(), canon) == 0;
      continue;
    }
    if (in_file && line.rfind("Rss:", 0) == 0) kib += std::stoll(line.substr(4));
  }
  return kib;
}
}  // namespace

// The loader's converted tensors (quantise on load, widened scales, dtype conversion) give their file
// pages back: release() drops the mapping's resident pages wholly inside the tensor, and a later read
// maps the same bytes in again.
TEST(Safetensors, ReleaseDropsATensorsResidentPages) {
  TempDir d;
  std::vector<float> big(size_t(4) << 20 >> 2), small(8);  // 4 MiB, then a tensor sharing its last page
  for (size_t i = 0; i < big.size(); ++i) big[i] = float(i % 1000) * 0.5f;
  for (size_t i = 0; i < small.size(); ++i) small[i] = float(i) + 0.25f;
  write_safetensors(d / "m.safetensors", {TensorRecord::view("big", DType::F32, {int64_t(big.size())}, big.data()),
                                          TensorRecord::view("small", DType::F32, {8}, small.data())});
  auto f = SafetensorsFile::open(d / "m.safetensors");
  const TensorRecord& r = f->get("big");
  volatile float sum = 0;
  for (size_t i = 0; i < big.size(); i += 1024) sum = sum + static_cast<const float*>(r.data)[i];
  const int64_t before = resident_kib_of(d / "m.safetensors");
  if (before < 0) GTEST_SKIP() << "/proc/self/smaps is not readable here";
  ASSERT_GE(before, 4096 - 8);
  f->release(r);
  EXPECT_LE(resident_kib_of(d / "m.safetensors"), 16) << "the tensor's whole pages should no longer be resident";
  EXPECT_EQ(std::memcmp(r.data, big.data(), big.size() * 4), 0) << "released pages read back from the file";
  EXPECT_EQ(std::memcmp(f->get("small").data, small.data(), small.size() * 4), 0);
  // in-memory images: nothing to release, nothing breaks
  auto m = SafetensorsFile::from_bytes(read_bytes(d / "m.safetensors"), "bytes");
  m->release(m->get("big"));
  EXPECT_EQ(std::memcmp(m->get("big").data, big.data(), big.size() * 4), 0);
}
