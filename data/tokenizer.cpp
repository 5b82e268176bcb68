// Encoding and decoding, following HF tokenizers step by step: added tokens are split off first
// (non-normalized ones on the raw text, normalized ones on the normalized text), the rest is
// normalized, pre-tokenized into words, and each word goes through BPE (heap of merge ranks,
// O(n log n), with a per-call cache of repeated words).
#include <algorithm>
#include <cctype>

#include "autograd/error.h"
#include "data/tokenizer_impl.h"
#include "data/tokenizer_unicode.h"

namespace ft::tok {

// ---------------------------------------------------------------- regex
namespace {
struct PcreThreadState {  // match data and JIT stack, one per thread (pcre2_code is shared)
  pcre2_match_data* md = pcre2_match_data_create(16, nullptr);
  pcre2_match_context* mc = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  PcreThreadState() { pcre2_jit_stack_assign(mc, nullptr, js); }
  ~PcreThreadState() {
    pcre2_jit_stack_free(js);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
  }
};

std::string pcre_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}
}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) {
  int err = 0;
  PCRE2_SIZE off = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  FT_CHECK(code_, where, ": cannot compile regex \"", pattern, "\" at offset ", off, ": ",
           pcre_message(err));
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
}

Regex::~Regex() { pcre2_code_free(code_); }

size_t Regex::char_len_at(std::string_view s, size_t i) { return uni::char_len(s[i]); }

bool Regex::find(std::string_view s, size_t from, size_t& b, size_t& e) const {
  static thread_local PcreThreadState st;
  int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), from,
                       PCRE2_NO_UTF_CHECK, st.md, st.mc);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  FT_CHECK(rc >= 0, "tokenizer regex: match failed on a ", s.size(), "-byte piece: ", pcre_message(rc));
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
  b = ov[0], e = ov[1];
  return true;
}

// ---------------------------------------------------------------- byte-level mapping
const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      uni::append_cp(t[b], printable ? b : 256 + n++);
    }
    return t;
  }();
  return table;
}

int byte_from_unicode(uint32_t cp) {
  static const std::array<int16_t, 512> inv = [] {
    std::array<int16_t, 512> r;
    r.fill(-1);
    for (int b = 0; b < 256; ++b) {
      size_t i = 0;
      r[uni::next_cp(byte_to_unicode()[b], i)] = int16_t(b);
    }
    return r;
  }();
  return cp < inv.size() ? inv[cp] : -1;
}

// ---------------------------------------------------------------- helpers
namespace {
void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string r;
  r.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size())
    r.append(s, pos, hit - pos).append(to);
  r.append(s, pos);
  s.swap(r);
}

void replace_regex(std::string& s, const Regex& re, std::string_view to) {
  std::string r;
  size_t pos = 0;
  re.for_each_match(s, [&](size_t b, size_t e) { r.append(s, pos, b - pos).append(to), pos = e; });
  r.append(s, pos);
  s.swap(r);
}

size_t prev_char_start(std::string_view s, size_t i) {  // start of the character ending at i
  do --i;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80);
  return i;
}

bool is_word_char_at(std::string_view s, size_t i) {  // Rust regex \w (Unicode) on the char at i
  static const Regex word("^\\w", "tokenizer word-character test");
  unsigned char c = s[i];
  if (c < 0x80) return std::isalnum(c) || c == '_';
  return word.matches_prefix(s.substr(i, uni::char_len(c)));
}

// Calls f(piece, id, offset) for the pieces of s in order: id >= 0 for an added token, -1 for the
// text between tokens (never empty). Leftmost-longest matching with HF's single_word/lstrip/rstrip.
template <class F>
void split_added(const AddedMatcher& m, std::string_view s, F&& f) {
  size_t done = 0;  // end of the last emitted piece
  for (size_t i = 0; i < s.size() && !m.empty();) {
    const AddedToken* hit = nullptr;
    for (uint32_t k : m.by_first[static_cast<unsigned char>(s[i])])
      if (s.substr(i).starts_with(m.toks[k]->pattern)) { hit = m.toks[k]; break; }
    if (!hit) { ++i; continue; }
    size_t start = i, stop = i + hit->pattern.size();
    i = stop;
    if (hit->single_word && ((start > 0 && is_word_char_at(s, prev_char_start(s, start))) ||
                             (stop < s.size() && is_word_char_at(s, stop))))
      continue;
    if (hit->lstrip) {  // take the whitespace before the token (not past the previous piece)
      while (start > done) {
        size_t p = prev_char_start(s, start), q = p;
        if (!uni::is_whitespace(uni::next_cp(s, q))) break;
        start = p;
      }
    }
    if (hit->rstrip) {  // and the whitespace after it
      while (stop < s.size()) {
        size_t q = stop;
        if (!uni::is_whitespace(uni::next_cp(s, q))) break;
        stop = q;
      }
      i = stop;
    }
    if (done < start) f(s.substr(done, start - done), -1, done);
    f(s.substr(start, stop - start), hit->id, start);
    done = stop;
  }
  if (done < s.size()) f(s.substr(done), -1, done);
}

