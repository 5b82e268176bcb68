#pragma once
// What an ft::api::Session holds: ft's internal types (not installed; for the CLI and tests).
#include <optional>
#include <string>

#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "ft/ft.h"
#include "lora/adapter.h"
#include "models/model.h"
#include "optim/trainer.h"

namespace ft::api::detail {

struct SessionState {
  Model model;
  std::optional<Tokenizer> tok;
  std::optional<ChatTemplate> chat;
  std::optional<LoraConfig> adapter;
  std::string tokenizer_error, chat_error;
};

// need_tokenizer: a missing/broken tokenizer is an error (else recorded in tokenizer_error).
// quantize > 0: quantise the base on load (bits, MLX affine with group_size).
SessionState load_state(const std::string& model_dir, const std::string& adapter_dir, const std::string& dtype,
                        bool need_tokenizer, int quantize = 0, int group_size = 64);

// A recipe (YAML) applied to cfg; errors name the file and line.
void apply_recipe(TrainConfig& cfg, const std::string& path);

}  // namespace ft::api::detail
