#pragma once
// Data-parallel training over MPI (Open MPI; `mpirun -np N ft train ...`, or srun with PMI/PMIx).
// MPI is started only when an MPI launcher started this process (its environment says so); otherwise
// size() is 1, rank() 0 and every collective returns at once: ft is then exactly a single process.
// Errors inside a job end the whole job (abort()): a rank that stops alone would leave the others
// waiting in a collective.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ft::dist {

bool launched_by_mpi();                  // OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_SIZE in the environment
void init(int* argc, char*** argv);      // MPI_Init_thread when launched_by_mpi(); idempotent
void finalize();                         // MPI_Finalize if init() started MPI
bool active();                           // MPI started
int rank();
int size();
int local_size();                        // ranks on this host (MPI_COMM_TYPE_SHARED); 1 outside a job
std::string host();                      // this rank's host name

// In-place sums / maxima over all ranks (no-ops on one rank).
void allreduce_sum(float* x, size_t n);
void allreduce_sum(double* x, size_t n);
void allreduce_max(uint64_t* x, size_t n);
// Rank 0's string (any size), on every rank.
std::string broadcast(const std::string& s);
// Every rank's string, by rank, on every rank.
std::vector<std::string> allgather(const std::string& s);
// Ends every rank of the job with `code` (MPI_Abort); std::exit(code) outside a job.
[[noreturn]] void abort(int code);

}  // namespace ft::dist
