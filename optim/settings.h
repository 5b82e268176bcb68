#pragma once
// The training settings that name one of a few choices, as enums. Their text forms (recipes, the
// command line, the settings saved in training states) are parsed once, where a setting is read
// (TrainConfig::set); errors name the key and list the allowed values.
#include <string>

namespace ft {

enum class FineTuneType { LoRA, DoRA, Full };              // lora | dora | full
enum class OptimizerType { AdamW, SGD };                    // adamw | sgd
enum class ScheduleType { Constant, Linear, Cosine };       // constant | linear | cosine
enum class CheckpointPolicy { Selective, Full };            // selective (keep q/k/v) | full (block inputs only)

// The text form: "lora", "adamw", "cosine", "selective", ...
const char* name_of(FineTuneType v);
const char* name_of(OptimizerType v);
const char* name_of(ScheduleType v);
const char* name_of(CheckpointPolicy v);

// Parses the text form of setting `key`: ft::Error "<key> must be one of a, b, c; got 'x'".
void parse_setting(const std::string& key, const std::string& value, FineTuneType& out);
void parse_setting(const std::string& key, const std::string& value, OptimizerType& out);
void parse_setting(const std::string& key, const std::string& value, ScheduleType& out);
void parse_setting(const std::string& key, const std::string& value, CheckpointPolicy& out);

}  // namespace ft