// Splits s at the matches of a regex according to an HF SplitDelimiterBehavior; calls f(begin, end).
template <class F>
void split_pieces(std::string_view s, const Regex& re, Behavior bh, bool invert, F&& f) {
  struct Seg { size_t b, e; bool match; };
  std::vector<Seg> segs;
  size_t prev = 0;
  re.for_each_match(s, [&](size_t b, size_t e) {
    if (prev < b) segs.push_back({prev, b, invert});
    segs.push_back({b, e, !invert});
    prev = e;
  });
  if (prev < s.size()) segs.push_back({prev, s.size(), invert});
  std::vector<Seg> out;
  bool prev_match = false;
  switch (bh) {
    case Behavior::Isolated: out = std::move(segs); break;
    case Behavior::Removed:
      for (auto& g : segs) if (!g.match) out.push_back(g);
      break;
    case Behavior::Contiguous:
      for (auto& g : segs) {
        if (!out.empty() && g.match == prev_match) out.back().e = g.e;
        else out.push_back(g);
        prev_match = g.match;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (auto& g : segs) {
        if (!out.empty() && g.match && !prev_match) out.back().e = g.e;
        else out.push_back(g);
        prev_match = g.match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (!out.empty() && it->match && !prev_match) out.back().b = it->b;
        else out.push_back(*it);
        prev_match = it->match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  for (auto& g : out) f(g.b, g.e);
}

// One encode call: pre-tokenizes recursively (one scratch buffer per pre-tokenizer level, no
// per-piece allocations) and caches the BPE of short words.
struct EncodeState {
  const Impl& m;
  std::vector<int32_t>& out;
  std::vector<std::string> scratch;
  StrMap<std::pair<uint32_t, uint32_t>> cache;  // word -> [begin, count) in cached
  std::vector<int32_t> cached;

  void word(std::string_view w) {
    if (w.size() > 64) return m.bpe(w, out);
    if (auto it = cache.find(w); it != cache.end()) {
      auto [b, n] = it->second;
      out.insert(out.end(), cached.begin() + b, cached.begin() + b + n);
      return;
    }
    size_t b = out.size();
    m.bpe(w, out);
    cache.emplace(std::string(w), std::pair<uint32_t, uint32_t>(cached.size(), out.size() - b));
    cached.insert(cached.end(), out.begin() + b, out.end());
  }

  void run(size_t level, std::string_view s, bool first) {
    if (s.empty()) return;
    if (level == m.pre_tokenizers.size()) return word(s);
    const PreTokenizer& p = m.pre_tokenizers[level];
    auto next = [&](std::string_view t) {
      return [this, level, t, first](size_t b, size_t e) { run(level + 1, t.substr(b, e - b), first && b == 0); };
    };
    switch (p.kind) {
      case PreTokenizer::Split:
      case PreTokenizer::Digits:
        split_pieces(s, *p.regex, p.behavior, p.invert, next(s));
        break;
      case PreTokenizer::ByteLevel: {
        std::string spaced;
        if (p.add_prefix_space && s[0] != ' ') spaced = " " + std::string(s), s = spaced;
        auto map = [&](size_t b, size_t e) {
          std::string& buf = scratch[level];
          buf.clear();
          for (size_t i = b; i < e; ++i) buf += byte_to_unicode()[static_cast<unsigned char>(s[i])];
          run(level + 1, buf, first && b == 0);
        };
        if (p.regex) split_pieces(s, *p.regex, Behavior::Isolated, false, map);
        else map(0, s.size());
        break;
      }
      case PreTokenizer::Metaspace: {
        std::string& buf = scratch[level];
        buf.assign(s);
        replace_all(buf, " ", p.replacement);
        if (!buf.starts_with(p.replacement) &&
            (p.prepend == PreTokenizer::Always || (p.prepend == PreTokenizer::First && first)))
          buf.insert(0, p.replacement);
        std::string_view t = buf;
        if (!p.split) { run(level + 1, t, first); break; }
        size_t b = 0;  // split before each replacement character (MergedWithNext)
        for (size_t hit = t.find(p.replacement, 1); hit != std::string::npos;
             b = hit, hit = t.find(p.replacement, hit + p.replacement.size()))
          run(level + 1, t.substr(b, hit - b), first && b == 0);
        run(level + 1, t.substr(b), first && b == 0);
        break;
      }
    }
  }
};
}  // namespace

// ---------------------------------------------------------------- pipeline
std::string Impl::normalize(std::string_view text) const {
  std::string s(text);
  for (const Normalizer& n : normalizers) {
    if (s.empty()) break;
    switch (n.kind) {
      case Normalizer::NFC: s = uni::nfc(s); break;
      case Normalizer::Prepend: s.insert(0, n.text); break;
      case Normalizer::Replace:
        if (n.regex) replace_regex(s, *n.regex, n.content);
        else replace_all(s, n.text, n.content);
        break;
      case Normalizer::Strip: {
        size_t b = 0, e = s.size();
        for (size_t i = 0; n.left && i < e;) {
          size_t j = i;
          if (!uni::is_whitespace(uni::next_cp(s, j))) break;
          b = i = j;
        }
        while (n.right && e > b) {
          size_t p = prev_char_start(s, e), q = p;
          if (!uni::is_whitespace(uni::next_cp(s, q))) break;
          e = p;
        }
        s = s.substr(b, e - b);
        break;
      }
    }
  }
  return s;
}

void Impl::encode(std::string_view text, std::vector<int32_t>& out) const {
  EncodeState st{*this, out, std::vector<std::string>(pre_tokenizers.size()), {}, {}};
  split_added(raw_matcher, text, [&](std::string_view seg, int32_t id, size_t start) {
    if (id >= 0) return out.push_back(id);
    std::string n = normalize(seg);
    split_added(norm_matcher, n, [&](std::string_view piece, int32_t id2, size_t start2) {
      if (id2 >= 0) return out.push_back(id2);
      st.run(0, piece, start == 0 && start2 == 0);
    });
  });
}

void Impl::bpe(std::string_view w, std::vector<int32_t>& out) const {
  if (ignore_merges)
    if (auto it = vocab.find(w); it != vocab.end()) return out.push_back(it->second);
  // Initial symbols: one per character (HF BPE::merge_word), with byte fallback / unk.
  thread_local std::vector<int32_t> ids;
  ids.clear();
  bool pending_unk = false, affixes = !cont_prefix.empty() || !eow_suffix.empty();
  std::string key;
  for (size_t i = 0; i < w.size();) {
    size_t n = std::min(uni::char_len(w[i]), w.size() - i);
    std::string_view c = w.substr(i, n);
    int32_t id = -1;
    if (!affixes && n < 4 && n == uni::char_len(w[i])) {  // one-character token: table lookup
      size_t j = i;
      id = bmp_ids[uni::next_cp(w, j)];
    } else {
      if (affixes) {
        key.assign(i > 0 ? cont_prefix : "").append(c);
        if (i + n == w.size()) key += eow_suffix;
        c = key;
      }
      if (auto it = vocab.find(c); it != vocab.end()) id = it->second;
    }
    i += n;
    if (id >= 0) {
      if (pending_unk) ids.push_back(unk), pending_unk = false;
      ids.push_back(id);
      continue;
    }
    if (byte_fallback && std::all_of(c.begin(), c.end(), [&](char b) { return byte_ids[uint8_t(b)] >= 0; })) {
      if (pending_unk) ids.push_back(unk), pending_unk = false;
      for (char b : c) ids.push_back(byte_ids[uint8_t(b)]);
      continue;
    }
    if (unk < 0) continue;  // no unk token: the character is dropped (as HF does)
    if (pending_unk && !fuse_unk) ids.push_back(unk);
    pending_unk = true;
  }
  if (pending_unk) ids.push_back(unk);
  // A symbol that takes part in no merge separates runs that merge independently (exactly the
  // same result as merging the whole word, with small heaps: a 1 MB Llama 2 "word" splits at "\n").
  size_t b = 0;
  for (size_t i = 0; i <= ids.size(); ++i) {
    if (i < ids.size() && merges.mergeable(ids[i])) continue;
    merge_run(ids.data() + b, i - b, out);
    if (i < ids.size()) out.push_back(ids[i]);
    b = i + 1;
  }
  if (ids.capacity() > (1u << 20)) std::vector<int32_t>().swap(ids);  // keep no huge buffers
}

// Merges the lowest-rank adjacent pair first (leftmost on ties), as HF's Word::merge_all. A heap
// entry is stale when either symbol of its pair has changed since it was pushed.
void Impl::merge_run(const int32_t* ids, size_t n, std::vector<int32_t>& out) const {
  if (n < 2) return out.insert(out.end(), ids, ids + n), void();
  struct Sym { int32_t id, prev, next; };
  struct Cand { int32_t rank, pos, left, right, id; };
  thread_local std::vector<Sym> sym;
  thread_local std::vector<Cand> heap;
  sym.resize(n);
  heap.clear();
  for (size_t i = 0; i < n; ++i) sym[i] = {ids[i], int32_t(i) - 1, i + 1 < n ? int32_t(i) + 1 : -1};
  auto later = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  auto cand = [&](int32_t pos) {
    int32_t l = sym[pos].id, r = sym[sym[pos].next].id;
    if (const Merge* m = merges.find(l, r)) heap.push_back({m->rank, pos, l, r, m->id});
  };
  for (size_t i = 0; i + 1 < n; ++i) {
    if (i + 8 < n) merges.prefetch(ids[i + 7], ids[i + 8]);
    cand(int32_t(i));
  }
  std::make_heap(heap.begin(), heap.end(), later);
  auto push = [&](int32_t pos) {
    size_t before = heap.size();
    cand(pos);
    if (heap.size() > before) std::push_heap(heap.begin(), heap.end(), later);
  };
  while (!heap.empty()) {
    Cand c = heap.front();
    std::pop_heap(heap.begin(), heap.end(), later);
    heap.pop_back();
    Sym& s = sym[c.pos];
    if (s.id != c.left || s.next < 0 || sym[s.next].id != c.right) continue;  // stale
    Sym& r = sym[s.next];
    s.id = c.id, r.id = -1, s.next = r.next;
    if (s.next >= 0) sym[s.next].prev = c.pos, push(c.pos);
    if (s.prev >= 0) push(s.prev);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
  if (sym.capacity() > (1u << 20)) std::vector<Sym>().swap(sym), std::vector<Cand>().swap(heap);
}

// ---------------------------------------------------------------- decoding
namespace {
void decode_byte_fallback(std::vector<std::string>& toks) {
  std::vector<std::string> out;
  std::string bytes;
  auto flush = [&] {
    if (bytes.empty()) return;
    if (uni::find_invalid(bytes) == std::string::npos) out.push_back(bytes);
    else for (size_t i = 0; i < bytes.size(); ++i) out.push_back("\xEF\xBF\xBD");
    bytes.clear();
  };
  for (auto& t : toks) {
    auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); };
    if (t.size() == 6 && t.starts_with("<0x") && t[5] == '>' && hex(t[3]) && hex(t[4])) {
      bytes += char(std::stoi(t.substr(3, 2), nullptr, 16));
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  toks.swap(out);
}

void decode_byte_level(std::vector<std::string>& toks) {
  std::string bytes;
  for (const auto& t : toks) {
    size_t mark = bytes.size();
    for (size_t i = 0; i < t.size();) {
      int b = byte_from_unicode(uni::next_cp(t, i));
      if (b < 0) { bytes.resize(mark), bytes += t; break; }  // not byte-level: keep as is
      bytes += char(b);
    }
  }
  toks.assign(1, uni::lossy(bytes));
}

void decode_strip(std::vector<std::string>& toks, const std::string& c, size_t start, size_t stop) {
  if (c.empty()) return;
  for (auto& t : toks) {
    size_t b = 0, e = t.size();
    for (size_t k = 0; k < start && t.compare(b, c.size(), c) == 0; ++k) b += c.size();
    for (size_t k = 0; k < stop && e >= b + c.size() && t.compare(e - c.size(), c.size(), c) == 0; ++k)
      e -= c.size();
    t = t.substr(b, e - b);
  }
}
}  // namespace

std::string Impl::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    FT_CHECK(id >= 0 && size_t(id) < tokens.size() && (flags[id] & kPresent), "tokenizer ", source,
             ": cannot decode token id ", id, ": not in the vocabulary (ids 0..", tokens.size() - 1,
             "); check that the ids come from this tokenizer");
    if (!(skip_special && (flags[id] & kSpecial))) toks.push_back(tokens[id]);
  }
  if (decoders.empty()) {  // HF joins with spaces when there is no decoder
    std::string r;
    for (size_t i = 0; i < toks.size(); ++i) r += (i ? " " : "") + toks[i];
    return r;
  }
  for (const Decoder& d : decoders) {
    switch (d.kind) {
      case Decoder::ByteLevel: decode_byte_level(toks); break;
      case Decoder::ByteFallback: decode_byte_fallback(toks); break;
      case Decoder::Fuse: {
        std::string all;
        for (auto& t : toks) all += t;
        toks.assign(1, std::move(all));
        break;
      }
      case Decoder::Strip: decode_strip(toks, d.content, d.start, d.stop); break;
      case Decoder::Replace:
        for (auto& t : toks) d.regex ? replace_regex(t, *d.regex, d.content) : replace_all(t, d.text, d.content);
        break;
      case Decoder::Metaspace:
        for (size_t i = 0; i < toks.size(); ++i) replace_all(toks[i], d.text, i == 0 && d.prepend ? "" : " ");
        break;
    }
  }
  std::string r;
  for (auto& t : toks) r += t;
  return r;
}

}  // namespace ft::tok

