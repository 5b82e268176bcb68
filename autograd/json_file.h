#pragma once
// Reading user-supplied JSON with a nesting limit, the one copy every loader uses (config.json,
// tokenizer files, chat templates, datasets, adapter_config.json, the shard index, ...). Deeply
// nested JSON (a few hundred KB of '[' suffice) overflows the stack wherever a parsed value is
// copied, dumped or walked recursively (nlohmann's copy constructor and dump() recurse), so the
// nesting is checked before parsing.
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ft {

// Real config / tokenizer / dataset files nest well under this.
constexpr int kMaxJsonDepth = 128;

// True when `text` (JSON) nests arrays/objects more than max_depth levels deep; brackets inside
// strings do not count.
bool json_too_deep(std::string_view text, int max_depth = kMaxJsonDepth);

// Parses `text`; `source` (a file name, or "file: key") starts every error message:
//   "<source>: JSON nests more than 128 levels deep", "<source>: invalid JSON: <parser message>".
nlohmann::json parse_json(std::string_view text, const std::string& source);
nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& source);

// The file at `path`, parsed as above (errors name the path; a missing file: "cannot read").
nlohmann::json read_json_file(const std::string& path);
nlohmann::ordered_json read_ordered_json_file(const std::string& path);

}  // namespace ft
