// Datasets and batching: formats, validation errors, exact loss masks, batching invariants, resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <unistd.h>

#include "autograd/error.h"
#include "data/batching.h"
#include "data/dataset.h"

namespace ft {
namespace {

using ojson = nlohmann::ordered_json;
const std::string kData = std::string(FT_TEST_DATA) + "/datasets";

// A small deterministic tokenizer: special tokens, doubled lower-case letters merge into one token
// ("aa" -> 300), every other byte is its own token. Merges make span boundaries cross tokens.
struct ToyEncoder : TextEncoder {
  std::vector<std::string> specials = {"<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"};
  bool with_bos = true, with_pad = false;
  std::vector<int32_t> encode(std::string_view t, bool add_special) const override {
    std::vector<int32_t> ids;
    if (add_special && with_bos) ids.push_back(1);
    for (size_t i = 0; i < t.size();) {
      bool sp = false;
      for (size_t k = 0; k < specials.size() && !sp; ++k)
        if (t.substr(i, specials[k].size()) == specials[k]) {
          ids.push_back(int32_t(k));
          i += specials[k].size();
          sp = true;
        }
      if (sp) continue;
      if (i + 1 < t.size() && t[i] == t[i + 1] && t[i] >= 'a' && t[i] <= 'z') {
        ids.push_back(300 + (t[i] - 'a'));
        i += 2;
      } else {
        ids.push_back(16 + int32_t(uint8_t(t[i++])));
      }
    }
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) {
      if (id < int32_t(specials.size())) s += specials[size_t(id)];
      else if (id >= 300) s += std::string(2, char('a' + id - 300));
      else s += char(id - 16);
    }
    return s;
  }
  std::optional<int32_t> bos_id() const override { return with_bos ? std::optional<int32_t>(1) : std::nullopt; }
  std::optional<int32_t> eos_id() const override { return 2; }
  std::optional<int32_t> pad_id() const override { return with_pad ? std::optional<int32_t>(0) : std::nullopt; }
  bool is_special(int32_t id) const override { return id >= 0 && id < 5; }
};

// ChatML with spans over the assistant content only (the pipeline adds <|im_end|>).
struct ToyChatML : ChatRenderer {
  RenderedChat render(const ojson& messages, const ojson& tools) const override {
    RenderedChat r;
    if (!tools.is_null()) r.text += "<|im_start|>system\nTools: " + tools.dump() + "<|im_end|>\n";
    for (size_t i = 0; i < messages.size(); ++i) {
      const ojson& m = messages[i];
      r.text += "<|im_start|>" + m["role"].get<std::string>() + "\n";
      size_t b = r.text.size();
      if (m.contains("content") && m["content"].is_string()) r.text += m["content"].get<std::string>();
      if (m.contains("tool_calls")) r.text += "<tool_call>" + m["tool_calls"].dump() + "</tool_call>";
      if (m["role"] == "assistant") r.spans.push_back({i, b, r.text.size()});
      r.text += "<|im_end|>\n";
    }
    return r;
  }
};

// Scratch files for this process, removed at exit.
struct TempDir {
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("ft_test_dataset_" + std::to_string(::getpid()));
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

std::string temp_file(const std::string& name, const std::string& content) {
  static TempDir tmp;
  const auto& dir = tmp.dir;
  std::filesystem::create_directories(dir);
  std::string p = (dir / name).string();
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

DatasetOptions quiet(bool mask_prompt = false, int64_t L = 1 << 20) {
  DatasetOptions o;
  o.mask_prompt = mask_prompt;
  o.max_seq_length = L;
  return o;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// The supervised tokens of an example, decoded.
std::string targets_text(const TextEncoder& enc, const Example& ex) {
  std::vector<int32_t> t;
  for (size_t i = 0; i < ex.ids.size(); ++i)
    if (ex.mask[i]) t.push_back(ex.ids[i]);
  return enc.decode(t);
}

// ---------------------------------------------------------------------------------------------
// Reading and format detection on the real files

TEST(Dataset, ReadsAndDetectsRealFiles) {
  struct Case { std::string file; RowFormat f; size_t rows; };
  for (const Case& c : {Case{"wikisql/train.jsonl", RowFormat::Text, 64},
                        Case{"wwdc25/train.jsonl", RowFormat::PromptCompletion, 48},
                        Case{"llamafactory/v1_sft_demo.jsonl", RowFormat::Chat, 40},
                        Case{"llamafactory/alpaca_en_demo.json", RowFormat::Alpaca, 40},
                        Case{"llamafactory/glaive_toolcall_en_demo.json", RowFormat::ShareGPT, 24}}) {
    RawRows raw = read_rows(kData + "/" + c.file);
    EXPECT_EQ(raw.rows.size(), c.rows) << c.file;
    EXPECT_EQ(detect_format(raw), c.f) << c.file;
  }
}

TEST(Dataset, JsonlBlankLinesCrlfAndBom) {
  std::string p = temp_file("crlf.jsonl", "\xEF\xBB\xBF{\"text\": \"a\"}\r\n\r\n   \n{\"text\": \"b\"}\r\n");
  RawRows raw = read_rows(p);
  ASSERT_EQ(raw.rows.size(), 2u);
  EXPECT_EQ(raw.where[0], 1);
  EXPECT_EQ(raw.where[1], 4);
  EXPECT_EQ(raw.rows[1]["text"], "b");
}

TEST(Dataset, TextRowsBosAndEos) {
  ToyEncoder enc;
  Dataset ds = load_dataset(kData + "/wikisql/train.jsonl", enc, nullptr, quiet());
  RawRows raw = read_rows(kData + "/wikisql/train.jsonl");
  ASSERT_EQ(ds.size(), 64u);
  for (const Example& ex : ds.examples) {
    const std::string text = raw.rows[size_t(ex.row)]["text"];
    EXPECT_EQ(ex.ids.front(), 1);
    EXPECT_EQ(ex.ids.back(), 2);
    EXPECT_EQ(enc.decode(ex.ids), "<s>" + text + "</s>");
    EXPECT_EQ(ex.mask[0], 0);
    EXPECT_EQ(ex.n_targets(), int64_t(ex.ids.size()) - 1);  // every token but the first
  }
  // No BOS: the first text token is not a target (nothing predicts it).
  enc.with_bos = false;
  Dataset nb = load_dataset(kData + "/wikisql/train.jsonl", enc, nullptr, quiet());
  EXPECT_EQ(enc.decode(nb.examples[0].ids), raw.rows[0]["text"].get<std::string>() + "</s>");
  EXPECT_EQ(nb.examples[0].mask[0], 0);
}

TEST(Dataset, PromptCompletionPlainMask) {
  ToyEncoder enc;
  RawRows raw = read_rows(kData + "/wwdc25/train.jsonl");
  Dataset ds = make_dataset(raw, enc, nullptr, quiet(true));
  ASSERT_EQ(ds.size(), raw.rows.size());
  for (const Example& ex : ds.examples) {
    const ojson& r = raw.rows[size_t(ex.row)];
    EXPECT_EQ(enc.decode(ex.ids), "<s>" + r["prompt"].get<std::string>() + r["completion"].get<std::string>() + "</s>");
    EXPECT_EQ(targets_text(enc, ex), r["completion"].get<std::string>() + "</s>");
  }
  // Without mask_prompt everything after the first token is a target.
  Dataset all = make_dataset(raw, enc, nullptr, quiet(false));
  EXPECT_EQ(all.examples[0].n_targets(), int64_t(all.examples[0].ids.size()) - 1);
}

TEST(Dataset, BoundaryMergeCountsInsideSpan) {
  ToyEncoder enc;
  // "xa" + "ab": the tokens are x, aa, b: "aa" crosses the boundary and is a target.
  RawRows raw = read_rows(temp_file("merge.jsonl", "{\"prompt\": \"xa\", \"completion\": \"ab\"}\n"
                                                   "{\"prompt\": \"xy\", \"completion\": \"ab\"}\n"));
  Dataset ds = make_dataset(raw, enc, nullptr, quiet(true));
  EXPECT_EQ(ds.n_boundary_merges, 1);
  EXPECT_EQ(targets_text(enc, ds.examples[0]), "aab</s>");
  EXPECT_EQ(targets_text(enc, ds.examples[1]), "ab</s>");
}

TEST(Dataset, AlpacaPromptText) {
  ToyEncoder enc;
  RawRows raw = read_rows(kData + "/llamafactory/alpaca_en_demo.json");
  Dataset ds = make_dataset(raw, enc, nullptr, quiet(true));
  ASSERT_EQ(ds.size(), 40u);
  int with_input = 0;
  for (const Example& ex : ds.examples) {
    const ojson& r = raw.rows[size_t(ex.row)];
    const std::string in = r["input"];
    with_input += !in.empty();
    const std::string prompt = alpaca_prompt(r["instruction"].get<std::string>(), in);
    EXPECT_EQ(prompt.find("### Input:") != std::string::npos, !in.empty());
    EXPECT_EQ(enc.decode(ex.ids), "<s>" + prompt + r["output"].get<std::string>() + "</s>");
    EXPECT_EQ(targets_text(enc, ex), r["output"].get<std::string>() + "</s>");
  }
  EXPECT_GT(with_input, 0);
  EXPECT_EQ(alpaca_prompt("Say hi.", ""),
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n");
}

TEST(Dataset, ChatMaskCoversAssistantAndEndOfTurn) {
  ToyEncoder enc;
  ToyChatML chat;
  RawRows raw = read_rows(kData + "/llamafactory/v1_sft_demo.jsonl");
  Dataset ds = make_dataset(raw, enc, &chat, quiet(true));
  ASSERT_EQ(ds.size(), 40u);
  for (const Example& ex : ds.examples) {
    // content parts [{"type": "text", "value": ...}] are joined into the content string
    std::string expect;
    for (const auto& m : raw.rows[size_t(ex.row)]["messages"])
      if (m["role"] == "assistant")
        for (const auto& p : m["content"]) expect += p["value"].get<std::string>() + "<|im_end|>";
    EXPECT_EQ(targets_text(enc, ex), expect);
    EXPECT_EQ(enc.decode(ex.ids).rfind("<|im_start|>user\n", 0), 0u);  // no BOS added to chat text
  }
}

TEST(Dataset, ChatLossWeightZeroAndToolCalls) {
  ToyEncoder enc;
  ToyChatML chat;
  std::string row = R"({"messages": [{"role": "user", "content": "q"},)"
                    R"( {"role": "assistant", "content": "skip", "loss_weight": 0.0},)"
                    R"( {"role": "user", "content": "q2"},)"
                    R"( {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {}}}]},)"
                    R"( {"role": "tool", "content": "42"}, {"role": "assistant", "content": "done"}],)"
                    R"( "tools": [{"type": "function", "function": {"name": "f"}}]})";
  Dataset ds = make_dataset(read_rows(temp_file("lw.jsonl", row + "\n")), enc, &chat, quiet(true));
  EXPECT_EQ(targets_text(enc, ds.examples[0]),
            R"(<tool_call>[{"type":"function","function":{"name":"f","arguments":{}}}]</tool_call><|im_end|>done<|im_end|>)");
  EXPECT_NE(enc.decode(ds.examples[0].ids).find("Tools: [{\"type\":\"function\""), std::string::npos);
}

TEST(Dataset, ShareGPTToolCallsBecomeMessages) {
  ToyEncoder enc;
  ToyChatML chat;
  RawRows raw = read_rows(kData + "/llamafactory/glaive_toolcall_en_demo.json");
  Dataset ds = make_dataset(raw, enc, &chat, quiet(true));
  ASSERT_EQ(ds.size(), 24u);
  int calls = 0;
  for (const Example& ex : ds.examples) {
    std::string expect, text = enc.decode(ex.ids);
    for (const auto& t : raw.rows[size_t(ex.row)]["conversations"]) {
      if (t["from"] == "gpt") expect += t["value"].get<std::string>() + "<|im_end|>";
      if (t["from"] == "function_call") {
        ojson c = ojson::parse(t["value"].get<std::string>());
        ojson tc = ojson::array({ojson{{"type", "function"}, {"function", {{"name", c["name"]}, {"arguments", c["arguments"]}}}}});
        expect += "<tool_call>" + tc.dump() + "</tool_call><|im_end|>";
        ++calls;
      }
      if (t["from"] == "observation") {
        EXPECT_NE(text.find("<|im_start|>tool\n" + t["value"].get<std::string>()), std::string::npos);
      }
    }
    EXPECT_EQ(targets_text(enc, ex), expect);
    if (raw.rows[size_t(ex.row)]["tools"] != "[]") {
      EXPECT_EQ(text.rfind("<|im_start|>system\nTools: [{\"type\":\"function\",\"function\":{\"name\":", 0), 0u);
    }
  }
  EXPECT_GT(calls, 5);
}

TEST(Dataset, PromptCompletionAndAlpacaThroughChatTemplate) {
  ToyEncoder enc;
  ToyChatML chat;
  RawRows raw = read_rows(kData + "/wwdc25/train.jsonl");
  Dataset ds = make_dataset(raw, enc, &chat, quiet(true));  // template given: used by default
  const ojson& r0 = raw.rows[0];
  EXPECT_EQ(enc.decode(ds.examples[0].ids), "<|im_start|>user\n" + r0["prompt"].get<std::string>() +
            "<|im_end|>\n<|im_start|>assistant\n" + r0["completion"].get<std::string>() + "<|im_end|>\n");
  EXPECT_EQ(targets_text(enc, ds.examples[0]), r0["completion"].get<std::string>() + "<|im_end|>");
  DatasetOptions o = quiet(true);
  o.use_chat_template = false;
  Dataset plain = make_dataset(raw, enc, &chat, o);
  EXPECT_EQ(enc.decode(plain.examples[0].ids), "<s>" + r0["prompt"].get<std::string>() + r0["completion"].get<std::string>() + "</s>");

  RawRows al = read_rows(kData + "/llamafactory/alpaca_en_demo.json");
  o = quiet(true);
  o.alpaca_chat = true;
  Dataset ac = make_dataset(al, enc, &chat, o);
  for (const Example& ex : ac.examples) {
    const ojson& r = al.rows[size_t(ex.row)];
    std::string user = r["instruction"].get<std::string>();
    if (!r["input"].get<std::string>().empty()) user += "\n" + r["input"].get<std::string>();
    EXPECT_EQ(enc.decode(ex.ids), "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n" +
              r["output"].get<std::string>() + "<|im_end|>\n");
  }
}

TEST(Dataset, DataDirectorySplits) {
  ToyEncoder enc;
  DataSplits s = load_data_dir(kData + "/wikisql", enc, nullptr, quiet());
  EXPECT_EQ(s.train.size(), 64u);
  ASSERT_TRUE(s.valid && s.test);
  EXPECT_EQ(s.valid->size(), 12u);
  EXPECT_EQ(s.test->size(), 12u);
  // valid / test are optional
  auto dir = std::filesystem::path(temp_file("x", "")).parent_path() / "only_train";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "train.jsonl") << "{\"text\": \"hello\"}\n";
  DataSplits t = load_data_dir(dir.string(), enc, nullptr, quiet());
  EXPECT_EQ(t.train.size(), 1u);
  EXPECT_FALSE(t.valid || t.test);
}

TEST(Dataset, TruncationKeepsFirstTokensAndWarnsOnce) {
  ToyEncoder enc;
  RawRows raw = read_rows(kData + "/wikisql/train.jsonl");
  Dataset full = make_dataset(raw, enc, nullptr, quiet(false));
  const int64_t L = 150;
  int64_t longer = 0;
  for (const auto& e : full.examples) longer += int64_t(e.ids.size()) > L;
  ASSERT_GT(longer, 0);
  Dataset ds = make_dataset(raw, enc, nullptr, quiet(false, L));
  EXPECT_EQ(ds.n_truncated, longer);
  ASSERT_EQ(ds.warnings.size(), 1u);
  EXPECT_NE(ds.warnings[0].find(std::to_string(longer) + " of 64 rows are longer than max_seq_length = 150"),
            std::string::npos) << ds.warnings[0];
  for (size_t i = 0; i < ds.size(); ++i) {
    const auto& a = ds.examples[i].ids;
    const auto& b = full.examples[i].ids;
    ASSERT_EQ(a.size(), std::min<size_t>(b.size(), size_t(L)));
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
  }
  // A prompt longer than the limit leaves no target: the row is dropped and counted.
  RawRows pc = read_rows(temp_file("long.jsonl", "{\"prompt\": \"" + std::string(40, 'x') + "\", \"completion\": \"y\"}\n"
                                                 "{\"prompt\": \"p\", \"completion\": \"y\"}\n"));
  Dataset d2 = make_dataset(pc, enc, nullptr, quiet(true, 20));
  EXPECT_EQ(d2.size(), 1u);
  EXPECT_EQ(d2.n_dropped, 1);
  EXPECT_EQ(d2.warnings.size(), 2u);
}

// ---------------------------------------------------------------------------------------------
// Bad input: clear errors before training

TEST(Dataset, BadInputErrors) {
  ToyEncoder enc;
  ToyChatML chat;
  auto err = [&](const std::string& name, const std::string& content, const ChatRenderer* c = nullptr,
                 DatasetOptions o = quiet()) {
    std::string p = temp_file(name, content);
    return error_of([&] { load_dataset(p, enc, c, o); });
  };
  auto has = [](const std::string& msg, std::initializer_list<const char*> parts) {
    for (const char* p : parts)
      if (msg.find(p) == std::string::npos) return ::testing::AssertionFailure() << "missing '" << p << "' in: " << msg;
    return ::testing::AssertionSuccess();
  };
  EXPECT_TRUE(has(err("broken.jsonl", "{\"text\": \"a\"}\n\n{\"text\": \"b\"\n{\"text\": \"c\"}\n"),
                  {"broken.jsonl:3:", "invalid JSON"}));
  EXPECT_TRUE(has(err("notobj.jsonl", "{\"text\": \"a\"}\n[1, 2]\n"), {"notobj.jsonl:2:", "JSON object", "a list"}));
  EXPECT_TRUE(has(err("empty.jsonl", "\n  \n"), {"empty.jsonl", "has no rows"}));
  EXPECT_TRUE(has(err("empty.json", "[]"), {"empty.json", "has no rows"}));
  EXPECT_TRUE(has(err("unknown.jsonl", "{\"question\": \"a\", \"answer\": \"b\"}\n"),
                  {"unknown.jsonl:1:", "unknown row format", "\"question\", \"answer\"", "{\"text\"}",
                   "{\"prompt\", \"completion\"}", "\"messages\""}));
  EXPECT_TRUE(has(err("num.jsonl", "{\"text\": \"a\"}\n{\"text\": 5}\n"), {"num.jsonl:2:", "\"text\" must be a string, got a number"}));
  EXPECT_TRUE(has(err("mixed.jsonl", "{\"text\": \"a\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n"),
                  {"mixed.jsonl:2:", "no \"text\"", "\"prompt\", \"completion\""}));
  EXPECT_TRUE(has(err("pc.jsonl", "{\"prompt\": \"p\", \"completion\": [\"c\"]}\n"), {"pc.jsonl:1:", "\"completion\" must be a string, got a list"}));
  EXPECT_TRUE(has(error_of([&] { read_rows(kData + "/nope.jsonl"); }), {"nope.jsonl", "does not exist"}));
  EXPECT_TRUE(has(error_of([&] { load_data_dir(kData + "/nodir", enc, nullptr, quiet()); }), {"nodir", "does not exist"}));
  EXPECT_TRUE(has(error_of([&] { load_data_dir(kData + "/llamafactory", enc, nullptr, quiet()); }), {"no train.jsonl"}));
  EXPECT_TRUE(has(err("nocontent.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\"}]}\n", &chat),
                  {"nocontent.jsonl:1:", "message 1 (assistant) has no \"content\""}));
  EXPECT_TRUE(has(err("notlist.jsonl", "{\"messages\": {\"role\": \"user\", \"content\": \"q\"}}\n", &chat),
                  {"notlist.jsonl:1:", "\"messages\" must be a list", "got an object"}));
  EXPECT_TRUE(has(err("role.jsonl", "{\"messages\": [{\"role\": \"human\", \"content\": \"q\"}]}\n", &chat),
                  {"role.jsonl:1:", "\"human\"", "accepted roles"}));
  EXPECT_TRUE(has(err("content.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}\n", &chat),
                  {"content.jsonl:1:", "\"content\" must be a string", "got a number"}));
  EXPECT_TRUE(has(err("nochat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n"),
                  {"nochat.jsonl:1:", "need a chat template"}));
  EXPECT_TRUE(has(err("share.json", "[{\"conversations\": [{\"from\": \"bot\", \"value\": \"x\"}]}]", &chat),
                  {"share.json row 0:", "\"bot\"", "accepted"}));
  EXPECT_TRUE(has(err("tools.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"tools\": 7}\n", &chat),
                  {"tools.jsonl:1:", "\"tools\" must be a list"}));
  EXPECT_TRUE(has(err("arr.json", "[{\"instruction\": \"i\", \"output\": \"o\"}, 3]"), {"arr.json row 1", "JSON object"}));
  EXPECT_TRUE(has(err("al.json", "[{\"instruction\": \"i\", \"output\": \"o\"}, {\"instruction\": \"i\", \"input\": 1, \"output\": \"o\"}]"),
                  {"al.json row 1:", "\"input\" must be a string"}));
  // the first bad row is reported, whatever thread found it
  std::string many;
  for (int i = 0; i < 500; ++i) many += i == 321 || i == 400 ? "{\"text\": null}\n" : "{\"text\": \"ok\"}\n";
  EXPECT_TRUE(has(err("many.jsonl", many), {"many.jsonl:322:", "got null"}));
}

// ---------------------------------------------------------------------------------------------
// Batching

std::vector<Batch> epoch_batches(BatchIterator& it) {
  std::vector<Batch> out;
  const int64_t e = it.epoch(), n = it.batches_per_epoch() - it.batch_index();
  for (int64_t i = 0; i < n; ++i) {
    Batch b;
    EXPECT_TRUE(it.next(b));
    EXPECT_EQ(b.epoch, e);
    out.push_back(std::move(b));
  }
  return out;
}

// Checks a batch against its examples: ids, shifted targets, segments, positions, counts.
void check_batch(const Dataset& ds, const Batch& b, int32_t pad) {
  ASSERT_EQ(b.ids.size(), size_t(b.B * b.T));
  size_t k = 0;
  int64_t targets = 0, tokens = 0;
  for (int64_t r = 0; r < b.B; ++r) {
    int64_t pos = 0;
    int32_t seg = 0;
    while (pos < b.lengths[size_t(r)]) {
      ASSERT_LT(k, b.examples.size());
      const Example& ex = ds.examples[size_t(b.examples[k++])];
      ++seg;
      for (size_t t = 0; t < ex.ids.size(); ++t) {
        size_t i = size_t(r * b.T + pos + int64_t(t));
        ASSERT_EQ(b.ids[i], ex.ids[t]);
        ASSERT_EQ(b.segment_ids[i], seg);
        ASSERT_EQ(b.position_ids[i], int32_t(t));
        int32_t want = t + 1 < ex.ids.size() && ex.mask[t + 1] ? ex.ids[t + 1] : -100;
        ASSERT_EQ(b.targets[i], want);  // never a token of the next segment
        targets += want != -100;
      }
      pos += int64_t(ex.ids.size());
      tokens += int64_t(ex.ids.size());
    }
    ASSERT_EQ(pos, b.lengths[size_t(r)]);
    for (int64_t t = pos; t < b.T; ++t) {
      size_t i = size_t(r * b.T + t);
      ASSERT_EQ(b.ids[i], pad);
      ASSERT_EQ(b.targets[i], -100);
      ASSERT_EQ(b.segment_ids[i], 0);
    }
  }
  ASSERT_EQ(k, b.examples.size());
  EXPECT_EQ(b.n_targets, targets);
  EXPECT_EQ(b.n_tokens, tokens);
  EXPECT_EQ(b.n_padding, b.B * b.T - tokens);
}

Dataset wikisql_toy(bool mask = false, int64_t L = 512) {
  ToyEncoder enc;
  return load_dataset(kData + "/wikisql/train.jsonl", enc, nullptr, quiet(mask, L));
}

TEST(Batching, EveryRowOncePerEpochAndTargetsShifted) {
  Dataset ds = wikisql_toy();
  for (bool group : {false, true}) {
    BatchOptions o;
    o.batch_size = 5;
    o.group_by_length = group;
    o.bucket_batches = 4;
    o.seed = 7;
    BatchIterator it(ds, o, 0);
    EXPECT_EQ(it.batches_per_epoch(), 13);  // 64 rows / 5, last one short
    for (int e = 0; e < 3; ++e) {
      std::multiset<int64_t> seen;
      for (const Batch& b : epoch_batches(it)) {
        check_batch(ds, b, 0);
        seen.insert(b.examples.begin(), b.examples.end());
      }
      ASSERT_EQ(seen.size(), ds.size());
      for (size_t i = 0; i < ds.size(); ++i) EXPECT_EQ(seen.count(int64_t(i)), 1u);
    }
  }
}

TEST(Batching, ShuffleReproducibleBySeedAndDiffersByEpoch) {
  Dataset ds = wikisql_toy();
  auto order = [&](uint64_t seed, int epochs) {
    BatchOptions o;
    o.batch_size = 4;
    o.seed = seed;
    BatchIterator it(ds, o, 0);
    std::vector<std::vector<int64_t>> r;
    for (int e = 0; e < epochs; ++e)
      for (const Batch& b : epoch_batches(it)) r.push_back(b.examples);
    return r;
  };
  auto a = order(1, 2), b = order(1, 2), c = order(2, 2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<std::vector<int64_t>> e0(a.begin(), a.begin() + 16), e1(a.begin() + 16, a.end());
  EXPECT_NE(e0, e1);
  // No shuffle: dataset order.
  BatchOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.group_by_length = false;
  BatchIterator it(ds, o, 0);
  Batch bt;
  it.next(bt);
  EXPECT_EQ(bt.examples, (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(Batching, LengthGroupingCutsPaddingOnRealData) {
  ToyEncoder enc;
  for (const char* f : {"wikisql/train.jsonl", "wwdc25/train.jsonl"}) {
    Dataset ds = load_dataset(kData + "/" + f, enc, nullptr, quiet(false, 8192));
    BatchOptions o;
    o.batch_size = 4;
    o.seed = 3;
    o.group_by_length = false;
    BatchIterator plain(ds, o, 0);
    o.group_by_length = true;
    BatchIterator grouped(ds, o, 0);
    double p0 = plain.padding_fraction(), p1 = grouped.padding_fraction();
    EXPECT_LT(p1, 0.5 * p0) << f << ": grouped " << p1 << " vs plain " << p0;
    // padding_fraction() is what the batches really contain
    int64_t pad = 0, all = 0;
    for (const Batch& b : epoch_batches(grouped)) {
      pad += b.n_padding;
      all += b.B * b.T;
    }
    EXPECT_DOUBLE_EQ(double(pad) / double(all), p1);
  }
}

TEST(Batching, PackingKeepsSegmentsApart) {
  Dataset ds = wikisql_toy(true);
  BatchOptions o;
  o.batch_size = 2;
  o.pack = true;
  o.max_seq_length = 512;
  o.seed = 11;
  BatchIterator it(ds, o, 0);
  std::multiset<int64_t> seen;
  double fill = 0;
  int64_t seqs = 0;
  for (const Batch& b : epoch_batches(it)) {
    check_batch(ds, b, 0);
    EXPECT_LE(b.T, 512);
    seen.insert(b.examples.begin(), b.examples.end());
    for (int32_t l : b.lengths) fill += double(l) / 512.0, ++seqs;
  }
  EXPECT_EQ(seen.size(), ds.size());
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), ds.size());
  EXPECT_GT(fill / double(seqs), 0.9);  // first-fit decreasing fills the sequences
  EXPECT_LT(it.padding_fraction(), 0.1);
  // too-long examples for the packing length are refused
  o.max_seq_length = 100;
  EXPECT_NE(error_of([&] { BatchIterator bad(ds, o, 0); }).find("more than the packing length"), std::string::npos);
}

TEST(Batching, ResumeGivesIdenticalBatches) {
  Dataset ds = wikisql_toy();
  for (bool pack : {false, true}) {
    BatchOptions o;
    o.batch_size = 3;
    o.seed = 5;
    o.pack = pack;
    o.max_seq_length = 512;
    BatchIterator a(ds, o, 0);
    Batch b;
    const int64_t per = a.batches_per_epoch();
    for (int64_t i = 0; i < per + 3; ++i) a.next(b);  // into the second epoch
    nlohmann::json st = nlohmann::json::parse(a.state().dump());  // through text, as saved
    EXPECT_EQ(st["epoch"], 1);
    EXPECT_EQ(st["batch"], 3);
    BatchIterator r(ds, o, 0);
    r.restore(st);
    for (int64_t i = 0; i < 2 * per; ++i) {
      Batch x, y;
      ASSERT_TRUE(a.next(x));
      ASSERT_TRUE(r.next(y));
      ASSERT_EQ(x.examples, y.examples);
      ASSERT_EQ(x.ids, y.ids);
      ASSERT_EQ(x.targets, y.targets);
      ASSERT_EQ(x.epoch, y.epoch);
      ASSERT_EQ(x.index, y.index);
    }
    // other options or other data: refused
    BatchOptions o2 = o;
    o2.seed = 6;
    BatchIterator other(ds, o2, 0);
    EXPECT_NE(error_of([&] { other.restore(st); }).find("seed"), std::string::npos);
    Dataset masked = wikisql_toy(false, 200);
    BatchIterator od(masked, o, 0);
    EXPECT_NE(error_of([&] { od.restore(st); }).find("is not the one the state was saved with"), std::string::npos);
    EXPECT_NE(error_of([&] { od.restore(nlohmann::json::object()); }).find("not a data-loader state"), std::string::npos);
  }
}

TEST(Batching, EpochLimitDropLastPadMultiple) {
  Dataset ds = wikisql_toy();
  BatchOptions o;
  o.batch_size = 5;
  o.epochs = 2;
  o.drop_last = true;
  o.pad_to_multiple = 8;
  BatchIterator it(ds, o, 0);
  EXPECT_EQ(it.batches_per_epoch(), 12);
  Batch b;
  int n = 0;
  while (it.next(b)) {
    ++n;
    EXPECT_EQ(b.B, 5);
    EXPECT_EQ(b.T % 8, 0);
    check_batch(ds, b, 0);
  }
  EXPECT_EQ(n, 24);
  EXPECT_FALSE(it.next(b));
  ToyEncoder enc;
  EXPECT_EQ(padding_id(enc), 2);  // no pad token: EOS
  enc.with_pad = true;
  EXPECT_EQ(padding_id(enc), 0);
}

}  // namespace
}  // namespace ft

// ---------------------------------------------------------------------------------------------
// With the real tokenizers (tests/data/tokenizers)

#include "data/tokenizer.h"

namespace ft {
namespace {

const std::string kTok = std::string(FT_TEST_DATA) + "/tokenizers";

// Each tokenizer is loaded once for all tests.
const Tokenizer& load_tok(const std::string& name) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, Tokenizer::from_dir(kTok + "/" + name)).first;
  return it->second;
}

// ChatML whose spans run to the end of the turn ("<|im_end|>\n"), as a prefix-diff renderer gives.
struct ChatMLWholeTurn : ChatRenderer {
  RenderedChat render(const ojson& messages, const ojson& tools) const override {
    RenderedChat r = ToyChatML().render(messages, tools);
    for (ChatSpan& s : r.spans) s.end = r.text.find("<|im_end|>\n", s.end) + 11;
    return r;
  }
};

TEST(DatasetReal, TextRowsMatchTokenizer) {
  for (const char* name : {"qwen2", "llama2", "gpt2"}) {
    const Tokenizer& tok = load_tok(name);
    TokenizerEncoder enc(tok);
    RawRows raw = read_rows(kData + "/wikisql/train.jsonl");
    Dataset ds = make_dataset(raw, enc, nullptr, quiet());
    ASSERT_EQ(ds.size(), raw.rows.size());
    for (const Example& ex : ds.examples) {
      std::vector<int32_t> want = tok.encode(raw.rows[size_t(ex.row)]["text"].get<std::string>(), true);
      if (want.back() != *tok.eos_id()) want.push_back(*tok.eos_id());
      ASSERT_EQ(ex.ids, want) << name;
      EXPECT_EQ(ex.n_targets(), int64_t(ex.ids.size()) - 1);
    }
    EXPECT_EQ(ds.examples[0].ids.front() == tok.bos_id(), std::string(name) == "llama2") << name;
  }
}

TEST(DatasetReal, PromptCompletionMaskDecodesToCompletion) {
  // Plain concatenation (no template): the supervised tokens decode to the completion + EOS.
  for (const char* name : {"qwen2", "llama2", "gpt2"}) {
    const Tokenizer& tok = load_tok(name);
    TokenizerEncoder enc(tok);
    RawRows raw = read_rows(kData + "/wwdc25/train.jsonl");
    for (auto& r : raw.rows) r["prompt"] = r["prompt"].get<std::string>() + "\n";
    Dataset ds = make_dataset(raw, enc, nullptr, quiet(true));
    EXPECT_EQ(ds.n_boundary_merges, 0) << name;
    const std::string eos = tok.decode({*tok.eos_id()});
    for (const Example& ex : ds.examples) {
      const ojson& r = raw.rows[size_t(ex.row)];
      std::vector<int32_t> prompt = tok.encode(r["prompt"].get<std::string>(), true);
      ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), ex.ids.begin())) << name;
      for (size_t t = 0; t < ex.ids.size(); ++t) ASSERT_EQ(ex.mask[t], t >= prompt.size()) << name;
      // decode of a mid-text piece: SentencePiece drops the leading space of a "▁word" start
      std::string got = targets_text(enc, ex), want = r["completion"].get<std::string>() + eos;
      EXPECT_EQ(got, want) << name;
    }
  }
  // Alpaca rows, Alpaca prompt, Llama 2: the prompt ends with "### Response:\n".
  const Tokenizer& tok = load_tok("llama2");
  TokenizerEncoder enc(tok);
  RawRows al = read_rows(kData + "/llamafactory/alpaca_en_demo.json");
  Dataset ds = make_dataset(al, enc, nullptr, quiet(true));
  EXPECT_EQ(ds.n_boundary_merges, 0);
  for (const Example& ex : ds.examples)
    EXPECT_EQ(targets_text(enc, ex), al.rows[size_t(ex.row)]["output"].get<std::string>() + "</s>");
}

TEST(DatasetReal, BoundaryMergeWithRealBpe) {
  // "Q: 1+1=" + " 2": GPT-2 encodes " 2" as one token; no merge crosses. "wor" + "ld": "world" is
  // one token crossing the boundary: it is supervised and counted.
  const Tokenizer& tok = load_tok("gpt2");
  TokenizerEncoder enc(tok);
  RawRows raw = read_rows(temp_file("bpe.jsonl", "{\"prompt\": \"Q: 1+1=\", \"completion\": \" 2\"}\n"
                                                 "{\"prompt\": \"hello wor\", \"completion\": \"ld\"}\n"));
  Dataset ds = make_dataset(raw, enc, nullptr, quiet(true));
  EXPECT_EQ(ds.n_boundary_merges, 1);
  EXPECT_EQ(targets_text(enc, ds.examples[0]), " 2<|endoftext|>");
  EXPECT_EQ(targets_text(enc, ds.examples[1]), " world<|endoftext|>");
}

TEST(DatasetReal, ChatMaskWithQwen2) {
  const Tokenizer& tok = load_tok("qwen2");
  TokenizerEncoder enc(tok);
  ToyChatML content_spans;
  ChatMLWholeTurn turn_spans;
  const int32_t im_end = tok.token_to_id("<|im_end|>");
  for (const char* f : {"llamafactory/v1_sft_demo.jsonl", "llamafactory/glaive_toolcall_en_demo.json",
                        "wwdc25/train.jsonl"}) {
    RawRows raw = read_rows(kData + "/" + f);
    Dataset a = make_dataset(raw, enc, &content_spans, quiet(true));
    Dataset b = make_dataset(raw, enc, &turn_spans, quiet(true));
    EXPECT_EQ(a.n_boundary_merges, 0) << f;
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      const Example& ex = a.examples[i];
      EXPECT_EQ(ex.mask, b.examples[i].mask) << f << " row " << ex.row;  // same end-of-turn rule
      EXPECT_EQ(tok.decode(ex.ids).rfind("<|im_start|>", 0), 0u);
      // every target run ends with <|im_end|>, the "\n" after it is not a target
      for (size_t t = 1; t < ex.ids.size(); ++t)
        if (ex.mask[t] && (t + 1 == ex.ids.size() || !ex.mask[t + 1])) {
          EXPECT_EQ(ex.ids[t], im_end) << f;
          if (t + 1 < ex.ids.size()) { EXPECT_EQ(tok.decode({ex.ids[t + 1]}), "\n"); }
        }
      // the targets decode to the assistant turns, each followed by <|im_end|>
      std::string want;
      const ojson& r = raw.rows[size_t(ex.row)];
      if (r.contains("completion")) want = r["completion"].get<std::string>() + "<|im_end|>";
      if (r.contains("messages"))
        for (const auto& m : r["messages"])
          if (m["role"] == "assistant") want += m["content"][0]["value"].get<std::string>() + "<|im_end|>";
      if (r.contains("conversations"))
        for (const auto& t : r["conversations"]) {
          if (t["from"] == "gpt") want += t["value"].get<std::string>() + "<|im_end|>";
          if (t["from"] == "function_call") {
            ojson c = ojson::parse(t["value"].get<std::string>());
            ojson tc = ojson::array({ojson{{"type", "function"}, {"function", {{"name", c["name"]}, {"arguments", c["arguments"]}}}}});
            want += "<tool_call>" + tc.dump() + "</tool_call><|im_end|>";
          }
        }
      EXPECT_EQ(targets_text(enc, ex), want) << f << " row " << ex.row;
    }
  }
}

