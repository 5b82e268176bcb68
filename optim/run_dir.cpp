#include "optim/run_dir.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "autograd/error.h"
#include "optim/state.h"

namespace ft {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string utc_time(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return b;
}

std::string host_name() {
  char h[256] = {0};
  if (::gethostname(h, sizeof h - 1) != 0) return "?";
  return h;
}

std::string read_all(int fd) {
  std::string s;
  char buf[512];
  if (::lseek(fd, 0, SEEK_SET) < 0) return s;
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0 && s.size() < 4096;) s.append(buf, size_t(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

}  // namespace

// ---- the lock -----------------------------------------------------------------------------------

RunLock::RunLock(const std::string& dir) : dir_(dir), path_((fs::path(dir) / kFileName).string()) {
  // Create the directory, remembering which levels did not exist (removed again if the run leaves
  // nothing in them, e.g. when its input is refused).
  std::error_code ec;
  fs::path abs = fs::absolute(dir, ec).lexically_normal();
  if (!abs.has_filename()) abs = abs.parent_path();  // "runs/x/"
  for (fs::path p = abs; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    created_.push_back(p.string());
    if (p == p.parent_path()) break;
  }
  auto fail = [&](const std::string& msg) {
    std::error_code e2;
    for (const std::string& d : created_)
      if (!fs::remove(d, e2)) break;
    throw Error(msg);
  };
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir, ec)) fail(cat("cannot create the adapter path '", dir, "': ",
           ec ? ec.message() : std::string("it exists and is not a directory"), "; choose another --adapter-path"));
  for (;;) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(cat("cannot create the lock file '", path_, "': ", std::strerror(errno), " (is the adapter path writable?)"));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int e = errno;
      std::string holder = e == EWOULDBLOCK ? read_all(fd_) : "";
      ::close(fd_);
      fd_ = -1;
      if (e == EWOULDBLOCK) fail(cat(dir, " is in use by another training run (",
               holder.empty() ? std::string("a process that is just starting") : holder,
               "): an adapter path belongs to one run at a time. Wait for that run to end (or stop it), or "
               "pass another --adapter-path."));
      fail(cat("cannot lock '", path_, "': ", std::strerror(e)));
    }
    // The lock counts only if the path still names the file we locked: a run that ended may have
    // removed it between our open() and flock() (then lock the new file instead).
    struct stat a {}, b {};
    if (::fstat(fd_, &a) == 0 && ::stat(path_.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) break;
    ::close(fd_);
    fd_ = -1;
  }
  const std::string me = cat("pid ", ::getpid(), " on host ", host_name(), ", started ", utc_time(std::time(nullptr)));
  if (::ftruncate(fd_, 0) == 0) {
    [[maybe_unused]] ssize_t n = ::pwrite(fd_, (me + "\n").data(), me.size() + 1, 0);
  }
}

RunLock::~RunLock() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while still locked: a waiting opener re-checks the path and starts over
  ::close(fd_);
  std::error_code ec;
  for (const std::string& d : created_)
    if (!fs::remove(d, ec)) break;  // not empty (the run wrote something), or gone: stop there
}

json new_run_info() {
  std::random_device rd;
  const uint64_t id = (uint64_t(rd()) << 32) ^ uint64_t(rd()) ^
                      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) ^ (uint64_t(::getpid()) << 20);
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(id));
  return {{"id", b}, {"host", host_name()}, {"started", utc_time(std::time(nullptr))}};
}

// ---- what a folder holds ------------------------------------------------------------------------

