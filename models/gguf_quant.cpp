#include "models/gguf_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "autograd/dtype.h"
#include "autograd/error.h"

namespace ft {

namespace {

uint16_t rd16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
void wr16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
float h(const uint8_t* p) { return f16_to_f32(rd16(p)); }

// ---- quantisers

void q8_0(const float* x, uint8_t* b) {
  float amax = 0;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  float d = amax / 127.f, id = d != 0 ? 1.f / d : 0.f;
  wr16(b, f32_to_f16(d));
  for (int j = 0; j < 32; ++j) b[2 + j] = uint8_t(int8_t(std::lround(x[j] * id)));
}

void q4_0(const float* x, uint8_t* b) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), max = x[j];
  float d = max / -8.f, id = d != 0 ? 1.f / d : 0.f;
  wr16(b, f32_to_f16(d));
  for (int j = 0; j < 16; ++j) {
    // ggml: (int8_t)(x*id + 8.5) truncates toward zero; x*id + 8.5 is in [0.5, 16.5]
    int q0 = std::min(15, int(x[j] * id + 8.5f)), q1 = std::min(15, int(x[j + 16] * id + 8.5f));
    b[2 + j] = uint8_t(q0 | (q1 << 4));
  }
}

// Q4_K and Q6_K: as llama.cpp's reference quantisers (ggml-quants.c quantize_row_q4_K_ref /
// quantize_row_q6_K_ref, without an importance matrix), each sub-block's scale is searched rather than
// taken from its range: candidate scales around the range's, the integers rounded for each, then the
// scale (and for Q4_K the offset) refitted by weighted least squares to those integers; the candidate
// with the smallest weighted squared error wins, the plain range scale being one of the candidates.
// Weights: Q4_K |x| + rms(sub-block) (the error of large weights counts more), Q6_K none. The 6/8-bit
// coding of the sub-block scales against the super-block's d (and dmin) follows, then the integers are
// rounded again against the coded scales.

