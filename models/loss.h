#pragma once
// The training loss of a batch and its evaluation over a dataset: used by the trainer (optim/) and
// by ft eval alike.
//
// Loss: the summed token cross-entropy of the supervised positions (targets != -100); the LM head
// and the loss are fused (Model::loss_sum) and only supervised rows reach the head.
#include <cstdint>
#include <utility>

#include "data/batching.h"
#include "data/dataset.h"
#include "models/model.h"

namespace ft {

// Summed token cross-entropy of one batch (a 0-d tensor, differentiable). packed: the batch's
// position and segment ids are passed to the model. base: the other forward options (training,
// checkpointing).
Tensor batch_loss_sum(const Model& model, const Batch& b, bool packed, const ForwardOptions& base);

// Token-weighted mean cross-entropy over a dataset (the training pipeline's batches, no shuffling),
// over at most max_batches batches (0 = all). Returns (loss, supervised tokens).
std::pair<double, int64_t> evaluate_loss(const Model& model, const Dataset& ds, int64_t batch_size, int32_t pad, int64_t max_batches = 0);
// The sums behind evaluate_loss (summed loss, supervised tokens) over the batches k with
// k % parts == part (data-parallel validation: each rank takes every parts-th batch).
std::pair<double, int64_t> evaluate_loss_sums(const Model& model, const Dataset& ds, int64_t batch_size, int32_t pad,
                                              int64_t max_batches, int64_t part = 0, int64_t parts = 1);

}  // namespace ft
