// TrainConfig: the training options (FT_TRAIN_KEYS), their text/JSON forms and validation.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "autograd/error.h"
#include "optim/trainer.h"

namespace ft {

using json = nlohmann::json;

// ---- configuration ------------------------------------------------------------------------------

namespace {
std::string norm_key(std::string k) {
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}
bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  throw Error(cat("option '", key, "' expects true or false, got '", v, "'"));
}
int64_t parse_int(const std::string& key, const std::string& v) {
  try {
    size_t n = 0;
    long long x = std::stoll(v, &n);
    if (n == v.size()) return x;
  } catch (...) {}
  throw Error(cat("option '", key, "' expects an integer, got '", v, "'"));
}
double parse_num(const std::string& key, const std::string& v) {
  try {
    size_t n = 0;
    double x = std::stod(v, &n);
    if (n == v.size() && std::isfinite(x)) return x;
  } catch (...) {}
  throw Error(cat("option '", key, "' expects a number, got '", v, "'"));
}
std::vector<std::string> parse_list(const std::string& v) {
  std::vector<std::string> r;
  std::string cur;
  for (char c : v) {
    if (c == ',' || c == ' ' || c == '[' || c == ']' || c == '"' || c == '\'') {
      if (!cur.empty()) r.push_back(cur), cur.clear();
    } else cur += c;
  }
  if (!cur.empty()) r.push_back(cur);
  return r;
}
}  // namespace

#define FT_TRAIN_KEYS(X)                                                                          \
  X(model, str) X(data, str) X(adapter_path, str) X(resume_adapter, str) X(resume, bool) X(overwrite, bool) \
  X(fine_tune_type, enm) X(lora_rank, int) X(lora_alpha, num) X(lora_dropout, num) X(rslora, bool) \
  X(lora_targets, list) X(lora_init, str) X(num_layers, int) X(full_targets, list)                 \
  X(optimizer, enm) X(learning_rate, num) X(weight_decay, num) X(momentum, num) X(beta1, num)      \
  X(beta2, num) X(eps, num) X(lr_schedule, enm) X(warmup_steps, int) X(max_grad_norm, num)         \
  X(iters, int) X(epochs, int) X(batch_size, int) X(grad_accumulation, int) X(max_seq_length, int) \
  X(mask_prompt, bool) X(pack, bool) X(group_by_length, bool) X(use_chat_template, bool)           \
  X(seed, int) X(dtype, str) X(loss_scale_init, num) X(loss_scale_growth_interval, int)            \
  X(grad_checkpoint, bool) X(checkpoint_every, int) X(checkpoint_policy, enm)                       \
  X(steps_per_report, int) X(steps_per_eval, int) X(val_batches, int) X(save_every, int)           \
  X(metrics_file, str) X(progress, bool) X(sample_prompt, str) X(sample_max_tokens, int) X(merged_path, str)       \
  X(save_dtype, str) X(quantize, int) X(group_size, int)

std::vector<std::string> TrainConfig::keys() {
  std::vector<std::string> k;
#define X(name, kind) k.push_back(#name);
  FT_TRAIN_KEYS(X)
#undef X
  return k;
}

namespace {
// A setting's JSON form: enums by name (the text a recipe uses), the rest as they are.
template <class V>
const V& json_form(const V& v) { return v; }
const char* json_form(FineTuneType v) { return name_of(v); }
const char* json_form(OptimizerType v) { return name_of(v); }
const char* json_form(ScheduleType v) { return name_of(v); }
const char* json_form(CheckpointPolicy v) { return name_of(v); }
}  // namespace

json TrainConfig::to_json() const {
  json j;
#define X(name, kind) j[#name] = json_form(name);
  FT_TRAIN_KEYS(X)
#undef X
  return j;
}

void TrainConfig::set(const std::string& key_in, const std::string& v) {
  std::string key = norm_key(key_in);
#define str_set(name) name = v;
#define bool_set(name) name = parse_bool(#name, v);
#define int_set(name) name = decltype(name)(parse_int(#name, v));
#define num_set(name) name = parse_num(#name, v);
#define list_set(name) name = parse_list(v);
#define enm_set(name) parse_setting(#name, v, name);
#define X(name, kind) if (key == #name) { kind##_set(name) return; }
  FT_TRAIN_KEYS(X)
#undef X
#undef str_set
#undef bool_set
#undef int_set
#undef num_set
#undef list_set
#undef enm_set
  std::string all;
  for (auto& k : keys()) all += (all.empty() ? "" : ", ") + k;
  throw Error(cat("unknown training option '", key_in, "'. Known options: ", all));
}

