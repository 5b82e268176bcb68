// ft: the command-line front end. Thin over the libraries: each subcommand lives in cli/cmd_*.cpp.
#include <CLI/CLI.hpp>
#include <iostream>

#include <cstdlib>

#include "autograd/cpu.h"
#include "autograd/error.h"
#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "ft - fine-tune large language models with LoRA on the CPU.\n"
      "HuggingFace model directories in, PEFT-compatible adapters out.\n\n"
      "Examples:\n"
      "  ft load ./SmolLM2-135M\n"
      "  ft train recipes/quickstart.yaml\n"
      "  ft train --model ./Qwen3-0.6B --data ./data --adapter-path ./adapter --iters 200\n"
      "  ft eval --model ./Qwen3-0.6B --adapter ./adapter --data ./data/valid.jsonl\n"
      "  ft generate --model ./Qwen3-0.6B --adapter ./adapter --chat --prompt \"Hello\"\n"
      "  ft merge --model ./Qwen3-0.6B --adapter ./adapter --out ./merged\n",
      "ft"};
  app.set_version_flag("--version", std::string("ft ") + FT_VERSION);
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "Worker threads for every kernel (default: all cores, or FT_NUM_THREADS)")
      ->check(CLI::NonNegativeNumber);
  app.parse_complete_callback([&] {
    if (threads == 0)
      if (const char* e = std::getenv("FT_NUM_THREADS")) threads = std::atoi(e);
    if (threads > 0) ft::set_num_threads(threads);
  });
  app.fallthrough();
  ft::cli::add_load(app);
  ft::cli::add_generate(app);
  ft::cli::add_eval(app);
  ft::cli::add_train(app);
  ft::cli::add_merge(app);
  ft::cli::add_save(app);
  if (argc == 1) {
    std::cout << app.help();
    return 0;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ft::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
