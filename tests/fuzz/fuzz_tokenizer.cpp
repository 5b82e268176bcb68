// Tokenizers. tokenizer_load: the input is a tokenizer.json (or tiktoken file), optionally followed
// by a NUL byte and a tokenizer_config.json; it loads through Tokenizer::from_dir and then encodes
// and decodes a few fixed strings. tokenizer_encode: the input is text for the fixed tokenizers of
// tests/data and tests/fixtures (byte-level BPE, tiktoken, NFC + regex split, SentencePiece-style
// BPE with byte fallback).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "autograd/error.h"
#include "data/tokenizer.h"
#include "tests/fuzz/fuzz_targets.h"

namespace ft::fuzz {

namespace {

// Everything a caller may do with a loaded tokenizer and a text.
// lossless: decode(encode(text)) must give the text back (byte-level BPE without normalizers).
void exercise(const Tokenizer& t, std::string_view text, bool lossless = false) {
  std::vector<int32_t> ids;
  try {
    ids = t.encode(text, true);
  } catch (const Error&) {  // invalid UTF-8
    return;
  }
  const auto plain = t.encode(text, false);
  FT_FUZZ_ASSERT(t.encode(text, true) == ids, "encode is not deterministic");
  const int64_t vocab = int64_t(t.vocab_size());
  for (int32_t id : plain) FT_FUZZ_ASSERT(id >= 0 && id < vocab, "encode returned an id outside the vocabulary");
  // The stream concatenates to decode() without the (not prefix-stable) clean-up of spaces.
  Tokenizer no_clean_up = t;
  no_clean_up.set_clean_up_tokenization_spaces(false);
  for (bool skip : {false, true}) {
    std::string full = no_clean_up.decode(ids, skip);
    StreamDecoder s(t, skip);
    std::string streamed;
    for (int32_t id : ids) streamed += s.push(id);
    streamed += s.flush();
    // Where decode() replaced an invalid byte-fallback run with U+FFFD the stream may already have
    // returned the run's first characters (data/tokenizer.h); elsewhere the two agree exactly.
    if (full.find("\xEF\xBF\xBD") == std::string::npos)
      FT_FUZZ_ASSERT(streamed == full, "StreamDecoder output differs from decode()");
  }
  if (lossless) FT_FUZZ_ASSERT(t.decode(plain) == text, "decode(encode(text, false)) != text");
  for (int32_t id : plain) {
    (void)t.id_to_token(id);
    (void)t.is_special(id);
  }
  (void)t.token_to_id(text);
}

}  // namespace

int tokenizer_load(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  const void* nul = std::memchr(p, 0, size);
  const size_t n1 = nul ? size_t(static_cast<const char*>(nul) - p) : size;
  const std::string dir = scratch_dir() + "/tok";
  static const bool made = std::filesystem::create_directories(dir);
  (void)made;
  write_scratch("tok/tokenizer.json", p, n1);
  const std::string cfg = scratch_dir() + "/tok/tokenizer_config.json";
  if (nul) write_scratch("tok/tokenizer_config.json", p + n1 + 1, size - n1 - 1);
  else std::remove(cfg.c_str());
  std::optional<Tokenizer> t;
  try {
    t.emplace(Tokenizer::from_dir(dir));
  } catch (const Error&) {
    return 0;
  }
  for (std::string_view text : {"Hello world! <s> </s><|endoftext|>", " \t\n  12345 caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD", ""})
    exercise(*t, text);
  for (int32_t id : {0, 1, 255, 256, int32_t(t->vocab_size()) - 1, int32_t(t->vocab_size())}) {
    try {
      (void)t->decode({id});
    } catch (const Error&) {
    }
  }
  return 0;
}

int tokenizer_encode(const uint8_t* data, size_t size) {
  struct Tok {
    Tokenizer t;
    bool lossless;
  };
  static const std::vector<Tok> toks = [] {
    const std::string d = FT_TEST_DATA;
    return std::vector<Tok>{{Tokenizer::from_dir(d + "/../fixtures/tokenizer"), true},  // byte-level BPE
                            {Tokenizer::from_dir(d + "/tokenizers/llama3"), true},      // tiktoken
                            {Tokenizer::from_dir(d + "/tokenizers/qwen2"), false},      // NFC + Split regex
                            {Tokenizer::from_dir(d + "/tokenizers/llama2"), false}};    // SentencePiece-style
  }();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const Tok& t : toks) exercise(t.t, text, t.lossless);
  return 0;
}

}  // namespace ft::fuzz
