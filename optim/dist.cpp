#include "optim/dist.h"

#define OMPI_SKIP_MPICXX 1  // the C API only (no deprecated C++ bindings to link)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <vector>

#include "autograd/error.h"

namespace ft::dist {

namespace {
bool g_started = false;
int g_rank = 0, g_size = 1, g_local = 1;

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(cat("MPI ", what, " failed: ", std::string(msg, size_t(len))));
}

// MPI counts are int: larger buffers go in int-sized pieces.
template <class T>
void allreduce(T* x, size_t n, MPI_Datatype type, MPI_Op op) {
  if (!g_started || g_size == 1) return;
  for (size_t done = 0; done < n;) {
    const size_t k = std::min<size_t>(n - done, size_t(1) << 28);
    check(MPI_Allreduce(MPI_IN_PLACE, x + done, int(k), type, op, MPI_COMM_WORLD), "all-reduce");
    done += k;
  }
}
}  // namespace

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (const char* e = std::getenv(v); e && *e) return true;
  return false;
}

void init(int* argc, char*** argv) {
  if (g_started || !launched_by_mpi()) return;
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init");
  g_started = true;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);  // errors become ft::Error, then abort()
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm node;  // the ranks that share this host's memory
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
    MPI_Comm_size(node, &g_local);
    MPI_Comm_free(&node);
  }
}

void finalize() {
  if (!g_started) return;
  MPI_Finalize();
  g_started = false;
}

bool active() { return g_started; }
int rank() { return g_rank; }
int size() { return g_size; }
int local_size() { return g_local; }

std::string host() {
  char h[256] = {0};
  return ::gethostname(h, sizeof h - 1) == 0 ? std::string(h) : std::string("?");
}

void allreduce_sum(float* x, size_t n) { allreduce(x, n, MPI_FLOAT, MPI_SUM); }
void allreduce_sum(double* x, size_t n) { allreduce(x, n, MPI_DOUBLE, MPI_SUM); }
void allreduce_max(uint64_t* x, size_t n) { allreduce(x, n, MPI_UINT64_T, MPI_MAX); }

std::string broadcast(const std::string& s) {
  if (!g_started || g_size == 1) return s;
  uint64_t n = s.size();
  check(MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), "broadcast");
  std::string r = g_rank == 0 ? s : std::string(size_t(n), '\0');
  for (uint64_t done = 0; done < n;) {  // MPI counts are int
    const uint64_t k = std::min<uint64_t>(n - done, uint64_t(1) << 30);
    check(MPI_Bcast(r.data() + done, int(k), MPI_CHAR, 0, MPI_COMM_WORLD), "broadcast");
    done += k;
  }
  return r;
}

std::vector<std::string> allgather(const std::string& s) {
  if (!g_started || g_size == 1) return {s};
  FT_CHECK(s.size() < size_t(INT_MAX) / size_t(g_size), "MPI all-gather of ", s.size(), " bytes per rank: too large");
  int n = int(s.size());
  std::vector<int> sizes(static_cast<size_t>(g_size)), offsets(static_cast<size_t>(g_size));
  check(MPI_Allgather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, MPI_COMM_WORLD), "all-gather");
  int total = 0;
  for (int r = 0; r < g_size; ++r) offsets[size_t(r)] = total, total += sizes[size_t(r)];
  std::string all(size_t(total), '\0');
  check(MPI_Allgatherv(s.data(), n, MPI_CHAR, all.data(), sizes.data(), offsets.data(), MPI_CHAR, MPI_COMM_WORLD), "all-gather");
  std::vector<std::string> out;
  for (int r = 0; r < g_size; ++r) out.push_back(all.substr(size_t(offsets[size_t(r)]), size_t(sizes[size_t(r)])));
  return out;
}

void abort(int code) {
  if (g_started && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace ft::dist
