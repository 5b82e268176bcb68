#pragma once
// Internals of ft::Tokenizer shared by data/tokenizer.cpp (encode/decode) and
// data/tokenizer_load.cpp (tokenizer.json / tiktoken / tokenizer_config.json readers).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace ft::tok {

struct SvHash {  // lets unordered_map<std::string, ..> be searched with a string_view
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StrMap = std::unordered_map<std::string, V, SvHash, std::equal_to<>>;

// A PCRE2 regex compiled with UTF + UCP (\s, \w, \p{L} are Unicode-aware), JIT when available.
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where);  // ft::Error naming `where`
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-empty, non-overlapping matches [begin, end) of s (valid UTF-8), left to right.
  template <class F>
  void for_each_match(std::string_view s, F&& f) const {
    size_t pos = 0;
    while (pos <= s.size()) {
      size_t b, e;
      if (!find(s, pos, b, e)) break;
      if (e > b) f(b, e), pos = e;
      else pos = b + (b < s.size() ? char_len_at(s, b) : 1);  // skip an empty match
    }
  }
  bool matches_prefix(std::string_view s) const {  // a non-empty match starting at s[0]
    size_t b, e;
    return find(s, 0, b, e) && b == 0 && e > 0;
  }

 private:
  bool find(std::string_view s, size_t from, size_t& b, size_t& e) const;
  static size_t char_len_at(std::string_view s, size_t i);
  pcre2_code* code_ = nullptr;
};

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Normalizer {
  enum Kind { NFC, Prepend, Replace, Strip } kind;
  std::string text{}, content{};     // Prepend: text; Replace: literal pattern `text` -> `content`
  std::shared_ptr<Regex> regex{};  // Replace with a Regex pattern
  bool left = false, right = false;  // Strip
};

struct PreTokenizer {
  enum Kind { Split, ByteLevel, Metaspace, Digits } kind;
  std::shared_ptr<Regex> regex{};  // Split (Regex pattern, or the escaped String), ByteLevel's GPT-2 regex
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement{};      // Metaspace
  enum Prepend { Always, First, Never } prepend = Always;
  bool split = true;              // Metaspace
  bool individual_digits = false;  // Digits
};

struct Decoder {
  enum Kind { ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace } kind;
  std::string text{}, content{};  // Replace: literal pattern -> content; Strip: content; Metaspace: replacement
  std::shared_ptr<Regex> regex{};
  size_t start = 0, stop = 0;  // Strip
  bool prepend = true;         // Metaspace: prepend_scheme != never
};

struct AddedToken {
  std::string content;  // as written in the file
  std::string pattern;  // what is matched: content, or content through the normalizers
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Leftmost-longest matcher over added tokens (the HF AddedVocabulary split).
struct AddedMatcher {
  std::vector<const AddedToken*> toks;
  std::array<std::vector<uint32_t>, 256> by_first;  // token indices by first byte, longest first
  void build();
  bool empty() const { return toks.empty(); }
};

struct Merge {
  int32_t rank, id;
};

// (left id, right id) -> Merge, open addressing (one cache line per lookup; the BPE hot path).
class MergeTable {
 public:
  void add(int32_t a, int32_t b, Merge m) { pending_.push_back({key(a, b), m}); }  // later wins
  void build(size_t num_ids);  // call once after all add()s
  const Merge* find(int32_t a, int32_t b) const {
    if (slots_.empty()) return nullptr;
    uint64_t k = key(a, b);
    for (size_t h = slot(k);; h = (h + 1) & mask_) {
      if (slots_[h].key == k) return &slots_[h].m;
      if (slots_[h].key == kEmpty) return nullptr;
    }
  }
  void prefetch(int32_t a, int32_t b) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[slot(key(a, b))]);
  }
  bool mergeable(int32_t id) const { return size_t(id) < mergeable_.size() && mergeable_[id]; }
  size_t size() const { return count_; }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  static uint64_t key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }
  size_t slot(uint64_t k) const { return (k * 0x9E3779B97F4A7C15ull) >> shift_; }
  struct Slot { uint64_t key; Merge m; };
  std::vector<std::pair<uint64_t, Merge>> pending_;
  std::vector<Slot> slots_;
  std::vector<uint8_t> mergeable_;  // id appears on either side of some merge
  size_t mask_ = 0, count_ = 0;
  int shift_ = 64;
};

struct Impl {
  std::string source;  // file it was loaded from (for messages)

  // BPE model
  StrMap<int32_t> vocab;                     // model vocabulary
  MergeTable merges;
  int32_t unk = -1;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::string cont_prefix, eow_suffix;
  std::array<int32_t, 256> byte_ids{};  // ids of <0x00>..<0xFF> (byte_fallback), -1 if absent
  std::vector<int32_t> bmp_ids;  // code point < U+10000 -> id of that one-character token, or -1

  std::vector<std::string> tokens;  // id -> token (model vocab and added tokens)
  std::vector<uint8_t> flags;       // id -> kPresent | kSpecial
  static constexpr uint8_t kPresent = 1, kSpecial = 2;

  std::vector<AddedToken> added;
  StrMap<int32_t> added_ids;  // content -> id
  AddedMatcher raw_matcher, norm_matcher;

  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  std::vector<Decoder> decoders;
  std::vector<int32_t> prefix, suffix;  // post-processor ids around a single sequence

  void merge_run(const int32_t* ids, size_t n, std::vector<int32_t>& out) const;
  std::string normalize(std::string_view s) const;
  void encode(std::string_view text, std::vector<int32_t>& out) const;
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const;
  void set_token(int32_t id, const std::string& tok, bool special);  // grows tokens/flags
  void finish_added();  // fills added_ids, patterns, matchers and bmp_ids once all is loaded
};

// GPT-2 byte <-> printable character mapping used by byte-level BPE.
const std::array<std::string, 256>& byte_to_unicode();
int byte_from_unicode(uint32_t cp);  // -1 if cp is not one of the 256 characters

std::string read_file(const std::string& path, const char* what);

}  // namespace ft::tok
