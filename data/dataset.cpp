// Dataset loading, validation and tokenisation with exact loss masks (see data/dataset.h).
#include "data/dataset.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <tbb/parallel_for.h>

#include "autograd/error.h"
#include "data/chat_template.h"
#include "data/jinja.h"
#include "autograd/json_file.h"
#include "data/tokenizer.h"

namespace ft {

using ojson = nlohmann::ordered_json;

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

const char* row_format_name(RowFormat f) {
  switch (f) {
    case RowFormat::Text: return "text";
    case RowFormat::PromptCompletion: return "prompt/completion";
    case RowFormat::Chat: return "messages";
    case RowFormat::Alpaca: return "alpaca (instruction/input/output)";
    case RowFormat::ShareGPT: return "sharegpt (conversations)";
  }
  return "?";
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

std::string alpaca_prompt(std::string_view instruction, std::string_view input) {
  // Stanford Alpaca's prompts, with the newline after "### Response:" that torchtune adds.
  if (input.empty())
    return cat("Below is an instruction that describes a task. Write a response that appropriately "
               "completes the request.\n\n### Instruction:\n", instruction, "\n\n### Response:\n");
  return cat("Below is an instruction that describes a task, paired with an input that provides "
             "further context. Write a response that appropriately completes the request.\n\n"
             "### Instruction:\n", instruction, "\n\n### Input:\n", input, "\n\n### Response:\n");
}

// ---------------------------------------------------------------------------------------------
// Reading files

std::string RawRows::locate(size_t i) const {
  if (json_array) return cat(path, " row ", where[i]);
  return cat(path, ":", where[i]);
}

namespace {

std::string read_file(const std::string& path) {
  std::error_code ec;
  FT_CHECK(std::filesystem::exists(path, ec), "dataset file ", path,
           " does not exist: check the path (a data directory needs train.jsonl)");
  FT_CHECK(!std::filesystem::is_directory(path, ec), "dataset path ", path,
           " is a directory: pass it as a data directory (train.jsonl, valid.jsonl, test.jsonl)"
           " or name a file");
  std::ifstream f(path, std::ios::binary);
  FT_CHECK(f, "cannot open dataset file ", path, ": check its permissions");
  std::ostringstream s;
  s << f.rdbuf();
  std::string data = s.str();
  if (data.size() >= 3 && data.compare(0, 3, "\xEF\xBB\xBF") == 0) data.erase(0, 3);  // UTF-8 BOM
  return data;
}

const char* json_type(const ojson& j) {
  switch (j.type()) {
    case ojson::value_t::null: return "null";
    case ojson::value_t::object: return "an object";
    case ojson::value_t::array: return "a list";
    case ojson::value_t::string: return "a string";
    case ojson::value_t::boolean: return "a boolean";
    case ojson::value_t::number_integer:
    case ojson::value_t::number_unsigned:
    case ojson::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

std::string keys_of(const ojson& row) {
  std::string k;
  for (auto it = row.begin(); it != row.end(); ++it) k += (k.empty() ? "\"" : ", \"") + it.key() + "\"";
  return k.empty() ? "none" : k;
}

std::string parse_error_text(const nlohmann::json::parse_error& e) {
  // nlohmann's what() is "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
  std::string w = e.what();
  size_t p = w.find("] ");
  return p == std::string::npos ? w : w.substr(p + 2);
}

}  // namespace

RawRows read_rows(const std::string& path) {
  RawRows raw;
  raw.path = path;
  const std::string data = read_file(path);
  size_t first = data.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && data[first] == '[') {
    raw.json_array = true;
    ojson arr;
    FT_CHECK(!json_too_deep(data, kMaxJsonDepth + 1), path, ": JSON nests more than ", kMaxJsonDepth,
             " levels deep inside a row");
    try {
      arr = ojson::parse(data);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(cat(path, ": invalid JSON array (", parse_error_text(e),
                      "); a .json dataset must be one JSON array of row objects"));
    }
    raw.rows.reserve(arr.size());
    for (size_t i = 0; i < arr.size(); ++i) {
      FT_CHECK(arr[i].is_object(), path, " row ", i, ": each element of the array must be a JSON "
               "object (a row), got ", json_type(arr[i]));
      raw.rows.push_back(std::move(arr[i]));
      raw.where.push_back(int64_t(i));
    }
  } else {
    // JSONL: split lines first, parse them in parallel, report the first bad line.
    std::vector<std::pair<size_t, size_t>> lines;  // byte range
    std::vector<int64_t> numbers;
    size_t pos = 0;
    int64_t line = 0;
    while (pos < data.size()) {
      size_t nl = data.find('\n', pos);
      if (nl == std::string::npos) nl = data.size();
      ++line;
      size_t a = pos, b = nl;
      while (a < b && (data[a] == ' ' || data[a] == '\t' || data[a] == '\r')) ++a;
      while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\t' || data[b - 1] == '\r')) --b;
      if (b > a) {
        lines.emplace_back(a, b);
        numbers.push_back(line);
      }
      pos = nl + 1;
    }
    raw.rows.resize(lines.size());
    raw.where = numbers;
    std::vector<std::string> errors(lines.size());
    tbb::parallel_for(size_t(0), lines.size(), [&](size_t i) {
      std::string_view text(data.data() + lines[i].first, lines[i].second - lines[i].first);
      if (json_too_deep(text)) {
        errors[i] = cat(path, ":", numbers[i], ": the row nests more than ", kMaxJsonDepth, " levels deep");
        return;
      }
      try {
        raw.rows[i] = ojson::parse(text);
        if (!raw.rows[i].is_object())
          errors[i] = cat(path, ":", numbers[i], ": each line must be one JSON object (a row), got ",
                          json_type(raw.rows[i]));
      } catch (const nlohmann::json::parse_error& e) {
        errors[i] = cat(path, ":", numbers[i], ": invalid JSON (", parse_error_text(e),
                        "); each line of a .jsonl file must be one complete JSON object");
      }
    });
    for (const auto& e : errors) FT_CHECK(e.empty(), e);
  }
  FT_CHECK(!raw.rows.empty(), "dataset file ", path, " has no rows: it needs at least one JSON "
           "object (JSONL: one per line; .json: an array of objects)");
  return raw;
}

RowFormat detect_format(const RawRows& raw) {
  FT_CHECK(!raw.rows.empty(), "dataset file ", raw.path, " has no rows");
  const ojson& r = raw.rows[0];
  if (r.contains("messages")) return RowFormat::Chat;
  if (r.contains("conversations")) return RowFormat::ShareGPT;
  if (r.contains("prompt") && r.contains("completion")) return RowFormat::PromptCompletion;
  if (r.contains("instruction") && r.contains("output")) return RowFormat::Alpaca;
  if (r.contains("text")) return RowFormat::Text;
  throw Error(cat(raw.locate(0), ": unknown row format; the row has the keys ", keys_of(r),
                  ". Accepted formats: {\"text\"}, {\"prompt\", \"completion\"}, {\"messages\": "
                  "[{\"role\", \"content\"}, ...], \"tools\"?}, {\"conversations\": [{\"from\", "
                  "\"value\"}, ...]} (ShareGPT), {\"instruction\", \"input\"?, \"output\"} (Alpaca)"));
}

// ---------------------------------------------------------------------------------------------
// Rows -> samples

namespace {

// A row ready for tokenisation: either plain text (with the byte where the completion starts) or
// a conversation for the chat template.
struct Sample {
  bool chat = false;
  std::string text;
  size_t completion_begin = std::string::npos;  // plain: supervised from here to the end
  ojson messages, tools;
  std::vector<uint8_t> supervised;  // chat: per message
};

const std::string& need_string(const ojson& row, const char* key, RowFormat f) {
  auto it = row.find(key);
  FT_CHECK(it != row.end(), "the row has no \"", key, "\" (keys found: ", keys_of(row),
           "); every row of a ", row_format_name(f), " dataset needs it");
  FT_CHECK(it->is_string(), "\"", key, "\" must be a string, got ", json_type(*it));
  return it->get_ref<const std::string&>();
}

// Content: a string, or a list of text parts joined; null allowed when allow_null.
ojson norm_content(const ojson& c, size_t mi, bool allow_null) {
  if (c.is_string()) return c;
  if (c.is_null() && allow_null) return c;
  if (c.is_array()) {
    std::string s;
    for (const auto& p : c) {
      FT_CHECK(p.is_object() && p.value("type", std::string("text")) == "text",
               "message ", mi, ": \"content\" parts must be {\"type\": \"text\", \"text\": ...} "
               "(images and other media are not supported), got ", p.dump());
      const ojson* t = p.contains("text") ? &p["text"] : p.contains("value") ? &p["value"] : nullptr;
      FT_CHECK(t && t->is_string(), "message ", mi, ": a \"content\" part needs a string \"text\" "
               "(or \"value\"), got ", p.dump());
      s += t->get_ref<const std::string&>();
    }
    return s;
  }
  throw Error(cat("message ", mi, ": \"content\" must be a string or a list of text parts, got ",
                  json_type(c)));
}

ojson norm_tools(const ojson& t) {
  if (t.is_null()) return t;
  ojson list = t;
  if (t.is_string()) {  // LLaMA-Factory stores tools as a JSON string
    if (t.get_ref<const std::string&>().empty()) return ojson();
    FT_CHECK(!json_too_deep(t.get_ref<const std::string&>()), "\"tools\" nests more than ", kMaxJsonDepth, " levels deep");
    try {
      list = ojson::parse(t.get_ref<const std::string&>());
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(cat("\"tools\" is a string but not valid JSON (", parse_error_text(e), ")"));
    }
  }
  FT_CHECK(list.is_array(), "\"tools\" must be a list of tool (function) definitions, got ",
           json_type(list));
  for (auto& tool : list) {
    FT_CHECK(tool.is_object(), "\"tools\" entries must be objects, got ", json_type(tool));
    if (!tool.contains("type") && tool.contains("name"))  // bare function schema -> OpenAI form
      tool = ojson{{"type", "function"}, {"function", tool}};
  }
  return list;
}

void need_chat(const ChatRenderer* chat, RowFormat f, const char* why) {
  FT_CHECK(chat, row_format_name(f), " rows", why, " need a chat template, and none was given "
           "(the tokenizer has no chat_template): pass one, or use text / prompt-completion rows");
}

Sample chat_sample(const ojson& row, const ChatRenderer* chat) {
  Sample s;
  s.chat = true;
  auto it = row.find("messages");
  FT_CHECK(it != row.end(), "the row has no \"messages\" (keys found: ", keys_of(row),
           "); every row of a chat dataset needs it (the format is set by the first row)");
  FT_CHECK(it->is_array(), "\"messages\" must be a list of {\"role\", \"content\"} objects, got ",
           json_type(*it));
  FT_CHECK(!it->empty(), "\"messages\" is empty: a conversation needs at least one message");
  s.messages = ojson::array();
  for (size_t mi = 0; mi < it->size(); ++mi) {
    const ojson& m = (*it)[mi];
    FT_CHECK(m.is_object(), "message ", mi, " must be an object {\"role\", \"content\"}, got ",
             json_type(m));
    auto role = m.find("role");
    FT_CHECK(role != m.end() && role->is_string(), "message ", mi,
             " needs a string \"role\" (system, user, assistant or tool); keys found: ", keys_of(m));
    const std::string& r = role->get_ref<const std::string&>();
    FT_CHECK(r == "system" || r == "user" || r == "assistant" || r == "tool" || r == "developer",
             "message ", mi, " has the role \"", r,
             "\"; accepted roles: system, developer, user, assistant, tool");
    ojson out = m;
    bool calls = false;
    if (auto tc = m.find("tool_calls"); tc != m.end() && !tc->is_null()) {
      FT_CHECK(r == "assistant", "message ", mi, ": only assistant messages may have \"tool_calls\"");
      FT_CHECK(tc->is_array(), "message ", mi, ": \"tool_calls\" must be a list, got ", json_type(*tc));
      calls = !tc->empty();
    }
    auto c = m.find("content");
    FT_CHECK(c != m.end() || calls, "message ", mi, " (", r, ") has no \"content\"; keys found: ",
             keys_of(m));
    if (c != m.end()) out["content"] = norm_content(*c, mi, calls);
    out.erase("loss_weight");
    bool sup = r == "assistant";
    if (auto lw = m.find("loss_weight"); lw != m.end()) {
      FT_CHECK(lw->is_number(), "message ", mi, ": \"loss_weight\" must be a number, got ",
               json_type(*lw));
      if (lw->get<double>() == 0) sup = false;
    }
    s.supervised.push_back(sup);
    s.messages.push_back(std::move(out));
  }
  if (auto t = row.find("tools"); t != row.end()) s.tools = norm_tools(*t);
  need_chat(chat, RowFormat::Chat, "");
  return s;
}

Sample sharegpt_sample(const ojson& row, const ChatRenderer* chat) {
  auto found = row.find("conversations");
  FT_CHECK(found != row.end(), "the row has no \"conversations\" (keys found: ", keys_of(row),
           "); every row of a ShareGPT dataset needs it (the format is set by the first row)");
  const ojson& conv = *found;
  FT_CHECK(conv.is_array(), "\"conversations\" must be a list of {\"from\", \"value\"} objects, got ",
           json_type(conv));
  FT_CHECK(!conv.empty(), "\"conversations\" is empty: a conversation needs at least one turn");
  ojson messages = ojson::array();
  if (auto sys = row.find("system"); sys != row.end() && !sys->is_null()) {
    FT_CHECK(sys->is_string(), "\"system\" must be a string, got ", json_type(*sys));
    if (!sys->get_ref<const std::string&>().empty())
      messages.push_back(ojson{{"role", "system"}, {"content", *sys}});
  }
  for (size_t i = 0; i < conv.size(); ++i) {
    const ojson& t = conv[i];
    FT_CHECK(t.is_object() && t.contains("from") && t["from"].is_string(), "turn ", i,
             " of \"conversations\" needs a string \"from\"; got ", t.dump());
    FT_CHECK(t.contains("value") && t["value"].is_string(), "turn ", i,
             " of \"conversations\" needs a string \"value\"; got ", t.dump());
    const std::string& from = t["from"].get_ref<const std::string&>();
    const ojson& value = t["value"];
    if (from == "human" || from == "user") {
      messages.push_back(ojson{{"role", "user"}, {"content", value}});
    } else if (from == "gpt" || from == "assistant") {
      messages.push_back(ojson{{"role", "assistant"}, {"content", value}});
    } else if (from == "system") {
      messages.push_back(ojson{{"role", "system"}, {"content", value}});
    } else if (from == "observation" || from == "tool") {
      messages.push_back(ojson{{"role", "tool"}, {"content", value}});
    } else if (from == "function_call") {
      ojson call;
      FT_CHECK(!json_too_deep(value.get_ref<const std::string&>()), "turn ", i, ": a function_call \"value\" nests more than ",
               kMaxJsonDepth, " levels deep");
      try {
        call = ojson::parse(value.get_ref<const std::string&>());
      } catch (const nlohmann::json::parse_error& e) {
        throw Error(cat("turn ", i, ": a function_call \"value\" must be JSON {\"name\", "
                        "\"arguments\"} (", parse_error_text(e), ")"));
      }
      ojson calls = call.is_array() ? call : ojson::array({call});
      ojson tool_calls = ojson::array();
      for (const auto& c : calls) {
        FT_CHECK(c.is_object() && c.contains("name") && c["name"].is_string(), "turn ", i,
                 ": a function call needs a string \"name\"; got ", c.dump());
        ojson fn{{"name", c["name"]}, {"arguments", c.value("arguments", ojson::object())}};
        tool_calls.push_back(ojson{{"type", "function"}, {"function", std::move(fn)}});
      }
      messages.push_back(ojson{{"role", "assistant"}, {"content", nullptr},
                               {"tool_calls", std::move(tool_calls)}});
    } else {
      throw Error(cat("turn ", i, " has \"from\": \"", from, "\"; accepted: human, gpt, system, "
                      "function_call, observation (or user, assistant, tool)"));
    }
  }
  ojson as_chat{{"messages", std::move(messages)}};
  if (auto t = row.find("tools"); t != row.end()) as_chat["tools"] = *t;
  return chat_sample(as_chat, chat);
}

Sample chat_pair(const std::string& user, const std::string& assistant) {
  Sample s;
  s.chat = true;
  s.messages = ojson::array({ojson{{"role", "user"}, {"content", user}},
                             ojson{{"role", "assistant"}, {"content", assistant}}});
  s.supervised = {0, 1};
  return s;
}

Sample make_sample(const ojson& row, RowFormat f, const ChatRenderer* chat, const DatasetOptions& o) {
  switch (f) {
    case RowFormat::Text: {
      Sample s;
      s.text = need_string(row, "text", f);
      return s;
    }
    case RowFormat::PromptCompletion: {
      const std::string& p = need_string(row, "prompt", f);
      const std::string& c = need_string(row, "completion", f);
      if (o.use_chat_template.value_or(chat != nullptr)) {
        need_chat(chat, f, " with use_chat_template");
        return chat_pair(p, c);
      }
      Sample s;
      s.text = p + c;
      s.completion_begin = p.size();
      return s;
    }
    case RowFormat::Alpaca: {
      const std::string& ins = need_string(row, "instruction", f);
      const std::string& out = need_string(row, "output", f);
      std::string input;
      if (auto it = row.find("input"); it != row.end() && !it->is_null()) {
        FT_CHECK(it->is_string(), "\"input\" must be a string, got ", json_type(*it));
        input = it->get<std::string>();
      }
      if (o.alpaca_chat) {
        need_chat(chat, f, " with alpaca_chat");
        return chat_pair(input.empty() ? ins : ins + "\n" + input, out);
      }
      Sample s;
      s.text = alpaca_prompt(ins, input);
      s.completion_begin = s.text.size();
      s.text += out;
      return s;
    }
    case RowFormat::Chat: return chat_sample(row, chat);
    case RowFormat::ShareGPT: return sharegpt_sample(row, chat);
  }
  return {};
}

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
  if (opt.print_warnings)
    for (const auto& w : ds.warnings) std::cerr << "ft: warning: " << w << "\n";
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
