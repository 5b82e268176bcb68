#pragma once
// A one-line progress bar on stderr for long work: step/total, loss, learning rate, tokens/s, ETA,
// peak memory. On a terminal it redraws in place; otherwise it prints nothing but log() lines.
#include <cstdint>
#include <string>

namespace ft {

class ProgressBar {
 public:
  ProgressBar(int64_t total, bool enabled);
  void update(int64_t done, double loss, double lr, double tokens_per_second, int64_t peak_bytes);
  // A permanent line above the bar.
  void log(const std::string& line);
  void finish();

 private:
  void draw();
  int64_t total_, done_ = 0;
  bool enabled_, tty_, drawn_ = false;
  double start_, loss_ = 0, lr_ = 0, tps_ = 0;
  int64_t peak_ = 0;
};

std::string format_duration(double seconds);

}  // namespace ft