TEST(BatchingReal, GroupingCutsPaddingWithQwen2) {
  const Tokenizer& tok = load_tok("qwen2");
  TokenizerEncoder enc(tok);
  for (const char* f : {"wikisql/train.jsonl", "wwdc25/train.jsonl", "llamafactory/alpaca_en_demo.json"}) {
    Dataset ds = load_dataset(kData + "/" + f, enc, nullptr, quiet(true));
    BatchOptions o;
    o.batch_size = 4;
    o.group_by_length = false;
    double plain = BatchIterator(ds, o, padding_id(enc)).padding_fraction();
    o.group_by_length = true;
    BatchIterator it(ds, o, padding_id(enc));
    double grouped = it.padding_fraction();
    EXPECT_LT(grouped, 0.5 * plain) << f;
    Batch b;
    ASSERT_TRUE(it.next(b));
    check_batch(ds, b, *tok.pad_id());
    std::printf("  %s: padding %.1f%% plain, %.1f%% grouped\n", f, 100 * plain, 100 * grouped);
  }
}

}  // namespace
}  // namespace ft

// ---------------------------------------------------------------------------------------------
// With the real chat templates (tests/data/chat_templates) through ChatTemplateRenderer

#include "data/chat_template.h"

namespace ft {
namespace {

const std::string kTmpl = std::string(FT_TEST_DATA) + "/chat_templates";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Each maximal run of targets, decoded on its own.
std::vector<std::string> target_runs(const Tokenizer& tok, const Example& ex) {
  std::vector<std::string> runs;
  for (size_t t = 0; t < ex.ids.size();) {
    if (!ex.mask[t]) { ++t; continue; }
    std::vector<int32_t> run;
    while (t < ex.ids.size() && ex.mask[t]) run.push_back(ex.ids[t++]);
    runs.push_back(tok.decode(run));
  }
  return runs;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\n\r"), b = s.find_last_not_of(" \t\n\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::vector<std::string> assistant_texts(const ojson& row) {
  std::vector<std::string> out;
  for (const auto& m : row["messages"])
    if (m["role"] == "assistant") out.push_back(m["content"][0]["value"]);
  return out;
}

TEST(DatasetTemplate, Qwen2OwnTemplate) {
  const Tokenizer& tok = load_tok("qwen2");
  auto chat = chat_renderer_for(tok);
  ASSERT_TRUE(chat);
  TokenizerEncoder enc(tok);
  ChatTemplate tmpl(tok.chat_template());
  RawRows raw = read_rows(kData + "/llamafactory/v1_sft_demo.jsonl");
  Dataset ds = make_dataset(raw, enc, chat.get(), quiet(true));
  EXPECT_EQ(ds.n_boundary_merges, 0);
  for (const Example& ex : ds.examples) {
    const ojson& r = raw.rows[size_t(ex.row)];
    ojson msgs = ojson::array();
    for (const auto& m : r["messages"]) msgs.push_back({{"role", m["role"]}, {"content", m["content"][0]["value"]}});
    // ids = HF apply_chat_template(tokenize=True): the rendering encoded without added specials
    EXPECT_EQ(ex.ids, tok.encode(tmpl.render(msgs), false));
    EXPECT_EQ(tok.decode(ex.ids).rfind("<|im_start|>system\nYou are a helpful assistant.<|im_end|>", 0), 0u);
    std::vector<std::string> want;
    for (const auto& a : assistant_texts(r)) want.push_back(a + "<|im_end|>");
    EXPECT_EQ(target_runs(tok, ex), want);
  }
  // prompt/completion rows go through the template too (default on when there is one)
  RawRows pc = read_rows(kData + "/wwdc25/train.jsonl");
  Dataset d2 = make_dataset(pc, enc, chat.get(), quiet(true));
  for (const Example& ex : d2.examples)
    EXPECT_EQ(target_runs(tok, ex), std::vector<std::string>{pc.rows[size_t(ex.row)]["completion"].get<std::string>() + "<|im_end|>"});
}

TEST(DatasetTemplate, Qwen25ToolCalls) {
  const Tokenizer& tok = load_tok("qwen2");
  auto chat = chat_renderer_for(tok, slurp(kTmpl + "/qwen2.5.jinja"));
  TokenizerEncoder enc(tok);
  RawRows raw = read_rows(kData + "/llamafactory/glaive_toolcall_en_demo.json");
  Dataset ds = make_dataset(raw, enc, chat.get(), quiet(true));
  EXPECT_EQ(ds.n_boundary_merges, 0);
  int calls = 0;
  for (const Example& ex : ds.examples) {
    const ojson& r = raw.rows[size_t(ex.row)];
    const std::string text = tok.decode(ex.ids);
    std::vector<std::string> runs = target_runs(tok, ex);
    size_t k = 0;
    for (const auto& t : r["conversations"]) {
      if (t["from"] == "gpt") {
        ASSERT_LT(k, runs.size());
        EXPECT_EQ(runs[k++], t["value"].get<std::string>() + "<|im_end|>");
      } else if (t["from"] == "function_call") {
        ASSERT_LT(k, runs.size());
        ojson c = ojson::parse(t["value"].get<std::string>());
        // Qwen2.5: {"name": ..., "arguments": <arguments | tojson>} (Python json.dumps spacing)
        std::string args = jinja::to_json(jinja::Value::from_json(c["arguments"]), false, std::nullopt, ", ", ": ", false);
        EXPECT_EQ(runs[k++], "<tool_call>\n{\"name\": \"" + c["name"].get<std::string>() + "\", \"arguments\": " +
                                 args + "}\n</tool_call><|im_end|>");
        ++calls;
      }
    }
    EXPECT_EQ(k, runs.size());
    if (r["tools"] != "[]") {
      EXPECT_NE(text.find("# Tools"), std::string::npos);
      ojson tools = ojson::parse(r["tools"].get<std::string>());
      EXPECT_NE(text.find("\"name\": \"" + tools[0]["name"].get<std::string>() + "\""), std::string::npos);
    }
  }
  EXPECT_GT(calls, 5);
}

TEST(DatasetTemplate, Llama3AndLlama2Templates) {
  RawRows raw = read_rows(kData + "/llamafactory/v1_sft_demo.jsonl");
  {
    const Tokenizer& tok = load_tok("llama3");
    auto chat = chat_renderer_for(tok, slurp(kTmpl + "/llama3-instruct.jinja"));
    TokenizerEncoder enc(tok);
    Dataset ds = make_dataset(raw, enc, chat.get(), quiet(true));
    EXPECT_EQ(ds.n_boundary_merges, 0);
    for (const Example& ex : ds.examples) {
      EXPECT_EQ(ex.ids[0], *tok.bos_id());  // written by the template, once
      EXPECT_NE(ex.ids[1], *tok.bos_id());
      std::vector<std::string> want;
      for (const auto& a : assistant_texts(raw.rows[size_t(ex.row)])) want.push_back(trim(a) + "<|eot_id|>");
      EXPECT_EQ(target_runs(tok, ex), want);
    }
  }
  {
    const Tokenizer& tok = load_tok("llama2");
    auto chat = chat_renderer_for(tok, slurp(kTmpl + "/llama-2-chat.jinja"));
    TokenizerEncoder enc(tok);
    Dataset ds = make_dataset(raw, enc, chat.get(), quiet(true));
    for (const Example& ex : ds.examples) {
      // This community template indents its output ("\n        " before each turn, as jinja2
      // renders it); the target run is all the assistant turn renders: indentation, " ",
      // content, " </s>".
      EXPECT_EQ(trim(tok.decode(ex.ids)).rfind("<s>[INST]", 0), 0u);
      std::vector<std::string> runs = target_runs(tok, ex);
      std::vector<std::string> want = assistant_texts(raw.rows[size_t(ex.row)]);
      ASSERT_EQ(runs.size(), want.size());
      for (size_t i = 0; i < runs.size(); ++i) {
        EXPECT_EQ(trim(runs[i]).rfind(trim(want[i]), 0), 0u) << runs[i];
        EXPECT_EQ(runs[i].substr(runs[i].size() - 4), "</s>");
        EXPECT_EQ(runs[i].find("[/INST]"), std::string::npos);
      }
    }
    // raise_exception from the template is a data error naming the row
    std::string p = temp_file("alt.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}]}\n");
    std::string e = error_of([&] { load_dataset(p, enc, chat.get(), quiet(true)); });
    EXPECT_NE(e.find("alt.jsonl:1:"), std::string::npos) << e;
    EXPECT_NE(e.find("must alternate"), std::string::npos) << e;
  }
}

TEST(DatasetTemplate, GenerationBlocksAndQwen3LastTurn) {
  const Tokenizer& tok = load_tok("qwen2");  // ChatML special tokens
  TokenizerEncoder enc(tok);
  const std::string two_turns =
      R"({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},)"
      R"( {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "<think>\nadd again\n</think>\n\n6"}]})";
  const std::string one_turn = R"({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]})";
  std::string p = temp_file("think.jsonl", two_turns + "\n" + one_turn + "\n");
  // SmolLM3 marks assistant turns with {% generation %}: those blocks are the targets.
  auto smol = chat_renderer_for(tok, slurp(kTmpl + "/smollm3.jinja"));
  Dataset s = load_dataset(p, enc, smol.get(), quiet(true));
  EXPECT_EQ(s.n_last_turn_only, 0);
  for (const Example& ex : s.examples)
    for (const std::string& run : target_runs(tok, ex)) EXPECT_EQ(run.substr(run.size() - 10), "<|im_end|>");
  EXPECT_EQ(target_runs(tok, s.examples[1]).size(), 1u);
  // Qwen3 drops the first turn's <think> once a later user turn exists: only the last turn of
  // that row can be placed; the one-turn row is complete.
  auto qwen3 = chat_renderer_for(tok, slurp(kTmpl + "/qwen3.jinja"));
  Dataset q = load_dataset(p, enc, qwen3.get(), quiet(true));
  EXPECT_EQ(q.n_last_turn_only, 1);
  ASSERT_EQ(q.warnings.size(), 1u);
  EXPECT_NE(q.warnings[0].find("only the last assistant turn"), std::string::npos);
  std::vector<std::string> runs = target_runs(tok, q.examples[0]);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0], "<think>\nadd again\n</think>\n\n6<|im_end|>");
  EXPECT_EQ(tok.decode(q.examples[0].ids).find("\nadd\n"), std::string::npos);  // dropped by the template
  EXPECT_EQ(target_runs(tok, q.examples[1]).size(), 1u);
}

}  // namespace
}  // namespace ft