std::vector<std::pair<int64_t, std::string>> state_files(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return found;
  static const std::regex re("state-([0-9]{1,18})\\.h5");  // {1,18}: stoll must not overflow
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string n = e.path().filename().string();
    if (std::regex_match(n, m, re)) found.push_back({std::stoll(m[1]), e.path().string()});
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::vector<std::pair<int64_t, std::string>> states_of_run(const std::string& dir, const json& run, bool legacy) {
  std::vector<std::pair<int64_t, std::string>> mine;
  for (auto& [step, path] : state_files(dir)) {
    try {
      const TrainingState h = read_training_state_header(path);
      if (h.run.contains("id") ? run.contains("id") && h.run["id"] == run["id"] : legacy) mine.push_back({step, path});
    } catch (const Error&) {}  // unreadable: not this run's
  }
  return mine;
}

namespace {

// Files ft writes into an adapter path (adapter, model export, plot); states are matched separately.
bool is_output_file(const std::string& n) {
  static const std::regex shard("model-[0-9]+-of-[0-9]+\\.safetensors");
  for (const char* f : {"adapter_model.safetensors", "adapters.safetensors", "adapter_config.json", "model.safetensors",
                        "model.safetensors.index.json"})
    if (n == f) return true;
  return std::regex_match(n, shard);
}
// Written beside an adapter or model (kept with it, replaced with it).
bool is_companion_file(const std::string& n) {
  for (const char* f : {"loss.svg", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "tokenizer.model", "chat_template.jinja", "vocab.json", "merges.txt",
                        "added_tokens.json"})
    if (n == f) return true;
  return false;
}

std::string mtime_utc(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "?";
  return utc_time(st.st_mtime);
}

}  // namespace

RunDirContents inspect_run_dir(const std::string& dir) {
  RunDirContents r;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return r;
  r.states = state_files(dir);
  for (auto& e : fs::directory_iterator(dir, ec))
    if (is_output_file(e.path().filename().string())) r.outputs.push_back(e.path().filename().string());
  // Weights first (they name what the folder holds), then configs and indexes.
  auto weights = [](const std::string& n) { return n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0; };
  std::sort(r.outputs.begin(), r.outputs.end(), [&](const std::string& a, const std::string& b) {
    return weights(a) != weights(b) ? weights(a) : a < b;
  });
  return r;
}

std::string RunDirContents::refusal(const std::string& dir) const {
  std::string what;
  if (!states.empty()) {
    const auto& [step, path] = states.back();
    std::string detail = cat("step ", step);
    try {
      TrainingState st = read_training_state_header(path);
      const json& s = st.settings;
      if (s.value("iters", int64_t(0)) > 0) detail += cat(" of ", s.value("iters", int64_t(0)));
      detail += cat(" (", fs::path(path).filename().string(), ", saved ", mtime_utc(path), "), model ", s.value("model", std::string("?")));
      if (st.run.contains("started")) detail += cat(", run started ", st.run.value("started", std::string()));
    } catch (const Error&) {
      detail += cat(" (", fs::path(path).filename().string(), ", saved ", mtime_utc(path), ", unreadable)");
    }
    what = cat("a training run: ", detail, states.size() > 1 ? cat("; ", states.size(), " training states in all") : std::string());
    if (!outputs.empty()) what += cat("; and its ", outputs.front().rfind("adapter", 0) == 0 ? "adapter" : "model", " (", outputs.front(), ")");
  } else {
    std::string base;
    std::ifstream f(fs::path(dir) / "adapter_config.json");
    if (f) {
      try {
        base = json::parse(f).value("base_model_name_or_path", std::string());
      } catch (...) {}
    }
    what = cat(outputs.front().rfind("adapter", 0) == 0 ? "an adapter" : "a model", " (", outputs.front(), ", written ",
               mtime_utc((fs::path(dir) / outputs.front()).string()), base.empty() ? std::string() : ", base model " + base,
               ") and no training state");
  }
  return cat(dir, " already holds ", what,
             ". A new run does not write over it. To continue that run, add --resume (with the same model, data and "
             "settings); to keep it, pass a new --adapter-path; to replace it, add --overwrite (its files are removed "
             "once this run's first training state is saved).");
}

// ---- --overwrite ----------------------------------------------------------------------------------

void OldRunFiles::snapshot(const std::string& dir) {
  files_.clear();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  static const std::regex st("state-[0-9]+\\.h5(\\.tmp)?");
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (!std::regex_match(n, st) && !is_output_file(n) && !is_companion_file(n)) continue;
    struct stat s {};
    if (::lstat(e.path().c_str(), &s) == 0 && S_ISREG(s.st_mode)) files_.push_back({e.path().string(), uint64_t(s.st_dev), uint64_t(s.st_ino)});
  }
}

int OldRunFiles::remove_unreplaced() {
  int n = 0;
  for (const F& f : files_) {
    struct stat s {};
    if (::lstat(f.path.c_str(), &s) == 0 && uint64_t(s.st_dev) == f.dev && uint64_t(s.st_ino) == f.ino && ::unlink(f.path.c_str()) == 0) ++n;
  }
  files_.clear();
  return n;
}

// ---- free space -----------------------------------------------------------------------------------

std::string human_bytes(uint64_t b) {
  char s[64];
  if (b < 10240) std::snprintf(s, sizeof s, "%llu bytes", static_cast<unsigned long long>(b));
  else if (b < (uint64_t(10) << 20)) std::snprintf(s, sizeof s, "%.1f KiB", double(b) / 1024);
  else if (b < (uint64_t(10) << 30)) std::snprintf(s, sizeof s, "%.1f MiB", double(b) / 1048576);
  else std::snprintf(s, sizeof s, "%.2f GiB", double(b) / 1073741824.0);
  return s;
}

uint64_t free_bytes(const std::string& dir) {
  if (const char* t = std::getenv("FT_TEST_FREE_BYTES"); t && *t) return std::strtoull(t, nullptr, 10);
  struct statvfs v {};
  if (::statvfs(dir.c_str(), &v) != 0) return UINT64_MAX;  // unknown: the writes themselves report a full disk
  return uint64_t(v.f_bavail) * uint64_t(v.f_frsize);
}

void check_free_space(const std::string& dir, uint64_t state_bytes, uint64_t adapter_bytes) {
  const uint64_t have = free_bytes(dir), need = state_bytes + adapter_bytes;
  FT_CHECK(have >= need, "not enough free space in ", dir, ": saving needs about ", human_bytes(need), " (a training state ",
           human_bytes(state_bytes), " + the adapter ", human_bytes(adapter_bytes), "), and ", human_bytes(have),
           " are free. Free some space or pass an --adapter-path on another disk; nothing was trained or written.");
}

}  // namespace ft
