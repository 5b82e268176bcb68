#pragma once
// `ft train`'s one-line progress bar on stderr: step/total, loss, learning rate, tokens/s, ETA,
// peak memory (the numbers come from the Trainer's step reports). On a terminal it redraws in
// place; otherwise it prints nothing but log() lines.
#include <cstdint>
#include <string>

namespace ft::cli {

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled);
  bool enabled() const { return enabled_; }
  void update(int64_t done, int64_t total, double loss, double lr, double tokens_per_second, double eta_seconds, int64_t peak_bytes);
  // A permanent line above the bar (nothing when the bar is disabled).
  void log(const std::string& line);
  // A permanent line on stderr, above the bar when one is drawn (also when the bar is disabled).
  void print(const std::string& line);
  // Clears the bar; later lines are plain until the next update().
  void finish();

 private:
  void draw();
  int64_t total_ = 0, done_ = 0;
  bool enabled_, tty_, drawn_ = false;
  double loss_ = 0, lr_ = 0, tps_ = 0, eta_ = -1;
  int64_t peak_ = 0;
};

std::string format_duration(double seconds);

}  // namespace ft::cli
