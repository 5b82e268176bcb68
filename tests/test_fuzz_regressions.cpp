// The fuzz entry points (tests/fuzz/fuzz_targets.h) over their seed corpus tests/fuzz/corpus/<target>/
// and over every input a fuzzer ever crashed on, tests/data/fuzz/<target>/: each must return normally
// (accepted, or rejected with ft::Error inside the entry point). Under FT_SANITIZE this also checks
// the inputs for memory errors, UB and leaks.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/fuzz/fuzz_targets.h"

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> inputs(const std::string& target, bool corpus) {
  fs::path dir = corpus ? fs::path(FT_TEST_DATA) / ".." / "fuzz" / "corpus" / target : fs::path(FT_TEST_DATA) / "fuzz" / target;
  std::vector<fs::path> r;
  if (fs::is_directory(dir))
    for (auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) r.push_back(e.path());
  std::sort(r.begin(), r.end());
  return r;
}

std::vector<uint8_t> bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

void replay(const std::string& target, bool corpus) {
  const auto& ts = ft::fuzz::targets();
  auto t = std::find_if(ts.begin(), ts.end(), [&](const ft::fuzz::Target& x) { return target == x.name; });
  ASSERT_NE(t, ts.end()) << target;
  auto files = inputs(target, corpus);
  if (corpus) { EXPECT_GE(files.size(), 5u) << "seed corpus of " << target << " is missing"; }
  for (const fs::path& p : files) {
    std::vector<uint8_t> b = bytes(p);
    EXPECT_NO_THROW(t->fn(b.data(), b.size())) << p;
  }
  // The empty input and a few degenerate ones.
  for (std::string s : {std::string(), std::string(1, '\0'), std::string("{}"), std::string(64, '\xff')})
    EXPECT_NO_THROW(t->fn(reinterpret_cast<const uint8_t*>(s.data()), s.size())) << target;
}

}  // namespace

TEST(FuzzCorpus, Safetensors) { replay("safetensors", true); }
TEST(FuzzCorpus, Config) { replay("config", true); }
TEST(FuzzCorpus, Gguf) { replay("gguf", true); }
TEST(FuzzCorpus, TokenizerLoad) { replay("tokenizer_load", true); }
TEST(FuzzCorpus, TokenizerEncode) { replay("tokenizer_encode", true); }
TEST(FuzzCorpus, ChatTemplate) { replay("chat_template", true); }
TEST(FuzzCorpus, Jsonl) { replay("jsonl", true); }
TEST(FuzzRegressions, AllTargets) {
  for (const auto& t : ft::fuzz::targets()) replay(t.name, false);
}

// ---- Regressions: inputs that crashed (stack overflow or leak under ASan) before the fix.


#include "autograd/error.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/jinja_util.h"
#include "data/tokenizer.h"
#include "models/config.h"

namespace {

std::string rep(const std::string& s, int n) {
  std::string r;
  for (int i = 0; i < n; ++i) r += s;
  return r;
}

// The ft::Error message of f(), or "no error".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ft::Error& e) {
    return e.what();
  }
  return "no error";
}

std::string render(const std::string& tmpl) {
  return ft::ChatTemplate(tmpl, "t").render(nlohmann::ordered_json::array({{{"role", "user"}, {"content", "hi"}}}));
}

}  // namespace

// Deeply nested template syntax overflowed the stack in the parser, the renderer or the AST's
// destructor; now it is an ft::Error at parse time. Real templates nest a few levels.
TEST(FuzzRegressions, JinjaNestingIsBounded) {
  const int n = 20000;
  for (const std::string& t : {"{{ " + rep("(", n) + "1" + rep(")", n) + " }}", "{{ " + rep("[", n) + rep("]", n) + " }}",
                               rep("{% if true %}", n) + "x" + rep("{% endif %}", n), "{{ " + rep("not ", n) + "true }}",
                               "{{ " + rep("-", n) + "1 }}", "{{ 1" + rep("|string", n) + " }}", "{{ x" + rep(".a", n) + " }}",
                               "{{ 1" + rep(" + 1", n) + " }}", "{{ 1" + rep(" if true else 1", n) + " }}",
                               "{{ x" + rep("[0]", n) + " }}", "{{ f" + rep("()", n) + " }}"}) {
    std::string e = error_of([&] { render(t); });
    EXPECT_NE(e.find("levels deep"), std::string::npos) << t.substr(0, 40) << ": " << e;
  }
  // Moderate nesting still renders.
  EXPECT_EQ(render("{{ " + rep("(", 60) + "1" + rep(")", 60) + rep(" + 1", 100) + " }}"), "101");
  EXPECT_EQ(render(rep("{% if true %}", 60) + "x" + rep("{% endif %}", 60)), "x");
}

