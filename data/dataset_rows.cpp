// Datasets, part 1: reading JSONL / JSON-array files into rows and detecting their format
// (data/dataset.h).
#include <filesystem>
#include <fstream>
#include <sstream>

#include <tbb/parallel_for.h>

#include "autograd/error.h"
#include "autograd/json_file.h"
#include "data/dataset_detail.h"

namespace ft {

using namespace dataset_detail;

const char* row_format_name(RowFormat f) {
  switch (f) {
    case RowFormat::Text: return "text";
    case RowFormat::PromptCompletion: return "prompt/completion";
    case RowFormat::Chat: return "messages";
    case RowFormat::Alpaca: return "alpaca (instruction/input/output)";
    case RowFormat::ShareGPT: return "sharegpt (conversations)";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Reading files

std::string RawRows::locate(size_t i) const {
  if (json_array) return cat(path, " row ", where[i]);
  return cat(path, ":", where[i]);
}

namespace {

std::string read_file(const std::string& path) {
  std::error_code ec;
  FT_CHECK(std::filesystem::exists(path, ec), "dataset file ", path,
           " does not exist: check the path (a data directory needs train.jsonl)");
  FT_CHECK(!std::filesystem::is_directory(path, ec), "dataset path ", path,
           " is a directory: pass it as a data directory (train.jsonl, valid.jsonl, test.jsonl)"
           " or name a file");
  std::ifstream f(path, std::ios::binary);
  FT_CHECK(f, "cannot open dataset file ", path, ": check its permissions");
  std::ostringstream s;
  s << f.rdbuf();
  std::string data = s.str();
  if (data.size() >= 3 && data.compare(0, 3, "\xEF\xBB\xBF") == 0) data.erase(0, 3);  // UTF-8 BOM
  return data;
}

}  // namespace

namespace dataset_detail {

const char* json_type(const ojson& j) {
  switch (j.type()) {
    case ojson::value_t::null: return "null";
    case ojson::value_t::object: return "an object";
    case ojson::value_t::array: return "a list";
    case ojson::value_t::string: return "a string";
    case ojson::value_t::boolean: return "a boolean";
    case ojson::value_t::number_integer:
    case ojson::value_t::number_unsigned:
    case ojson::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

std::string keys_of(const ojson& row) {
  std::string k;
  for (auto it = row.begin(); it != row.end(); ++it) k += (k.empty() ? "\"" : ", \"") + it.key() + "\"";
  return k.empty() ? "none" : k;
}

std::string parse_error_text(const nlohmann::json::parse_error& e) {
  // nlohmann's what() is "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
  std::string w = e.what();
  size_t p = w.find("] ");
  return p == std::string::npos ? w : w.substr(p + 2);
}

}  // namespace dataset_detail

RawRows read_rows(const std::string& path) {
  RawRows raw;
  raw.path = path;
  const std::string data = read_file(path);
  size_t first = data.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && data[first] == '[') {
    raw.json_array = true;
    ojson arr;
    FT_CHECK(!json_too_deep(data, kMaxJsonDepth + 1), path, ": JSON nests more than ", kMaxJsonDepth,
             " levels deep inside a row");
    try {
      arr = ojson::parse(data);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(cat(path, ": invalid JSON array (", parse_error_text(e),
                      "); a .json dataset must be one JSON array of row objects"));
    }
    raw.rows.reserve(arr.size());
    for (size_t i = 0; i < arr.size(); ++i) {
      FT_CHECK(arr[i].is_object(), path, " row ", i, ": each element of the array must be a JSON "
               "object (a row), got ", json_type(arr[i]));
      raw.rows.push_back(std::move(arr[i]));
      raw.where.push_back(int64_t(i));
    }
  } else {
    // JSONL: split lines first, parse them in parallel, report the first bad line.
    std::vector<std::pair<size_t, size_t>> lines;  // byte range
    std::vector<int64_t> numbers;
    size_t pos = 0;
    int64_t line = 0;
    while (pos < data.size()) {
      size_t nl = data.find('\n', pos);
      if (nl == std::string::npos) nl = data.size();
      ++line;
      size_t a = pos, b = nl;
      while (a < b && (data[a] == ' ' || data[a] == '\t' || data[a] == '\r')) ++a;
      while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\t' || data[b - 1] == '\r')) --b;
      if (b > a) {
        lines.emplace_back(a, b);
        numbers.push_back(line);
      }
      pos = nl + 1;
    }
    raw.rows.resize(lines.size());
    raw.where = numbers;
    std::vector<std::string> errors(lines.size());
    tbb::parallel_for(size_t(0), lines.size(), [&](size_t i) {
      std::string_view text(data.data() + lines[i].first, lines[i].second - lines[i].first);
      if (json_too_deep(text)) {
        errors[i] = cat(path, ":", numbers[i], ": the row nests more than ", kMaxJsonDepth, " levels deep");
        return;
      }
      try {
        raw.rows[i] = ojson::parse(text);
        if (!raw.rows[i].is_object())
          errors[i] = cat(path, ":", numbers[i], ": each line must be one JSON object (a row), got ",
                          json_type(raw.rows[i]));
      } catch (const nlohmann::json::parse_error& e) {
        errors[i] = cat(path, ":", numbers[i], ": invalid JSON (", parse_error_text(e),
                        "); each line of a .jsonl file must be one complete JSON object");
      }
    });
    for (const auto& e : errors) FT_CHECK(e.empty(), e);
  }
  FT_CHECK(!raw.rows.empty(), "dataset file ", path, " has no rows: it needs at least one JSON "
           "object (JSONL: one per line; .json: an array of objects)");
  return raw;
}

std::string eval_data_file(const std::string& data, const std::string& split) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(data)) return data;
  std::vector<std::string> order = split.empty() ? std::vector<std::string>{"test", "valid", "train"} : std::vector<std::string>{split};
  for (auto& s : order)
    for (const char* ext : {".jsonl", ".json"})
      if (fs::exists(fs::path(data) / (s + ext))) return (fs::path(data) / (s + ext)).string();
  throw Error(cat("data directory '", data, "' has no ", split.empty() ? "test/valid/train" : split, ".jsonl"));
}

RowFormat detect_format(const RawRows& raw) {
  FT_CHECK(!raw.rows.empty(), "dataset file ", raw.path, " has no rows");
  const ojson& r = raw.rows[0];
  if (r.contains("messages")) return RowFormat::Chat;
  if (r.contains("conversations")) return RowFormat::ShareGPT;
  if (r.contains("prompt") && r.contains("completion")) return RowFormat::PromptCompletion;
  if (r.contains("instruction") && r.contains("output")) return RowFormat::Alpaca;
  if (r.contains("text")) return RowFormat::Text;
  throw Error(cat(raw.locate(0), ": unknown row format; the row has the keys ", keys_of(r),
                  ". Accepted formats: {\"text\"}, {\"prompt\", \"completion\"}, {\"messages\": "
                  "[{\"role\", \"content\"}, ...], \"tools\"?}, {\"conversations\": [{\"from\", "
                  "\"value\"}, ...]} (ShareGPT), {\"instruction\", \"input\"?, \"output\"} (Alpaca)"));
}

}  // namespace ft
