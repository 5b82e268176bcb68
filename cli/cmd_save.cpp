// ft save: export and convert — adapters PEFT <-> mlx-lm, a training state to an adapter, a model to
// another dtype or shard size.
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "models/export.h"
#include "lora/gguf_adapter.h"
#include "models/gguf_export.h"
#include "autograd/file_io.h"
#include "optim/state.h"
#include "optim/trainer.h"

namespace ft::cli {

namespace fs = std::filesystem;

void add_save(CLI::App& app) {
  auto* sub = app.add_subcommand("save", "Convert adapters (PEFT <-> mlx-lm), training states and models");
  sub->footer("\nExamples:\n"
              "  ft save --model ./m --adapter ./peft-adapter --format mlx --out ./mlx-adapter\n"
              "  ft save --model ./m --adapter ./mlx-adapter --format peft --out ./peft-adapter\n"
              "  ft save --model ./m --state ./adapter/state-00000100.h5 --out ./adapter-step100\n"
              "  ft save --model ./m --out ./m-bf16 --dtype bfloat16 --shard-size 1000000000\n"
              "  ft save --model ./m --format gguf --outtype q8_0 --out ./m-q8_0.gguf\n"
              "  ft save --model ./m --adapter ./adapter --format gguf --base-gguf ./m-q8_0.gguf --out ./adapter.gguf\n"
              "  ft save --model ./m --out ./m-4bit --quantize 4 --group-size 64   # mlx-lm loads it (MLX's integers)\n");
  auto model = std::make_shared<std::string>(), adapter = std::make_shared<std::string>(), state = std::make_shared<std::string>(),
       out = std::make_shared<std::string>(), format = std::make_shared<std::string>(), dtype = std::make_shared<std::string>(),
       outtype = std::make_shared<std::string>(), base_gguf = std::make_shared<std::string>();
  auto shard = std::make_shared<uint64_t>(5000000000ull);
  auto quantize = std::make_shared<int>(0), group = std::make_shared<int>(64);
  sub->add_option("--model,-m", *model, "HF model directory (the adapter's base model)")->required();
  sub->add_option("--adapter", *adapter, "Adapter to convert (PEFT or mlx-lm, detected)");
  sub->add_option("--state", *state, "Training state (.h5) to turn into an adapter");
  sub->add_option("--format", *format, "Format to write: peft or mlx (adapters), gguf (models: one .gguf file for llama.cpp / ollama)")
      ->check(CLI::IsMember({"peft", "mlx", "gguf"}));
  sub->add_option("--base-gguf", *base_gguf, "GGUF adapter: the base model's GGUF file, for the ollama Modelfile's FROM (default: --model)");
  sub->add_option("--outtype", *outtype, "GGUF: tensor type of the matrices: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k (default: the model's float type)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"}));
  sub->add_option("--out,-o", *out, "Output directory")->required();
  sub->add_option("--dtype", *dtype, "Model conversion: float32, bfloat16 or float16")->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  add_quantize_options(sub, *quantize, *group);
  sub->add_option("--shard-size", *shard, "Model conversion: maximum bytes per shard")->default_val(5000000000ull);
  sub->callback([=] {
    FT_CHECK(adapter->empty() || state->empty(), "give either --adapter or --state, not both");
    if (!adapter->empty() || !state->empty()) {
      Loaded L = load_all(*model, "", "", false);
      LoraConfig lc;
      if (!adapter->empty()) {
        lc = load_adapter(*adapter, L.model, false);
      } else {
        TrainingState st = load_training_state(*state);
        TrainConfig tc;
        for (auto& [k, v] : st.settings.items()) tc.set_json(k, v);
        FT_CHECK(tc.fine_tune_type != FineTuneType::Full, *state, ": a full fine-tuning state; export it with ft train's output instead");
        lc.rank = tc.lora_rank;
        lc.alpha = tc.lora_alpha;
        lc.dropout = tc.lora_dropout;
        lc.rslora = tc.rslora;
        lc.dora = tc.fine_tune_type == FineTuneType::DoRA;
        lc.targets = tc.lora_targets;
        lc.layers = last_layers(L.model.cfg.num_layers, tc.num_layers);
        lc.base_model = tc.model;
        auto params = attach_lora(L.model, lc);
        for (auto& p : params) {
          auto it = st.params.find(p.name);
          FT_CHECK(it != st.params.end(), *state, ": parameter '", p.name, "' is missing");
          FT_CHECK(it->second.shape() == p.value.shape(), *state, ": parameter '", p.name, "' has shape ", it->second.shape_str(), ", expected ", p.value.shape_str());
          p.value.copy_(it->second);
        }
      }
      if (format->empty()) *format = "peft";
      if (*format == "gguf") {
        for (const std::string& n : export_gguf_adapter(L.model, lc, *out)) std::cerr << "note: " << n << "\n";
        fs::path mf = fs::path(*out).replace_extension(".Modelfile");
        std::string base = base_gguf->empty() ? fs::absolute(*model).string() : *base_gguf;
        write_file_atomic(mf.string(), ollama_modelfile(base, fs::absolute(*out).string()));
        std::cerr << "Wrote GGUF adapter to " << *out << " and an ollama Modelfile to " << mf.string() << "\n";
        return;
      }
      if (*format == "mlx") save_mlx_adapter(*out, L.model, lc);
      else save_peft_adapter(*out, L.model, lc);
      std::cerr << "Wrote " << *format << " adapter to " << *out << "\n";
      return;
    }
    FT_CHECK(format->empty() || *format == "gguf", "--format ", *format, " is for adapters; a model is written as safetensors (no --format) or --format gguf");
    FT_CHECK(outtype->empty() || *format == "gguf", "--outtype is for --format gguf (use --dtype for safetensors)");
    FT_CHECK(!*quantize || dtype->empty(), "give either --quantize (an MLX-quantized model) or --dtype (a float model), not both");
    FT_CHECK(!*quantize || *format != "gguf", "--quantize writes MLX's layout; for GGUF use --outtype q8_0|q4_0|q4_k|q6_k");
    Loaded L = load_all(*model, "", "", false, *quantize, *group);
    if (*format == "gguf") {
      for (const std::string& n : export_gguf(L.model, *out, GgufExportOptions{*outtype, ""})) std::cerr << "note: " << n << "\n";
      std::cerr << "Wrote GGUF model to " << *out << "\n";
      return;
    }
    export_model(L.model, *out, ExportOptions{*dtype, *shard});
    std::cerr << "Wrote model to " << *out << "\n";
  });
}

}  // namespace ft::cli
