#pragma once
// Batches for training and evaluation from a tokenised Dataset (data/dataset.h).
//
// Order: epoch e visits every example exactly once (unless drop_last drops the one short batch).
// With shuffle, the order is a pure function of (seed, e): the same on every run and machine
// (own Fisher-Yates over ft::hash2, no std:: distributions). The iterator's whole position is
// (seed, epoch, batch index): state() saves it, restore() resumes with the very same batches.
//
// Plans per epoch:
//   plain:            shuffled rows cut into batches of batch_size.
//   group_by_length:  shuffled rows split into buckets of bucket_batches * batch_size rows; each
//                     bucket is sorted by length (longest first) and cut into batches; then the
//                     batches are shuffled. Similar lengths share a batch, so padding drops.
//   pack:             each bucket's rows are packed first-fit-decreasing into sequences of at most
//                     max_seq_length tokens; batches of batch_size sequences, shuffled. Each row
//                     keeps its own segment id and positions restarting at 0 (attention must not
//                     cross segments), and no target crosses a row boundary.
//
// A batch is [B, T] row-major, B <= batch_size (only the last batch of an epoch can be short),
// T = the longest sequence in the batch rounded up to pad_to_multiple. Right padding.
//   ids[b, t]          token ids; padding = pad_id
//   targets[b, t]      ids[b, t+1] when that token is a target of the same row, else -100: the
//                      logits at position t are compared with targets[b, t] directly (already
//                      shifted; no target at a row's last token, padding, or masked prompt)
//   segment_ids[b, t]  1, 2, ... for the rows packed into sequence b (1 without packing), 0 = pad
//   position_ids[b, t] position inside the row (restarts at 0 per segment), 0 on padding
//   lengths[b]         tokens in use in sequence b (the rest is padding)
// Token bookkeeping for the trainer: n_targets (supervised tokens: normalise the summed loss by
// the n_targets of the whole effective batch, i.e. summed over gradient-accumulation steps),
// n_tokens (input tokens), n_padding.
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"

namespace ft {

struct BatchOptions {
  int64_t batch_size = 4;
  uint64_t seed = 0;
  bool shuffle = true;
  bool group_by_length = true;
  int64_t bucket_batches = 100;   // grouping / packing window, in batches
  bool pack = false;
  int64_t max_seq_length = 2048;  // capacity of a packed sequence
  int64_t pad_to_multiple = 1;    // round T up to a multiple of this
  bool drop_last = false;         // drop the short last batch of each epoch
  int64_t epochs = 0;             // next() returns false after this many epochs; 0 = endless
};

struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids, targets, segment_ids, position_ids;  // [B * T]
  std::vector<int32_t> lengths;                                  // [B]
  std::vector<int64_t> examples;  // indices into Dataset::examples, in packing order
  int64_t n_targets = 0, n_tokens = 0, n_padding = 0;
  int64_t epoch = 0, index = 0;  // position of this batch
};

class BatchIterator {
 public:
  // Keeps a reference to ds: it must outlive the iterator. pad_id: see padding_id().
  BatchIterator(const Dataset& ds, BatchOptions opt, int32_t pad_id);

  // The next batch; false once `epochs` epochs are done (never when epochs == 0).
  bool next(Batch& out);

  int64_t epoch() const { return epoch_; }
  int64_t batch_index() const { return index_; }  // next batch within the epoch
  // Batches in the current epoch (the same for every epoch, except with packing, where the number
  // of packed sequences depends on the shuffle).
  int64_t batches_per_epoch() const { return int64_t(plan_.size()); }
  // Padding tokens / all tokens of the current epoch's batches (planned, exact).
  double padding_fraction() const;
  const BatchOptions& options() const { return opt_; }

  // The position (seed, epoch, next batch) plus a fingerprint of the data and the options.
  nlohmann::json state() const;
  // ft::Error if the state was saved with other data or options (the batches would differ).
  void restore(const nlohmann::json& state);

 private:
  using Plan = std::vector<std::vector<std::vector<int64_t>>>;  // batch -> sequence -> examples
  Plan make_plan(int64_t epoch) const;
  nlohmann::json options_json() const;

  const Dataset& ds_;
  BatchOptions opt_;
  int32_t pad_id_;
  uint64_t fingerprint_ = 0;
  int64_t epoch_ = 0, index_ = 0;
  Plan plan_;  // of epoch_
};

// The id to pad with: the tokenizer's pad token, else EOS, else 0 (padding is never a target and
// is masked out of attention, so its value only needs to be a valid id).
int32_t padding_id(const TextEncoder& enc);

}  // namespace ft
