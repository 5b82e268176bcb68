// Datasets, part 3: Samples -> (ids, loss mask) with exact span boundaries, truncation, parallel
// assembly and data directories. Part 1 (reading rows) is dataset_rows.cpp, part 2 (row formats)
// dataset_formats.cpp.
#include "data/dataset.h"

#include <algorithm>
#include <filesystem>

#include <tbb/parallel_for.h>

#include "autograd/error.h"
#include "data/chat_template.h"
#include "data/dataset_detail.h"
#include "data/jinja.h"
#include "data/tokenizer.h"

namespace ft {

using namespace dataset_detail;

std::vector<int32_t> TokenizerEncoder::encode(std::string_view text, bool add_special) const {
  return tok_.encode(text, add_special);
}
std::string TokenizerEncoder::decode(const std::vector<int32_t>& ids) const { return tok_.decode(ids); }
std::optional<int32_t> TokenizerEncoder::bos_id() const { return tok_.bos_id(); }
std::optional<int32_t> TokenizerEncoder::eos_id() const { return tok_.eos_id(); }
std::optional<int32_t> TokenizerEncoder::pad_id() const { return tok_.pad_id(); }
bool TokenizerEncoder::is_special(int32_t id) const { return tok_.is_special(id); }

ChatTemplateRenderer::ChatTemplateRenderer(const ChatTemplate& t, nlohmann::ordered_json extra)
    : t_(std::make_shared<const ChatTemplate>(t)), extra_(std::move(extra)) {}

RenderedChat ChatTemplateRenderer::render(const nlohmann::ordered_json& messages,
                                          const nlohmann::ordered_json& tools) const {
  RenderedChat r;
  try {
    MaskedChat m = t_->render_masked(messages, tools, extra_);
    r.text = std::move(m.text);
    for (const auto& s : m.spans) r.spans.push_back({s.message, s.begin, s.end});
    return r;
  } catch (const jinja::RaisedError&) {
    throw;  // the template rejected the conversation (raise_exception): a data error
  } catch (const Error&) {
    // Earlier turns render differently once later ones exist: only the last turn can be placed.
    std::vector<MaskedChat> turns = t_->render_per_turn(messages, tools, extra_);
    r.text = t_->render(messages, tools, false, extra_);
    if (turns.empty() || turns.back().text != r.text) throw;
    const auto& s = turns.back().spans.at(0);
    r.spans.push_back({s.message, s.begin, s.end});
    r.last_turn_only = true;
    return r;
  }
}

std::unique_ptr<ChatRenderer> chat_renderer_for(const Tokenizer& tok, const std::string& source,
                                                nlohmann::ordered_json extra) {
  const std::string& src = source.empty() ? tok.chat_template() : source;
  if (src.empty()) return nullptr;
  nlohmann::ordered_json specials = nlohmann::ordered_json::object();
  for (auto [key, val] : {std::pair{"bos_token", &tok.bos_token()}, {"eos_token", &tok.eos_token()},
                          {"unk_token", &tok.unk_token()}, {"pad_token", &tok.pad_token()}})
    if (!val->empty()) specials[key] = *val;
  return std::make_unique<ChatTemplateRenderer>(ChatTemplate(src, "chat_template", specials),
                                                std::move(extra));
}

int64_t Example::n_targets() const {
  int64_t n = 0;
  for (uint8_t m : mask) n += m;
  return n;
}
int64_t Dataset::n_tokens() const {
  int64_t n = 0;
  for (const auto& e : examples) n += int64_t(e.ids.size());
  return n;
}
int64_t Dataset::n_targets() const {
  int64_t n = 0;
  for (const auto& e : examples) n += e.n_targets();
  return n;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Samples -> (ids, mask)

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b, size_t b_off) {
  size_t n = 0, m = std::min(a.size(), b.size() - b_off);
  while (n < m && a[n] == b[b_off + n]) ++n;
  return n;
}

struct Encoder {
  const TextEncoder& enc;
  size_t n_pre = 0, n_suf = 0;  // tokens the post-processor puts before / after the text

  // Maps byte positions of `text` to token boundaries of its encoding `ids` (dataset.h). Anchors:
  // (byte, token) pairs known to be token boundaries: the start of the text, and the end of each
  // special token (added tokens are split off before the model runs, so the text after one is
  // encoded on its own). A boundary is looked up by encoding only the text after the nearest
  // anchor; when that does not line up (a token crosses the anchor, e.g. an added token that
  // strips spaces), by encoding the whole prefix.
  struct Boundaries {
    const Encoder& E;
    const std::string& text;
    const std::vector<int32_t>& ids;
    size_t off, body_end;  // tokens before / after the text's own tokens
    std::vector<std::pair<size_t, size_t>> anchors;

