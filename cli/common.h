#pragma once
// What several subcommands share: loading a model directory with its tokenizer, chat template and
// optional adapter, with errors that name the file.
#include <memory>
#include <optional>
#include <string>

#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "lora/adapter.h"
#include "models/model.h"

namespace ft::cli {

struct Loaded {
  Model model;
  std::optional<Tokenizer> tok;
  std::optional<ChatTemplate> chat;
  std::optional<LoraConfig> adapter;
  std::string tokenizer_error, chat_error;
};

// need_tokenizer: a missing/broken tokenizer is an error (else recorded in tokenizer_error).
Loaded load_all(const std::string& model_dir, const std::string& adapter_dir, const std::string& dtype, bool need_tokenizer);

std::string human_bytes(double bytes);
std::string human_count(double n);

}  // namespace ft::cli
