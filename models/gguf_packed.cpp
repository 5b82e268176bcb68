// GGUF blocks -> DType::Q affine groups (see gguf_packed.h for the mapping and why it is exact).
#include "models/gguf_packed.h"

#include <tbb/parallel_for.h>

#include <cstring>

#include "autograd/dtype.h"
#include "autograd/error.h"
#include "models/gguf_quant.h"

namespace ft {

namespace {

float h16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return f16_to_f32(v);
}

// ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j of a Q4_K/Q5_K block.
void scale_min_k4(int j, const uint8_t* q, int& d, int& m) {
  if (j < 4) d = q[j] & 63, m = q[j + 4] & 63;
  else d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
}

// The K-quants' two-level scales of one super-block (autograd/quant.h QuantParams::two_level): the
// group scale is ds·sc[j], the bias db·mc[j].
struct SuperScales {
  int8_t* sc;
  int8_t* mc;
  float ds, db;
};

bool is_k_quant(GgmlType t) { return t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K; }

// One block: its codes u[block] and per-group scales/biases (block / group of each); the K-quants
// (is_k_quant) give their two-level scales in k instead (s and bias unused).
void decode_block(GgmlType t, const uint8_t* b, uint8_t* u, float* s, float* bias, SuperScales* k) {
  switch (t) {
    case GgmlType::Q8_0: {
      const float d = h16(b);
      for (int j = 0; j < 32; ++j) u[j] = uint8_t(b[2 + j] ^ 0x80);  // int8 q -> q + 128
      s[0] = d, bias[0] = -128.f * d;
      return;
    }
    case GgmlType::Q4_0:
    case GgmlType::Q4_1: {
      const bool one = t == GgmlType::Q4_1;
      const float d = h16(b);
      const uint8_t* qs = b + (one ? 4 : 2);
      for (int j = 0; j < 16; ++j) u[j] = qs[j] & 15, u[j + 16] = qs[j] >> 4;
      s[0] = d, bias[0] = one ? h16(b + 2) : -8.f * d;
      return;
    }
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool one = t == GgmlType::Q5_1;
      const float d = h16(b);
      const uint8_t* p = b + (one ? 4 : 2);
      uint32_t qh;
      std::memcpy(&qh, p, 4);
      const uint8_t* qs = p + 4;
      for (int j = 0; j < 16; ++j) {
        u[j] = uint8_t((qs[j] & 15) | (((qh >> j) << 4) & 0x10));
        u[j + 16] = uint8_t((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10));
      }
      s[0] = d, bias[0] = one ? h16(b + 2) : -16.f * d;
      return;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = t == GgmlType::Q5_K;
      const float d = h16(b), dmin = h16(b + 2);
      const uint8_t* sc = b + 4;
      const uint8_t* qh = b + 16;
      const uint8_t* q = b + (five ? 48 : 16);
      k->ds = d, k->db = -dmin;  // (−dmin)·m = −(dmin·m), bit for bit (signs of zeros included)
      for (int c = 0; c < 4; ++c) {  // 64 elements: sub-block 2c in the low nibbles, 2c+1 in the high
        for (int h = 0; h < 2; ++h) {
          int sv, mv;
          scale_min_k4(2 * c + h, sc, sv, mv);
          k->sc[2 * c + h] = int8_t(sv);
          k->mc[2 * c + h] = int8_t(mv);
        }
        const int u1 = 1 << (2 * c), u2 = 2 << (2 * c);
        for (int l = 0; l < 32; ++l) {
          int lo = q[l] & 15, hi = q[l] >> 4;
          if (five) lo += (qh[l] & u1) ? 16 : 0, hi += (qh[l] & u2) ? 16 : 0;
          u[c * 64 + l] = uint8_t(lo);
          u[c * 64 + 32 + l] = uint8_t(hi);
        }
        q += 32;
      }
      return;
    }
    case GgmlType::Q6_K: {
      const float d = h16(b + 208);
      const uint8_t *ql = b, *qh = b + 128;
      const uint8_t* sc = b + 192;
      k->ds = d, k->db = -32.f * d;  // both products exact: (−32·d)·sc = −32·(d·sc), signs of zeros included
      for (int j = 0; j < 16; ++j) k->sc[j] = k->mc[j] = int8_t(sc[j]);  // element e is in sub-block e / 16
      for (int n = 0; n < 2; ++n, u += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; ++l) {
          u[l] = uint8_t((ql[l] & 15) | ((qh[l] & 3) << 4));
          u[l + 32] = uint8_t((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4));
          u[l + 64] = uint8_t((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
          u[l + 96] = uint8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
      return;
    }
    default: throw Error(cat("gguf_repack: ", ggml_type_name(t), " is not a block type"));
  }
}

}  // namespace

GgufAffine gguf_affine_of(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: return {8, 32};
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q4_K: return {4, 32};
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q5_K: return {5, 32};
    case GgmlType::Q6_K: return {6, 16};
    default: return {0, 0};
  }
}

Tensor gguf_repack(GgmlType t, const uint8_t* data, int64_t rows, int64_t cols, const std::vector<int64_t>* row_src,
                   const std::string& what) {
  const GgufAffine a = gguf_affine_of(t);
  const int64_t bs = ggml_block_size(t);
  FT_CHECK(a.bits > 0, what, ": ", ggml_type_name(t), " is not a quantised block type");
  FT_CHECK(rows >= 0 && cols > 0 && cols % bs == 0, what, ": rows of ", cols, " elements do not fill ", ggml_type_name(t), " blocks of ", bs);
  FT_CHECK(!row_src || int64_t(row_src->size()) == rows, what, ": row order of ", row_src ? row_src->size() : 0, " entries for ", rows, " rows");
  QuantParams p;
  p.bits = a.bits;
  p.group_size = a.group;
  p.rows = rows;
  p.cols = cols;
  p.scale_dtype = DType::F32;
  p.packed = Tensor::zeros({rows, p.words_per_row()}, DType::I32);
  const int64_t wpr = p.words_per_row(), gpr = p.groups_per_row(), gpb = bs / a.group, bits = a.bits;
  const bool two = is_k_quant(t);  // super-blocks of 256: 8 (Q4_K, Q5_K) or 16 (Q6_K) groups share d and dmin
  float *scales = nullptr, *biases = nullptr, *sup_s = nullptr, *sup_b = nullptr;
  int8_t *sc_codes = nullptr, *bias_codes = nullptr;
  if (two) {
    p.super_group = int(gpb);
    p.scale_codes = Tensor::zeros({rows, gpr / 4}, DType::I32);
    p.bias_codes = Tensor::zeros({rows, gpr / 4}, DType::I32);
    p.super_scales = Tensor::empty({rows, gpr / gpb});
    p.super_biases = Tensor::empty({rows, gpr / gpb});
    sc_codes = static_cast<int8_t*>(p.scale_codes.raw());
    bias_codes = static_cast<int8_t*>(p.bias_codes.raw());
    sup_s = p.super_scales.data<float>();
    sup_b = p.super_biases.data<float>();
  } else {
    p.scales = Tensor::empty({rows, gpr});
    scales = p.scales.data<float>();
    // the symmetric types' offset is −2^(bits−1)·d: derived from the scale, not stored (quant.h)
    if (t == GgmlType::Q4_0 || t == GgmlType::Q5_0 || t == GgmlType::Q8_0) {
      p.bias_from_scale = -(1 << (a.bits - 1));
    } else {
      p.biases = Tensor::empty({rows, gpr});
      biases = p.biases.data<float>();
    }
  }
  uint32_t* packed = static_cast<uint32_t*>(p.packed.raw());
  const size_t rb = ggml_row_bytes(t, cols), bb = ggml_block_bytes(t);
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, rows, 16), [&](const tbb::blocked_range<int64_t>& rr) {
    uint8_t u[256];
    float unused[16];  // the offsets decode_block gives for a symmetric type (derived from the scales instead)
    for (int64_t r = rr.begin(); r < rr.end(); ++r) {
      const int64_t src = row_src ? (*row_src)[size_t(r)] : r;
      const uint8_t* row = data + size_t(src) * rb;
      uint32_t* out = packed + r * wpr;
      for (int64_t blk = 0; blk < cols / bs; ++blk) {
        const int64_t g0 = r * gpr + blk * gpb;
        if (two) {
          SuperScales k{sc_codes + g0, bias_codes + g0, 0.f, 0.f};
          decode_block(t, row + size_t(blk) * bb, u, nullptr, nullptr, &k);
          sup_s[r * (gpr / gpb) + blk] = k.ds;
          sup_b[r * (gpr / gpb) + blk] = k.db;
        } else {
          decode_block(t, row + size_t(blk) * bb, u, scales + g0, biases ? biases + g0 : unused, nullptr);
        }
        for (int64_t j = 0; j < bs; ++j) {  // one LSB-first bit stream per row (quant.h)
          const int64_t bit = (blk * bs + j) * bits;
          const int64_t wi = bit >> 5;
          const int sh = int(bit & 31);
          out[wi] |= uint32_t(u[j]) << sh;
          if (sh + bits > 32) out[wi + 1] |= uint32_t(u[j]) >> (32 - sh);
        }
      }
    }
  });
  if (!two) compact_quant_scales(p);  // the file's own fp16 d (and m) are exact in 16 bits (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
  return make_quantized(std::move(p), what);
}

}  // namespace ft
