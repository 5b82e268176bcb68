// ft load MODEL [--adapter A] [--json]: load and validate everything, print what it is.
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "autograd/quant.h"
#include "models/gguf_load.h"

namespace ft::cli {

namespace fs = std::filesystem;

void add_load(CLI::App& app) {
  auto* sub = app.add_subcommand("load", "Load and validate a HF model directory (weights, config, tokenizer, chat template, adapter)");
  sub->footer("\nExamples:\n  ft load ./SmolLM2-135M\n  ft load ./Qwen3-0.6B --adapter ./adapter --json\n");
  auto model = std::make_shared<std::string>();
  auto adapter = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  sub->add_option("model", *model, "HF model directory (config.json + *.safetensors + tokenizer)")->required();
  sub->add_option("--adapter", *adapter, "PEFT or mlx-lm adapter directory to apply");
  sub->add_flag("--json", *as_json, "Print one JSON object instead of text");
  auto quantize = std::make_shared<int>(0), group = std::make_shared<int>(64);
  add_quantize_options(sub, *quantize, *group);
  sub->callback([=] {
    // Weights-only directories load (tokenizer "unavailable"); tokenizer files that do not parse are an error.
    fs::path d(*model);
    Loaded L = load_all(*model, *adapter, "", fs::exists(d / "tokenizer.json") || fs::exists(d / "tokenizer.model"), *quantize, *group);
    const std::string quant = quant_summary(L.model);
    const bool is_gguf = is_gguf_file(*model);
    const ModelConfig& c = L.model.cfg;
    int64_t adapter_params = 0;
    for (auto& p : lora_parameters(L.model)) adapter_params += p.value.numel();
    int64_t ctx = c.max_position_embeddings;
    double weights = double(L.model.weight_bytes());
    double kv_per_token = 2.0 * double(c.num_layers) * double(c.kv_dim()) * 4.0;
    std::string tmpl = L.chat ? "yes" : (L.tok && !L.tok->chat_template().empty() ? "unsupported: " + L.chat_error : "none");
    if (*as_json) {
      nlohmann::json j = {{"model_type", c.model_type},
                          {"parameters", L.model.checkpoint_parameters},
                          {"dtype", L.model.checkpoint_dtype},
                          {"layers", c.num_layers},
                          {"hidden_size", c.hidden_size},
                          {"heads", c.num_heads},
                          {"kv_heads", c.num_kv_heads},
                          {"head_dim", c.head_dim},
                          {"vocab_size", c.vocab_size},
                          {"context_length", ctx},
                          {"tied_embeddings", c.tie_word_embeddings},
                          {"tokenizer", L.tok ? nlohmann::json(L.tok->vocab_size()) : nlohmann::json(nullptr)},
                          {"chat_template", L.chat.has_value()},
                          {"weights_bytes", weights},
                          {"kv_cache_bytes_per_token", kv_per_token},
                          {"adapter_parameters", adapter_params}};
      if (!L.tokenizer_error.empty()) j["tokenizer_error"] = L.tokenizer_error;
      if (!quant.empty()) {
        auto qm = L.model.quantized_matrices();
        const QuantParams& q0 = quant_params(*qm[0].second);
        j["quantization"] = {{"bits", q0.bits}, {"group_size", q0.group_size}, {"mode", "affine"}, {"matrices", qm.size()}, {"summary", quant}};
      }
      std::cout << j.dump() << "\n";
      return;
    }
    std::cout << "model        " << *model << "\n"
              << "family       " << c.model_type << (c.architecture.empty() ? "" : " (" + c.architecture + ")") << "\n"
              << "parameters   " << L.model.checkpoint_parameters << " (" << human_count(double(L.model.checkpoint_parameters)) << ")\n"
              << "dtype        " << L.model.checkpoint_dtype << "\n"
              << (quant.empty() ? "" : "quantized    " + quant + (is_gguf ? ", GGUF " + L.model.checkpoint_dtype + " blocks held as affine groups, exactly" : ", MLX affine") + "\n")
              << "layers       " << c.num_layers << " (hidden " << c.hidden_size << ", heads " << c.num_heads << "/" << c.num_kv_heads
              << " kv, head_dim " << c.head_dim << ", mlp " << c.intermediate_size << ")\n"
              << "vocab        " << c.vocab_size << (c.tie_word_embeddings ? " (tied embeddings)" : "") << "\n"
              << "context      " << ctx << " tokens\n"
              << "tokenizer    " << (L.tok ? std::to_string(L.tok->vocab_size()) + " tokens" : "unavailable: " + L.tokenizer_error) << "\n"
              << "template     " << tmpl << "\n"
              << "memory       " << human_bytes(weights) << " weights + " << human_bytes(kv_per_token) << " KV cache per token (fp32)\n";
    if (L.adapter)
      std::cout << "adapter      " << *adapter << ": rank " << L.adapter->rank << ", alpha " << L.adapter->alpha << (L.adapter->dora ? ", DoRA" : "")
                << ", " << adapter_params << " parameters\n";
  });
}

}  // namespace ft::cli
