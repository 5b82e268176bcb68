// Dataset rows: the input is a .json file (a JSON array or JSON lines). read_rows + detect_format +
// make_dataset with a real tokenizer and chat template either give examples whose ids/mask agree,
// or an ft::Error.
#include <string>

#include "autograd/error.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "tests/fuzz/fuzz_targets.h"

namespace ft::fuzz {

int jsonl(const uint8_t* data, size_t size) {
  static const std::string dir = std::string(FT_TEST_DATA) + "/../fixtures/tokenizer";
  static const Tokenizer tok = Tokenizer::from_dir(dir);
  static const TokenizerEncoder enc(tok);
  static const ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(dir + "/tokenizer_config.json");
  static const ChatTemplateRenderer chat(tmpl);
  const std::string path = write_scratch("rows.json", data, size);
  RawRows raw;
  try {
    raw = read_rows(path);
    (void)detect_format(raw);
  } catch (const Error&) {
    return 0;
  }
  FT_FUZZ_ASSERT(raw.rows.size() == raw.where.size(), "RawRows.rows and .where differ in length");
  for (size_t i = 0; i < raw.rows.size(); ++i) (void)raw.locate(i);
  DatasetOptions a;
  DatasetOptions b = a;
  b.mask_prompt = true, b.max_seq_length = 24, b.alpaca_chat = true;
  DatasetOptions c = a;
  c.mask_prompt = true, c.use_chat_template = false;
  for (const DatasetOptions* o : {&a, &b, &c}) {
    for (const ChatRenderer* r : {static_cast<const ChatRenderer*>(&chat), static_cast<const ChatRenderer*>(nullptr)}) {
      try {
        Dataset d = make_dataset(raw, enc, r, *o);
        FT_FUZZ_ASSERT(!d.examples.empty(), "make_dataset returned no examples without an error");
        for (const Example& e : d.examples) {
          FT_FUZZ_ASSERT(e.ids.size() == e.mask.size() && !e.ids.empty(), "ids and mask differ in length");
          FT_FUZZ_ASSERT(int64_t(e.ids.size()) <= o->max_seq_length, "example longer than max_seq_length");
          FT_FUZZ_ASSERT(e.mask[0] == 0 && e.n_targets() > 0, "bad mask");
          for (int32_t id : e.ids) FT_FUZZ_ASSERT(id >= 0 && size_t(id) < tok.vocab_size(), "id outside the vocabulary");
        }
      } catch (const Error&) {
      }
    }
  }
  return 0;
}

}  // namespace ft::fuzz
