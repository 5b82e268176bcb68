// The `ft` binary end to end (run as a child process; stdout, stderr, exit status and CPU time captured).
//
// Bad input: for `ft load`, `ft eval` and `ft generate`, every broken model directory (built here by copying
// the llama fixture and corrupting one thing) gives exit status 1, an "error: " line that names the file and
// the tensor or key, no signal, no sanitizer report, and no hang. For `ft train`, bad
// data, adapters, flags and recipes are reported before the first step and leave nothing in --adapter-path.
//
// Happy path on the llama fixture (tests/fixtures/models/llama, HF transformers 5.17 references):
// load --json (model_type, exact parameter count), eval --json (== HF eval_eos token-weighted loss),
// generate --json (== HF greedy tokens), train -> merge -> eval (merged == adapter loss), and
// save PEFT -> mlx -> PEFT (identical tensors).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "models/safetensors.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const fs::path kRepo = fs::path(FT_TEST_DATA).parent_path().parent_path();
const fs::path kModels = kRepo / "tests" / "fixtures" / "models";

struct RunResult {
  int exit_code = -1;   // when exited normally
  int signal = 0;       // when killed by a signal
  bool timed_out = false;
  double wall_s = 0, cpu_s = 0;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void spit(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
  ASSERT_TRUE(f.good()) << "cannot write " << p;
}

// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "ft_cli_XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& s) const { return path / s; }
};

