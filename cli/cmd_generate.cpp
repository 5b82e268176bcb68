// ft generate: stream a completion from a model (+ adapter), HF-style prompt encoding and sampling.
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "autograd/tensor.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "models/generate.h"

namespace ft::cli {

namespace {
struct GenArgs {
  int quantize = 0, group_size = 64;  // quantise the base on load (--quantize, --group-size)
  std::string model, adapter, prompt, prompt_file, system, dtype, kv_cache = "float32", compute = "float32";
  std::vector<std::string> stop;
  bool chat = false, json = false, have_prompt = false;
  int64_t max_tokens = 256, top_k = 0;
  double temp = 0, top_p = 1, min_p = 0, rep = 1;
  uint64_t seed = 0;
};

// Length of the longest prefix of s that ends on a UTF-8 character boundary.
size_t utf8_safe(const std::string& s, size_t n) {
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

void run(const GenArgs& a) {
  FT_CHECK(!a.prompt.empty() || !a.prompt_file.empty() || a.have_prompt, "give a prompt with --prompt TEXT or --prompt-file FILE");
  std::string prompt = a.prompt;
  if (!a.prompt_file.empty()) {
    std::ifstream f(a.prompt_file, std::ios::binary);
    FT_CHECK(f.good(), "cannot read prompt file '", a.prompt_file, "'");
    std::stringstream ss;
    ss << f.rdbuf();
    prompt = ss.str();
  }
  Loaded L = load_all(a.model, a.adapter, a.dtype, true, a.quantize, a.group_size);
  check_compute(a.compute, L.model, a.model);
  const Tokenizer& tok = *L.tok;
  std::vector<int32_t> ids;
  if (a.chat) {
    FT_CHECK(L.chat.has_value(), a.model, ": --chat needs a chat template, and ",
             L.chat_error.empty() ? "tokenizer_config.json has none (drop --chat for a plain prompt)" : "it could not be parsed: " + L.chat_error);
    nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
    if (!a.system.empty()) msgs.push_back({{"role", "system"}, {"content", a.system}});
    msgs.push_back({{"role", "user"}, {"content", prompt}});
    ids = tok.encode(L.chat->render(msgs, nullptr, true), false);
  } else {
    FT_CHECK(a.system.empty(), "--system needs --chat");
    ids = tok.encode(prompt, true);
  }
  FT_CHECK(!ids.empty(), "the prompt encodes to no tokens");
  GenerateOptions go;
  go.max_tokens = a.max_tokens;
  go.kv_cache = a.kv_cache == "bfloat16" ? DType::BF16 : DType::F32;
  go.compute = a.compute == "bfloat16" ? DType::BF16 : DType::F32;
  go.int8_activations = a.compute == "int8";
  go.sampling = {a.temp, a.top_k, a.top_p, a.min_p, a.rep, a.seed};
  go.eos_ids = eos_ids(L.model, tok.eos_id());

  StreamDecoder dec(tok, true);
  std::string text;
  size_t emitted = 0, hold = 0;
  for (auto& s : a.stop) hold = std::max(hold, s.size());
  auto flush_to = [&](size_t n) {
    if (!a.json && n > emitted) {
      std::cout << text.substr(emitted, n - emitted) << std::flush;
      emitted = n;
    }
  };
  bool stopped = false;
  GenerateStats st;
  std::vector<int32_t> out = generate(L.model, ids, go, [&](int32_t id) {
    text += dec.push(id);
    for (auto& s : a.stop) {
      size_t p = text.find(s);
      if (p != std::string::npos) {
        text.resize(p);
        flush_to(p);
        stopped = true;
        return false;
      }
    }
    flush_to(utf8_safe(text, text.size() > hold ? text.size() - hold : 0));
    return true;
  }, &st);
  if (!stopped) {
    text += dec.flush();
    flush_to(text.size());
  }
  double peak = double(peak_rss_bytes()) / 1048576.0;
  if (a.json) {
    nlohmann::json j = {{"prompt_tokens", ids},          {"tokens", out},
                        {"text", text},                  {"prompt_tps", st.prompt_tps()},
                        {"generation_tps", st.generation_tps()}, {"peak_memory_mb", peak},
                        {"finish_reason", st.finish_reason}, {"margins", st.margins}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "\n" << std::flush;
    std::fprintf(stderr, "==========\nPrompt: %lld tokens, %.1f tokens/s\nGeneration: %lld tokens, %.1f tokens/s (%s)\nPeak memory: %.1f MB\n",
                 (long long)st.prompt_tokens, st.prompt_tps(), (long long)st.generated_tokens, st.generation_tps(), st.finish_reason.c_str(), peak);
  }
}
}  // namespace

void add_generate(CLI::App& app) {
  auto* sub = app.add_subcommand("generate", "Generate text from a model (and adapter), streaming tokens as they come");
  sub->footer(
      "\nSampling runs in HF's order: repetition penalty, temperature, top-k, top-p, min-p. --temp 0 (default) is greedy.\n"
      "A plain prompt is encoded as HF tokenizer(prompt) does (BOS etc. from the tokenizer); --chat renders the model's\n"
      "chat template with the generation prompt.\n\nExamples:\n"
      "  ft generate --model ./SmolLM2-135M --prompt \"The capital of France is\"\n"
      "  ft generate --model ./Qwen3-0.6B --adapter ./adapter --chat --system \"Be brief.\" --prompt \"Hi\" --temp 0.7 --top-p 0.9\n"
      "  ft generate --model ./m --prompt-file p.txt --max-tokens 50 --json\n");
  auto a = std::make_shared<GenArgs>();
  sub->add_option("--model,-m", a->model, "HF model directory")->required();
  sub->add_option("--adapter", a->adapter, "PEFT or mlx-lm adapter directory (applied unmerged)");
  sub->add_option("--prompt,-p", a->prompt, "Prompt text");
  sub->add_option("--prompt-file", a->prompt_file, "Read the prompt from a file");
  sub->add_flag("--chat", a->chat, "Render the prompt with the model's chat template");
  sub->add_option("--system", a->system, "System message (with --chat)");
  sub->add_option("--max-tokens", a->max_tokens, "Maximum new tokens")->default_val(256)->check(CLI::NonNegativeNumber);
  sub->add_option("--temp", a->temp, "Sampling temperature (0 = greedy)")->default_val(0.0)->check(CLI::NonNegativeNumber);
  sub->add_option("--top-k", a->top_k, "Keep the k most likely tokens (0 = off)")->default_val(0)->check(CLI::NonNegativeNumber);
  sub->add_option("--top-p", a->top_p, "Nucleus sampling threshold (1 = off)")->default_val(1.0)->check(CLI::Range(0.0, 1.0));
  sub->add_option("--min-p", a->min_p, "Drop tokens below min-p x the top probability (0 = off)")->default_val(0.0)->check(CLI::Range(0.0, 1.0));
  sub->add_option("--repetition-penalty", a->rep, "HF repetition penalty (1 = off)")->default_val(1.0)->check(CLI::PositiveNumber);
  sub->add_option("--seed", a->seed, "Random seed for sampling")->default_val(0);
  sub->add_option("--stop", a->stop, "Stop when this text appears (repeatable)");
  add_quantize_options(sub, a->quantize, a->group_size);
  sub->add_option("--dtype", a->dtype, "Weight dtype in memory: float32, bfloat16 or float16 (default: as stored; the numbers stay exact fp32, see --compute)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  sub->add_option("--compute", a->compute, kComputeHelp)
      ->default_val("float32")
      ->check(CLI::IsMember({"float32", "bfloat16", "int8"}));
  sub->add_option("--kv-cache", a->kv_cache, "KV cache dtype: float32 or bfloat16 (half the cache memory, faster at long contexts)")
      ->default_val("float32")
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  sub->add_flag("--json", a->json, "Print one JSON object: prompt_tokens, tokens, text, prompt_tps, generation_tps, peak_memory_mb, margins (top-1 minus top-2 logit per step)");
  sub->callback([a] { run(*a); });
}

}  // namespace ft::cli
