// ft merge: fold an adapter into the base weights and write a HF model directory.
#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "models/export.h"
#include "models/gguf_export.h"

namespace ft::cli {

void add_merge(CLI::App& app) {
  auto* sub = app.add_subcommand("merge", "Fuse an adapter into the model and write the result in HF layout");
  sub->footer("\nThe merged model is W + scaling·B·A (DoRA: rescaled by its magnitudes), computed in float32, stored in the\n"
              "base model's dtype unless --dtype says otherwise. Config and tokenizer files are copied.\n\nExamples:\n"
              "  ft merge --model ./SmolLM2-135M --adapter ./adapter --out ./merged\n"
              "  ft merge --model ./m --adapter ./adapter --out ./merged-bf16 --dtype bfloat16 --shard-size 2000000000\n"
              "  ft merge --model ./m --adapter ./adapter --format gguf --outtype q8_0 --out ./merged-q8_0.gguf\n"
              "\nA quantized base (an MLX checkpoint, or --quantize B to quantize it on load as training did): the merged\n"
              "matrices are re-quantized with the base's bits and group size (as mlx-lm's fuse does), or the whole model\n"
              "is written dequantized with --dtype (then it gives exactly the adapter's outputs).\n"
              "  ft merge --model ./m --quantize 4 --adapter ./qlora-adapter --out ./merged-f32 --dtype float32\n");
  auto model = std::make_shared<std::string>(), adapter = std::make_shared<std::string>(), out = std::make_shared<std::string>(),
       dtype = std::make_shared<std::string>(), format = std::make_shared<std::string>(), outtype = std::make_shared<std::string>();
  auto shard = std::make_shared<uint64_t>(5000000000ull);
  auto quantize = std::make_shared<int>(0), group = std::make_shared<int>(64);
  sub->add_option("--model,-m", *model, "HF model directory")->required();
  sub->add_option("--adapter", *adapter, "PEFT or mlx-lm adapter directory")->required();
  sub->add_option("--out,-o", *out, "Output directory")->required();
  sub->add_option("--dtype", *dtype, "float32, bfloat16 or float16 (default: the base model's)")->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  sub->add_option("--format", *format, "gguf: write one GGUF file (llama.cpp, ollama) instead of a HF directory")
      ->check(CLI::IsMember({"gguf"}));
  sub->add_option("--outtype", *outtype, "GGUF tensor type: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k (default: the base model's float type)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"}));
  add_quantize_options(sub, *quantize, *group);
  sub->add_option("--shard-size", *shard, "Maximum bytes per safetensors shard")->default_val(5000000000ull);
  sub->callback([=] {
    Loaded L = load_all(*model, *adapter, "float32", false, *quantize, *group);
    std::string dt = *dtype;
    // A quantized base: re-quantized with its own settings (mlx-lm fuse's default); --dtype dequantizes.
    // GGUF output: merged in float32, then quantized once to --outtype (default: a quantized GGUF
    // base's own type when ft writes it, else the base's float type).
    const bool quantized = L.model.quantized();
    const bool requant = quantized && dt.empty() && *format != "gguf";
    if (dt.empty()) dt = dtype_name(L.model.base_dtype());
    FT_CHECK(outtype->empty() || *format == "gguf", "--outtype is for --format gguf (use --dtype for a HF directory)");
    std::string ot = *outtype;
    if (ot.empty()) {
      ot = dt == "bfloat16" ? "bf16" : dt == "float16" ? "f16" : "f32";
      for (auto [gt, name] : {std::pair{"Q8_0", "q8_0"}, {"Q4_0", "q4_0"}, {"Q4_K", "q4_k"}, {"Q6_K", "q6_k"}})
        if (quantized && L.model.checkpoint_dtype == gt && dtype->empty()) ot = name;
    }
    merge_lora(L.model, DType::F32, requant);
    if (*format == "gguf") {
      for (const std::string& n : export_gguf(L.model, *out, GgufExportOptions{ot, ""})) std::cerr << "note: " << n << "\n";
      std::cerr << "Merged " << *adapter << " into " << *model << " -> " << *out << " (GGUF " << ot << ")\n";
      return;
    }
    export_model(L.model, *out, ExportOptions{requant ? "" : dt, *shard});
    std::cerr << "Merged " << *adapter << " into " << *model << " -> " << *out << " (" << (requant ? quant_summary(L.model) : dt) << ")\n";
  });
}

}  // namespace ft::cli