// Runs FT_BINARY (or $FT_TEST_BINARY, e.g. a sanitizer build) with args (no shell), from the repository
// root; kills it after timeout_s.
RunResult run_ft(const std::vector<std::string>& args, double timeout_s = 120) {
  TempDir io;
  fs::path out = io / "stdout", err = io / "stderr";
  const char* bin = std::getenv("FT_TEST_BINARY");
  std::vector<std::string> argv_s = {bin && *bin ? bin : FT_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    int fo = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fi = ::open("/dev/null", O_RDONLY);
    if (fo < 0 || fe < 0 || fi < 0 || ::dup2(fo, 1) < 0 || ::dup2(fe, 2) < 0 || ::dup2(fi, 0) < 0 || ::chdir(kRepo.c_str()) != 0) ::_exit(126);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  RunResult r;
  if (pid < 0) {
    r.err = "fork failed";
    return r;
  }
  int status = 0;
  struct rusage ru {};
  for (;;) {
    pid_t w = ::wait4(pid, &status, WNOHANG, &ru);
    if (w == pid) break;
    double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (el > timeout_s && !r.timed_out) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.cpu_s = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

std::string describe(const std::vector<std::string>& args, const RunResult& r) {
  std::string s = "ft";
  for (auto& a : args) s += " " + a;
  return ft::cat(s, "\n  exit ", r.exit_code, " signal ", r.signal, " wall ", r.wall_s, " s cpu ", r.cpu_s, " s\n  stderr: ", r.err,
                 "\n  stdout: ", r.out.substr(0, 2000));
}

}  // namespace

namespace {

// Copies the model files of a fixture family (config, weights, tokenizer) into dst.
void copy_model(const std::string& fam, const fs::path& dst) {
  fs::create_directories(dst);
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(kModels / fam / f, dst / f);
}

json read_json(const fs::path& p) { return json::parse(slurp(p)); }

// A safetensors file as its tensors (in data order), for rewriting with one thing changed.
struct StTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
std::pair<json, std::string> st_split(const std::string& file) {
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {json::parse(file.substr(8, n)), file.substr(8 + n)};
}
std::string st_join(const json& header, const std::string& data) {
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  uint64_t n = h.size();
  std::string r(8, '\0');
  std::memcpy(r.data(), &n, 8);
  return r + h + data;
}
std::vector<StTensor> st_read(const fs::path& p) {
  auto [h, data] = st_split(slurp(p));
  std::vector<std::pair<uint64_t, StTensor>> v;
  for (auto& [k, e] : h.items()) {
    if (k == "__metadata__") continue;
    uint64_t b = e["data_offsets"][0], en = e["data_offsets"][1];
    v.push_back({b, {k, e["dtype"], e["shape"].get<std::vector<int64_t>>(), data.substr(b, en - b)}});
  }
  std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<StTensor> r;
  for (auto& [b, t] : v) r.push_back(t);
  return r;
}
void st_write(const fs::path& p, const std::vector<StTensor>& ts) {
  json h = {{"__metadata__", {{"format", "pt"}}}};
  std::string data;
  for (auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  spit(p, st_join(h, data));
}
StTensor& st_find(std::vector<StTensor>& ts, const std::string& name) {
  for (auto& t : ts)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

void edit_json(const fs::path& p, const std::function<void(json&)>& f) {
  json j = read_json(p);
  f(j);
  spit(p, j.dump(2));
}

// The five fixture texts as a JSONL file of {"text"} rows.
fs::path write_fixture_texts(const fs::path& dir, const std::string& fam = "llama") {
  json e = read_json(kModels / fam / "expected.json");
  std::string s;
  for (auto& t : e["texts"]) s += json{{"text", t}}.dump() + "\n";
  fs::path p = dir / "texts.jsonl";
  spit(p, s);
  return p;
}

// Exit status 1 with an error message holding every `want` substring; no signal, no sanitizer report,
// no hang (run_ft's timeout, far above the ~0.05 s these take: a guard, not a speed test; no test
// asserts a time).
void expect_clean_failure(const std::vector<std::string>& args, const RunResult& r, const std::vector<std::string>& want) {
  std::string what = describe(args, r);
  EXPECT_FALSE(r.timed_out) << what;
  EXPECT_EQ(r.signal, 0) << what;
  EXPECT_NE(r.exit_code, 0) << what;
  EXPECT_NE(r.exit_code, -1) << what;
  for (const char* bad : {"Sanitizer", "runtime error:", "terminate called", "Segmentation", "Aborted"})
    EXPECT_EQ(r.err.find(bad), std::string::npos) << "found '" << bad << "': " << what;
  for (auto& w : want) EXPECT_NE(r.err.find(w), std::string::npos) << "the message lacks '" << w << "': " << what;
  if (std::getenv("FT_TEST_SHOW_ERRORS")) std::cout << "[ft " << args[0] << "] " << r.err;
}

// ---- ft load / eval / generate on broken model directories ------------------------------------------

struct BadModel {
  std::string name;
  std::function<void(const fs::path& dir)> corrupt;
  std::vector<std::string> want;  // substrings of the message (besides the command's own)
};

const std::string kQ1 = "model.layers.1.self_attn.q_proj.weight";

std::vector<BadModel> bad_models() {
  auto st = [](const fs::path& d) { return d / "model.safetensors"; };
  return {
      {"truncated_safetensors",
       [=](const fs::path& d) {
         std::string b = slurp(st(d));
         spit(st(d), b.substr(0, b.size() * 6 / 10));
       },
       {"model.safetensors", "tensor '", "truncated"}},
      {"empty_safetensors", [=](const fs::path& d) { spit(st(d), ""); }, {"model.safetensors", "0 bytes"}},
      {"absurd_header_length",
       [=](const fs::path& d) {
         std::string b = slurp(st(d));
         uint64_t n = uint64_t(1) << 62;
         std::memcpy(b.data(), &n, 8);
         spit(st(d), b);
       },
       {"model.safetensors", "header length 4611686018427387904"}},
      {"broken_header_json",
       [=](const fs::path& d) {
         std::string b = slurp(st(d));
         b[b.find(':', 8)] = '?';
         spit(st(d), b);
       },
       {"model.safetensors", "not valid JSON"}},
      {"data_offsets_out_of_range",
       [=](const fs::path& d) {
         auto [h, data] = st_split(slurp(st(d)));
         auto& o = h["model.norm.weight"]["data_offsets"];
         o = {o[0].get<uint64_t>() + data.size(), o[1].get<uint64_t>() + data.size()};
         spit(st(d), st_join(h, data));
       },
       {"model.safetensors", "model.norm.weight", "outside the data buffer"}},
      {"unsupported_dtype_i8",
       [=](const fs::path& d) {
         auto ts = st_read(st(d));
         StTensor& t = st_find(ts, kQ1);
         t.dtype = "I8";
         t.bytes.assign(t.bytes.size() / 4, '\1');
         st_write(st(d), ts);
       },
       {"model.safetensors", kQ1, "unsupported dtype I8"}},
      {"wrong_shape",
       [=](const fs::path& d) {
         auto ts = st_read(st(d));
         st_find(ts, "model.layers.0.mlp.up_proj.weight").shape = {48, 96};
         st_write(st(d), ts);
       },
       {"model.safetensors", "model.layers.0.mlp.up_proj.weight", "[48, 96]", "[96, 48]"}},
      {"missing_tensor",
       [=](const fs::path& d) {
         auto ts = st_read(st(d));
         ts.erase(std::find_if(ts.begin(), ts.end(), [](auto& t) { return t.name == "model.layers.1.mlp.down_proj.weight"; }));
         st_write(st(d), ts);
       },
       {"model.safetensors", "model.layers.1.mlp.down_proj.weight", "missing"}},
      {"missing_weights_file", [=](const fs::path& d) { fs::remove(st(d)); }, {"model.safetensors"}},
      {"missing_config_key", [](const fs::path& d) { edit_json(d / "config.json", [](json& j) { j.erase("hidden_size"); }); },
       {"config.json", "'hidden_size'", "missing"}},
      {"config_key_wrong_type",
       [](const fs::path& d) { edit_json(d / "config.json", [](json& j) { j["num_attention_heads"] = "four"; }); },
       {"config.json", "'num_attention_heads'", "integer", "string"}},
      {"invalid_config_json", [](const fs::path& d) { spit(d / "config.json", slurp(d / "config.json").substr(0, 60)); },
       {"config.json", "invalid JSON"}},
      {"unknown_model_type",
       [](const fs::path& d) { edit_json(d / "config.json", [](json& j) { j["model_type"] = "gpt_fancy"; }); },
       {"config.json", "'gpt_fancy'", "supported", "llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3"}},
      {"broken_tokenizer_json",
       [](const fs::path& d) {
         std::string t = slurp(d / "tokenizer.json");
         spit(d / "tokenizer.json", t.substr(0, t.size() / 2));
       },
       {"tokenizer.json", "JSON"}},
      {"missing_model_directory", [](const fs::path& d) { fs::remove_all(d); }, {"does not exist"}},
  };
}

void PrintTo(const BadModel& b, std::ostream* os) { *os << b.name; }

class BadModelDir : public ::testing::TestWithParam<BadModel> {};

TEST_P(BadModelDir, LoadEvalGenerateFailCleanly) {
  const BadModel& bm = GetParam();
  TempDir tmp;
  fs::path dir = tmp / "model", data = write_fixture_texts(tmp.path);
  copy_model("llama", dir);
  bm.corrupt(dir);
  std::vector<std::vector<std::string>> cmds = {
      {"load", dir.string(), "--json"},
      {"eval", "--model", dir.string(), "--data", data.string(), "--json"},
      {"generate", "--model", dir.string(), "--prompt", "ROMEO:", "--max-tokens", "4", "--json"}};
  for (auto& args : cmds) {
    RunResult r = run_ft(args, 30);
    std::vector<std::string> want = bm.want;
    want.push_back("error: ");
    if (bm.name == "missing_model_directory") want.push_back(dir.string());
    expect_clean_failure(args, r, want);
  }
}

INSTANTIATE_TEST_SUITE_P(Cli, BadModelDir, ::testing::ValuesIn(bad_models()),
                         [](const ::testing::TestParamInfo<BadModel>& i) { return i.param.name; });

// ---- ft train: bad data, adapters, flags and recipes, all before the first step -------------------

struct BadTrain {
  std::string name;
  // Prepares inputs in tmp; returns the extra arguments (the base ones name the model, data, adapter path).
  std::function<std::vector<std::string>(const fs::path& tmp, fs::path& data)> setup;
  std::vector<std::string> want;
};

std::vector<BadTrain> bad_trains() {
  auto rows = [](const std::string& text) {
    return [text](const fs::path& tmp, fs::path& data) {
      data = tmp / "data.jsonl";
      spit(data, text);
      return std::vector<std::string>{};
    };
  };
  const std::string good = "{\"text\": \"The quick brown fox.\"}\n{\"text\": \"Hello world.\"}\n";
  return {
      {"broken_jsonl_line", rows(good + "{\"text\": \"no end\"\n"), {"data.jsonl:3", "JSON"}},
      {"empty_dataset", rows(""), {"data.jsonl", "no rows"}},
      {"blank_lines_only", rows("\n\n  \n"), {"data.jsonl", "no rows"}},
      {"unknown_row_format", rows("{\"question\": \"a\", \"answer\": \"b\"}\n"), {"data.jsonl:1", "unknown row format", "question"}},
      {"wrong_value_type", rows(good + "{\"text\": 5}\n"), {"data.jsonl:3", "\"text\" must be a string", "number"}},
      {"prompt_not_string", rows("{\"prompt\": [\"a\"], \"completion\": \"b\"}\n"), {"data.jsonl:1", "\"prompt\" must be a string", "list"}},
      {"missing_data_file",
       [](const fs::path& tmp, fs::path& data) {
         data = tmp / "nope.jsonl";
         return std::vector<std::string>{};
       },
       {"nope.jsonl"}},
      {"chat_row_without_content",
       rows("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\"}]}\n"),
       {"data.jsonl:1", "message 1", "\"content\""}},
      {"resume_adapter_other_family",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         return std::vector<std::string>{"--resume-adapter", (kModels / "qwen3" / "peft").string()};
       },
       {"qwen3/peft/adapter_model.safetensors", "model.layers.", "another model"}},
      {"resume_adapter_wrong_rank",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         fs::copy(kModels / "llama" / "peft", tmp / "peft");
         edit_json(tmp / "peft" / "adapter_config.json", [](json& j) { j["r"] = 8; });
         return std::vector<std::string>{"--resume-adapter", (tmp / "peft").string()};
       },
       {"adapter_model.safetensors", "lora_A of 'model.layers.0.mlp.down_proj'", "[4, 96]", "rank 8"}},
      {"lora_targets_match_nothing",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         return std::vector<std::string>{"--lora-targets", "c_attn"};
       },
       {"c_attn", "q_proj"}},
      {"unknown_flag",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         return std::vector<std::string>{"--lora-rnak", "8"};
       },
       {"--lora-rnak"}},
      {"lora_rank_not_a_number",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         return std::vector<std::string>{"--lora-rank", "abc"};
       },
       {"lora_rank", "'abc'"}},
      {"negative_learning_rate",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         return std::vector<std::string>{"--learning-rate", "-1"};
       },
       {"learning_rate", "-1"}},
      {"unknown_fine_tune_type",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         return std::vector<std::string>{"--fine-tune-type", "qlora"};
       },
       {"fine_tune_type", "'qlora'"}},
      {"unknown_recipe_key",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         spit(tmp / "recipe.yaml", "# a recipe\nlora_rank: 4\nlora_rnak: 8\n");
         return std::vector<std::string>{(tmp / "recipe.yaml").string()};
       },
       {"recipe.yaml:3", "lora_rnak"}},
      {"recipe_value_wrong_type",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         spit(tmp / "recipe.yaml", "iters: 2\nbatch_size: many\n");
         return std::vector<std::string>{(tmp / "recipe.yaml").string()};
       },
       {"recipe.yaml:2", "batch_size", "'many'"}},
      {"recipe_value_nested",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         spit(tmp / "recipe.yaml", "iters: 2\nlora_targets:\n  - {name: q_proj}\n");
         return std::vector<std::string>{(tmp / "recipe.yaml").string()};
       },
       {"recipe.yaml:2", "lora_targets", "a value or a list of values"}},
      {"recipe_key_not_a_name",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         spit(tmp / "recipe.yaml", "iters: 2\n? [lora_rank, lora_alpha]\n: 8\n");
         return std::vector<std::string>{(tmp / "recipe.yaml").string()};
       },
       {"recipe.yaml:2", "plain name"}},
      {"recipe_invalid_yaml",
       [=](const fs::path& tmp, fs::path& data) {
         rows(good)(tmp, data);
         spit(tmp / "recipe.yaml", "iters: 2\nlora_targets: [q_proj, v_proj\nlora_rank: 4\n");
         return std::vector<std::string>{(tmp / "recipe.yaml").string()};
       },
       {"recipe.yaml:", "invalid YAML"}},
  };
}

