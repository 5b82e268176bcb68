// Chat templates vs HF transformers: every case in tests/data/chat_templates/expected.json was
// rendered by tokenizer.apply_chat_template (tests/fixtures/gen_chat_templates.py); the C++
// renderer must produce byte-identical text, the same raise_exception messages, the same
// {% generation %} spans, and fail (not render) where HF fails.
#include <gtest/gtest.h>

#include <ctime>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "data/chat_template.h"

namespace {

using json = nlohmann::ordered_json;
const std::string kDir = std::string(FT_TEST_DATA) + "/chat_templates/";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f) << path;
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

const json& fixture() {
  static const json j = json::parse(slurp(kDir + "expected.json"));
  return j;
}

std::tm fixed_now() {  // the "now" the generator pinned strftime_now to
  std::tm tm{};
  std::istringstream(fixture()["now"].get<std::string>()) >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
  tm.tm_isdst = -1;
  std::mktime(&tm);  // fills tm_wday / tm_yday
  return tm;
}

ft::ChatTemplate load(const json& c) {
  const std::string src = c.contains("source") ? c["source"].get<std::string>()
                                               : slurp(kDir + c["template"].get<std::string>() + ".jinja");
  ft::ChatTemplate t(src, c["name"].get<std::string>());
  t.set_time(fixed_now());
  return t;
}

std::string span_text(const ft::MaskedChat& m, size_t k) {
  return m.text.substr(m.spans[k].begin, m.spans[k].end - m.spans[k].begin);
}

const json& find_case(const std::string& name) {
  for (const auto& c : fixture()["cases"])
    if (c["name"] == name) return c;
  throw std::runtime_error("no fixture case " + name);
}

TEST(ChatTemplate, MatchesHfFixtures) {
  ASSERT_GE(fixture()["cases"].size(), 70u);
  for (const auto& c : fixture()["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    if (c.contains("output")) {
      const ft::ChatTemplate t = load(c);
      const auto out = t.render_output(c["messages"], c["tools"], c["add_generation_prompt"], c["variables"]);
      EXPECT_EQ(out.text, c["output"].get<std::string>());
      if (c.contains("generation_spans")) {
        ASSERT_EQ(out.generation.size(), c["generation_spans"].size());
        for (size_t k = 0; k < out.generation.size(); ++k) {
          EXPECT_EQ(out.generation[k].first, c["generation_spans"][k][0].get<size_t>());
          EXPECT_EQ(out.generation[k].second, c["generation_spans"][k][1].get<size_t>());
        }
      }
      continue;
    }
    const std::string type = c["error"]["type"];
    const std::string msg = c["error"]["message"];
    try {
      const ft::ChatTemplate t = load(c);
      t.render(c["messages"], c["tools"], c["add_generation_prompt"], c["variables"]);
      ADD_FAILURE() << "rendered, but HF raised " << type << ": " << msg;
    } catch (const ft::jinja::RaisedError& e) {
      EXPECT_EQ(type, "TemplateError") << e.what();
      EXPECT_EQ(e.message, msg);
      EXPECT_NE(std::string(e.what()).find("chat template '" + name + "' line "), std::string::npos) << e.what();
    } catch (const ft::Error& e) {
      EXPECT_NE(type, "TemplateError") << "HF raised via raise_exception: " << msg << "; we: " << e.what();
    }
  }
}

TEST(ChatTemplate, FromTokenizerConfig) {
  // The stock Qwen2 tokenizer_config.json: template + eos/pad/additional special tokens.
  const auto t = ft::ChatTemplate::from_tokenizer_config(std::string(FT_TEST_DATA) + "/tokenizers/qwen2/tokenizer_config.json");
  EXPECT_EQ(t.special_tokens()["eos_token"], "<|im_end|>");
  EXPECT_FALSE(t.special_tokens().contains("bos_token"));  // null in the config
  for (const char* n : {"qwen2/system_multi", "qwen2/system_multi_gen", "qwen2/unicode"}) {
    const json& c = find_case(n);
    EXPECT_EQ(t.render(c["messages"], c["tools"], c["add_generation_prompt"]), c["output"].get<std::string>()) << n;
  }
}

