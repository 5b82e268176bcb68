#pragma once
// Per-op wall-time profiler, off unless the environment variable FT_PROFILE is set (and not "0").
// With it on, every op (forward: the op's name; backward: "<name> bwd") and a few training phases
// record their time; at exit a table of self time (time not spent in nested scopes), inclusive
// time and call counts goes to stderr. Only scopes on the thread that opened them nest; worker
// threads of a parallel loop are inside their caller's scope. FT_PROFILE=cpu times the calling
// thread's CPU time instead (use with FT_NUM_THREADS=1 on a shared machine).
// Off, a scope costs one load and branch of a global flag.
#include <cstdint>

namespace ft::prof {

extern const bool g_enabled;  // FT_PROFILE read once at start-up
inline bool enabled() { return g_enabled; }

class Scope {
 public:
  // An op scope opened inside another op scope is recorded as "outer > inner"; a phase scope
  // (training phases: forward, backward, optimizer) is a plain top-level row.
  explicit Scope(const char* name, const char* suffix = nullptr, bool phase = false) {
    if (g_enabled) begin(name, suffix, phase);
  }
  ~Scope() {
    if (active_) end();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  void begin(const char* name, const char* suffix, bool phase);
  void end();
  bool active_ = false, phase_ = false;
  int64_t start_ns_ = 0, child_ns_ = 0;
  Scope* parent_ = nullptr;
  struct Key;
  Key* key_ = nullptr;
};

// Writes the table now (also done at exit) and clears it.
void report();

}  // namespace ft::prof

#define FT_PROF_CAT2(a, b) a##b
#define FT_PROF_CAT(a, b) FT_PROF_CAT2(a, b)
// FT_PROFILE_SCOPE("name") or FT_PROFILE_SCOPE(name, " bwd"): times the rest of the enclosing block.
#define FT_PROFILE_SCOPE(...) ::ft::prof::Scope FT_PROF_CAT(ft_prof_scope_, __LINE__)(__VA_ARGS__)
#define FT_PROFILE_PHASE(name) ::ft::prof::Scope FT_PROF_CAT(ft_prof_scope_, __LINE__)(name, nullptr, true)