void TrainConfig::set_json(const std::string& key, const json& v) {
  if (v.is_string()) return set(key, v.get<std::string>());
  if (v.is_boolean()) return set(key, v.get<bool>() ? "true" : "false");
  if (v.is_number_integer()) return set(key, std::to_string(v.get<int64_t>()));
  if (v.is_number()) {
    std::ostringstream s;
    s.precision(17);
    s << v.get<double>();
    return set(key, s.str());
  }
  if (v.is_array()) {
    std::string s;
    for (auto& x : v) {
      FT_CHECK(x.is_string() || x.is_number(), "option '", key, "': list entries must be strings or numbers");
      s += (s.empty() ? "" : ",") + (x.is_string() ? x.get<std::string>() : x.dump());
    }
    return set(key, s);
  }
  if (v.is_null()) return;
  throw Error(cat("option '", key, "' has an unsupported value ", v.dump()));
}

void TrainConfig::validate() const {
  FT_CHECK(!model.empty(), "no model given: pass --model DIR (a HuggingFace model directory) or set 'model' in the recipe");
  FT_CHECK(!data.empty(), "no data given: pass --data PATH (a directory with train.jsonl, or a .jsonl file)");
  FT_CHECK(dtype == "float32" || dtype == "bfloat16" || dtype == "float16", "dtype must be float32, bfloat16 or float16, got '", dtype, "'");
  FT_CHECK(loss_scale_init > 0 && loss_scale_init <= 3.4e38, "loss_scale_init must be > 0 and a float32 (<= 3.4e38), got ", loss_scale_init);
  FT_CHECK(loss_scale_growth_interval > 0, "loss_scale_growth_interval must be > 0, got ", loss_scale_growth_interval);
  FT_CHECK(lora_rank > 0, "lora_rank must be > 0, got ", lora_rank);
  FT_CHECK(lora_dropout >= 0 && lora_dropout < 1, "lora_dropout must be in [0, 1), got ", lora_dropout);
  FT_CHECK(learning_rate >= 0, "learning_rate must be >= 0, got ", learning_rate);
  FT_CHECK(batch_size > 0, "batch_size must be > 0, got ", batch_size);
  FT_CHECK(grad_accumulation > 0, "grad_accumulation must be > 0, got ", grad_accumulation);
  FT_CHECK(max_seq_length > 1, "max_seq_length must be > 1, got ", max_seq_length);
  FT_CHECK(iters > 0 || epochs > 0, "set the training length with --iters N or --epochs N");
  FT_CHECK(iters >= 0 && epochs >= 0, "iters and epochs must be >= 0");
  FT_CHECK(steps_per_report > 0, "steps_per_report must be > 0");
  FT_CHECK(steps_per_eval >= 0 && save_every >= 0 && val_batches >= 0, "steps_per_eval, save_every and val_batches must be >= 0");
  FT_CHECK(checkpoint_every > 0, "checkpoint_every must be > 0");
  FT_CHECK(max_grad_norm >= 0, "max_grad_norm must be >= 0 (0 = off)");
  FT_CHECK(save_dtype.empty() || save_dtype == "float32" || save_dtype == "bfloat16" || save_dtype == "float16",
           "save_dtype must be float32, bfloat16 or float16, got '", save_dtype, "'");
  FT_CHECK(quantize == 0 || quantize == 2 || quantize == 3 || quantize == 4 || quantize == 5 || quantize == 6 || quantize == 8,
           "quantize must be 4 or 8 (2, 3, 5, 6 also work; 0 = off), got ", quantize);
  FT_CHECK(group_size == 32 || group_size == 64 || group_size == 128, "group_size must be 32, 64 or 128, got ", group_size);
  FT_CHECK(quantize == 0 || fine_tune_type != FineTuneType::Full, "full fine-tuning of a quantized base is not possible (quantized weights are frozen): "
           "train a LoRA/DoRA adapter on it (fine_tune_type lora or dora), or drop quantize");
}

}  // namespace ft
