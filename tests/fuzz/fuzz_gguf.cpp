// GGUF reader: any byte string either parses into tensors that lie inside the image (surviving a
// writer round trip unchanged, every row decodable, a quantised row kept packed holding ggml's
// values) or is an ft::Error; a parsed file then goes through the metadata -> HF texts mapping
// and the model loader, which may only throw ft::Error.
#include <cmath>
#include <cstring>

#include "autograd/error.h"
#include "models/gguf.h"
#include "models/gguf_load.h"
#include "models/gguf_packed.h"
#include "models/gguf_quant.h"
#include "tests/fuzz/fuzz_targets.h"

namespace ft::fuzz {

int gguf(const uint8_t* data, size_t size) {
  std::shared_ptr<GgufFile> f;
  try {
    f = GgufFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.gguf");
  } catch (const Error&) {
    return 0;
  }
  volatile unsigned sum = 0;
  int64_t decoded = 0;
  for (const GgufTensorInfo& t : f->tensors()) {
    FT_FUZZ_ASSERT(f->tensor(t.name) == &t, "tensor lookup disagrees for '" + t.name + "'");
    FT_FUZZ_ASSERT(t.nbytes == ggml_row_bytes(t.type, t.ne[0]) * size_t(t.numel() / t.ne[0]), "nbytes of '" + t.name + "'");
    if (t.nbytes) sum = sum + t.data[0] + t.data[t.nbytes - 1];  // ASan: inside the exactly sized image
    if (decoded < (1 << 16)) {  // one row of each tensor, bounded work
      std::vector<float> row(static_cast<size_t>(t.ne[0]));
      ggml_dequantize_row(t.type, t.data, t.ne[0], row.data());
      decoded += t.ne[0];
      // kept packed (models/gguf_packed.h): the same values wherever ggml's are finite
      if (gguf_affine_of(t.type).bits && t.ne[0] > 0 && t.ne[0] % 32 == 0) {
        const Tensor q = gguf_repack(t.type, t.data, 1, t.ne[0], nullptr, t.name);
        std::vector<float> got(row.size());
        dequantize_block(quant_params(q), 0, 1, 0, t.ne[0], got.data(), t.ne[0]);
        bool finite = true;
        for (float x : row) finite = finite && std::isfinite(x);
        for (size_t i = 0; finite && i < row.size(); ++i)
          FT_FUZZ_ASSERT(got[i] == row[i], "packed '" + t.name + "' differs from ggml's dequantised value");
      }
    }
  }
  // Round trip through the writer.
  GgufWriter w;
  for (const auto& [k, v] : f->metadata()) w.set(k, v);
  for (const GgufTensorInfo& t : f->tensors()) w.add_tensor(t.name, t.ne, t.type, t.data, t.nbytes);
  std::string bytes = w.serialize();
  auto g = GgufFile::from_bytes(std::vector<uint8_t>(bytes.begin(), bytes.end()), "roundtrip.gguf");
  FT_FUZZ_ASSERT(g->metadata().size() == f->metadata().size() && g->tensors().size() == f->tensors().size(),
                 "round trip changed the counts");
  for (const GgufTensorInfo& t : f->tensors()) {
    const GgufTensorInfo* s = g->tensor(t.name);
    FT_FUZZ_ASSERT(s && s->ne == t.ne && s->type == t.type && s->nbytes == t.nbytes &&
                       (t.nbytes == 0 || std::memcmp(s->data, t.data, t.nbytes) == 0),
                   "round trip changed tensor '" + t.name + "'");
  }
  // Metadata -> HF texts, then the whole loader (from a file, as the CLI reads it).
  try {
    (void)gguf_hf_texts(*f);
  } catch (const Error&) {
    return 0;
  }
  int64_t total = 0;
  for (const GgufTensorInfo& t : f->tensors()) total += t.numel();
  if (total > (1 << 22)) return 0;  // bounded work per input
  std::string path = write_scratch("model.gguf", data, size);
  try {
    (void)load_model_tokenizer(path);
    (void)load_gguf_model(path);
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace ft::fuzz
