// Readers: HF tokenizer.json, the Llama 3 tiktoken tokenizer.model, tokenizer_config.json.
// Every malformed input is an ft::Error naming the file and the JSON key (or line).
#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "autograd/json_file.h"
#include "data/tokenizer_impl.h"
#include "data/tokenizer_unicode.h"

namespace ft::tok {

using json = nlohmann::json;

std::string read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  FT_CHECK(f, "cannot open ", what, " ", path, ": ", std::strerror(errno));
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void AddedMatcher::build() {
  for (auto& v : by_first) v.clear();
  for (uint32_t k = 0; k < toks.size(); ++k)
    if (!toks[k]->pattern.empty()) by_first[static_cast<unsigned char>(toks[k]->pattern[0])].push_back(k);
  for (auto& v : by_first)
    std::stable_sort(v.begin(), v.end(), [&](uint32_t a, uint32_t b) {
      return toks[a]->pattern.size() > toks[b]->pattern.size();
    });
}

void MergeTable::build(size_t num_ids) {
  size_t cap = 16;
  while (cap < pending_.size() * 2) cap *= 2;
  slots_.assign(cap, Slot{kEmpty, {}});
  mask_ = cap - 1, shift_ = 64 - std::countr_zero(cap), count_ = 0;
  mergeable_.assign(num_ids, 0);
  for (auto& [k, m] : pending_) {
    size_t h = slot(k);
    while (slots_[h].key != kEmpty && slots_[h].key != k) h = (h + 1) & mask_;
    count_ += slots_[h].key == kEmpty;
    slots_[h] = {k, m};
    for (uint32_t id : {uint32_t(k >> 32), uint32_t(k)})
      if (id < num_ids) mergeable_[id] = 1;
  }
  std::vector<std::pair<uint64_t, Merge>>().swap(pending_);
}

void Impl::set_token(int32_t id, const std::string& tok, bool special) {
  if (size_t(id) >= tokens.size()) tokens.resize(id + 1), flags.resize(id + 1);
  tokens[id] = tok;
  flags[id] = kPresent | (special ? kSpecial : 0);
}

void Impl::finish_added() {
  raw_matcher.toks.clear(), norm_matcher.toks.clear();
  for (AddedToken& a : added) {
    added_ids[a.content] = a.id;
    // HF matches normalized tokens on normalized text, so their pattern is normalized too.
    a.pattern = a.normalized ? normalize(a.content) : a.content;
    (a.normalized ? norm_matcher : raw_matcher).toks.push_back(&a);
  }
  raw_matcher.build(), norm_matcher.build();
  bmp_ids.assign(0x10000, -1);
  for (auto& [tok, id] : vocab) {
    size_t i = 0;
    if (!tok.empty() && uni::char_len(tok[0]) == tok.size() && (tok.size() < 4))
      bmp_ids[uni::next_cp(tok, i)] = id;
  }
}

namespace {
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr int32_t kMaxId = 1 << 22;  // ids above 4M are malformed input (largest real vocabularies: ~260k)

std::string escape_regex(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x80 && !std::isalnum(static_cast<unsigned char>(c))) r += '\\';
    r += c;
  }
  return r;
}