    Boundaries(const Encoder& e, const std::string& t, const std::vector<int32_t>& i, size_t o, size_t be)
        : E(e), text(t), ids(i), off(o), body_end(be) {
      anchors.emplace_back(0, off);
      size_t cursor = 0;
      for (size_t j = off; j < body_end; ++j) {
        if (!E.special(ids[j])) continue;
        std::string lit = E.enc.decode({ids[j]});
        size_t p = lit.empty() ? std::string::npos : text.find(lit, cursor);
        if (p == std::string::npos) break;
        cursor = p + lit.size();
        anchors.emplace_back(p, j);
        anchors.emplace_back(cursor, j + 1);
      }
    }

    // Tokens of ids that lie before byte `pos`; `clean` = no token crosses it.
    size_t at(size_t pos, bool& clean) const {
      clean = true;
      if (pos == 0) return off;
      if (pos >= text.size()) return body_end;
      auto a = std::upper_bound(anchors.begin(), anchors.end(), std::make_pair(pos, SIZE_MAX)) - 1;
      std::string_view tv(text);
      std::vector<int32_t> w = E.enc.encode(tv.substr(a->first, pos - a->first), false);
      size_t k = common_prefix(w, ids, a->second);
      if (k < w.size() && a->first > 0) {  // the anchor did not hold: whole prefix
        a = anchors.begin();
        w = E.enc.encode(tv.substr(0, pos), false);
        k = common_prefix(w, ids, off);
      }
      clean = k == w.size();
      return a->second + k;
    }
  };

  bool blank(int32_t id) const {
    std::string s = enc.decode({id});
    return s.find_first_not_of(" \t\r\n") == std::string::npos;
  }
  bool special(int32_t id) const { return enc.is_special(id) || id == enc.eos_id(); }

  // Span [a, b) of an assistant turn -> its end including the end-of-turn token (dataset.h).
  size_t end_of_turn(const std::vector<int32_t>& ids, size_t a, size_t b) const {
    size_t e = b;
    while (e > a && !special(ids[e - 1]) && blank(ids[e - 1])) --e;
    if (e > a && special(ids[e - 1])) return e;
    size_t j = b;
    while (j < ids.size() && !special(ids[j]) && blank(ids[j])) ++j;
    if (j < ids.size() && special(ids[j])) return j + 1;
    return b;
  }

  Example encode(const Sample& s, const ChatRenderer* chat, const DatasetOptions& o,
                 int64_t& merges, bool& last_only) const {
    Example ex;
    if (!s.chat) {
      ex.ids = enc.encode(s.text, true);
      const size_t body_end = ex.ids.size() - std::min(ex.ids.size(), n_suf);
      if (auto eos = enc.eos_id(); eos && (ex.ids.empty() || ex.ids.back() != *eos)) ex.ids.push_back(*eos);
      ex.mask.assign(ex.ids.size(), 1);
      if (o.mask_prompt && s.completion_begin != std::string::npos) {
        bool clean;
        size_t a = Boundaries(*this, s.text, ex.ids, n_pre, body_end).at(s.completion_begin, clean);
        merges += !clean;
        std::fill(ex.mask.begin(), ex.mask.begin() + std::min(a, ex.mask.size()), 0);
      }
    } else {
      RenderedChat r = chat->render(s.messages, s.tools);
      last_only = r.last_turn_only && o.mask_prompt;
      ex.ids = enc.encode(r.text, false);
      ex.mask.assign(ex.ids.size(), o.mask_prompt ? 0 : 1);
      if (o.mask_prompt) {
        const Boundaries bd(*this, r.text, ex.ids, 0, ex.ids.size());
        for (const ChatSpan& sp : r.spans) {
          FT_CHECK((sp.message < s.supervised.size() || sp.message == SIZE_MAX) &&
                   sp.begin <= sp.end && sp.end <= r.text.size(),
                   "the chat template returned an invalid assistant span (message ", sp.message,
                   ", bytes ", sp.begin, "..", sp.end, " of ", r.text.size(), ")");
          if (sp.message != SIZE_MAX && !s.supervised[sp.message]) continue;
          bool c1, c2;
          size_t a = bd.at(sp.begin, c1), b = bd.at(sp.end, c2);
          if (!c2 && b < ex.ids.size()) ++b;  // the token crossing the end is in the span
          merges += !c1 + !c2;
          b = end_of_turn(ex.ids, a, std::max(a, b));
          std::fill(ex.mask.begin() + a, ex.mask.begin() + b, 1);
        }
      }
    }
    if (!ex.mask.empty()) ex.mask[0] = 0;
    return ex;
  }
};

}  // namespace

