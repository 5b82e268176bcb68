#pragma once
// Data-parallel training (optim/dist.h) for the training loop: every rank runs the same batch iterator
// (one global order fixed by the seed) and computes an equal, contiguous slice of the rows of every
// micro-batch; gradients are summed over ranks once per optimiser step, in buckets; every rank then
// takes the identical optimiser step. With one rank every function here is the identity / a no-op.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/grad_sum.h"
#include "autograd/param.h"
#include "data/batching.h"

namespace ft {

class Model;
struct Dataset;

// This rank's rows of a batch of B rows: [r·B/R, (r+1)·B/R).
std::pair<int64_t, int64_t> rank_rows(int64_t B);
// Rows [lo, hi) of b, with b's T (padding and dropout indexing as in the whole batch).
Batch slice_rows(const Batch& b, int64_t lo, int64_t hi);
// ft::Error unless batch_size divides by the ranks, saying what would.
void check_batch_divides(int64_t batch_size, int64_t grad_accumulation, int64_t ranks);
// Sums every trainable parameter's gradient over the ranks (a parameter with a gradient on any rank
// gets one everywhere), in buckets of at most bucket_bytes.
void allreduce_grads(std::vector<NamedParam>& params, size_t bucket_bytes = size_t(32) << 20);
// The same for gradients held as fp64 sums (autograd/grad_sum.h; LoRA and DoRA training): the sums,
// in fp64, so that N ranks add the rows' partial sums as one process does up to fp64 rounding.
void allreduce_grads(GradSum64& sums, size_t bucket_bytes = size_t(32) << 20);
// After a micro-batch: the dropout stream advances to the furthest position any rank reached (a rank
// whose rows had no targets did not run the forward).
void sync_dropout_stream();
// Validation with the batches dealt round-robin over the ranks and the sums reduced: evaluate_loss's
// (loss, supervised tokens) on every rank.
std::pair<double, int64_t> evaluate_loss_ranks(const Model& model, const Dataset& ds, int64_t batch_size, int32_t pad,
                                               int64_t max_batches);
// Start of a job: ft::Error on every rank when a rank's run identity (model, data, settings) differs
// from rank 0's, naming each rank, its host and each difference.
void check_ranks_agree(const nlohmann::json& identity);
// 64-bit hash (hex) of the trainable weights and the optimiser state, in a fixed order.
std::string training_hash(const std::vector<NamedParam>& params, const std::map<std::string, Tensor>& opt_state);
// ft::Error on every rank unless every rank holds bitwise the same trainable weights and optimiser
// state after `step` (checked whenever a state is saved: every rank must take identical steps).
void check_ranks_in_step(const std::string& hash, int64_t step);

}  // namespace ft
