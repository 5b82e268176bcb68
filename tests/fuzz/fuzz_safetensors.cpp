// safetensors reader: any byte string either parses into records that lie inside the image (and
// survive a writer round trip unchanged) or is an ft::Error.
#include <cstring>

#include "autograd/error.h"
#include "models/safetensors.h"
#include "tests/fuzz/fuzz_targets.h"

namespace ft::fuzz {

namespace {
bool same(const TensorRecord& a, const TensorRecord& b) {
  return a.name == b.name && a.st_dtype == b.st_dtype && a.shape == b.shape && a.nbytes == b.nbytes &&
         (a.nbytes == 0 || std::memcmp(a.data, b.data, a.nbytes) == 0);
}
}  // namespace

int safetensors(const uint8_t* data, size_t size) {
  std::shared_ptr<SafetensorsFile> f;
  try {
    f = SafetensorsFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
  } catch (const Error&) {
    return 0;
  }
  bool empty_name = false;
  volatile unsigned sum = 0;
  for (const TensorRecord& r : f->tensors()) {
    FT_FUZZ_ASSERT(f->find(r.name) == &r && &f->get(r.name) == &r, "find/get disagree for '" + r.name + "'");
    empty_name |= r.name.empty();
    (void)r.numel();
    try {
      (void)r.weight_dtype();
    } catch (const Error&) {
    }
    if (r.nbytes) {  // ASan checks the record lies inside the (exactly sized) image
      const auto* p = static_cast<const uint8_t*>(r.data);
      sum = sum + p[0] + p[r.nbytes - 1];
    }
  }
  FT_FUZZ_ASSERT(!f->find("__metadata__"), "__metadata__ read as a tensor");
  // Round trip: what was read serialises, reads back identically, and serialises to the same bytes.
  std::vector<uint8_t> bytes;
  try {
    bytes = serialize_safetensors(f->tensors(), f->metadata());
  } catch (const Error&) {
    FT_FUZZ_ASSERT(empty_name, "the writer rejects what the reader accepted");
    return 0;
  }
  auto g = SafetensorsFile::from_bytes(bytes, "roundtrip.safetensors");
  FT_FUZZ_ASSERT(g->tensors().size() == f->tensors().size() && g->metadata() == f->metadata(),
                 "round trip changed the tensor count or metadata");
  for (const TensorRecord& r : f->tensors()) {
    const TensorRecord* s = g->find(r.name);
    FT_FUZZ_ASSERT(s && same(r, *s), "round trip changed tensor '" + r.name + "'");
  }
  FT_FUZZ_ASSERT(serialize_safetensors(g->tensors(), g->metadata()) == bytes, "the writer is not deterministic");
  return 0;
}

}  // namespace ft::fuzz
