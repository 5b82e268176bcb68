// ft train [RECIPE.yaml] [--flags] [key=value ...]: every recipe key is also a flag; the command
// line wins over the recipe.
#include <atomic>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <map>

#include "cli/commands.h"
#include "cli/progress.h"
#include "ft/detail/session.h"
#include "optim/dist.h"
#include "optim/trainer.h"

namespace ft::cli {

namespace {

std::string dashed(std::string k) {
  std::replace(k.begin(), k.end(), '_', '-');
  return k;
}

// The run the signal handlers stop (a request on the Trainer: an atomic flag, async-signal-safe).
std::atomic<Trainer*> g_run{nullptr};
static_assert(std::atomic<Trainer*>::is_always_lock_free && std::atomic<bool>::is_always_lock_free);

// True when a stop was already requested (or there is no run to stop).
bool request_stop() {
  Trainer* t = g_run.load();
  return t == nullptr || t->request_stop();
}

void on_sigint(int) {
  if (request_stop()) std::_Exit(130);  // second Ctrl-C: leave at once
  const char msg[] = "\nCtrl-C: finishing this step, saving, then exiting (Ctrl-C again to abort without saving)\n";
  [[maybe_unused]] auto r = write(2, msg, sizeof msg - 1);
}

// Under mpirun: Ctrl-C reaches mpirun only, which sends the ranks SIGTERM (and SIGKILL a
// odls_base_sigkill_timeout later); SIGUSR1 to mpirun is forwarded to the ranks at once. Either makes
// every rank finish the step; rank 0 saves; all exit.
void on_sigterm(int sig) {
  if (request_stop()) return;
  if (dist::rank() != 0) return;
  const char term[] = "\nSIGTERM (Ctrl-C on mpirun): finishing this step, saving, then exiting\n";
  const char usr[] = "\nSIGUSR1: finishing this step, saving, then exiting\n";
  [[maybe_unused]] auto r = sig == SIGTERM ? write(2, term, sizeof term - 1) : write(2, usr, sizeof usr - 1);
}

}  // namespace

void add_train(CLI::App& app) {
  auto* sub = app.add_subcommand("train", "Fine-tune a model with LoRA, DoRA or full training");
  sub->footer(
      "\nEvery recipe key is also a flag (--lora-rank 16 == lora_rank: 16) and can be given as key=value;\n"
      "the command line wins over the recipe. Output in --adapter-path: adapter_model.safetensors +\n"
      "adapter_config.json (PEFT), state-*.h5 training states, loss.svg.\n\nExamples:\n"
      "  ft train recipes/quickstart.yaml\n"
      "  ft train --model ./SmolLM2-135M --data ../data/wikisql --iters 200 --adapter-path ./adapter\n"
      "  ft train recipes/qwen3-0.6b.yaml --learning-rate 5e-5 lora_rank=16\n"
      "  ft train recipes/quickstart.yaml --resume     # continue after a crash or Ctrl-C\n"
      "  ft train recipes/quickstart.yaml --overwrite  # start again in the same --adapter-path\n");
  auto recipe_and_overrides = std::make_shared<std::vector<std::string>>();
  sub->add_option("recipe", *recipe_and_overrides, "RECIPE.yaml and/or key=value overrides");
  auto flags = std::make_shared<std::map<std::string, std::vector<std::string>>>();
  static const std::map<std::string, std::string> help = {
      {"model", "HF model directory"}, {"data", "data directory (train.jsonl, valid.jsonl) or a .jsonl file"},
      {"adapter_path", "output directory for the adapter and training states"},
      {"resume", "continue the run in --adapter-path from its newest training state (same model, data, settings)"},
      {"overwrite", "replace the run already in --adapter-path (its files go once this run's first state is saved)"},
      {"resume_adapter", "start from an existing adapter (rank, alpha, targets from its config)"},
      {"fine_tune_type", "lora | dora | full"}, {"lora_rank", "LoRA rank r"}, {"lora_alpha", "LoRA alpha (scaling alpha/r)"},
      {"lora_dropout", "dropout on the adapter input"}, {"rslora", "rank-stabilised scaling alpha/sqrt(r)"},
      {"lora_targets", "modules to adapt: all-linear, or names like q_proj,v_proj"},
      {"lora_init", "default (Kaiming-uniform A, zero B) | gaussian"}, {"num_layers", "adapt only the last N layers (-1 = all)"},
      {"full_targets", "full fine-tuning: all, or substrings of weight names"},
      {"optimizer", "adamw | sgd"}, {"learning_rate", "peak learning rate"}, {"weight_decay", "decoupled (adamw) / L2 (sgd)"},
      {"momentum", "sgd momentum"}, {"lr_schedule", "constant | linear | cosine"}, {"warmup_steps", "linear warmup steps"},
      {"max_grad_norm", "global gradient-norm clip (0 = off)"}, {"iters", "optimizer steps"}, {"epochs", "passes over the data (if iters is 0)"},
      {"batch_size", "rows per micro-batch"}, {"grad_accumulation", "micro-batches per optimizer step"},
      {"max_seq_length", "truncate rows to this many tokens"}, {"mask_prompt", "loss only on completions / assistant turns"},
      {"pack", "pack short rows into full sequences"}, {"group_by_length", "batch rows of similar length"},
      {"use_chat_template", "render prompt/completion rows with the chat template"},
      {"seed", "seed for data order, init and dropout"}, {"dtype", "float32 | bfloat16 | float16 base weights (bfloat16: autocast, matmul inputs rounded to bf16 with fp32 accumulation, the same on every CPU; float16: fp16 autocast + dynamic loss scaling)"},
      {"loss_scale_init", "float16: initial loss scale (2^16)"},
      {"loss_scale_growth_interval", "float16: good steps before the loss scale doubles"},
      {"grad_checkpoint", "recompute blocks in backward (less memory)"}, {"checkpoint_every", "with grad_checkpoint: every k-th block"},
      {"checkpoint_policy", "selective (keep q/k/v: faster) | full (keep only block inputs: least memory)"},
      {"steps_per_report", "steps between progress reports"}, {"steps_per_eval", "steps between validations (0 = off)"},
      {"val_batches", "validation batches per evaluation (0 = all)"}, {"save_every", "steps between saved states"},
      {"metrics_file", "append one JSON object per report to this file"}, {"progress", "show the progress bar"},
      {"sample_prompt", "greedy sample from this prompt before and after training"},
      {"sample_max_tokens", "tokens per sample"}, {"merged_path", "after training, merge the adapter and write the model here"},
      {"save_dtype", "dtype of written models: float32 | bfloat16 | float16 (default: the base's)"}};
  for (const std::string& k : TrainConfig::keys()) {
    auto it = help.find(k);
    sub->add_option("--" + dashed(k), (*flags)[k], it == help.end() ? k : it->second)->expected(0, 1)->allow_extra_args(false);
  }
  sub->callback([recipe_and_overrides, flags] {
    TrainConfig c;
    std::vector<std::pair<std::string, std::string>> overrides;
    for (const std::string& a : *recipe_and_overrides) {
      auto eq = a.find('=');
      if (eq != std::string::npos) overrides.push_back({a.substr(0, eq), a.substr(eq + 1)});
      else api::detail::apply_recipe(c, a);
    }
    for (auto& [k, v] : *flags) {
      if (v.empty()) continue;  // not given
      c.set(k, v.back().empty() ? "true" : v.back());
    }
    for (auto& [k, v] : overrides) c.set(k, v);
    // The library reports; the console is this command's: header lines and notes on stderr, the
    // progress bar with the report and validation lines on stderr (only with --progress, rank 0),
    // the samples on stdout.
    ProgressBar bar(c.progress && dist::rank() == 0);
    TrainCallbacks cb;
    cb.on_log = [&](TrainLogLevel, const std::string& line) { bar.print(line); };
    cb.on_step = [&](const StepProgress& p) {
      bar.update(p.step, p.total, p.loss, p.learning_rate, p.tokens_per_second, p.eta_seconds, p.peak_memory_bytes);
    };
    cb.on_report = [&](const ReportLine& r) {
      bar.log(cat("step ", r.step, ": loss ", r.loss, ", lr ", r.learning_rate, ", ", int64_t(r.tokens_per_second), " tok/s, peak ",
                  r.peak_memory_bytes / 1048576, " MB",
                  r.has_loss_scale ? cat(", loss scale ", r.loss_scale, " (", r.skipped_steps, " steps skipped)") : std::string()));
    };
    cb.on_validation = [&](const ValidationLine& v) { bar.log(cat("step ", v.step, ": validation loss ", v.loss, " (", v.tokens, " tokens)")); };
    cb.on_progress_log = [&](const std::string& line) { bar.log(line); };
    cb.on_sample = [&](const std::string& when, const std::string& prompt, const std::string& text) {
      bar.finish();
      std::cout << "---- sample " << when << " ----\n" << prompt << text << "\n---------------------------\n" << std::flush;
    };
    Trainer trainer(c, cb);
    g_run.store(&trainer);
    struct Unset { ~Unset() { g_run.store(nullptr); } } unset;
    std::signal(SIGINT, on_sigint);
    if (dist::active()) {
      std::signal(SIGTERM, on_sigterm);
      std::signal(SIGUSR1, on_sigterm);
    }
    TrainResult r;
    try {
      r = trainer.run();
    } catch (...) {
      bar.finish();
      throw;
    }
    bar.finish();
    // The real last step, its loss and the last validation loss (with its step when earlier).
    std::cerr << (r.already_done ? "Already done" : r.interrupted ? "Stopped" : "Done") << " after " << r.steps << " steps"
              << (r.already_done ? cat(" (", r.requested_steps, " asked for)") : std::string()) << ": loss " << r.final_loss
              << (r.final_val_loss >= 0 ? cat(", validation loss ", r.final_val_loss, r.final_val_step != r.steps ? cat(" (step ", r.final_val_step, ")") : std::string())
                                        : std::string(", no validation loss"))
              << ". Adapter in " << r.adapter_path << "\n";
  });
}

}  // namespace ft::cli
