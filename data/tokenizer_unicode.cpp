#include "data/tokenizer_unicode.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace ft::uni {
namespace {
#include "data/tokenizer_nfc_data.inc"
}  // namespace

uint32_t next_cp(std::string_view s, size_t& i) {
  auto b = [&](size_t k) { return uint32_t(static_cast<unsigned char>(s[i + k])); };
  uint32_t c = b(0);
  size_t n = char_len(static_cast<unsigned char>(c));
  if (n == 2) c = ((c & 0x1F) << 6) | (b(1) & 0x3F);
  else if (n == 3) c = ((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  else if (n == 4) c = ((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  i += n;
  return c;
}

void append_cp(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6)), out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12)), out += char(0x80 | ((c >> 6) & 0x3F)), out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18)), out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F)), out += char(0x80 | (c & 0x3F));
  }
}

// Length of the valid UTF-8 character at s[i], or -(length of its maximal invalid subpart).
static int valid_len(std::string_view s, size_t i) {
  unsigned char c = s[i];
  if (c < 0x80) return 1;
  int n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return -1;
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return -k;
    unsigned char b = s[i + k];
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return -k;
  }
  return n;
}

size_t find_invalid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) { ++i; continue; }
    int n = valid_len(s, i);
    if (n < 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string lossy(std::string_view s) {
  if (find_invalid(s) == std::string_view::npos) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    int n = valid_len(s, i);
    if (n > 0) out.append(s.substr(i, n)), i += n;
    else out += "\xEF\xBF\xBD", i += -n;
  }
  return out;
}

bool is_whitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// ---- NFC (UAX #15): full canonical decomposition, canonical ordering, canonical composition ----
namespace {
constexpr uint32_t SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
constexpr uint32_t LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

uint32_t ccc(uint32_t c) {
  if (c < 0x300) return 0;
  auto it = std::upper_bound(std::begin(kCcc), std::end(kCcc), c,
                             [](uint32_t v, const uint32_t* r) { return v < r[0]; });
  if (it == std::begin(kCcc)) return 0;
  --it;
  return c <= (*it)[1] ? (*it)[2] : 0;
}

void decompose(uint32_t c, std::u32string& out) {
  if (c >= SBase && c < SBase + SCount) {
    uint32_t s = c - SBase;
    out += LBase + s / NCount;
    out += VBase + (s % NCount) / TCount;
    if (s % TCount) out += TBase + s % TCount;
    return;
  }
  auto it = std::lower_bound(std::begin(kDecomp), std::end(kDecomp), c,
                             [](const uint32_t* r, uint32_t v) { return r[0] < v; });
  if (it == std::end(kDecomp) || (*it)[0] != c) { out += c; return; }
  decompose((*it)[1], out);
  if ((*it)[2]) decompose((*it)[2], out);
}

const std::unordered_map<uint64_t, uint32_t>& compositions() {
  static const std::unordered_map<uint64_t, uint32_t> m = [] {
    std::unordered_map<uint64_t, uint32_t> r;
    for (auto& d : kDecomp)
      if (d[2] && !std::binary_search(std::begin(kNoCompose), std::end(kNoCompose), d[0]))
        r.emplace(uint64_t(d[1]) << 32 | d[2], d[0]);
    return r;
  }();
  return m;
}

uint32_t compose(uint32_t a, uint32_t b) {  // 0 if a+b has no primary composite
  if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
    return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
  if (a >= SBase && a < SBase + SCount && (a - SBase) % TCount == 0 && b > TBase && b < TBase + TCount)
    return a + (b - TBase);
  auto& m = compositions();
  auto it = m.find(uint64_t(a) << 32 | b);
  return it == m.end() ? 0 : it->second;
}
}  // namespace

std::string nfc(std::string_view s) {
  if (std::none_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0xCC; }))
    return std::string(s);  // only code points < U+0300: already NFC
  std::u32string d;
  d.reserve(s.size());
  for (size_t i = 0; i < s.size();) decompose(next_cp(s, i), d);
  // Canonical ordering: stable-sort each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (!ccc(d[i])) { ++i; continue; }
    size_t j = i;
    while (j < d.size() && ccc(d[j])) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](uint32_t a, uint32_t b) { return ccc(a) < ccc(b); });
    i = j;
  }
  std::u32string out;
  out.reserve(d.size());
  ptrdiff_t starter = -1;
  uint32_t last_cc = 0;
  for (uint32_t c : d) {
    uint32_t cc = ccc(c);
    if (starter >= 0) {
      bool adjacent = ptrdiff_t(out.size()) - 1 == starter;
      if (adjacent || (last_cc != 0 && last_cc < cc)) {
        if (uint32_t k = compose(out[starter], c)) { out[starter] = k; continue; }
      }
    }
    if (cc == 0) starter = ptrdiff_t(out.size());
    out += c;
    last_cc = cc;
  }
  std::string r;
  r.reserve(s.size());
  for (uint32_t c : out) append_cp(r, c);
  return r;
}

}  // namespace ft::uni