// JSON access that names the file and the key path in every error.
struct Reader {
  const std::string& file;

  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    throw Error(cat("tokenizer ", file, ": key '", key, "': ", msg));
  }
  const json& need(const json& o, const std::string& path, const char* name) const {
    auto it = o.find(name);
    if (it == o.end()) fail(path.empty() ? name : path + "." + name, "missing");
    return *it;
  }
  std::string str(const json& o, const std::string& path, const char* name, const char* def = nullptr) const {
    auto it = o.find(name);
    std::string key = path.empty() ? name : path + "." + name;
    if ((it == o.end() || it->is_null()) && def) return def;
    if (it == o.end()) fail(key, "missing");
    if (!it->is_string()) fail(key, cat("expected a string, got ", it->dump()));
    return it->get<std::string>();
  }
  bool flag(const json& o, const std::string& path, const char* name, bool def) const {
    auto it = o.find(name);
    if (it == o.end() || it->is_null()) return def;
    if (!it->is_boolean()) fail(path + "." + name, cat("expected true/false, got ", it->dump()));
    return it->get<bool>();
  }
  int64_t integer(const json& o, const std::string& path, const char* name, int64_t lo, int64_t hi) const {
    const json& v = need(o, path, name);
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      fail(path + "." + name, cat("expected an integer in [", lo, ", ", hi, "], got ", v.dump()));
    return v.get<int64_t>();
  }
  const json& list(const json& o, const std::string& path, const char* name) const {
    const json& v = need(o, path, name);
    if (!v.is_array()) fail(path + "." + name, "expected a list");
    return v;
  }
  // {"String": s} or {"Regex": r} -> a compiled regex (strings are matched literally).
  std::shared_ptr<Regex> pattern(const json& o, const std::string& path, std::string* literal = nullptr) const {
    const json& p = need(o, path, "pattern");
    std::string key = path + ".pattern";
    if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      if (literal) { *literal = p["String"].get<std::string>(); return nullptr; }
      return std::make_shared<Regex>(escape_regex(p["String"].get<std::string>()), cat("tokenizer ", file, ": key '", key, "'"));
    }
    if (p.is_object() && p.contains("Regex") && p["Regex"].is_string())
      return std::make_shared<Regex>(p["Regex"].get<std::string>(), cat("tokenizer ", file, ": key '", key, "'"));
    fail(key, cat("expected {\"String\": ..} or {\"Regex\": ..}, got ", p.dump()));
  }
  std::string type(const json& o, const std::string& path) const {
    if (!o.is_object()) fail(path, cat("expected an object, got ", o.dump().substr(0, 80)));
    return str(o, path, "type");
  }
  std::string sub(const std::string& path, const char* name, size_t i) const {
    return cat(path, ".", name, "[", i, "]");
  }
};

void parse_normalizer(const Reader& r, const json& j, const std::string& path, Impl& m) {
  if (j.is_null()) return;
  std::string t = r.type(j, path);
  if (t == "Sequence") {
    const json& l = r.list(j, path, "normalizers");
    for (size_t i = 0; i < l.size(); ++i) parse_normalizer(r, l[i], r.sub(path, "normalizers", i), m);
  } else if (t == "NFC") {
    m.normalizers.push_back({Normalizer::NFC});
  } else if (t == "Prepend") {
    m.normalizers.push_back({Normalizer::Prepend, r.str(j, path, "prepend")});
  } else if (t == "Replace") {
    Normalizer n{Normalizer::Replace};
    n.regex = r.pattern(j, path, &n.text);  // null for a literal String pattern
    n.content = r.str(j, path, "content");
    m.normalizers.push_back(std::move(n));
  } else if (t == "Strip") {
    Normalizer n{Normalizer::Strip};
    n.left = r.flag(j, path, "strip_left", true), n.right = r.flag(j, path, "strip_right", true);
    m.normalizers.push_back(std::move(n));
  } else {
    r.fail(path + ".type", cat("unsupported normalizer '", t, "' (supported: Sequence, NFC, Prepend, Replace, Strip)"));
  }
}

PreTokenizer::Prepend prepend_scheme(const Reader& r, const json& j, const std::string& path) {
  std::string s = r.str(j, path, "prepend_scheme", "always");
  if (!r.flag(j, path, "add_prefix_space", true)) s = "never";  // legacy layout
  if (s == "always") return PreTokenizer::Always;
  if (s == "first") return PreTokenizer::First;
  if (s == "never") return PreTokenizer::Never;
  r.fail(path + ".prepend_scheme", cat("unknown value '", s, "' (expected first, always or never)"));
}