void PrintTo(const BadTrain& b, std::ostream* os) { *os << b.name; }

class BadTrainInput : public ::testing::TestWithParam<BadTrain> {};

TEST_P(BadTrainInput, FailsBeforeTheFirstStepAndWritesNothing) {
  const BadTrain& bt = GetParam();
  TempDir tmp;
  fs::path data, adapter = tmp / "adapter";
  std::vector<std::string> extra = bt.setup(tmp.path, data);
  std::vector<std::string> args = {"train", "--model", (kModels / "llama").string(), "--data", data.string(), "--adapter-path",
                                   adapter.string(), "--iters", "2", "--batch-size", "2", "--progress", "false", "--steps-per-eval", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  RunResult r = run_ft(args, 60);
  std::vector<std::string> want = bt.want;
  if (bt.name != "unknown_flag") want.push_back("error: ");
  expect_clean_failure(args, r, want);
  EXPECT_EQ(r.err.find("step 1"), std::string::npos) << describe(args, r);
  EXPECT_FALSE(fs::exists(adapter)) << "a failed run left " << adapter << ": " << describe(args, r);
}

INSTANTIATE_TEST_SUITE_P(Cli, BadTrainInput, ::testing::ValuesIn(bad_trains()),
                         [](const ::testing::TestParamInfo<BadTrain>& i) { return i.param.name; });

// ---- happy paths on the llama fixture ---------------------------------------------------------------

RunResult run_ok(const std::vector<std::string>& args, double timeout_s = 300) {
  RunResult r = run_ft(args, timeout_s);
  EXPECT_EQ(r.exit_code, 0) << describe(args, r);
  return r;
}

json last_json_line(const std::string& out) {
  std::string s = out;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  auto p = s.rfind('\n');
  return json::parse(p == std::string::npos ? s : s.substr(p + 1));
}

TEST(CliHappy, LoadJsonCountsEveryTensorElement) {
  fs::path dir = kModels / "llama";
  RunResult r = run_ok({"load", dir.string(), "--json"});
  json j = last_json_line(r.out);
  int64_t n = 0;
  auto f = ft::SafetensorsFile::open((dir / "model.safetensors").string());
  for (auto& t : f->tensors()) n += t.numel();
  EXPECT_EQ(n, read_json(dir / "expected.json")["meta"]["params"].get<int64_t>());
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["parameters"].get<int64_t>(), n);
  EXPECT_EQ(j["layers"], 2);
  EXPECT_EQ(j["vocab_size"], 512);
  EXPECT_EQ(j["tokenizer"], 512);
  EXPECT_EQ(j["chat_template"], true);
  EXPECT_EQ(j["dtype"], "F32");
}