// A namespace could be made to contain itself (a reference cycle: leaked on every render, endless
// recursion when printed) or to nest without bound in a loop (stack overflow when freed/printed).
TEST(FuzzRegressions, JinjaNamespaceCyclesAndDepth) {
  for (const std::string& t : {std::string("{% set ns = namespace(a=1) %}{% set ns.self = ns %}{{ ns.a }}"),
                               std::string("{% set ns = namespace(a=1) %}{% set ns.l = [1, {'k': ns}] %}"),
                               std::string("{% set a = namespace() %}{% set b = namespace(x=a) %}{% set a.y = b %}")}) {
    std::string e = error_of([&] { render(t); });
    EXPECT_NE(e.find("inside itself"), std::string::npos) << t << ": " << e;
  }
  std::string e = error_of([&] {
    render("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}");
  });
  EXPECT_NE(e.find("nest at most"), std::string::npos) << e;
  // Namespaces holding other namespaces and growing flat lists are fine.
  EXPECT_EQ(render("{% set a = namespace(n=0) %}{% set b = namespace(inner=a, l=[]) %}{% for i in range(300) %}"
                   "{% set a.n = a.n + 1 %}{% set b.l = b.l + [i] %}{% endfor %}{{ b.inner.n }} {{ b.l|length }}"),
            "300 300");
}