void parse_pre_tokenizer(const Reader& r, const json& j, const std::string& path, Impl& m) {
  if (j.is_null()) return;
  std::string t = r.type(j, path);
  std::string where = cat("tokenizer ", r.file, ": key '", path, "'");
  PreTokenizer p{PreTokenizer::Split};
  if (t == "Sequence") {
    const json& l = r.list(j, path, "pretokenizers");
    for (size_t i = 0; i < l.size(); ++i) parse_pre_tokenizer(r, l[i], r.sub(path, "pretokenizers", i), m);
    return;
  } else if (t == "Split") {
    p.regex = r.pattern(j, path);
    p.invert = r.flag(j, path, "invert", false);
    std::string b = r.str(j, path, "behavior");
    static const std::pair<const char*, Behavior> kNames[] = {
        {"Removed", Behavior::Removed}, {"Isolated", Behavior::Isolated},
        {"MergedWithPrevious", Behavior::MergedWithPrevious}, {"MergedWithNext", Behavior::MergedWithNext},
        {"Contiguous", Behavior::Contiguous}};
    auto it = std::find_if(std::begin(kNames), std::end(kNames), [&](auto& e) { return b == e.first; });
    if (it == std::end(kNames)) r.fail(path + ".behavior", cat("unknown split behavior '", b, "'"));
    p.behavior = it->second;
  } else if (t == "ByteLevel") {
    p.kind = PreTokenizer::ByteLevel;
    p.add_prefix_space = r.flag(j, path, "add_prefix_space", true);
    if (r.flag(j, path, "use_regex", true)) p.regex = std::make_shared<Regex>(kGpt2Pattern, where);
  } else if (t == "Metaspace") {
    p.kind = PreTokenizer::Metaspace;
    p.replacement = r.str(j, path, "replacement");
    p.prepend = prepend_scheme(r, j, path);
    p.split = r.flag(j, path, "split", true);
  } else if (t == "Digits") {
    p.kind = PreTokenizer::Digits;
    p.behavior = r.flag(j, path, "individual_digits", false) ? Behavior::Isolated : Behavior::Contiguous;
    p.regex = std::make_shared<Regex>("\\p{N}", where);
  } else {
    r.fail(path + ".type",
           cat("unsupported pre-tokenizer '", t, "' (supported: Sequence, Split, ByteLevel, Metaspace, Digits)"));
  }
  m.pre_tokenizers.push_back(std::move(p));
}

void parse_decoder(const Reader& r, const json& j, const std::string& path, Impl& m) {
  if (j.is_null()) return;
  std::string t = r.type(j, path);
  Decoder d{Decoder::Fuse};
  if (t == "Sequence") {
    const json& l = r.list(j, path, "decoders");
    for (size_t i = 0; i < l.size(); ++i) parse_decoder(r, l[i], r.sub(path, "decoders", i), m);
    return;
  } else if (t == "ByteLevel") {
    d.kind = Decoder::ByteLevel;
  } else if (t == "ByteFallback") {
    d.kind = Decoder::ByteFallback;
  } else if (t == "Fuse") {
    d.kind = Decoder::Fuse;
  } else if (t == "Strip") {
    d.kind = Decoder::Strip;
    d.content = r.str(j, path, "content");
    d.start = r.integer(j, path, "start", 0, 1 << 20), d.stop = r.integer(j, path, "stop", 0, 1 << 20);
  } else if (t == "Replace") {
    d.kind = Decoder::Replace;
    d.regex = r.pattern(j, path, &d.text);
    d.content = r.str(j, path, "content");
  } else if (t == "Metaspace") {
    d.kind = Decoder::Metaspace;
    d.text = r.str(j, path, "replacement");
    d.prepend = prepend_scheme(r, j, path) != PreTokenizer::Never;
  } else {
    r.fail(path + ".type", cat("unsupported decoder '", t,
                               "' (supported: Sequence, ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace)"));
  }
  m.decoders.push_back(std::move(d));
}