TEST(CliHappy, EvalMatchesTransformersLoss) {
  TempDir tmp;
  json e = read_json(kModels / "llama" / "expected.json");
  fs::path data = write_fixture_texts(tmp.path);
  RunResult r = run_ok({"eval", "--model", (kModels / "llama").string(), "--data", data.string(), "--json"});
  json j = last_json_line(r.out);
  double want = e["eval_eos"]["token_weighted_loss"];
  int64_t tokens = 0;
  for (auto& ids : e["eval_eos"]["input_ids"]) tokens += int64_t(ids.size()) - 1;
  EXPECT_NEAR(j["loss"].get<double>(), want, 1e-4 * want);
  EXPECT_EQ(j["tokens"].get<int64_t>(), tokens);
  EXPECT_EQ(j["examples"], 5);
}

TEST(CliHappy, GenerateMatchesTransformersGreedy) {
  json e = read_json(kModels / "llama" / "expected.json");
  for (auto& g : e["greedy"]) {
    auto want = g["new_ids"].get<std::vector<int32_t>>();
    RunResult r = run_ok({"generate", "--model", (kModels / "llama").string(), "--prompt", g["prompt"], "--max-tokens",
                          std::to_string(want.size()), "--json"});
    json j = last_json_line(r.out);
    EXPECT_EQ(j["prompt_tokens"].get<std::vector<int32_t>>(), g["prompt_ids"].get<std::vector<int32_t>>());
    auto got = j["tokens"].get<std::vector<int32_t>>();
    auto margins = g["margins"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size()) << r.out;
    for (size_t t = 0; t < want.size() && margins[t] >= 1e-3; ++t) EXPECT_EQ(got[t], want[t]) << g["prompt"] << " step " << t;
    EXPECT_EQ(j["finish_reason"], "length");
  }
}

