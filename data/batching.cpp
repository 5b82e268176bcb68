// Batch planning (shuffle, length grouping, packing), batch assembly and resumable position.
#include "data/batching.h"

#include <algorithm>
#include <numeric>

#include "autograd/error.h"
#include "autograd/random.h"

namespace ft {

int32_t padding_id(const TextEncoder& enc) {
  if (auto p = enc.pad_id()) return *p;
  if (auto e = enc.eos_id()) return *e;
  return 0;
}

namespace {

// Uniform in [0, n) from a 64-bit hash (multiply-high: no modulo bias worth speaking of).
uint64_t below(uint64_t h, uint64_t n) { return uint64_t((unsigned __int128)h * n >> 64); }

template <class T>
void shuffle(std::vector<T>& v, uint64_t seed) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(hash2(seed, i), i)]);
}

uint64_t mix(uint64_t h, uint64_t x) { return splitmix64(h ^ (x + 0x9e3779b97f4a7c15ull + (h << 6))); }

}  // namespace

BatchIterator::BatchIterator(const Dataset& ds, BatchOptions opt, int32_t pad_id)
    : ds_(ds), opt_(opt), pad_id_(pad_id) {
  FT_CHECK(!ds.examples.empty(), "BatchIterator: the dataset ", ds.source, " has no examples");
  FT_CHECK(opt.batch_size >= 1, "batch_size must be at least 1, got ", opt.batch_size);
  FT_CHECK(opt.bucket_batches >= 1, "bucket_batches must be at least 1, got ", opt.bucket_batches);
  FT_CHECK(opt.pad_to_multiple >= 1, "pad_to_multiple must be at least 1, got ", opt.pad_to_multiple);
  FT_CHECK(opt.epochs >= 0, "epochs must be >= 0 (0 = endless), got ", opt.epochs);
  uint64_t h = ds.examples.size();
  for (const Example& e : ds.examples) {
    FT_CHECK(!opt.pack || int64_t(e.ids.size()) <= opt.max_seq_length, "BatchIterator: example ",
             e.row, " of ", ds.source, " has ", e.ids.size(), " tokens, more than the packing "
             "length max_seq_length = ", opt.max_seq_length, ": build the dataset with the same "
             "max_seq_length");
    h = mix(h, e.ids.size());
    for (size_t t = 0; t < e.ids.size(); ++t) h = mix(h, uint64_t(uint32_t(e.ids[t])) << 1 | e.mask[t]);
  }
  fingerprint_ = h;
  plan_ = make_plan(0);
  FT_CHECK(!plan_.empty(), "BatchIterator: ", ds.source, " has ", ds.examples.size(),
           " examples, fewer than one batch of ", opt.batch_size, " with drop_last: lower "
           "batch_size or add rows");
}

BatchIterator::Plan BatchIterator::make_plan(int64_t epoch) const {
  const int64_t n = int64_t(ds_.examples.size()), B = opt_.batch_size;
  auto len = [&](int64_t i) { return int64_t(ds_.examples[size_t(i)].ids.size()); };
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const uint64_t s = hash2(opt_.seed, uint64_t(epoch));
  if (opt_.shuffle) shuffle(order, hash2(s, 1));

  Plan plan;
  std::vector<std::vector<int64_t>> seqs;  // sequences (each: examples) in batch order
  const int64_t bucket = opt_.bucket_batches * B;
  if (opt_.pack) {
    const int64_t cap = opt_.max_seq_length;
    for (int64_t b0 = 0; b0 < n; b0 += bucket) {
      std::vector<int64_t> rows(order.begin() + b0, order.begin() + std::min(n, b0 + bucket));
      std::stable_sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) { return len(a) > len(b); });
      std::vector<int64_t> fill;
      size_t first = seqs.size();
      for (int64_t r : rows) {  // first fit decreasing
        size_t k = 0;
        while (k < fill.size() && fill[k] + len(r) > cap) ++k;
        if (k == fill.size()) {
          fill.push_back(0);
          seqs.emplace_back();
        }
        fill[k] += len(r);
        seqs[first + k].push_back(r);
      }
    }
  } else {
    if (opt_.group_by_length)
      for (int64_t b0 = 0; b0 < n; b0 += bucket)
        std::stable_sort(order.begin() + b0, order.begin() + std::min(n, b0 + bucket),
                         [&](int64_t a, int64_t b) { return len(a) > len(b); });
    for (int64_t r : order) seqs.push_back({r});
  }
  for (size_t i = 0; i < seqs.size(); i += size_t(B)) {
    size_t e = std::min(seqs.size(), i + size_t(B));
    if (opt_.drop_last && int64_t(e - i) < B) continue;
    plan.emplace_back(std::make_move_iterator(seqs.begin() + i), std::make_move_iterator(seqs.begin() + e));
  }
  if (opt_.shuffle && (opt_.group_by_length || opt_.pack)) shuffle(plan, hash2(s, 2));
  return plan;
}

double BatchIterator::padding_fraction() const {
  int64_t used = 0, total = 0;
  for (const auto& batch : plan_) {
    int64_t T = 0;
    for (const auto& seq : batch) {
      int64_t l = 0;
      for (int64_t e : seq) l += int64_t(ds_.examples[size_t(e)].ids.size());
      used += l;
      T = std::max(T, l);
    }
    T = (T + opt_.pad_to_multiple - 1) / opt_.pad_to_multiple * opt_.pad_to_multiple;
    total += T * int64_t(batch.size());
  }
  return total ? double(total - used) / double(total) : 0.0;
}

