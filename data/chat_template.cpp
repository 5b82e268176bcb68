#include "data/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/json_file.h"

namespace ft {

using json = nlohmann::ordered_json;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  FT_CHECK(f, "chat template: cannot open '", path, "'");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// A tokenizer_config token entry is a string, null, or an AddedToken dict {"content": ...}.
json token_string(const json& v) {
  if (v.is_object() && v.contains("content")) return v["content"];
  return v;
}

json json_slice(const json& messages, size_t n) {
  json out = json::array();
  for (size_t k = 0; k < n; ++k) out.push_back(messages[k]);
  return out;
}

bool is_assistant(const json& m) { return m.is_object() && m.value("role", "") == "assistant"; }

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, std::string name, const json& special_tokens)
    : tmpl_(source, std::move(name)), special_(json::object()) {
  FT_CHECK(special_tokens.is_object(), "chat template '", tmpl_.name(), "': special_tokens must be a JSON object");
  for (const auto& [k, v] : special_tokens.items())
    if (!v.is_null()) special_[k] = v;
}

ChatTemplate ChatTemplate::from_tokenizer_config(const std::string& path) {
  const json cfg = parse_ordered_json(read_file(path), cat("chat template: '", path, "'"));
  std::string source;
  const json& ct = cfg.contains("chat_template") ? cfg["chat_template"] : json();
  if (ct.is_string()) {
    source = ct.get<std::string>();
  } else if (ct.is_array()) {
    std::string names;
    for (const auto& t : ct) {
      if (t.value("name", "") == "default") source = t.value("template", "");
      names += ' ';  // not " " + name: GCC 12 -Wrestrict false positive (bug 105329)
      names += t.value("name", "?");
    }
    FT_CHECK(!source.empty(), "chat template: '", path, "' has named templates (", names,
             " ) but none called 'default'");
  } else {
    const auto jinja = std::filesystem::path(path).parent_path() / "chat_template.jinja";
    FT_CHECK(std::filesystem::exists(jinja), "chat template: '", path,
             "' has no chat_template and there is no chat_template.jinja beside it");
    source = read_file(jinja.string());
  }
  json special = json::object();
  for (const char* k : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"})
    if (cfg.contains(k) && !token_string(cfg[k]).is_null()) special[k] = token_string(cfg[k]);
  // transformers 5 passes only these named tokens (its special_tokens_map); additional special
  // tokens are not template variables.
  return ChatTemplate(source, std::filesystem::path(path).filename().string(), special);
}

jinja::Template::Output ChatTemplate::render_output(const json& messages, const json& tools,
                                                    bool add_generation_prompt, const json& extra) const {
  FT_CHECK(messages.is_array(), "chat template '", name(), "': messages must be a JSON array, got ", messages.type_name());
  FT_CHECK(extra.is_object() || extra.is_null(), "chat template '", name(), "': extra variables must be a JSON object");
  std::vector<std::pair<std::string, jinja::Value>> vars;
  vars.emplace_back("messages", jinja::Value::from_json(messages));
  vars.emplace_back("tools", jinja::Value::from_json(tools));
  vars.emplace_back("documents", jinja::Value::none());
  vars.emplace_back("add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
  for (const auto& [k, v] : special_.items()) vars.emplace_back(k, jinja::Value::from_json(v));
  if (extra.is_object())
    for (const auto& [k, v] : extra.items()) {
      FT_CHECK(k != "messages" && k != "tools" && k != "documents" && k != "add_generation_prompt",
               "chat template '", name(), "': extra variable '", k, "' is set by the renderer itself; pass it directly");
      vars.emplace_back(k, jinja::Value::from_json(v));
    }
  return tmpl_.render(vars, now_);
}

std::string ChatTemplate::render(const json& messages, const json& tools, bool add_generation_prompt,
                                 const json& extra) const {
  return render_output(messages, tools, add_generation_prompt, extra).text;
}

MaskedChat ChatTemplate::render_masked(const json& messages, const json& tools, const json& extra) const {
  auto full = render_output(messages, tools, false, extra);
  MaskedChat out{std::move(full.text), {}};
  std::vector<size_t> assistants;
  for (size_t k = 0; k < messages.size(); ++k)
    if (is_assistant(messages[k])) assistants.push_back(k);
  if (has_generation_blocks()) {
    const bool known = full.generation.size() == assistants.size();
    for (size_t k = 0; k < full.generation.size(); ++k)
      out.spans.push_back({full.generation[k].first, full.generation[k].second, known ? assistants[k] : SIZE_MAX});
    return out;
  }
  for (size_t k : assistants) {
    const std::string p = render(json_slice(messages, k), tools, true, extra);
    const std::string q = render(json_slice(messages, k + 1), tools, false, extra);
    FT_CHECK(q.compare(0, p.size(), p) == 0 && out.text.compare(0, q.size(), q) == 0, "chat template '", name(),
             "': cannot locate assistant message ", k,
             " by prefix rendering: the template renders earlier turns differently once later messages exist "
             "(Qwen3 drops earlier <think> blocks, for one). Use ChatTemplate::render_per_turn instead.");
    out.spans.push_back({p.size(), q.size(), k});
  }
  return out;
}

std::vector<MaskedChat> ChatTemplate::render_per_turn(const json& messages, const json& tools, const json& extra) const {
  FT_CHECK(messages.is_array(), "chat template '", name(), "': messages must be a JSON array");
  std::vector<MaskedChat> out;
  for (size_t k = 0; k < messages.size(); ++k) {
    if (!is_assistant(messages[k])) continue;
    const std::string p = render(json_slice(messages, k), tools, true, extra);
    std::string q = render(json_slice(messages, k + 1), tools, false, extra);
    FT_CHECK(q.compare(0, p.size(), p) == 0, "chat template '", name(), "': the rendering of messages[:", k,
             "] with the generation prompt is not a prefix of the rendering of messages[:", k + 1,
             "], so assistant message ", k, " cannot be located");
    const size_t b = p.size(), e = q.size();
    out.push_back(MaskedChat{std::move(q), {AssistantSpan{b, e, k}}});
  }
  return out;
}

std::string render_chat_template(const std::string& tmpl, const json& messages, const json& tools,
                                 bool add_generation_prompt, const json& extra) {
  return ChatTemplate(tmpl).render(messages, tools, add_generation_prompt, extra);
}

}  // namespace ft
