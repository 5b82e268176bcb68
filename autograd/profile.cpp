#include "autograd/profile.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace ft::prof {

namespace {
bool read_env() {
  const char* e = std::getenv("FT_PROFILE");
  return e && *e && std::strcmp(e, "0") != 0;
}
// FT_PROFILE=cpu: the calling thread's CPU time instead of wall time (robust on a loaded machine;
// meaningful with FT_NUM_THREADS=1, where all work runs on the calling thread).
const bool g_cpu = [] {
  const char* e = std::getenv("FT_PROFILE");
  return e && std::strcmp(e, "cpu") == 0;
}();

struct Entry {
  int64_t calls = 0, self_ns = 0, incl_ns = 0;
};

struct Table {
  std::mutex mu;
  std::map<std::string, Entry> rows;
  int64_t t0 = now();
  static int64_t now() {
    if (g_cpu) {
      timespec ts;
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
      return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    }
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  ~Table() { print(); }
  void print() {
    std::lock_guard<std::mutex> lock(mu);
    if (rows.empty()) return;
    std::vector<std::pair<std::string, Entry>> v(rows.begin(), rows.end());
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second.self_ns > b.second.self_ns; });
    int64_t total = 0;
    for (auto& [n, e] : v) total += e.self_ns;
    std::fprintf(stderr, "\nFT_PROFILE: %s time per op (self = not in nested scopes), %.3f s since start\n",
                 g_cpu ? "main-thread CPU" : "wall", double(now() - t0) * 1e-9);
    std::fprintf(stderr, "%-28s %10s %12s %7s %12s %12s\n", "op", "calls", "self ms", "self %", "incl ms", "us/call");
    for (auto& [n, e] : v)
      std::fprintf(stderr, "%-28s %10lld %12.1f %6.1f%% %12.1f %12.1f\n", n.c_str(), (long long)e.calls, double(e.self_ns) * 1e-6,
                   total ? 100.0 * double(e.self_ns) / double(total) : 0.0, double(e.incl_ns) * 1e-6,
                   double(e.incl_ns) * 1e-3 / double(std::max<int64_t>(e.calls, 1)));
    std::fprintf(stderr, "%-28s %10s %12.1f\n", "total (self)", "", double(total) * 1e-6);
    rows.clear();
  }
};
Table& table() {
  static Table t;
  return t;
}
thread_local Scope* t_top = nullptr;
}  // namespace

const bool g_enabled = read_env();

struct Scope::Key {
  std::string s;
};

void Scope::begin(const char* name, const char* suffix, bool phase) {
  table();  // constructed before the first scope ends, so destroyed (and printed) at exit
  active_ = true;
  phase_ = phase;
  parent_ = t_top;
  key_ = new Key{parent_ && !parent_->phase_ && !phase ? parent_->key_->s + " > " : std::string()};
  key_->s += name;
  if (suffix) key_->s += suffix;
  t_top = this;
  start_ns_ = Table::now();
}

void Scope::end() {
  const int64_t dt = Table::now() - start_ns_;
  t_top = parent_;
  if (parent_) parent_->child_ns_ += dt;
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  Entry& e = t.rows[key_->s];
  delete key_;
  ++e.calls;
  e.incl_ns += dt;
  e.self_ns += dt - child_ns_;
}

void report() { table().print(); }

}  // namespace ft::prof