// ---------------------------------------------------------------- public API
namespace ft {

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  size_t bad = uni::find_invalid(text);
  FT_CHECK(bad == std::string_view::npos, "Tokenizer::encode: the text is not valid UTF-8 (byte ", bad,
           " of ", text.size(), "); decode or clean the input text first");
  std::vector<int32_t> out;
  if (add_special_tokens) out = prefix_;
  impl_->encode(text, out);
  if (add_special_tokens) out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

std::string Tokenizer::decode_impl(const std::vector<int32_t>& ids, bool skip_special, bool clean_up) const {
  std::string s = impl_->decode(ids, skip_special);
  if (clean_up) {  // transformers' clean_up_tokenization
    static const char* const kRules[][2] = {{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","},
                                            {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
                                            {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (auto& r : kRules) tok::replace_all(s, r[0], r[1]);
  }
  return s;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return decode_impl(ids, skip_special_tokens, clean_up_);
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return -1;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->tokens.size() ? impl_->tokens[id] : std::string();
}

size_t Tokenizer::vocab_size() const { return impl_->tokens.size(); }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->flags.size() && (impl_->flags[id] & tok::Impl::kSpecial);
}

namespace {
// s from byte n on, starting at the next UTF-8 character boundary.
std::string utf8_tail(const std::string& s, size_t n) {
  while (n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) ++n;
  return n < s.size() ? s.substr(n) : std::string();
}
}  // namespace

std::string StreamDecoder::push(int32_t id) {
  auto incomplete = [](const std::string& s) { return s.ends_with("\xEF\xBF\xBD"); };
  if (prefix_.empty() && !ids_.empty()) {
    std::string p = tok_.decode_impl(ids_, skip_special_, false);
    if (!incomplete(p)) prefix_ = std::move(p), prefix_index_ = ids_.size();
  }
  ids_.push_back(id);
  std::string s = tok_.decode_impl(ids_, skip_special_, false);
  if (s.size() <= prefix_.size() || incomplete(s)) return {};
  // A decoder that is not prefix-stable here (a ByteFallback run turned invalid, which decode()
  // rewrites as U+FFFD): what was returned stays returned, and the stream goes on after its length.
  std::string fresh = s.starts_with(prefix_) ? s.substr(prefix_.size()) : utf8_tail(s, prefix_.size());
  size_t keep_from = prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + keep_from);
  prefix_ = tok_.decode_impl(ids_, skip_special_, false);
  prefix_index_ = ids_.size();
  return fresh;
}

std::string StreamDecoder::flush() {
  std::string s = ids_.empty() ? std::string() : tok_.decode_impl(ids_, skip_special_, false);
  std::string rest = s.size() <= prefix_.size()  ? std::string()
                     : s.starts_with(prefix_)      ? s.substr(prefix_.size())
                                                   : utf8_tail(s, prefix_.size());
  ids_.clear(), prefix_.clear(), prefix_index_ = 0;
  return rest;
}

}  // namespace ft