TEST(ChatTemplate, ParseOnceRenderMany) {
  const json& c = find_case("qwen2.5/tools");
  const ft::ChatTemplate t = load(c);
  for (int k = 0; k < 200; ++k)
    ASSERT_EQ(t.render(c["messages"], c["tools"], false, c["variables"]), c["output"].get<std::string>());
  // The one-shot function agrees.
  EXPECT_EQ(ft::render_chat_template(slurp(kDir + "qwen2.5.jinja"), c["messages"], c["tools"], false, c["variables"]),
            c["output"].get<std::string>());
}

TEST(ChatTemplate, MaskedSpansByPrefixRendering) {
  // Qwen2.5 with tool calls: spans cover what the assistant generates after the prompt,
  // including <|im_end|>\n, and nothing else.
  const json& c = find_case("qwen2.5/tools");
  const ft::ChatTemplate t = load(c);
  const ft::MaskedChat m = t.render_masked(c["messages"], c["tools"], c["variables"]);
  EXPECT_EQ(m.text, c["output"].get<std::string>());
  ASSERT_EQ(m.spans.size(), 2u);
  EXPECT_EQ(m.spans[0].message, 1u);
  EXPECT_EQ(span_text(m, 0),
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"days\": 2, \"flags\": "
            "[true, false]}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call><|im_end|>\n");
  EXPECT_EQ(m.spans[1].message, 4u);
  EXPECT_EQ(span_text(m, 1), "21.5 °C at 10:20.<|im_end|>\n");
  EXPECT_EQ(m.text.substr(m.spans[1].end), "");

  // Gemma: the span is the content plus <end_of_turn>\n; user turns stay outside.
  const json& g = find_case("gemma/multi");
  const ft::MaskedChat gm = load(g).render_masked(g["messages"], nullptr, g["variables"]);
  ASSERT_EQ(gm.spans.size(), 2u);
  EXPECT_EQ(span_text(gm, 0), "4.<end_of_turn>\n");
  EXPECT_EQ(span_text(gm, 1), "6, of course.<end_of_turn>\n");

  // Llama-2-chat (no generation prompt; the template leaves its own indentation in the text).
  const json& l = find_case("llama-2-chat/system");
  const ft::MaskedChat lm = load(l).render_masked(l["messages"], nullptr, l["variables"]);
  ASSERT_EQ(lm.spans.size(), 1u);
  EXPECT_EQ(span_text(lm, 0), "\n\n         4. </s>\n");
  EXPECT_EQ(lm.text.substr(lm.spans[0].end), "\n\n        <s>[INST] And 3+3? [/INST]\n");
}

TEST(ChatTemplate, MaskedSpansQwen3) {
  // Qwen3 strips <think> from turns before the last user query: one sequence cannot hold every
  // turn as generated, so render_masked refuses and render_per_turn gives one sequence per turn.
  const json& c = find_case("qwen3/thinking_history");
  const ft::ChatTemplate t = load(c);
  EXPECT_THROW(t.render_masked(c["messages"], nullptr, c["variables"]), ft::Error);
  const auto turns = t.render_per_turn(c["messages"], nullptr, c["variables"]);
  ASSERT_EQ(turns.size(), 2u);
  EXPECT_EQ(span_text(turns[0], 0), "<think>\nGreeting.\n</think>\n\nHello!<|im_end|>\n");
  EXPECT_EQ(span_text(turns[1], 0), "<think>\nAdd.\n</think>\n\n4<|im_end|>\n");
  EXPECT_EQ(turns[1].text, c["output"].get<std::string>());
  // The final turn alone is consistent.
  const ft::MaskedChat last = t.render_masked(json::array({c["messages"][0], c["messages"][1]}), nullptr, c["variables"]);
  ASSERT_EQ(last.spans.size(), 1u);
  EXPECT_EQ(span_text(last, 0), "<think>\nGreeting.\n</think>\n\nHello!<|im_end|>\n");
}