// Weights held in float16 (computed in float32) and a bfloat16 KV cache: transformers' float32 greedy
// tokens wherever its top-2 logit margin is >= 0.05 (fp16 weights round at 2^-11 relative, the bf16
// cache at 2^-8), and the eval loss within 2e-3 relative of its float32 loss.
TEST(CliHappy, Float16WeightsAndBf16KvCacheTrackTransformers) {
  json e = read_json(kModels / "llama" / "expected.json");
  for (auto& g : e["greedy"]) {
    auto want = g["new_ids"].get<std::vector<int32_t>>();
    RunResult r = run_ok({"generate", "--model", (kModels / "llama").string(), "--prompt", g["prompt"], "--max-tokens",
                          std::to_string(want.size()), "--dtype", "float16", "--kv-cache", "bfloat16", "--json"});
    auto got = last_json_line(r.out)["tokens"].get<std::vector<int32_t>>();
    auto margins = g["margins"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size()) << r.out;
    for (size_t t = 0; t < want.size() && margins[t] >= 0.05; ++t) EXPECT_EQ(got[t], want[t]) << g["prompt"] << " step " << t;
  }
  TempDir tmp;
  fs::path data = write_fixture_texts(tmp.path);
  RunResult r = run_ok({"eval", "--model", (kModels / "llama").string(), "--data", data.string(), "--dtype", "float16", "--json"});
  const double want = e["eval_eos"]["token_weighted_loss"];
  EXPECT_NEAR(last_json_line(r.out)["loss"].get<double>(), want, 2e-3 * want);
  RunResult bad = run_ft({"generate", "--model", (kModels / "llama").string(), "--prompt", "x", "--kv-cache", "int8"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--kv-cache"), std::string::npos) << bad.err;
}

// A bf16 checkpoint (qwen2 fixture): by default generate computes in exact fp32 on every CPU, so its greedy
// tokens are transformers' fp32 ones (top-2 margin >= 1e-3); --compute bfloat16 rounds matmul inputs to
// bf16 (2^-9 relative) and still tracks them where the margin is >= 0.05; eval --compute bfloat16 needs
// bf16 weights and says so.
TEST(CliHappy, Bf16CheckpointIsExactByDefaultAndComputeBfloat16IsOptIn) {
  json e = read_json(kModels / "qwen2" / "expected.json");
  for (const char* compute : {"float32", "bfloat16"}) {
    for (auto& g : e["greedy"]) {
      auto want = g["new_ids"].get<std::vector<int32_t>>();
      std::vector<std::string> args = {"generate", "--model", (kModels / "qwen2").string(), "--prompt", g["prompt"], "--max-tokens",
                                       std::to_string(want.size()), "--json"};
      if (std::string(compute) == "bfloat16") args.insert(args.end(), {"--compute", "bfloat16"});
      RunResult r = run_ok(args);
      auto got = last_json_line(r.out)["tokens"].get<std::vector<int32_t>>();
      auto margins = g["margins"].get<std::vector<double>>();
      const double min_margin = std::string(compute) == "float32" ? 1e-3 : 0.05;
      ASSERT_EQ(got.size(), want.size()) << r.out;
      for (size_t t = 0; t < want.size() && margins[t] >= min_margin; ++t)
        EXPECT_EQ(got[t], want[t]) << compute << " " << g["prompt"] << " step " << t;
    }
  }
  TempDir tmp;
  fs::path data = write_fixture_texts(tmp.path, "qwen2");
  RunResult bad = run_ft({"eval", "--model", (kModels / "qwen2").string(), "--data", data.string(), "--compute", "bfloat16"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--dtype bfloat16"), std::string::npos) << bad.err;
  RunResult ok = run_ok({"eval", "--model", (kModels / "qwen2").string(), "--data", data.string(), "--dtype", "bfloat16", "--compute",
                         "bfloat16", "--json"});
  const double want = e["eval_eos"]["token_weighted_loss"];
  EXPECT_NEAR(last_json_line(ok.out)["loss"].get<double>(), want, 1e-2 * want);
}

// --compute int8 (quantised weights' decode GEMVs with int8 inputs, autograd/quant.h qgemv_int8) is
// opt-in: a float model is refused (saying what to add), as is a model with only widths it does not
// support; on a 4-bit model generate and eval run with it.
TEST(CliHappy, ComputeInt8NeedsQuantisedWeights) {
  const std::string model = (kModels / "llama").string();
  RunResult bad = run_ft({"generate", "--model", model, "--prompt", "x", "--max-tokens", "2", "--compute", "int8"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("no quantised weights: add --quantize 4"), std::string::npos) << bad.err;
  RunResult bad3 = run_ft({"generate", "--model", model, "--prompt", "x", "--max-tokens", "2", "--quantize", "3", "--group-size", "32",
                           "--compute", "int8"});
  EXPECT_NE(bad3.exit_code, 0);
  EXPECT_NE(bad3.err.find("supports 4- and 8-bit"), std::string::npos) << bad3.err;
  RunResult ok = run_ok({"generate", "--model", model, "--prompt", "hello", "--max-tokens", "6", "--quantize", "4", "--group-size", "32",
                         "--compute", "int8", "--json"});
  EXPECT_EQ(last_json_line(ok.out)["tokens"].size(), 6u) << ok.out;
  TempDir tmp;
  fs::path data = write_fixture_texts(tmp.path);
  RunResult bade = run_ft({"eval", "--model", model, "--data", data.string(), "--compute", "int8"});
  EXPECT_NE(bade.exit_code, 0);
  EXPECT_NE(bade.err.find("--compute int8"), std::string::npos) << bade.err;
  run_ok({"eval", "--model", model, "--data", data.string(), "--quantize", "8", "--group-size", "32", "--compute", "int8", "--json"});
}

TEST(CliHappy, TrainMergeEvalGivesTheAdaptersLoss) {
  TempDir tmp;
  fs::path model = kModels / "llama", data = write_fixture_texts(tmp.path), adapter = tmp / "adapter", merged = tmp / "merged";
  run_ok({"train", "--model", model.string(), "--data", data.string(), "--adapter-path", adapter.string(), "--iters", "4",
          "--batch-size", "2", "--learning-rate", "1e-2", "--lora-rank", "4", "--progress", "false", "--steps-per-eval", "0"});
  ASSERT_TRUE(fs::exists(adapter / "adapter_model.safetensors"));
  ASSERT_TRUE(fs::exists(adapter / "adapter_config.json"));
  run_ok({"merge", "--model", model.string(), "--adapter", adapter.string(), "--out", merged.string(), "--dtype", "float32"});
  auto eval = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"eval", "--data", data.string(), "--json"};
    a.insert(a.end(), extra.begin(), extra.end());
    return last_json_line(run_ok(a).out)["loss"].get<double>();
  };
  double base = eval({"--model", model.string()});
  double with_adapter = eval({"--model", model.string(), "--adapter", adapter.string()});
  double merged_loss = eval({"--model", merged.string()});
  EXPECT_GT(std::abs(with_adapter - base), 1e-2) << "training changed nothing";
  EXPECT_NEAR(merged_loss, with_adapter, 1e-4 * with_adapter);
  json l = last_json_line(run_ok({"load", merged.string(), "--json"}).out);
  EXPECT_EQ(l["parameters"].get<int64_t>(), read_json(model / "expected.json")["meta"]["params"].get<int64_t>());
  EXPECT_EQ(l["dtype"], "F32");
}

void expect_same_tensors(const fs::path& a, const fs::path& b) {
  auto fa = ft::SafetensorsFile::open(a.string()), fb = ft::SafetensorsFile::open(b.string());
  ASSERT_EQ(fa->tensors().size(), fb->tensors().size());
  for (auto& t : fa->tensors()) {
    const ft::TensorRecord* u = fb->find(t.name);
    ASSERT_TRUE(u) << b << " lacks " << t.name;
    EXPECT_EQ(u->shape, t.shape) << t.name;
    EXPECT_EQ(u->st_dtype, t.st_dtype) << t.name;
    ASSERT_EQ(u->nbytes, t.nbytes) << t.name;
    EXPECT_EQ(std::memcmp(u->data, t.data, t.nbytes), 0) << t.name << " differs";
  }
}

TEST(CliHappy, SavePeftToMlxToPeftKeepsEveryTensor) {
  for (const char* kind : {"peft", "dora"}) {
    TempDir tmp;
    fs::path model = kModels / "llama", src = model / kind;
    run_ok({"save", "--model", model.string(), "--adapter", src.string(), "--format", "mlx", "--out", (tmp / "mlx").string()});
    ASSERT_TRUE(fs::exists(tmp / "mlx" / "adapters.safetensors"));
    run_ok({"save", "--model", model.string(), "--adapter", (tmp / "mlx").string(), "--format", "peft", "--out", (tmp / "back").string()});
    expect_same_tensors(src / "adapter_model.safetensors", tmp / "back" / "adapter_model.safetensors");
    json c0 = read_json(src / "adapter_config.json"), c1 = read_json(tmp / "back" / "adapter_config.json");
    EXPECT_EQ(c1["r"], c0["r"]) << kind;
    EXPECT_EQ(c1["lora_alpha"].get<double>(), c0["lora_alpha"].get<double>()) << kind;
    EXPECT_EQ(c1["use_dora"], c0["use_dora"]) << kind;
    // The mlx copy gives the same eval loss as the PEFT original.
    fs::path data = write_fixture_texts(tmp.path);
    auto loss = [&](const fs::path& ad) {
      return last_json_line(run_ok({"eval", "--model", model.string(), "--adapter", ad.string(), "--data", data.string(), "--json"}).out)["loss"]
          .get<double>();
    };
    EXPECT_DOUBLE_EQ(loss(tmp / "mlx"), loss(src)) << kind;
  }
}

}  // namespace
