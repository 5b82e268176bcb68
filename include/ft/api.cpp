// ft's public API (include/ft/ft.h) over the library's layers; the CLI is built on it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <set>

#include <yaml-cpp/yaml.h>

#include "autograd/error.h"
#include "data/batching.h"
#include "data/dataset.h"
#include "ft/detail/session.h"
#include "ft/ft.h"
#include "models/export.h"
#include "models/generate.h"
#include "models/gguf_load.h"
#include "models/loss.h"
#include "optim/trainer.h"

namespace ft::api {

namespace fs = std::filesystem;

namespace {

std::mutex g_log_mutex;
LogFn g_log;

void log(LogLevel level, const std::string& msg) {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  if (g_log) g_log(level, msg);
}

// Length of the longest prefix of s that ends on a UTF-8 character boundary.
size_t utf8_safe(const std::string& s, size_t n) {
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

ft::GenerateOptions to_internal(const detail::SessionState& st, const GenerateOptions& o) {
  ft::GenerateOptions go;
  go.max_tokens = o.max_tokens;
  go.sampling = {o.temperature, o.top_k, o.top_p, o.min_p, o.repetition_penalty, o.seed};
  go.eos_ids = eos_ids(st.model, st.tok->eos_id());
  return go;
}

const Tokenizer& tokenizer(const detail::SessionState& st) {
  FT_CHECK(st.tok.has_value(), st.model.dir, ": no usable tokenizer: ", st.tokenizer_error);
  return *st.tok;
}

std::vector<int32_t> encode_chat(const detail::SessionState& st, const nlohmann::ordered_json& msgs) {
  FT_CHECK(st.chat.has_value(), st.model.dir, ": chat messages need a chat template, and ",
           st.chat_error.empty() ? "tokenizer_config.json has none" : "it could not be parsed: " + st.chat_error);
  return tokenizer(st).encode(st.chat->render(msgs, nullptr, true), false);
}

// Streams ids through the decoder, honouring stop strings; fills g.
Generation run_generate(detail::SessionState& st, std::vector<int32_t> ids, const GenerateOptions& o, const TokenFn& on_token) {
  const Tokenizer& tok = tokenizer(st);
  FT_CHECK(!ids.empty(), "the prompt encodes to no tokens");
  ft::GenerateOptions go = to_internal(st, o);
  StreamDecoder dec(tok, true);
  Generation g;
  g.prompt_tokens = ids;
  size_t emitted = 0, hold = 0;
  for (auto& s : o.stop) hold = std::max(hold, s.size());
  bool stopped = false, cancelled = false;
  auto emit_to = [&](size_t n) {
    if (n > emitted) {
      if (on_token && !on_token(g.text.substr(emitted, n - emitted))) cancelled = true;
      emitted = n;
    }
  };
  GenerateStats stats;
  g.tokens = ft::generate(st.model, ids, go, [&](int32_t id) {
    g.text += dec.push(id);
    for (auto& s : o.stop) {
      size_t p = g.text.find(s);
      if (p != std::string::npos) {
        g.text.resize(p);
        emit_to(p);
        stopped = true;
        return false;
      }
    }
    emit_to(utf8_safe(g.text, g.text.size() > hold ? g.text.size() - hold : 0));
    return !cancelled;
  }, &stats);
  if (!stopped) {
    g.text += dec.flush();
    emit_to(g.text.size());
  }
  g.finish_reason = stats.finish_reason;
  g.prompt_tokens_per_second = stats.prompt_tps();
  g.tokens_per_second = stats.generation_tps();
  return g;
}


}  // namespace

// ---- sessions -------------------------------------------------------------------------------------

std::string version() { return FT_VERSION; }

void set_log_callback(LogFn fn) {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  g_log = std::move(fn);
}

Session::Session(std::unique_ptr<detail::SessionState> s) : s_(std::move(s)) {}
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;
const std::string& Session::model_dir() const { return s_->model.dir; }
std::string Session::model_type() const { return s_->model.cfg.model_type; }
int64_t Session::num_parameters() const { return s_->model.checkpoint_parameters; }
int64_t Session::vocab_size() const { return s_->model.cfg.vocab_size; }
bool Session::has_chat_template() const { return s_->chat.has_value(); }

detail::SessionState detail::load_state(const std::string& dir, const std::string& adapter, const std::string& dtype,
                                        bool need_tokenizer, int quantize, int group_size) {
  const bool gguf = is_gguf_file(dir);
  FT_CHECK(gguf || fs::is_directory(dir), "model directory '", dir,
           "' does not exist (expected a HuggingFace model directory with config.json and *.safetensors, or a .gguf file)");
  ft::LoadOptions lo;
  lo.dtype = dtype;
  lo.quantize = quantize;
  lo.group_size = group_size;
  SessionState L{Model::load(dir, lo), {}, {}, {}, {}, {}};
  try {
    L.tok.emplace(load_model_tokenizer(dir));
  } catch (const ft::Error& e) {
    if (need_tokenizer) throw;
    L.tokenizer_error = e.what();
  }
  if (L.tok && !L.tok->chat_template().empty()) {
    try {
      nlohmann::ordered_json sp = {{"bos_token", L.tok->bos_token()}, {"eos_token", L.tok->eos_token()}};
      L.chat.emplace(L.tok->chat_template(),
                     gguf ? dir + " (tokenizer.chat_template)" : (fs::path(dir) / "tokenizer_config.json").string(), sp);
    } catch (const ft::Error& e) {
      L.chat_error = e.what();
    }
  }
  if (L.tok) {
    int64_t tv = int64_t(L.tok->vocab_size());
    FT_CHECK(tv <= L.model.cfg.vocab_size, dir, ": the tokenizer has ", tv, " tokens but config.json vocab_size is ",
             L.model.cfg.vocab_size, "; tokenizer and model do not match");
  }
  if (!adapter.empty()) L.adapter = load_adapter(adapter, L.model, false);
  return L;
}

Session load(const std::string& dir, const LoadOptions& o) {
  auto st = std::make_unique<detail::SessionState>(detail::load_state(dir, o.adapter, o.dtype, true, o.quantize, o.group_size));
  if (!st->chat_error.empty()) log(LogLevel::Warning, cat(dir, ": chat template unusable: ", st->chat_error));
  return Session(std::move(st));
}

// ---- generation -----------------------------------------------------------------------------------

Generation generate(Session& s, const std::string& prompt, const GenerateOptions& o, const TokenFn& on_token) {
  return run_generate(s.state(), tokenizer(s.state()).encode(prompt, true), o, on_token);
}

Generation generate(Session& s, const std::vector<Message>& messages, const GenerateOptions& o, const TokenFn& on_token) {
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (auto& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  return run_generate(s.state(), encode_chat(s.state(), msgs), o, on_token);
}

std::vector<Generation> generate_batch(Session& s, const std::vector<std::string>& prompts, const GenerateOptions& o, bool chat) {
  detail::SessionState& st = s.state();
  const Tokenizer& tok = tokenizer(st);
  std::vector<std::vector<int32_t>> ids;
  for (auto& p : prompts) {
    ids.push_back(chat ? encode_chat(st, nlohmann::ordered_json::array({{{"role", "user"}, {"content", p}}})) : tok.encode(p, true));
    FT_CHECK(!ids.back().empty(), "prompt ", ids.size() - 1, " encodes to no tokens");
  }
  GenerateStats stats;
  std::vector<std::vector<int32_t>> out = ft::generate_batch(st.model, ids, to_internal(st, o), &stats);
  std::vector<Generation> r(prompts.size());
  for (size_t i = 0; i < r.size(); ++i) {
    r[i].prompt_tokens = ids[i];
    r[i].tokens = out[i];
    r[i].text = tok.decode(out[i], true);
    for (auto& stop : o.stop) {
      size_t p = r[i].text.find(stop);
      if (p != std::string::npos) r[i].text.resize(p), r[i].finish_reason = "stop";
    }
    if (r[i].finish_reason.empty()) r[i].finish_reason = int64_t(out[i].size()) >= o.max_tokens ? "length" : "eos";
    r[i].prompt_tokens_per_second = stats.prompt_tps();
    r[i].tokens_per_second = stats.generation_tps();
  }
  return r;
}

// ---- evaluation, training, merging, conversion ----------------------------------------------------

EvalResult evaluate(Session& s, const std::string& data, const EvalOptions& o) {
  detail::SessionState& st = s.state();
  EvalResult r;
  r.file = eval_data_file(data, o.split);
  std::unique_ptr<ChatRenderer> rend;
  if (st.chat) rend = std::make_unique<ChatTemplateRenderer>(*st.chat);
  TokenizerEncoder enc(tokenizer(st));
  DatasetOptions dopt;
  dopt.max_seq_length = o.max_seq_length;
  dopt.mask_prompt = o.mask_prompt;
  Dataset ds = load_dataset(r.file, enc, rend.get(), dopt);
  for (const std::string& w : ds.warnings) log(LogLevel::Warning, w);
  for (const Example& e : ds.examples)
    for (int32_t id : e.ids)
      FT_CHECK(id >= 0 && id < st.model.cfg.vocab_size, r.file, ": token id ", id, " is outside the model's vocabulary");
  auto [loss, tokens] = evaluate_loss(st.model, ds, o.batch_size, padding_id(enc), 0);
  r.loss = loss;
  r.perplexity = std::exp(loss);
  r.tokens = tokens;
  r.examples = int64_t(ds.size());
  return r;
}

void detail::apply_recipe(TrainConfig& c, const std::string& path) {
  FT_CHECK(fs::exists(path), "recipe '", path, "' does not exist");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw ft::Error(cat(path, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  if (root.IsNull()) return;
  FT_CHECK(root.IsMap(), path, ": a recipe is a mapping of option: value");
  for (auto it = root.begin(); it != root.end(); ++it) {
    // Copies, not references: it-> yields a temporary pair (a reference to its member dangles).
    const YAML::Node k = it->first, v = it->second;
    FT_CHECK(k.IsScalar(), path, ":", k.Mark().line + 1, ": a recipe key must be a plain name");
    std::string key = k.as<std::string>();
    try {
      if (v.IsSequence()) {
        std::string s;
        for (auto x : v) s += (s.empty() ? "" : ",") + x.as<std::string>();
        c.set(key, s);
      } else if (v.IsScalar()) {
        c.set(key, v.as<std::string>());
      } else if (!v.IsNull()) {
        throw ft::Error(cat("option '", key, "' must be a value or a list"));
      }
    } catch (const ft::Error& e) {
      throw ft::Error(cat(path, ":", k.Mark().line + 1, ": ", e.what()));
    } catch (const YAML::Exception& e) {
      throw ft::Error(cat(path, ":", k.Mark().line + 1, ": option '", key, "' must be a value or a list of values"));
    }
  }
}

TrainReport train(const TrainOptions& o, const TrainCallbacks& cb) {
  TrainConfig c;
  if (!o.recipe.empty()) detail::apply_recipe(c, o.recipe);
  for (auto& [k, v] : o.settings) c.set(k, v);
  ft::TrainCallbacks in;
  in.should_stop = cb.should_stop;
  LogFn on_log = cb.on_log ? cb.on_log : LogFn([](LogLevel level, const std::string& m) { log(level, m); });
  in.on_log = [on_log](TrainLogLevel level, const std::string& m) {
    on_log(level == TrainLogLevel::Warning ? LogLevel::Warning : LogLevel::Info, m);
  };
  in.on_progress_log = [on_log](const std::string& m) { on_log(LogLevel::Info, m); };
  if (cb.on_step)
    in.on_step = [&cb](const StepProgress& p) {
      cb.on_step({p.step, p.total, p.loss, p.learning_rate, p.tokens_per_second, p.elapsed_seconds, p.eta_seconds, p.peak_memory_bytes});
    };
  if (cb.on_report)
    in.on_report = [&cb](const ReportLine& r) {
      cb.on_report({r.step, r.loss, r.learning_rate, r.tokens_per_second, r.trained_tokens, r.grad_norm, r.peak_memory_bytes,
                    r.has_loss_scale ? r.loss_scale : 0.0, r.skipped_steps});
    };
  if (cb.on_validation) in.on_validation = [&cb](const ValidationLine& v) { cb.on_validation({v.step, v.loss, v.tokens}); };
  in.on_sample = cb.on_sample;
  TrainResult r = ft::train(c, in);
  return {r.steps, r.final_loss, r.final_val_loss, r.adapter_path, r.interrupted};
}

std::string merge(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir, const std::string& dtype,
           uint64_t max_shard_bytes) {
  detail::SessionState st = detail::load_state(model_dir, adapter_dir, "float32", false);
  const std::string dt = dtype.empty() ? dtype_name(st.model.base_dtype()) : dtype;
  merge_lora(st.model, DType::F32);
  export_model(st.model, out_dir, ExportOptions{dt, max_shard_bytes});
  return dt;
}

void convert_adapter(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir,
                     const std::string& format) {
  FT_CHECK(format == "peft" || format == "mlx", "adapter format must be peft or mlx, got '", format, "'");
  detail::SessionState st = detail::load_state(model_dir, adapter_dir, "float32", false);
  if (format == "mlx") save_mlx_adapter(out_dir, st.model, *st.adapter);
  else save_peft_adapter(out_dir, st.model, *st.adapter);
}

void convert_model(const std::string& model_dir, const std::string& out_dir, const std::string& dtype, uint64_t max_shard_bytes) {
  detail::SessionState st = detail::load_state(model_dir, "", "", false);
  export_model(st.model, out_dir, ExportOptions{dtype, max_shard_bytes});
}

}  // namespace ft::api