Dataset make_dataset(const RawRows& raw, const TextEncoder& enc, const ChatRenderer* chat,
                     const DatasetOptions& opt) {
  FT_CHECK(opt.max_seq_length >= 2, "max_seq_length must be at least 2 tokens, got ",
           opt.max_seq_length);
  Dataset ds;
  ds.source = raw.path;
  ds.format = detect_format(raw);
  ds.n_rows = int64_t(raw.rows.size());

  Encoder E{enc};
  {  // where the post-processor puts the text: prefix + body + suffix
    std::vector<int32_t> with = enc.encode("Hello world", true), body = enc.encode("Hello world", false);
    for (size_t o = 0; o + body.size() <= with.size(); ++o)
      if (std::equal(body.begin(), body.end(), with.begin() + o)) {
        E.n_pre = o;
        E.n_suf = with.size() - body.size() - o;
        break;
      }
  }

  const size_t n = raw.rows.size();
  std::vector<Example> out(n);
  std::vector<std::string> errors(n);
  std::vector<int64_t> merges(n, 0);
  std::vector<uint8_t> last_only(n, 0);
  tbb::parallel_for(size_t(0), n, [&](size_t i) {
    try {
      Sample s = make_sample(raw.rows[i], ds.format, chat, opt);
      bool lo = false;
      out[i] = E.encode(s, chat, opt, merges[i], lo);
      last_only[i] = lo;
      out[i].row = int64_t(i);
    } catch (const std::exception& e) {
      errors[i] = cat(raw.locate(i), ": ", e.what());
    }
  });
  for (const auto& e : errors) FT_CHECK(e.empty(), e);

  const size_t L = size_t(opt.max_seq_length);
  for (size_t i = 0; i < n; ++i) {
    Example& ex = out[i];
    ds.n_boundary_merges += merges[i];
    ds.n_last_turn_only += last_only[i];
    if (ex.ids.size() > L) {
      ++ds.n_truncated;
      ex.ids.resize(L);
      ex.mask.resize(L);
    }
    if (ex.n_targets() == 0) {
      ++ds.n_dropped;
      continue;
    }
    ds.examples.push_back(std::move(ex));
  }
  if (ds.n_truncated)
    ds.warnings.push_back(cat(raw.path, ": ", ds.n_truncated, " of ", n, " rows are longer than "
                              "max_seq_length = ", L, " tokens and were truncated (their first ", L,
                              " tokens are kept)"));
  if (ds.n_dropped)
    ds.warnings.push_back(cat(raw.path, ": ", ds.n_dropped, " of ", n, " rows have no training "
                              "target", ds.n_truncated ? " left after truncation" : "",
                              " and were dropped"));
  if (ds.n_last_turn_only)
    ds.warnings.push_back(cat(raw.path, ": in ", ds.n_last_turn_only, " of ", n, " rows only the "
                              "last assistant turn is a target: the chat template renders earlier "
                              "turns differently once later ones exist (e.g. Qwen3 drops earlier "
                              "<think> blocks)"));
  FT_CHECK(!ds.examples.empty(), raw.path, ": no usable rows: all ", n, " rows have no training "
           "target (with mask_prompt a row needs a completion / an assistant turn within "
           "max_seq_length = ", L, " tokens)");
  return ds;
}

Dataset load_dataset(const std::string& path, const TextEncoder& enc, const ChatRenderer* chat,
                     const DatasetOptions& opt) {
  return make_dataset(read_rows(path), enc, chat, opt);
}

DataSplits load_data_dir(const std::string& dir, const TextEncoder& enc, const ChatRenderer* chat,
                         const DatasetOptions& opt) {
  namespace fs = std::filesystem;
  std::error_code ec;
  FT_CHECK(fs::is_directory(dir, ec), "data directory ", dir, " does not exist (or is not a "
           "directory): it must hold train.jsonl and optionally valid.jsonl / test.jsonl");
  auto find = [&](const char* name) -> std::optional<std::string> {
    for (const char* ext : {".jsonl", ".json"}) {
      fs::path p = fs::path(dir) / (std::string(name) + ext);
      if (fs::exists(p, ec)) return p.string();
    }
    return std::nullopt;
  };
  auto train = find("train");
  FT_CHECK(train, "data directory ", dir, " has no train.jsonl (or train.json): the training "
           "rows must be there, with optional valid.jsonl and test.jsonl beside it");
  DataSplits s{load_dataset(*train, enc, chat, opt), std::nullopt, std::nullopt};
  if (auto v = find("valid")) s.valid = load_dataset(*v, enc, chat, opt);
  if (auto t = find("test")) s.test = load_dataset(*t, enc, chat, opt);
  return s;
}

}  // namespace ft