// Single-sequence ids the post-processor puts before / after the text.
void parse_post_processor(const Reader& r, const json& j, const std::string& path, Impl& m) {
  if (j.is_null()) return;
  std::string t = r.type(j, path);
  std::vector<int32_t> pre, post;
  if (t == "Sequence") {
    const json& l = r.list(j, path, "processors");
    for (size_t i = 0; i < l.size(); ++i) parse_post_processor(r, l[i], r.sub(path, "processors", i), m);
    return;
  } else if (t == "ByteLevel") {
    return;  // only trims offsets
  } else if (t == "TemplateProcessing") {
    const json& single = r.list(j, path, "single");
    const json& specials = r.need(j, path, "special_tokens");
    bool seen_a = false;
    for (size_t i = 0; i < single.size(); ++i) {
      std::string key = r.sub(path, "single", i);
      const json& item = single[i];
      if (item.is_object() && item.contains("Sequence")) { seen_a = true; continue; }
      if (!item.is_object() || !item.contains("SpecialToken"))
        r.fail(key, cat("expected {\"SpecialToken\": ..} or {\"Sequence\": ..}, got ", item.dump()));
      std::string name = r.str(item["SpecialToken"], key + ".SpecialToken", "id");
      if (!specials.contains(name))
        r.fail(path + ".special_tokens", cat("no entry for '", name, "' used in ", key));
      const json& ids = r.list(specials[name], path + ".special_tokens." + name, "ids");
      for (const json& id : ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= kMaxId)
          r.fail(path + ".special_tokens." + name + ".ids", cat("invalid id ", id.dump()));
        (seen_a ? post : pre).push_back(id.get<int32_t>());
      }
    }
  } else if (t == "RobertaProcessing" || t == "BertProcessing") {
    for (const char* k : {"cls", "sep"}) {
      const json& v = r.need(j, path, k);
      if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer() || v[1].get<int64_t>() < 0 ||
          v[1].get<int64_t>() >= kMaxId)
        r.fail(path + "." + k, cat("expected [token, id], got ", v.dump()));
      (k[0] == 'c' ? pre : post).push_back(v[1].get<int32_t>());
    }
  } else {
    r.fail(path + ".type", cat("unsupported post-processor '", t,
                               "' (supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)"));
  }
  m.prefix.insert(m.prefix.begin(), pre.begin(), pre.end());
  m.suffix.insert(m.suffix.end(), post.begin(), post.end());
}

void parse_bpe(const Reader& r, const json& model, Impl& m) {
  if (!model.is_object()) r.fail("model", "expected an object; this is not a HF tokenizer.json");
  if (model.contains("type") || !model.contains("merges")) {
    std::string t = r.str(model, "model", "type");
    if (t != "BPE") r.fail("model.type", cat("unsupported model type '", t, "' (supported: BPE)"));
  }
  const json& vocab = r.need(model, "model", "vocab");
  if (!vocab.is_object()) r.fail("model.vocab", "expected an object {token: id}");
  m.vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const json& v = it.value();
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= kMaxId)
      r.fail("model.vocab", cat("token '", it.key(), "' has invalid id ", v.dump()));
    m.vocab[it.key()] = v.get<int32_t>();
    m.set_token(v.get<int32_t>(), it.key(), false);
  }
  m.cont_prefix = r.str(model, "model", "continuing_subword_prefix", "");
  m.eow_suffix = r.str(model, "model", "end_of_word_suffix", "");
  m.fuse_unk = r.flag(model, "model", "fuse_unk", false);
  m.byte_fallback = r.flag(model, "model", "byte_fallback", false);
  m.ignore_merges = r.flag(model, "model", "ignore_merges", false);
  std::string unk = r.str(model, "model", "unk_token", "");
  if (auto it = m.vocab.find(unk); !unk.empty() && it != m.vocab.end()) m.unk = it->second;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto it = m.vocab.find(std::string_view(name));
    m.byte_ids[b] = it == m.vocab.end() ? -1 : it->second;
  }

  const json& merges = r.list(model, "model", "merges");
  auto id_of = [&](const std::string& tok, const std::string& key) {
    auto it = m.vocab.find(tok);
    if (it == m.vocab.end()) r.fail(key, cat("merge refers to token '", tok, "', which is not in model.vocab"));
    return it->second;
  };
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& e = merges[i];
    std::string key = cat("model.merges[", i, "]"), a, b;
    if (e.is_string()) {  // "a b" (older layout)
      const std::string& s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) r.fail(key, cat("expected \"left right\", got \"", s, "\""));
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
      a = e[0].get<std::string>(), b = e[1].get<std::string>();
    } else {
      r.fail(key, cat("expected \"left right\" or [\"left\", \"right\"], got ", e.dump()));
    }
    std::string merged = a + (b.starts_with(m.cont_prefix) ? b.substr(m.cont_prefix.size()) : b);
    int32_t ia = id_of(a, key), ib = id_of(b, key), im = id_of(merged, key);
    m.merges.add(ia, ib, {int32_t(i), im});  // later duplicates win, as in HF
  }
  m.merges.build(m.tokens.size());
}

