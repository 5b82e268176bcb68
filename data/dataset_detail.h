#pragma once
// Internal: the three parts of the dataset pipeline (data/dataset.h) and what they share.
//   dataset_rows.cpp     reading files into JSON rows, detecting the row format
//   dataset_formats.cpp  one row of each format -> a Sample (text, or a conversation to render)
//   dataset.cpp          Samples -> (ids, loss mask), truncation, assembly, data directories
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"

namespace ft::dataset_detail {

using ojson = nlohmann::ordered_json;

const char* json_type(const ojson& j);  // "a string", "a list", ... for messages
std::string keys_of(const ojson& row);  // "\"a\", \"b\"" or "none"
std::string parse_error_text(const nlohmann::json::parse_error& e);  // without nlohmann's prefix

// A row ready for tokenisation: either plain text (with the byte where the completion starts) or
// a conversation for the chat template.
struct Sample {
  bool chat = false;
  std::string text;
  size_t completion_begin = std::string::npos;  // plain: supervised from here to the end
  ojson messages, tools;
  std::vector<uint8_t> supervised;  // chat: per message
};

// Validates one row of format f (ft::Error saying what is wrong; the caller adds file and line).
Sample make_sample(const ojson& row, RowFormat f, const ChatRenderer* chat, const DatasetOptions& o);

}  // namespace ft::dataset_detail
