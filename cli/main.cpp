// ft: the command-line front end. Thin over the libraries: each subcommand lives in cli/cmd_*.cpp.
#include <CLI/CLI.hpp>
#include <iostream>

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <thread>

#include "autograd/cpu.h"
#include "autograd/error.h"
#include "cli/commands.h"
#include "optim/dist.h"

namespace {
// Under mpirun, ranks other than 0 print nothing but their errors (rank 0 speaks for the job).
struct NullBuf : std::streambuf {
  int overflow(int c) override { return c; }
};
NullBuf g_null;
std::streambuf* g_cerr = std::cerr.rdbuf();

int fail(const std::string& msg) {
  if (ft::dist::size() > 1 && ft::dist::rank() != 0) {
    // An error every rank meets (a bad flag, a NaN loss) is reported once, by rank 0, whose abort ends
    // this rank meanwhile; an error of this rank alone (its files differ) is printed after the pause.
    std::signal(SIGTERM, SIG_DFL);
    std::this_thread::sleep_for(std::chrono::seconds(3));
  }
  std::cerr.rdbuf(g_cerr);
  std::cerr << "error: " << (ft::dist::size() > 1 ? ft::cat("rank ", ft::dist::rank(), ": ") : std::string()) << msg << "\n" << std::flush;
  ft::dist::abort(1);  // ends every rank of an MPI job (the others would wait in a collective); exit(1) alone
}

// Under mpirun without --threads / FT_NUM_THREADS: the cores this rank may run on (its binding), shared
// with the other ranks on this host when they are not bound apart.
int default_rank_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : int(std::thread::hardware_concurrency());
  const int host = std::max(1, int(std::thread::hardware_concurrency()) / std::max(1, ft::dist::local_size()));
  return std::max(1, std::min(mine, host));
}
}  // namespace

int main(int argc, char** argv) {
  ft::dist::init(&argc, &argv);  // only when started by mpirun / srun
  if (ft::dist::rank() != 0) {
    std::cout.rdbuf(&g_null);
    std::cerr.rdbuf(&g_null);
  }
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
    if (threads == 0 && ft::dist::size() > 1) threads = default_rank_threads();
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
    ft::dist::finalize();
    return 0;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // --help: 0
    if (code != 0) ft::dist::abort(code);
    ft::dist::finalize();
    return code;
  } catch (const ft::Error& e) {
    return fail(e.what());
  } catch (const std::bad_alloc&) {
    return fail("out of memory");
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  ft::dist::finalize();
  return 0;
}
