#include "optim/data_parallel.h"

#include <algorithm>
#include <cstring>

#include "autograd/autograd.h"
#include "autograd/error.h"
#include "autograd/random.h"
#include "data/dataset.h"
#include "models/loss.h"
#include "optim/dist.h"
#include "optim/identity.h"

namespace ft {

using json = nlohmann::json;

std::pair<int64_t, int64_t> rank_rows(int64_t B) {
  const int64_t r = dist::rank(), n = dist::size();
  return {r * B / n, (r + 1) * B / n};
}

Batch slice_rows(const Batch& b, int64_t lo, int64_t hi) {
  Batch s;
  s.B = hi - lo;
  s.T = b.T;
  auto cut = [&](const std::vector<int32_t>& v) {
    return v.empty() ? v : std::vector<int32_t>(v.begin() + lo * b.T, v.begin() + hi * b.T);
  };
  s.ids = cut(b.ids);
  s.targets = cut(b.targets);
  s.segment_ids = cut(b.segment_ids);
  s.position_ids = cut(b.position_ids);
  if (int64_t(b.lengths.size()) == b.B) s.lengths.assign(b.lengths.begin() + lo, b.lengths.begin() + hi);
  for (int32_t t : s.targets) s.n_targets += t != -100;
  s.n_tokens = s.B * s.T;
  s.epoch = b.epoch;
  s.index = b.index;
  return s;
}

void check_batch_divides(int64_t batch_size, int64_t grad_accumulation, int64_t ranks) {
  if (batch_size % ranks == 0) return;
  std::string np;  // job sizes that do divide it
  for (int64_t d = 1; d <= batch_size; ++d)
    if (batch_size % d == 0) np += (np.empty() ? "" : ", ") + std::to_string(d);
  const int64_t down = batch_size / ranks * ranks, up = down + ranks;
  throw Error(cat("batch_size ", batch_size, " does not divide by the ", ranks, " ranks of this job: every rank computes an equal slice of the rows of ",
                  "each micro-batch (the global batch is batch_size x grad_accumulation = ", batch_size * grad_accumulation, " rows). Use --batch-size ",
                  down > 0 ? cat(down, " or ", up) : cat(up), " (a multiple of ", ranks, "), or a number of ranks that divides ", batch_size, " (mpirun -np N, N in ", np, ")"));
}

namespace {
// Sums the spans over the ranks, consecutive spans packed into one buffer of at most `cap` elements
// per all-reduce (a larger span alone, in place).
template <class T>
void allreduce_spans(const std::vector<std::pair<T*, size_t>>& spans, size_t bucket_bytes) {
  const size_t cap = std::max<size_t>(bucket_bytes / sizeof(T), 1);
  std::vector<T> buf;
  for (size_t i = 0; i < spans.size();) {
    size_t j = i, n = 0;
    while (j < spans.size() && (j == i || n + spans[j].second <= cap)) n += spans[j++].second;
    if (j == i + 1) {
      dist::allreduce_sum(spans[i].first, n);
    } else {
      buf.resize(n);
      size_t o = 0;
      for (size_t k = i; k < j; ++k) std::memcpy(buf.data() + o, spans[k].first, spans[k].second * sizeof(T)), o += spans[k].second;
      dist::allreduce_sum(buf.data(), n);
      o = 0;
      for (size_t k = i; k < j; ++k) std::memcpy(spans[k].first, buf.data() + o, spans[k].second * sizeof(T)), o += spans[k].second;
    }
    i = j;
  }
}
}  // namespace

void allreduce_grads(std::vector<NamedParam>& params, size_t bucket_bytes) {
  if (dist::size() == 1) return;
  // Which parameters have a gradient anywhere (as one process would have them).
  std::vector<float> has(params.size());
  for (size_t i = 0; i < params.size(); ++i) has[i] = params[i].value.grad().defined() ? 1.f : 0.f;
  dist::allreduce_sum(has.data(), has.size());
  std::vector<std::pair<float*, size_t>> spans;
  for (size_t i = 0; i < params.size(); ++i) {
    if (has[i] == 0) continue;
    Tensor g = params[i].value.grad();
    if (!g.defined()) {
      g = Tensor::zeros(params[i].value.shape());
      params[i].value.set_grad(g);
    }
    FT_CHECK(g.dtype() == DType::F32 && g.is_contiguous(), "internal: gradient of ", params[i].name, " is not contiguous float32");
    spans.push_back({g.data<float>(), size_t(g.numel())});
  }
  allreduce_spans(spans, bucket_bytes);
}

void allreduce_grads(GradSum64& sums, size_t bucket_bytes) {
  if (dist::size() == 1) return;
  sums.absorb();
  std::vector<double> has(sums.size());
  for (size_t i = 0; i < sums.size(); ++i) has[i] = sums.has(i) ? 1.0 : 0.0;
  dist::allreduce_sum(has.data(), has.size());
  std::vector<std::pair<double*, size_t>> spans;
  for (size_t i = 0; i < sums.size(); ++i) {
    if (has[i] == 0) continue;
    sums.set_has(i, true);  // a gradient on any rank: one everywhere (zeros where this rank had none)
    spans.push_back({sums.sum(i).data(), sums.sum(i).size()});
  }
  allreduce_spans(spans, bucket_bytes);
}

void sync_dropout_stream() {
  if (dist::size() == 1) return;
  uint64_t c = global_rng().counter;
  dist::allreduce_max(&c, 1);
  global_rng().counter = c;
}

std::pair<double, int64_t> evaluate_loss_ranks(const Model& model, const Dataset& ds, int64_t batch_size, int32_t pad,
                                               int64_t max_batches) {
  if (dist::size() == 1) return evaluate_loss(model, ds, batch_size, pad, max_batches);
  auto [loss, n] = evaluate_loss_sums(model, ds, batch_size, pad, max_batches, dist::rank(), dist::size());
  double sums[2] = {loss, double(n)};  // loss, supervised tokens
  dist::allreduce_sum(sums, 2);
  const int64_t tokens = int64_t(sums[1]);
  return {tokens ? sums[0] / sums[1] : 0.0, tokens};
}

void check_ranks_agree(const json& identity) {
  if (dist::size() == 1) return;
  const std::vector<std::string> ids = dist::allgather(identity.dump()), hosts = dist::allgather(dist::host());
  std::string lines;
  int bad = 0;
  for (size_t r = 1; r < ids.size(); ++r) {
    if (ids[r] == ids[0]) continue;
    ++bad;
    const std::string a = cat("on rank 0 (", hosts[0], ")"), b = cat("on rank ", r, " (", hosts[r], ")");
    lines += cat("\nrank ", r, " on ", hosts[r], ":");
    for (auto& d : identity_differences(json::parse(ids[0]), json::parse(ids[r]), IdentitySides::ranks(a, b))) lines += "\n  " + d;
  }
  if (bad == 0) return;
  throw Error(cat(bad, bad == 1 ? " rank does" : " ranks do", " not train the same run as rank 0 (model, data and settings are compared at the start):", lines,
                  "\nEvery rank needs the same model and data files (by content: their paths may differ) and the same command line."));
}

std::string training_hash(const std::vector<NamedParam>& params, const std::map<std::string, Tensor>& opt_state) {
  std::string h;
  for (const NamedParam& p : params) h += content_hash(p.value.raw(), p.value.nbytes());
  for (const auto& [n, t] : opt_state) h += content_hash(t.raw(), t.nbytes());
  return content_hash(h.data(), h.size());
}

void check_ranks_in_step(const std::string& hash, int64_t step) {
  if (dist::size() == 1) return;
  const std::vector<std::string> all = dist::allgather(hash);
  std::string differ;
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0]) differ += cat(differ.empty() ? "" : ", ", r);
  if (!differ.empty())
    throw Error(cat("after step ", step, " the trainable weights or optimiser state of rank(s) ", differ, " differ from rank 0's (every rank must take ",
                    "the identical step): an MPI reduction that is not the same on every rank? Resume from the last state with --resume."));
}

}  // namespace ft