void parse_added_tokens(const Reader& r, const json& j, Impl& m) {
  if (j.is_null()) return;
  if (!j.is_array()) r.fail("added_tokens", "expected a list");
  for (size_t i = 0; i < j.size(); ++i) {
    std::string key = cat("added_tokens[", i, "]");
    if (!j[i].is_object()) r.fail(key, "expected an object");
    AddedToken a;
    a.id = int32_t(r.integer(j[i], key, "id", 0, kMaxId - 1));
    a.content = r.str(j[i], key, "content");
    if (a.content.empty()) r.fail(key + ".content", "empty token");
    a.special = r.flag(j[i], key, "special", false);
    a.normalized = r.flag(j[i], key, "normalized", !a.special);
    a.single_word = r.flag(j[i], key, "single_word", false);
    a.lstrip = r.flag(j[i], key, "lstrip", false);
    a.rstrip = r.flag(j[i], key, "rstrip", false);
    m.set_token(a.id, a.content, a.special);
    m.added.push_back(std::move(a));
  }
}

void load_json(Impl& m, const std::string& bytes) {
  Reader r{m.source};
  json j;
  if (json_too_deep(bytes)) r.fail("(root)", cat("JSON nests more than ", kMaxJsonDepth, " levels deep"));
  try {
    j = json::parse(bytes);
  } catch (const json::parse_error& e) {
    throw Error(cat("tokenizer ", m.source, ": invalid JSON: ", e.what()));
  }
  if (!j.is_object()) r.fail("(root)", "expected a JSON object");
  if (!j.contains("model")) r.fail("model", "missing; this is not a HF tokenizer.json");
  parse_bpe(r, j["model"], m);
  parse_normalizer(r, j.value("normalizer", json()), "normalizer", m);
  parse_pre_tokenizer(r, j.value("pre_tokenizer", json()), "pre_tokenizer", m);
  parse_decoder(r, j.value("decoder", json()), "decoder", m);
  parse_post_processor(r, j.value("post_processor", json()), "post_processor", m);
  parse_added_tokens(r, j.value("added_tokens", json()), m);
  for (int32_t id : m.prefix) if (size_t(id) >= m.tokens.size() || !m.flags[id]) r.fail("post_processor", cat("id ", id, " is not in the vocabulary"));
  for (int32_t id : m.suffix) if (size_t(id) >= m.tokens.size() || !m.flags[id]) r.fail("post_processor", cat("id ", id, " is not in the vocabulary"));
  m.finish_added();
}

// ---- tiktoken (Llama 3): "<base64 token> <rank>" per line, special tokens appended after.
bool looks_like_tiktoken(const std::string& s) {
  size_t e = s.find('\n');
  std::string_view line = std::string_view(s).substr(0, e);
  size_t sp = line.find(' ');
  if (sp == 0 || sp == std::string_view::npos || sp + 1 >= line.size()) return false;
  auto b64 = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '='; };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::string_view rank = line.substr(sp + 1);
  if (!rank.empty() && rank.back() == '\r') rank.remove_suffix(1);
  return std::all_of(line.begin(), line.begin() + sp, b64) && !rank.empty() &&
         std::all_of(rank.begin(), rank.end(), digit);
}

bool base64_decode(std::string_view in, std::string& out) {
  out.clear();
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (char c : in) {
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
          : c == '+' ? 62 : c == '/' ? 63 : c == '=' ? -2 : -1;
    if (v == -1 || (v != -2 && pad)) return false;
    if (v == -2) { ++pad; continue; }
    acc = acc << 6 | uint32_t(v), bits += 6;
    if (bits >= 8) bits -= 8, out += char((acc >> bits) & 0xFF);
  }
  return pad <= 2 && (in.size() % 4 == 0 || pad == 0) && !out.empty();
}