// Nearest integer of v (|v| < 2^22; ties to even), branch-free so that the search loops vectorise.
inline int near_int(float v) {
  const float r = v + 12582912.f;  // 1.5·2^23: the integer lands in the low mantissa bits
  int32_t i;
  std::memcpy(&i, &r, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// Q4_K sub-block of n (<= 32) values: x ≈ s·q + b with q in 0..nmax and b <= 0. Returns s, writes -b
// to *m. The error of a candidate follows from its sums: Σw(s·q + b − x)² = s²·Σwq² + b²·Σw + Σwx²
// + 2sb·Σwq − 2s·Σwqx − 2b·Σwx.
float fit_scale_min(const float* x, int n, int nmax, float* m) {
  float lo = 0, hi = 0, ss = 0;
  for (int j = 0; j < n; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]), ss += x[j] * x[j];
  *m = -lo;
  if (!(hi > lo) || !std::isfinite(hi - lo)) return hi > lo ? (hi - lo) / float(nmax) : 0.f;
  const float rms = std::sqrt(ss / float(n));
  float w[32];
  double sw = 0, sx = 0, sxx = 0;
  for (int j = 0; j < n; ++j) {
    w[j] = rms + std::fabs(x[j]);
    sw += w[j], sx += double(w[j]) * x[j], sxx += double(w[j]) * x[j] * x[j];
  }
  auto err = [&](double s, double b, double sq, double sqq, double sqx) {
    return s * s * sqq + b * b * sw + sxx + 2 * s * b * sq - 2 * s * sqx - 2 * b * sx;
  };
  double best = -1;
  float best_s = (hi - lo) / float(nmax), best_b = lo;
  for (int k = -1; k <= 20; ++k) {  // k = −1: the plain range scale, b = lo (no refit)
    const float iscale = k < 0 ? float(nmax) / (hi - lo) : (float(nmax) - 1.f + 0.1f * float(k)) / (hi - lo);
    float sq = 0, sqq = 0, sqx = 0;
    for (int j = 0; j < n; ++j) {
      const float q = float(std::clamp(near_int(iscale * (x[j] - lo)), 0, nmax));
      sq += w[j] * q, sqq += w[j] * q * q, sqx += w[j] * q * x[j];
    }
    double s = (hi - lo) / float(nmax), b = lo;
    if (k >= 0) {
      const double det = sw * sqq - double(sq) * sq;
      if (!(det > 0)) continue;
      s = (sw * sqx - double(sq) * sx) / det, b = (double(sqq) * sx - double(sq) * sqx) / det;
      if (b > 0) b = 0, s = sqx / sqq;  // the offset may not be positive (Q4_K stores −b >= 0)
      if (!(s > 0)) continue;
    }
    const double e = err(s, b, sq, sqq, sqx);
    if (best < 0 || e < best) best = e, best_s = float(s), best_b = float(b);
  }
  *m = -best_b;
  return best_s;
}

// Q6_K sub-block of 16: x ≈ s·q with q in −32..31; s may be negative (the largest-magnitude value
// then takes −32). For fixed q the best s is Σxq/Σq², with squared error Σx² − (Σxq)²/Σq²: the
// candidate with the largest (Σxq)²/Σq² wins. Returns s.
float fit_scale_signed(const float* x) {
  float amax = 0, mx = 0;
  for (int j = 0; j < 16; ++j)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), mx = x[j];
  if (!(amax > 0) || !std::isfinite(amax)) return mx / -32.f;
  float best_s = mx / -32.f;
  double best = -1;
  for (int k = -16; k <= 16; ++k) {
    const float iscale = -(32.f + 0.1f * float(k)) / mx;
    float slx = 0, sll = 0;
    for (int j = 0; j < 16; ++j) {
      const float q = float(std::clamp(near_int(iscale * x[j]), -32, 31));
      slx += x[j] * q, sll += q * q;
    }
    if (sll > 0 && double(slx) * slx / sll > best) best = double(slx) * slx / sll, best_s = slx / sll;
  }
  return best_s;
}

// Q4_K: per sub-block of 32, x ≈ s·q − m with q in 0..15 and m >= 0 (fit_scale_min); s and m are
// coded as 6-bit multiples of the super-block's d and dmin.
void q4_k(const float* x, uint8_t* b) {
  float sc[8], mn[8];
  for (int s = 0; s < 8; ++s) sc[s] = fit_scale_min(x + s * 32, 32, 15, &mn[s]);
  float msc = *std::max_element(sc, sc + 8), mmn = *std::max_element(mn, mn + 8);
  float d = msc / 63.f, dmin = mmn / 63.f;
  uint16_t dh = f32_to_f16(d), dmh = f32_to_f16(dmin);
  float dq = f16_to_f32(dh), dmq = f16_to_f32(dmh);
  uint8_t ls[8], lm[8];
  for (int s = 0; s < 8; ++s) {
    ls[s] = uint8_t(dq > 0 ? std::clamp(int(std::lround(sc[s] / dq)), 0, 63) : 0);
    lm[s] = uint8_t(dmq > 0 ? std::clamp(int(std::lround(mn[s] / dmq)), 0, 63) : 0);
  }
  wr16(b, dh);
  wr16(b + 2, dmh);
  uint8_t* scales = b + 4;
  for (int j = 0; j < 4; ++j) {
    scales[j] = uint8_t((ls[j] & 63) | ((ls[j + 4] >> 4) << 6));
    scales[j + 4] = uint8_t((lm[j] & 63) | ((lm[j + 4] >> 4) << 6));
    scales[j + 8] = uint8_t((ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4));
  }
  uint8_t q[256];
  for (int s = 0; s < 8; ++s) {
    float ds = dq * ls[s], ms = dmq * lm[s];
    for (int j = 0; j < 32; ++j) {
      int v = ds > 0 ? int(std::lround((x[s * 32 + j] + ms) / ds)) : 0;
      q[s * 32 + j] = uint8_t(std::clamp(v, 0, 15));
    }
  }
  uint8_t* qs = b + 16;
  for (int c = 0; c < 4; ++c)  // 64 elements per 32 bytes: low nibbles sub-block 2c, high 2c+1
    for (int l = 0; l < 32; ++l) qs[c * 32 + l] = uint8_t(q[c * 64 + l] | (q[c * 64 + 32 + l] << 4));
}

