// Text forms of the enum-valued training settings (optim/settings.h).
#include "optim/settings.h"

#include <utility>

#include "autograd/error.h"

namespace ft {

namespace {

template <class E, size_t N>
using Names = std::pair<E, const char*>[N];

constexpr Names<FineTuneType, 3> kFineTune = {{FineTuneType::LoRA, "lora"}, {FineTuneType::DoRA, "dora"}, {FineTuneType::Full, "full"}};
constexpr Names<OptimizerType, 2> kOptimizer = {{OptimizerType::AdamW, "adamw"}, {OptimizerType::SGD, "sgd"}};
constexpr Names<ScheduleType, 3> kSchedule = {
    {ScheduleType::Constant, "constant"}, {ScheduleType::Linear, "linear"}, {ScheduleType::Cosine, "cosine"}};
constexpr Names<CheckpointPolicy, 2> kPolicy = {{CheckpointPolicy::Selective, "selective"}, {CheckpointPolicy::Full, "full"}};

template <class E, size_t N>
const char* name_in(const Names<E, N>& names, E v) {
  for (const auto& [e, n] : names)
    if (e == v) return n;
  return "?";
}

template <class E, size_t N>
void parse_in(const Names<E, N>& names, const std::string& key, const std::string& value, E& out) {
  std::string all;
  for (const auto& [e, n] : names) {
    if (value == n) {
      out = e;
      return;
    }
    all += cat(all.empty() ? "" : ", ", n);
  }
  throw Error(cat(key, " must be one of ", all, "; got '", value, "'"));
}

}  // namespace

const char* name_of(FineTuneType v) { return name_in(kFineTune, v); }
const char* name_of(OptimizerType v) { return name_in(kOptimizer, v); }
const char* name_of(ScheduleType v) { return name_in(kSchedule, v); }
const char* name_of(CheckpointPolicy v) { return name_in(kPolicy, v); }

void parse_setting(const std::string& key, const std::string& value, FineTuneType& out) { parse_in(kFineTune, key, value, out); }
void parse_setting(const std::string& key, const std::string& value, OptimizerType& out) { parse_in(kOptimizer, key, value, out); }
void parse_setting(const std::string& key, const std::string& value, ScheduleType& out) { parse_in(kSchedule, key, value, out); }
void parse_setting(const std::string& key, const std::string& value, CheckpointPolicy& out) { parse_in(kPolicy, key, value, out); }

}  // namespace ft