void load_tiktoken(Impl& m, const std::string& text) {
  StrMap<int32_t> raw;  // token bytes -> rank
  std::vector<std::string> by_rank;
  std::string tok;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t e = std::min(text.find('\n', pos), text.size());
    std::string_view line = std::string_view(text).substr(pos, e - pos);
    pos = e + 1, ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    size_t sp = line.find(' ');
    int64_t rank = -1;
    if (sp != std::string_view::npos && sp + 1 < line.size() && line.size() - sp <= 10 &&
        std::all_of(line.begin() + sp + 1, line.end(), [](char c) { return c >= '0' && c <= '9'; }))
      rank = std::stoll(std::string(line.substr(sp + 1)));
    FT_CHECK(rank >= 0 && rank < kMaxId && base64_decode(line.substr(0, sp), tok), "tokenizer ", m.source,
             ": line ", line_no, ": expected \"<base64 token> <rank>\" (tiktoken format), got \"",
             line.substr(0, 80), "\"");
    FT_CHECK(raw.emplace(tok, int32_t(rank)).second, "tokenizer ", m.source, ": line ", line_no,
             ": token listed twice");
    if (size_t(rank) >= by_rank.size()) by_rank.resize(rank + 1);
    FT_CHECK(by_rank[rank].empty(), "tokenizer ", m.source, ": line ", line_no, ": rank ", rank, " used twice");
    by_rank[rank] = tok;
  }
  FT_CHECK(!by_rank.empty(), "tokenizer ", m.source, ": no tokens (empty tiktoken file)");
  // The same model as HF's conversion: byte-level BPE whose merges are every split of a token
  // into two tokens, ranked by the merged token's rank.
  for (int b = 0; b < 256; ++b)
    FT_CHECK(raw.count(std::string(1, char(b))), "tokenizer ", m.source, ": byte ", b,
             " has no token; a tiktoken vocabulary must contain all 256 single bytes");
  const auto& b2u = byte_to_unicode();
  for (size_t rank = 0; rank < by_rank.size(); ++rank) {
    const std::string& t = by_rank[rank];
    if (t.empty()) continue;
    std::string u;
    for (unsigned char c : t) u += b2u[c];
    m.vocab[u] = int32_t(rank);
    m.set_token(int32_t(rank), u, false);
    for (size_t k = 1; k < t.size(); ++k) {
      auto l = raw.find(std::string_view(t).substr(0, k)), r = raw.find(std::string_view(t).substr(k));
      if (l != raw.end() && r != raw.end())
        m.merges.add(l->second, r->second, {int32_t(rank), int32_t(rank)});
    }
  }
  m.merges.build(m.tokens.size());
  m.ignore_merges = true;
  std::string where = cat("tokenizer ", m.source);
  m.pre_tokenizers.push_back({PreTokenizer::Split, std::make_shared<Regex>(kLlama3Pattern, where)});
  m.pre_tokenizers.push_back({PreTokenizer::ByteLevel});
  m.decoders.push_back({Decoder::ByteLevel});
  // Llama 3 special tokens (meta-llama/llama-models, models/llama3/tokenizer.py).
  std::vector<std::string> specials = {"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                                       "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                                       "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                                       "<|python_tag|>", "<|image|>"};
  for (int i = 2; specials.size() < 256; ++i) specials.push_back(cat("<|reserved_special_token_", i, "|>"));
  int32_t base = int32_t(by_rank.size());
  for (size_t i = 0; i < specials.size(); ++i) {
    AddedToken a;
    a.content = specials[i], a.id = base + int32_t(i), a.special = true;
    m.set_token(a.id, a.content, true);
    m.added.push_back(std::move(a));
  }
  m.prefix = {base};  // <|begin_of_text|>
  m.finish_added();
}
}  // namespace
}  // namespace ft::tok