// Q6_K: per sub-block of 16, x ≈ d·sc·(q − 32) with q − 32 in −32..31 (fit_scale_signed), sc an
// int8 multiple of d (either sign).
void q6_k(const float* x, uint8_t* b) {
  float sc[16], amax = 0;
  for (int s = 0; s < 16; ++s) sc[s] = fit_scale_signed(x + s * 16), amax = std::max(amax, std::fabs(sc[s]));
  float d = amax / 127.f;
  uint16_t dh = f32_to_f16(d);
  float dq = f16_to_f32(dh);
  int8_t ls[16];
  for (int s = 0; s < 16; ++s) ls[s] = int8_t(dq > 0 ? std::clamp(int(std::lround(sc[s] / dq)), -127, 127) : 0);
  uint8_t L[256];
  for (int s = 0; s < 16; ++s) {
    float ds = dq * ls[s];
    for (int j = 0; j < 16; ++j) {
      int v = ds != 0 ? int(std::lround(x[s * 16 + j] / ds)) : 0;
      L[s * 16 + j] = uint8_t(std::clamp(v, -32, 31) + 32);
    }
  }
  uint8_t *ql = b, *qh = b + 128;
  for (int n = 0; n < 2; ++n)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* Ln = L + n * 128;
      uint8_t q1 = Ln[l], q2 = Ln[l + 32], q3 = Ln[l + 64], q4 = Ln[l + 96];
      ql[n * 64 + l] = uint8_t((q1 & 15) | ((q3 & 15) << 4));
      ql[n * 64 + l + 32] = uint8_t((q2 & 15) | ((q4 & 15) << 4));
      qh[n * 32 + l] = uint8_t((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
  std::memcpy(b + 192, ls, 16);
  wr16(b + 208, dh);
}

// ---- dequantisers (ggml's dequantize_row_* semantics)

void scale_min_k4(int j, const uint8_t* q, int& d, int& m) {
  if (j < 4) d = q[j] & 63, m = q[j + 4] & 63;
  else d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
}

void dq_block(GgmlType t, const uint8_t* b, float* y) {
  switch (t) {
    case GgmlType::Q8_0: {
      float d = h(b);
      for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
      break;
    }
    case GgmlType::Q4_0: {
      float d = h(b);
      for (int j = 0; j < 16; ++j) y[j] = float((b[2 + j] & 15) - 8) * d, y[j + 16] = float((b[2 + j] >> 4) - 8) * d;
      break;
    }
    case GgmlType::Q4_1: {
      float d = h(b), m = h(b + 2);
      for (int j = 0; j < 16; ++j) y[j] = float(b[4 + j] & 15) * d + m, y[j + 16] = float(b[4 + j] >> 4) * d + m;
      break;
    }
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      bool one = t == GgmlType::Q5_1;
      float d = h(b), m = one ? h(b + 2) : 0.f;
      const uint8_t* p = b + (one ? 4 : 2);
      uint32_t qh;
      std::memcpy(&qh, p, 4);
      const uint8_t* qs = p + 4;
      for (int j = 0; j < 16; ++j) {
        int x0 = (qs[j] & 15) | int(((qh >> j) << 4) & 0x10), x1 = (qs[j] >> 4) | int((qh >> (j + 12)) & 0x10);
        if (one) y[j] = float(x0) * d + m, y[j + 16] = float(x1) * d + m;
        else y[j] = float(x0 - 16) * d, y[j + 16] = float(x1 - 16) * d;
      }
      break;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      bool five = t == GgmlType::Q5_K;
      float d = h(b), dmin = h(b + 2);
      const uint8_t* sc = b + 4;
      const uint8_t* qh = b + 16;
      const uint8_t* q = b + (five ? 48 : 16);
      int u1 = 1, u2 = 2;
      for (int c = 0; c < 4; ++c) {
        int s, m;
        scale_min_k4(2 * c, sc, s, m);
        float d1 = d * float(s), m1 = dmin * float(m);
        scale_min_k4(2 * c + 1, sc, s, m);
        float d2 = d * float(s), m2 = dmin * float(m);
        for (int l = 0; l < 32; ++l) {
          int lo = q[l] & 15, hi = q[l] >> 4;
          if (five) lo += (qh[l] & u1) ? 16 : 0, hi += (qh[l] & u2) ? 16 : 0;
          y[c * 64 + l] = d1 * float(lo) - m1;
          y[c * 64 + 32 + l] = d2 * float(hi) - m2;
        }
        q += 32;
        u1 <<= 2, u2 <<= 2;
      }
      break;
    }
    case GgmlType::Q6_K: {
      float d = h(b + 208);
      const uint8_t *ql = b, *qh = b + 128;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
      for (int n = 0; n < 2; ++n) {
        for (int l = 0; l < 32; ++l) {
          int is = l / 16;
          int q1 = int((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
          int q2 = int((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
          int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          y[l] = d * float(sc[is]) * float(q1);
          y[l + 32] = d * float(sc[is + 2]) * float(q2);
          y[l + 64] = d * float(sc[is + 4]) * float(q3);
          y[l + 96] = d * float(sc[is + 6]) * float(q4);
        }
        y += 128, ql += 64, qh += 32, sc += 8;
      }
      break;
    }
    default: throw Error(cat("ggml_dequantize_row: ", ggml_type_name(t), " is not a block type"));
  }
}

}  // namespace

size_t ggml_row_bytes(GgmlType t, int64_t n) { return size_t(n / ggml_block_size(t)) * ggml_block_bytes(t); }

void ggml_quantize_row(GgmlType t, const float* x, int64_t n, void* dst) {
  const int64_t bs = ggml_block_size(t);
  FT_CHECK(n % bs == 0, "cannot quantise a row of ", n, " elements to ", ggml_type_name(t), ": not a multiple of ", bs);
  uint8_t* o = static_cast<uint8_t*>(dst);
  const size_t bb = ggml_block_bytes(t);
  for (int64_t i = 0; i < n / bs; ++i) {
    const float* xb = x + i * bs;
    uint8_t* b = o + size_t(i) * bb;
    switch (t) {
      case GgmlType::Q8_0: q8_0(xb, b); break;
      case GgmlType::Q4_0: q4_0(xb, b); break;
      case GgmlType::Q4_K: q4_k(xb, b); break;
      case GgmlType::Q6_K: q6_k(xb, b); break;
      default: throw Error(cat("ft does not write ", ggml_type_name(t), " (it writes q8_0, q4_0, q4_k, q6_k)"));
    }
  }
}

void ggml_dequantize_row(GgmlType t, const void* src, int64_t n, float* y) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  switch (t) {
    case GgmlType::F32: std::memcpy(y, s, size_t(n) * 4); return;
    case GgmlType::F16: convert(s, DType::F16, y, DType::F32, size_t(n)); return;
    case GgmlType::BF16: convert(s, DType::BF16, y, DType::F32, size_t(n)); return;
    default: break;
  }
  const int64_t bs = ggml_block_size(t);
  const size_t bb = ggml_block_bytes(t);
  for (int64_t i = 0; i < n / bs; ++i) dq_block(t, s + size_t(i) * bb, y + i * bs);
}

}  // namespace ft
