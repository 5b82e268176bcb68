#include "cli/progress.h"

#include <cstdio>
#include <iostream>
#include <unistd.h>

namespace ft::cli {

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  int64_t t = int64_t(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof buf, "%02lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

ProgressBar::ProgressBar(bool enabled) : enabled_(enabled), tty_(isatty(STDERR_FILENO) != 0) {}

void ProgressBar::update(int64_t done, int64_t total, double loss, double lr, double tps, double eta, int64_t peak) {
  done_ = done, total_ = total, loss_ = loss, lr_ = lr, tps_ = tps, eta_ = eta, peak_ = peak;
  draw();
}

void ProgressBar::draw() {
  if (!enabled_ || !tty_) return;
  const int width = 24;
  int fill = total_ > 0 ? int(double(width) * double(done_) / double(total_)) : 0;
  std::string bar(size_t(fill), '#');
  bar.resize(size_t(width), '-');
  std::fprintf(stderr, "\r\033[K[%s] %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %s mem %lld MB", bar.c_str(), (long long)done_,
               (long long)total_, loss_, lr_, tps_, format_duration(eta_).c_str(), (long long)(peak_ / 1048576));
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::log(const std::string& line) {
  if (enabled_) print(line);
}

void ProgressBar::print(const std::string& line) {
  const bool redraw = drawn_;
  if (tty_ && drawn_) std::fprintf(stderr, "\r\033[K");
  // std::cerr, not stderr: under mpirun the other ranks' std::cerr is silenced (cli/main.cpp).
  std::cerr << line << "\n" << std::flush;
  if (redraw) draw();
}

void ProgressBar::finish() {
  if (enabled_ && tty_ && drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
  std::fflush(stderr);
}

}  // namespace ft::cli