namespace ft {

Tokenizer Tokenizer::from_file(const std::string& path) { return from_bytes(tok::read_file(path, "tokenizer file"), path); }

Tokenizer Tokenizer::from_json_text(const std::string& tokenizer_json, const std::string& config_json, const std::string& source) {
  Tokenizer t = from_bytes(tokenizer_json, source);
  if (!config_json.empty()) t.set_specials_from_text(config_json, source);
  return t;
}

Tokenizer Tokenizer::from_bytes(const std::string& bytes, const std::string& path) {
  auto m = std::make_shared<tok::Impl>();
  m->source = path;
  size_t first = bytes.find_first_not_of(" \t\r\n");
  bool tiktoken = false;
  if (first != std::string::npos && bytes[first] == '{') {
    tok::load_json(*m, bytes);
  } else if (tok::looks_like_tiktoken(bytes)) {
    tok::load_tiktoken(*m, bytes);
    tiktoken = true;
  } else {
    throw Error(cat("tokenizer ", path, ": neither a HF tokenizer.json nor a tiktoken tokenizer.model ",
                    "(SentencePiece .model files are not supported: use the model's tokenizer.json)"));
  }
  Tokenizer t;
  t.prefix_ = m->prefix, t.suffix_ = m->suffix;
  t.impl_ = m;
  // Without tokenizer_config.json: BOS is what the post-processor prepends, EOS a well-known name.
  auto pick = [&](std::initializer_list<const char*> names, std::string& s, std::optional<int32_t>& id) {
    for (const char* n : names)
      if (int32_t i = t.token_to_id(n); i >= 0) { s = n, id = i; return; }
  };
  if (!t.prefix_.empty()) t.bos_token_ = t.id_to_token(t.prefix_[0]), t.bos_id_ = t.prefix_[0];
  pick({"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"}, t.eos_token_, t.eos_id_);
  if (tiktoken) pick({"<|finetune_right_pad_id|>"}, t.pad_token_, t.pad_id_);
  if (m->unk >= 0) t.unk_token_ = t.id_to_token(m->unk), t.unk_id_ = m->unk;
  return t;
}

void Tokenizer::set_specials_from_config(const std::string& path) {
  set_specials_from_text(tok::read_file(path, "tokenizer config"), path);
}

void Tokenizer::set_specials_from_text(const std::string& text, const std::string& path) {
  using json = nlohmann::json;
  const json c = parse_json(text, cat("tokenizer config ", path));
  FT_CHECK(c.is_object(), "tokenizer config ", path, ": expected a JSON object");
  // A special token is a string, {"content": ..} (AddedToken), or null (none).
  auto special = [&](const char* key, std::string& s, std::optional<int32_t>& id) {
    if (!c.contains(key)) return;
    const json& v = c[key];
    if (v.is_object() && v.contains("content") && v["content"].is_string()) s = v["content"];
    else if (v.is_string()) s = v;
    else if (v.is_null()) s.clear();
    else throw Error(cat("tokenizer config ", path, ": key '", key, "': expected a token string, got ", v.dump()));
    int32_t i = s.empty() ? -1 : token_to_id(s);
    id = i >= 0 ? std::optional<int32_t>(i) : std::nullopt;
  };
  special("bos_token", bos_token_, bos_id_);
  special("eos_token", eos_token_, eos_id_);
  special("pad_token", pad_token_, pad_id_);
  special("unk_token", unk_token_, unk_id_);
  if (auto it = c.find("chat_template"); it != c.end() && !it->is_null()) {
    if (it->is_string()) {
      chat_template_ = *it;
    } else if (it->is_array() && !it->empty()) {  // [{"name": .., "template": ..}]: the default one
      const json* pick = &(*it)[0];
      for (const json& e : *it)
        if (e.is_object() && e.value("name", "") == "default") pick = &e;
      FT_CHECK(pick->is_object() && pick->contains("template") && (*pick)["template"].is_string(),
               "tokenizer config ", path, ": key 'chat_template': expected a string or a list of {name, template}");
      chat_template_ = (*pick)["template"];
    } else {
      throw Error(cat("tokenizer config ", path, ": key 'chat_template': expected a string or a list"));
    }
  }
  if (auto it = c.find("clean_up_tokenization_spaces"); it != c.end() && it->is_boolean()) clean_up_ = *it;
  // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from add_bos/eos_token.
  std::string cls = c.value("tokenizer_class", "");
  for (const char* k : {"LlamaTokenizer", "CodeLlamaTokenizer", "GemmaTokenizer"}) {
    if (cls != k && cls != std::string(k) + "Fast") continue;
    auto flag = [&](const char* key, bool def) { return c.contains(key) && c[key].is_boolean() ? c[key].get<bool>() : def; };
    prefix_.clear(), suffix_.clear();
    if (flag("add_bos_token", true) && bos_id_) prefix_.push_back(*bos_id_);
    if (flag("add_eos_token", false) && eos_id_) suffix_.push_back(*eos_id_);
  }
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path d(dir);
  Tokenizer t = fs::exists(d / "tokenizer.json")    ? from_file((d / "tokenizer.json").string())
                : fs::exists(d / "tokenizer.model") ? from_file((d / "tokenizer.model").string())
                                                    : throw Error(cat("tokenizer: no tokenizer.json or tokenizer.model in ",
                                                                      dir, "; pass a HF model directory"));
  if (fs::exists(d / "tokenizer_config.json")) t.set_specials_from_config((d / "tokenizer_config.json").string());
  if (fs::exists(d / "chat_template.jinja")) t.chat_template_ = tok::read_file((d / "chat_template.jinja").string(), "chat template");
  return t;
}

}  // namespace ft