bool BatchIterator::next(Batch& out) {
  if (opt_.epochs > 0 && epoch_ >= opt_.epochs) return false;
  const auto& batch = plan_[size_t(index_)];
  const int64_t B = int64_t(batch.size());
  int64_t T = 0;
  std::vector<int32_t> lengths(size_t(B), 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t e : batch[size_t(b)]) lengths[size_t(b)] += int32_t(ds_.examples[size_t(e)].ids.size());
    T = std::max<int64_t>(T, lengths[size_t(b)]);
  }
  T = (T + opt_.pad_to_multiple - 1) / opt_.pad_to_multiple * opt_.pad_to_multiple;

  out.B = B;
  out.T = T;
  out.ids.assign(size_t(B * T), pad_id_);
  out.targets.assign(size_t(B * T), -100);
  out.segment_ids.assign(size_t(B * T), 0);
  out.position_ids.assign(size_t(B * T), 0);
  out.lengths = std::move(lengths);
  out.examples.clear();
  out.n_targets = out.n_tokens = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t pos = b * T;
    int32_t seg = 0;
    for (int64_t e : batch[size_t(b)]) {
      const Example& ex = ds_.examples[size_t(e)];
      const int64_t L = int64_t(ex.ids.size());
      ++seg;
      std::copy(ex.ids.begin(), ex.ids.end(), out.ids.begin() + pos);
      for (int64_t t = 0; t < L; ++t) {
        if (t + 1 < L && ex.mask[size_t(t + 1)]) {
          out.targets[size_t(pos + t)] = ex.ids[size_t(t + 1)];
          ++out.n_targets;
        }
        out.segment_ids[size_t(pos + t)] = seg;
        out.position_ids[size_t(pos + t)] = int32_t(t);
      }
      pos += L;
      out.n_tokens += L;
      out.examples.push_back(e);
    }
  }
  out.n_padding = B * T - out.n_tokens;
  out.epoch = epoch_;
  out.index = index_;
  if (++index_ == int64_t(plan_.size())) {  // the position is always a batch still to serve
    ++epoch_;
    index_ = 0;
    if (opt_.epochs == 0 || epoch_ < opt_.epochs) plan_ = make_plan(epoch_);
  }
  return true;
}

nlohmann::json BatchIterator::options_json() const {
  return {{"batch_size", opt_.batch_size}, {"seed", opt_.seed}, {"shuffle", opt_.shuffle},
          {"group_by_length", opt_.group_by_length}, {"bucket_batches", opt_.bucket_batches},
          {"pack", opt_.pack}, {"max_seq_length", opt_.max_seq_length},
          {"pad_to_multiple", opt_.pad_to_multiple}, {"drop_last", opt_.drop_last},
          {"pad_id", pad_id_}};
}

nlohmann::json BatchIterator::state() const {
  return {{"format", "ft-batch-iterator"}, {"version", 1}, {"epoch", epoch_}, {"batch", index_},
          {"examples", ds_.examples.size()}, {"fingerprint", fingerprint_},
          {"options", options_json()}};
}

void BatchIterator::restore(const nlohmann::json& st) {
  FT_CHECK(st.is_object() && st.value("format", "") == "ft-batch-iterator",
           "BatchIterator::restore: not a data-loader state (expected an object with \"format\": "
           "\"ft-batch-iterator\"), got ", st.dump().substr(0, 200));
  FT_CHECK(st.value("version", 0) == 1, "BatchIterator::restore: unsupported state version ",
           st.value("version", 0));
  int64_t epoch = 0, batch = 0;
  uint64_t fp = 0;
  try {
    epoch = st.at("epoch").get<int64_t>();
    batch = st.at("batch").get<int64_t>();
    fp = st.at("fingerprint").get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat("BatchIterator::restore: malformed state (", e.what(), ")"));
  }
  const nlohmann::json saved = st.value("options", nlohmann::json::object()), now = options_json();
  for (auto it = now.begin(); it != now.end(); ++it)
    FT_CHECK(saved.contains(it.key()) && saved[it.key()] == it.value(), "cannot resume the data "
             "order: the batching option ", it.key(), " was ", saved.value(it.key(), nlohmann::json()).dump(),
             " when the state was saved and is ", it.value().dump(), " now; use the same settings");
  FT_CHECK(fp == fingerprint_ && st.value("examples", uint64_t(0)) == ds_.examples.size(),
           "cannot resume the data order: the dataset ", ds_.source, " (", ds_.examples.size(),
           " examples) is not the one the state was saved with (", st.value("examples", 0),
           " examples, other tokens): use the same data, tokenizer and max_seq_length");
  FT_CHECK(epoch >= 0 && batch >= 0, "BatchIterator::restore: negative position in the state");
  Plan plan = make_plan(epoch);
  FT_CHECK(batch < int64_t(plan.size()) || (batch == 0 && opt_.epochs > 0 && epoch >= opt_.epochs),
           "BatchIterator::restore: batch ", batch, " is past the end of epoch ", epoch, " (",
           plan.size(), " batches)");
  plan_ = std::move(plan);
  epoch_ = epoch;
  index_ = batch;
}

}  // namespace ft
