#pragma once
// Each subcommand registers itself on the app; the CLI is thin over the libraries.
#include <CLI/CLI.hpp>

namespace ft::cli {

void add_load(CLI::App& app);
void add_generate(CLI::App& app);
void add_eval(CLI::App& app);
void add_train(CLI::App& app);
void add_merge(CLI::App& app);
void add_save(CLI::App& app);

}  // namespace ft::cli