// A template could hang or exhaust memory: a loop of 10^10 steps, a string doubled in a loop or
// repeated to 10^10 bytes, a huge tojson / indent width; and "{99999999999999999999}".format()
// threw std::out_of_range (a crash). Each now ends in an ft::Error naming the line
// (data/jinja_util.h: the render budget) after a bounded amount of work (bench/bench_jinja times them:
// under 0.5 s each in the Release build, bench/RESULTS.md).
TEST(FuzzRegressions, JinjaRunawayIsBounded) {
  const struct {
    std::string tmpl, error;
  } cases[] = {
      {"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "too much work"},
      {"{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}", "too much work"},
      {"{% set s = 'a' * 100000 %}{{ (s * 100000)|length }}", "the repeated string would be"},
      {"{{ (['a' * 100000] * 100000)|length }}", "the repeated list's strings would be"},
      {"{{ ([1] * 100000 * 100)|length }}", "the repeated list would have"},
      {"{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "MiB"},
      {"{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "MiB"},
      {"{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "too much work"},
      {"{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
       "MiB"},
      {"{{ 'x'|tojson(indent=3000000000) }}{{ [1, [2]]|tojson(indent=3000000000) }}", "the indentation would be"},
      {"{{ 'a\nb'|indent(3000000000) }}", "the indentation would be"},
      {"{{ ('a' * 100000)|replace('', 'b' * 1000) }}", "replace()'s result would be"},
      {"{{ '{99999999999999999999}'.format(1) }}", "Replacement index out of range"},
      // Naive substring search of an 8 MB pattern in a 16 MB text: ~10^13 steps.
      {"{% set t = 'a' * 16000000 %}{% set p = 'a' * 8000000 ~ 'b' %}{{ p in t }}", "too much work"},
      {"{% set t = 'a' * 16000000 %}{% set p = 'a' * 8000000 ~ 'b' %}{{ t.count(p) }}", "too much work"},
      {"{% set t = 'a' * 16000000 %}{{ t.strip('b' * 8000000) }}", "too much work"},
      {"{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}", "the rendered text would be"},
      {"{% set l = range(100000)|list %}{% for i in range(100000) %}{% if -1 in l %}{% endif %}{% endfor %}",
       "too much work"},
  };
  // Bounded by work, not by a clock (a loaded CI machine makes any time limit flaky; bench/bench_jinja
  // times these): every case stops inside the budget, and a "too much work" stop refused the charge
  // that would have passed it, before doing that work (a search of 10^13 steps is never started).
  for (const auto& c : cases) {
    const std::string e = error_of([&] { render(c.tmpl); });
    EXPECT_NE(e.find(c.error), std::string::npos) << c.tmpl << ": " << e;
    EXPECT_NE(e.find("chat template 't' line 1"), std::string::npos) << e;
    EXPECT_LE(ft::jinja::last_render_work(), ft::jinja::kMaxWork) << c.tmpl;
    if (c.error == "too much work") EXPECT_GT(ft::jinja::last_render_work() + ft::jinja::last_render_refused(), ft::jinja::kMaxWork) << c.tmpl;
    else EXPECT_EQ(ft::jinja::last_render_refused(), 0) << c.tmpl;
  }
  // Empty sequences repeat instantly, as in Python.
  EXPECT_EQ(render("{{ ('' * 1000000000000000000)|length }} {{ ([] * 1000000000000000000)|length }} {{ 'ab' * -3 }}."),
            "0 0 .");
  // Work a real template does is far inside the budget: 1000 turns, long contents, a sorted list.
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (int i = 0; i < 1000; ++i)
    msgs.push_back({{"role", i % 2 ? "assistant" : "user"}, {"content", std::string(2000, 'a' + i % 26)}});
  const ft::ChatTemplate t("{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{% if not loop.last %};"
                           "{% endif %}{% endfor %}{{ (range(20000)|list|sort|unique|list)|length }}",
                           "t");
  const std::string out = t.render(msgs);
  EXPECT_EQ(out.size(), 1000 * 2000 + 500 * std::string("<|user|>").size() + 500 * std::string("<|assistant|>").size() + 999 + 5);
}

// Deeply nested JSON overflowed the stack in nlohmann's recursive copy / dump (config errors,
// dataset rows, tokenizer.json readers) and in Value::from_json.
TEST(FuzzRegressions, DeepJsonIsAnError) {
  const int n = 100000;
  const std::string deep = rep("[", n) + rep("]", n);
  EXPECT_NE(error_of([&] { ft::parse_model_config(R"({"model_type": "llama", "vocab_size": )" + deep + "}"); })
                .find("levels deep"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ft::parse_generation_config(R"({"top_k": )" + deep + "}"); }).find("levels deep"),
            std::string::npos);
  const std::string dir = ft::fuzz::scratch_dir();
  auto file = [&](const std::string& name, const std::string& text) {
    return ft::fuzz::write_scratch(name, text.data(), text.size());
  };
  std::string e = error_of([&] {
    ft::Tokenizer::from_file(file("deep_tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": )" + deep + R"(}, "merges": []}})"));
  });
  EXPECT_NE(e.find("levels deep"), std::string::npos) << e;
  const std::string seq = rep(R"({"type": "Sequence", "normalizers": [)", 20000) + R"({"type": "NFC"})" + rep("]}", 20000);
  e = error_of([&] {
    ft::Tokenizer::from_file(file("deep_normalizer.json", R"({"normalizer": )" + seq + R"(, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})"));
  });
  EXPECT_NE(e.find("levels deep"), std::string::npos) << e;
  const std::string row = R"({"messages": [{"role": "user", "content": )" + deep +
                          R"(}, {"role": "assistant", "content": "b"}], "tools": )" + deep + "}";
  e = error_of([&] { ft::read_rows(file("deep.jsonl", "{\"text\": \"ok\"}\n" + row + "\n")); });
  EXPECT_NE(e.find("deep.jsonl:2"), std::string::npos) << e;
  EXPECT_NE(e.find("levels deep"), std::string::npos) << e;
  e = error_of([&] { ft::read_rows(file("deep.json", "[" + row + "]")); });
  EXPECT_NE(e.find("levels deep"), std::string::npos) << e;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json* cur = &messages;
  for (int i = 0; i < 1000; ++i) cur = &(*cur)[0];  // 1000 levels, built without recursion
  e = error_of([&] { ft::ChatTemplate("{{ messages }}").render(messages); });
  EXPECT_NE(e.find("levels deep"), std::string::npos) << e;
}

// The row format is set by the first row; a later chat / ShareGPT row without "messages" /
// "conversations" was dereferenced through end() (heap-use-after-free, found by fuzz_jsonl).
TEST(FuzzRegressions, LaterRowOfAnotherFormatIsAnError) {
  const std::string dir = std::string(FT_TEST_DATA) + "/../fixtures/tokenizer";
  const ft::Tokenizer tok = ft::Tokenizer::from_dir(dir);
  const ft::TokenizerEncoder enc(tok);
  const ft::ChatTemplate tmpl = ft::ChatTemplate::from_tokenizer_config(dir + "/tokenizer_config.json");
  const ft::ChatTemplateRenderer chat(tmpl);
  ft::DatasetOptions o;
  const std::string good_chat = R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})";
  const std::string good_sharegpt = R"({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]})";
  for (const auto& [first, key] : {std::pair{good_chat, std::string("messages")}, std::pair{good_sharegpt, std::string("conversations")}}) {
    const std::string text = first + "\n" + R"({"iessages": [{"role": "user", "content": "a"}]})" + "\n";
    const std::string path = ft::fuzz::write_scratch("mixed.jsonl", text.data(), text.size());
    const ft::RawRows raw = ft::read_rows(path);
    std::string e = error_of([&] { ft::make_dataset(raw, enc, &chat, o); });
    EXPECT_NE(e.find("mixed.jsonl:2"), std::string::npos) << e;
    EXPECT_NE(e.find("no \"" + key + "\""), std::string::npos) << e;
  }
}
