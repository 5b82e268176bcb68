// ft merge: fold an adapter into the base weights and write a HF model directory.
#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "models/export.h"

namespace ft::cli {

void add_merge(CLI::App& app) {
  auto* sub = app.add_subcommand("merge", "Fuse an adapter into the model and write the result in HF layout");
  sub->footer("\nThe merged model is W + scaling·B·A (DoRA: rescaled by its magnitudes), computed in float32, stored in the\n"
              "base model's dtype unless --dtype says otherwise. Config and tokenizer files are copied.\n\nExamples:\n"
              "  ft merge --model ./SmolLM2-135M --adapter ./adapter --out ./merged\n"
              "  ft merge --model ./m --adapter ./adapter --out ./merged-bf16 --dtype bfloat16 --shard-size 2000000000\n");
  auto model = std::make_shared<std::string>(), adapter = std::make_shared<std::string>(), out = std::make_shared<std::string>(),
       dtype = std::make_shared<std::string>();
  auto shard = std::make_shared<uint64_t>(5000000000ull);
  sub->add_option("--model,-m", *model, "HF model directory")->required();
  sub->add_option("--adapter", *adapter, "PEFT or mlx-lm adapter directory")->required();
  sub->add_option("--out,-o", *out, "Output directory")->required();
  sub->add_option("--dtype", *dtype, "float32, bfloat16 or float16 (default: the base model's)")->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  sub->add_option("--shard-size", *shard, "Maximum bytes per safetensors shard")->default_val(5000000000ull);
  sub->callback([=] {
    Loaded L = load_all(*model, *adapter, "float32", false);
    std::string dt = *dtype;
    if (dt.empty()) dt = L.model.checkpoint_dtype == "BF16" ? "bfloat16" : L.model.checkpoint_dtype == "F16" ? "float16" : "float32";
    merge_lora(L.model, DType::F32);
    export_model(L.model, *out, ExportOptions{dt, *shard});
    std::cerr << "Merged " << *adapter << " into " << *model << " -> " << *out << " (" << dt << ")\n";
  });
}

}  // namespace ft::cli
