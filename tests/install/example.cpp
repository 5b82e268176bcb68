// The smallest embedding of ft: load a model, stream a greedy completion, then decode a batch.
//   ft_example MODEL_DIR PROMPT MAX_TOKENS
// Prints the streamed completion, then each batched completion, each followed by '\x1e' (record
// separator: completions contain newlines).
#include <ft/ft.h>

#include <cstdlib>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: ft_example MODEL_DIR PROMPT MAX_TOKENS\n";
    return 2;
  }
  try {
    ft::api::Session s = ft::api::load(argv[1]);
    ft::api::GenerateOptions opt;
    opt.max_tokens = std::atoi(argv[3]);
    std::string streamed;
    ft::api::Generation g = ft::api::generate(s, argv[2], opt, [&](const std::string& piece) {
      streamed += piece;
      return true;
    });
    if (streamed != g.text) {
      std::cerr << "streamed pieces differ from the result\n";
      return 1;
    }
    std::cout << g.text << '\x1e';
    for (const ft::api::Generation& b : ft::api::generate_batch(s, {argv[2], "A:"}, opt)) std::cout << b.text << '\x1e';
  } catch (const ft::api::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
