// ft eval: token-weighted cross-entropy and perplexity of a model (+ adapter) on a dataset, through
// the same data pipeline as training.
#include <chrono>
#include <cmath>
#include <iostream>

#include <nlohmann/json.hpp>

#include "autograd/ops.h"
#include "autograd/quant.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "data/batching.h"
#include "data/dataset.h"
#include "models/generate.h"
#include "models/loss.h"

namespace ft::cli {

namespace {
struct EvalArgs {
  int quantize = 0, group_size = 64;  // quantise the base on load (--quantize, --group-size)
  std::string model, adapter, data, split, dtype, compute = "float32";
  int64_t batch_size = 8, max_seq_length = 2048, max_tokens = 64;
  bool json = false, mask_prompt = false, generate = false;
};

void run(const EvalArgs& a) {
  auto t0 = std::chrono::steady_clock::now();
  AutocastBF16Guard bf(a.compute == "bfloat16");  // matmul precision (autograd/ops.h)
  Int8ComputeGuard i8(a.compute == "int8");        // quantised weights' products with int8 inputs (autograd/quant.h)
  Loaded L = load_all(a.model, a.adapter, a.dtype, true, a.quantize, a.group_size);
  check_compute(a.compute, L.model, a.model);
  std::string file = eval_data_file(a.data, a.split);
  std::unique_ptr<ChatRenderer> rend;
  if (L.chat) rend = std::make_unique<ChatTemplateRenderer>(*L.chat);
  TokenizerEncoder enc(*L.tok);
  DatasetOptions dopt;
  dopt.max_seq_length = a.max_seq_length;
  dopt.mask_prompt = a.mask_prompt;
  Dataset ds = load_dataset(file, enc, rend.get(), dopt);
  for (const std::string& w : ds.warnings) std::cerr << "ft: warning: " << w << "\n";
  for (const Example& e : ds.examples)
    for (int32_t id : e.ids)
      FT_CHECK(id >= 0 && id < L.model.cfg.vocab_size, file, ": token id ", id, " is outside the model's vocabulary");
  auto [loss, tokens] = evaluate_loss(L.model, ds, a.batch_size, padding_id(enc), 0);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json j = {{"loss", loss}, {"perplexity", std::exp(loss)}, {"tokens", tokens}, {"examples", int64_t(ds.size())}, {"file", file}};

  if (a.generate) {
    // Exact match of greedy completions for prompt/completion rows, decoded in batches.
    RawRows raw = read_rows(file);
    FT_CHECK(detect_format(raw) == RowFormat::PromptCompletion, file, ": --generate needs prompt/completion rows");
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::string> want;
    for (auto& r : raw.rows) {
      std::string p = r["prompt"].get<std::string>();
      if (L.chat) {
        nlohmann::ordered_json m = nlohmann::ordered_json::array({{{"role", "user"}, {"content", p}}});
        prompts.push_back(L.tok->encode(L.chat->render(m, nullptr, true), false));
      } else {
        prompts.push_back(L.tok->encode(p, true));
      }
      want.push_back(r["completion"].get<std::string>());
    }
    GenerateOptions go;
    go.compute = a.compute == "bfloat16" ? DType::BF16 : DType::F32;
    go.int8_activations = a.compute == "int8";
    go.max_tokens = a.max_tokens;
    go.eos_ids = eos_ids(L.model, L.tok->eos_id());
    int64_t match = 0, gen_tokens = 0;
    double gen_secs = 0;
    for (size_t s = 0; s < prompts.size(); s += size_t(a.batch_size)) {
      std::vector<std::vector<int32_t>> chunk(prompts.begin() + long(s), prompts.begin() + long(std::min(prompts.size(), s + size_t(a.batch_size))));
      GenerateStats st;
      auto outs = generate_batch(L.model, chunk, go, &st);
      gen_tokens += st.generated_tokens;
      gen_secs += st.generation_seconds + st.prompt_seconds;
      for (size_t i = 0; i < outs.size(); ++i) {
        auto trim = [](std::string x) {
          size_t b = x.find_first_not_of(" \t\r\n"), e = x.find_last_not_of(" \t\r\n");
          return b == std::string::npos ? std::string() : x.substr(b, e - b + 1);
        };
        if (trim(L.tok->decode(outs[i], true)) == trim(want[s + i])) ++match;
      }
    }
    j["exact_match"] = prompts.empty() ? 0.0 : double(match) / double(prompts.size());
    j["generated_tokens"] = gen_tokens;
    j["generation_tps"] = gen_secs > 0 ? double(gen_tokens) / gen_secs : 0.0;
  }
  if (a.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  std::cout << "file        " << file << " (" << ds.size() << " examples)\n"
            << "loss        " << loss << "\n"
            << "perplexity  " << std::exp(loss) << "\n"
            << "tokens      " << tokens << " supervised\n";
  if (j.contains("exact_match"))
    std::cout << "exact match " << j["exact_match"].get<double>() * 100 << "% (" << j["generated_tokens"] << " tokens generated at "
              << int64_t(j["generation_tps"].get<double>()) << " tok/s)\n";
  std::cerr << "(" << secs << " s)\n";
}
}  // namespace

void add_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval", "Evaluate loss and perplexity on a dataset (the training data pipeline)");
  sub->footer(
      "\nThe loss is the token-weighted mean cross-entropy over every supervised token (same rules as training).\n"
      "A directory uses test.jsonl, else valid.jsonl, else train.jsonl (or --split).\n\nExamples:\n"
      "  ft eval --model ./SmolLM2-135M --data ./data/wikisql\n"
      "  ft eval --model ./m --adapter ./adapter --data valid.jsonl --json\n"
      "  ft eval --model ./m --adapter ./adapter --data qa.jsonl --generate --max-tokens 32\n");
  auto a = std::make_shared<EvalArgs>();
  sub->add_option("--model,-m", a->model, "HF model directory")->required();
  sub->add_option("--adapter", a->adapter, "PEFT or mlx-lm adapter directory");
  sub->add_option("--data", a->data, "JSONL file or data directory")->required();
  sub->add_option("--split", a->split, "Which file of a data directory: train, valid or test");
  sub->add_option("--batch-size", a->batch_size, "Rows per batch")->default_val(8)->check(CLI::PositiveNumber);
  sub->add_option("--max-seq-length", a->max_seq_length, "Truncate rows to this many tokens")->default_val(2048)->check(CLI::Range(2, 1 << 30));
  sub->add_flag("--mask-prompt", a->mask_prompt, "Score only completions / assistant turns");
  sub->add_flag("--generate", a->generate, "Also generate completions for prompt/completion rows and report exact match");
  sub->add_option("--max-tokens", a->max_tokens, "With --generate: maximum new tokens")->default_val(64);
  add_quantize_options(sub, a->quantize, a->group_size);
  sub->add_option("--dtype", a->dtype, "Weight dtype in memory: float32 (default), bfloat16 or float16 (the numbers stay exact fp32, see --compute)")
      ->default_val("float32")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  sub->add_option("--compute", a->compute, kComputeHelp)
      ->default_val("float32")
      ->check(CLI::IsMember({"float32", "bfloat16", "int8"}));
  sub->add_flag("--json", a->json, "Print one JSON object: loss, perplexity, tokens");
  sub->callback([a] { run(*a); });
}

}  // namespace ft::cli
