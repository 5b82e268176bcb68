// Datasets, part 2: the row formats (text, prompt/completion, Alpaca, chat messages, ShareGPT),
// each validated and turned into a Sample: plain text with the byte where the completion starts,
// or a conversation for the chat template (data/dataset.h).
#include <algorithm>

#include "autograd/error.h"
#include "autograd/json_file.h"
#include "data/dataset_detail.h"

namespace ft {

std::string alpaca_prompt(std::string_view instruction, std::string_view input) {
  // Stanford Alpaca's prompts, with the newline after "### Response:" that torchtune adds.
  if (input.empty())
    return cat("Below is an instruction that describes a task. Write a response that appropriately "
               "completes the request.\n\n### Instruction:\n", instruction, "\n\n### Response:\n");
  return cat("Below is an instruction that describes a task, paired with an input that provides "
             "further context. Write a response that appropriately completes the request.\n\n"
             "### Instruction:\n", instruction, "\n\n### Input:\n", input, "\n\n### Response:\n");
}

namespace dataset_detail {
namespace {

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

}  // namespace

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

}  // namespace dataset_detail
}  // namespace ft
