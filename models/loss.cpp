#include "models/loss.h"

#include "autograd/ops.h"
#include "autograd/profile.h"

namespace ft {

namespace {

struct BatchTensors {
  Tensor ids, targets, positions, segments;
};
BatchTensors to_tensors(const Batch& b, bool packed) {
  BatchTensors t;
  t.ids = Tensor::from_ids(b.ids, {b.B, b.T});
  t.targets = Tensor::from_ids(b.targets, {b.B * b.T});
  if (packed) {
    t.positions = Tensor::from_ids(b.position_ids, {b.B, b.T});
    t.segments = Tensor::from_ids(b.segment_ids, {b.B, b.T});
  }
  return t;
}

}  // namespace

Tensor batch_loss_sum(const Model& model, const Batch& b, bool packed, const ForwardOptions& base) {
  BatchTensors t = to_tensors(b, packed);
  ForwardOptions fo = base;
  fo.positions = t.positions;
  fo.segment_ids = t.segments;
  FT_PROFILE_PHASE("forward");
  Tensor h = model.hidden(t.ids, fo);  // [B, T, hidden]
  // Only supervised positions need logits: gather their hidden rows (the gather's gradient is a
  // scatter-add), so masked prompts and padding cost no lm_head GEMM. The LM head and the loss are
  // fused (Model::loss_sum): no [·, vocab] logits either way.
  std::vector<int32_t> rows, tg;
  for (int64_t i = 0; i < b.B * b.T; ++i)
    if (b.targets[size_t(i)] != -100) rows.push_back(int32_t(i)), tg.push_back(b.targets[size_t(i)]);
  if (rows.empty()) return Tensor::zeros({});
  Tensor hs = embedding(reshape(h, {b.B * b.T, h.size(-1)}), Tensor::from_ids(rows, {int64_t(rows.size())}));
  return model.loss_sum(hs, Tensor::from_ids(tg, {int64_t(tg.size())}));
}

std::pair<double, int64_t> evaluate_loss_sums(const Model& model, const Dataset& ds, int64_t batch_size, int32_t pad,
                                              int64_t max_batches, int64_t part, int64_t parts) {
  NoGradGuard ng;
  BatchOptions bo;
  bo.batch_size = batch_size;
  bo.shuffle = false;
  bo.group_by_length = true;
  bo.epochs = 1;
  BatchIterator it(ds, bo, pad);
  Batch b;
  double total = 0;
  int64_t n = 0;
  for (int64_t k = 0; (max_batches == 0 || k < max_batches) && it.next(b); ++k) {
    if (k % parts != part) continue;
    total += double(batch_loss_sum(model, b, false, {}).item());
    n += b.n_targets;
  }
  return {total, n};
}

std::pair<double, int64_t> evaluate_loss(const Model& model, const Dataset& ds, int64_t batch_size, int32_t pad, int64_t max_batches) {
  auto [total, n] = evaluate_loss_sums(model, ds, batch_size, pad, max_batches);
  return {n ? total / double(n) : 0.0, n};
}

}  // namespace ft
