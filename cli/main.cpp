// ft: the command-line front end. Thin over the libraries.
#include <CLI/CLI.hpp>
#include <iostream>

#include "autograd/error.h"

int main(int argc, char** argv) {
  CLI::App app{"ft - fine-tune large language models with LoRA on the CPU.\n"
               "HF checkpoints in, PEFT-compatible adapters out."};
  app.set_version_flag("--version", std::string("ft ") + FT_VERSION);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ft::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  if (argc == 1) { std::cout << app.help(); }
  return 0;
}