TEST(ChatTemplate, MaskedSpansFromGenerationBlocks) {
  // SmolLM3 marks assistant turns with {% generation %}: those blocks are the spans (HF's
  // return_assistant_tokens_mask), matched to the assistant messages in order.
  const json& c = find_case("smollm3/system_multi");
  const ft::ChatTemplate t = load(c);
  ASSERT_TRUE(t.has_generation_blocks());
  const ft::MaskedChat m = t.render_masked(c["messages"], nullptr, c["variables"]);
  ASSERT_EQ(m.spans.size(), 2u);
  EXPECT_EQ(m.spans[0].message, 2u);
  EXPECT_EQ(m.spans[1].message, 4u);
  EXPECT_EQ(span_text(m, 0), "<|im_start|>assistant\n4.<|im_end|>\n");
  EXPECT_EQ(span_text(m, 1), "<|im_start|>assistant\n6, of course.<|im_end|>\n");
}

void expect_error(const std::string& tmpl, const std::string& needle) {
  try {
    ft::ChatTemplate t(tmpl, "t.jinja");
    t.render(json::array({{{"role", "user"}, {"content", "hi"}}}));
    ADD_FAILURE() << "no error for: " << tmpl;
  } catch (const ft::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("chat template 't.jinja' line "), std::string::npos) << e.what();
  }
}

TEST(ChatTemplate, ClearErrors) {
  expect_error("a\n{% macro m() %}x{% endmacro %}", "line 2: unsupported construct: {% macro %}");
  expect_error("{% include 'x' %}", "unsupported construct: {% include %}");
  expect_error("{{ x | wordwrap }}", "unsupported construct: filter 'wordwrap'");
  expect_error("{{ x is odd_number }}", "unsupported construct: test 'odd_number'");
  expect_error("{% for m in messages recursive %}{% endfor %}", "recursive");
  expect_error("\n\n{{ foo.bar }}", "line 3: 'foo' is undefined");
  expect_error("{{ messages[0].content + 1 }}", "can only concatenate str (not \"int\") to str");
  expect_error("{{ messages[0].content.upper() }}{{ 'é'.upper() }}", "non-ASCII");
  expect_error("{% if true %}x", "unexpected end of template; expected 'elif' or 'else' or 'endif'");
  expect_error("{{ 'abc }}", "unterminated string literal");
  expect_error("{% break %}", "'break' outside of a for loop");
  expect_error("{{ messages.append(1) }}", "list.append() is not supported");
  expect_error("{{ '%s' % 1 }}", "printf-style");
  expect_error("{{ range(3) }}", "printing a range object is not supported");
  expect_error("{{ (1).x }}{{ 'a'.strip }}", "printing a function");
}

TEST(ChatTemplate, BadInputs) {
  ft::ChatTemplate t("{{ messages | length }}", "t.jinja");
  EXPECT_THROW(t.render(json::object()), ft::Error);                                       // not an array
  EXPECT_THROW(t.render(json::array(), nullptr, false, json{{"messages", 1}}), ft::Error);  // reserved name
  EXPECT_THROW(t.render(json::array({json(uint64_t(1) << 63)})), ft::Error);               // beyond int64
  EXPECT_THROW(ft::ChatTemplate::from_tokenizer_config(kDir + "missing.json"), ft::Error);
}

TEST(ChatTemplate, Utf8AndScoping) {
  ft::ChatTemplate t(
      "{% set n = namespace(c=0) %}{% for m in messages %}{% set x = m.content %}{% set n.c = n.c + x|length %}"
      "{% endfor %}{{ x is defined }} {{ n.c }} {{ messages[0].content[1:3] }}",
      "scope");
  EXPECT_EQ(t.render(json::array({{{"role", "user"}, {"content", "ж😀é!"}}})), "False 4 😀é");
  // Invalid UTF-8 in a message is an error, not a garbled prompt.
  EXPECT_THROW(t.render(json::array({{{"role", "user"}, {"content", std::string("a\xff", 2)}}})), ft::Error);
}

}  // namespace
