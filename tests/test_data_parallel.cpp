// Data-parallel training's pieces, in one process (tests/test_mpi.py runs the real thing under mpirun):
// a micro-batch cut into rank slices, each slice's loss normalised by the whole batch's supervised
// tokens and its dropout masks indexed by global row (dropout_row_base), gives the whole batch's loss
// and gradients; errors say what would work; without mpirun every collective is the identity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "autograd/ops.h"
#include "autograd/random.h"
#include "data/batching.h"
#include "data/dataset.h"
#include "lora/adapter.h"
#include "models/gguf_load.h"
#include "models/loss.h"
#include "models/model.h"
#include "optim/data_parallel.h"
#include "optim/dist.h"
#include "optim/identity.h"

using namespace ft;
namespace fs = std::filesystem;

namespace {

const fs::path kRoot = fs::path(FT_TEST_DATA).parent_path().parent_path();

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Grads {
  double loss = 0;
  std::vector<std::vector<float>> g;
};

}  // namespace

TEST(DataParallel, RankSlicesGiveTheWholeBatchsLossAndGradients) {
  const std::string base = (kRoot / "recipes" / "tiny-base").string();
  Model model = Model::load(base, {"float32"});
  Tokenizer tok = load_model_tokenizer(base);
  TokenizerEncoder enc(tok);
  DatasetOptions dopt;
  dopt.max_seq_length = 96;
  dopt.mask_prompt = true;
  Dataset ds = load_dataset((kRoot / "recipes" / "data" / "wikisql" / "valid.jsonl").string(), enc, nullptr, dopt);
  BatchOptions bo;
  bo.batch_size = 6;
  bo.group_by_length = false;  // rows of unequal length in one batch
  BatchIterator it(ds, bo, padding_id(enc));
  Batch b;
  ASSERT_TRUE(it.next(b));
  ASSERT_EQ(b.B, 6);
  int64_t shortest = b.T;
  for (int32_t l : b.lengths) shortest = std::min<int64_t>(shortest, l);
  ASSERT_LT(shortest, b.T) << "the batch should hold rows of unequal length";

  LoraConfig lc;
  lc.rank = 4;
  lc.dropout = 0.2;
  std::vector<NamedParam> params = attach_lora(model, lc);
  for (NamedParam& p : params)  // B != 0, so that A gets a gradient too
    if (p.name.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < p.value.numel(); ++i) p.value.data<float>()[i] = 0.01f * float((i * 7919) % 13 - 6);
  ForwardOptions fo;
  fo.training = true;

  // slices: rank r of R computes rows [r·B/R, (r+1)·B/R) from the same RNG position; `global_masks`
  // false draws each slice's masks as if its rows were a batch of their own (what must not happen).
  auto run = [&](int64_t R, bool global_masks) {
    for (NamedParam& p : params) p.value.set_grad(Tensor());
    Grads out;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t lo = r * b.B / R, hi = (r + 1) * b.B / R;
      Batch part = R == 1 ? b : slice_rows(b, lo, hi);
      global_rng() = {11, 5};
      dropout_row_base() = global_masks ? lo : 0;
      Tensor ls = batch_loss_sum(model, part, false, fo);
      out.loss += double(ls.item());
      scale(ls, 1.f / float(b.n_targets)).backward();  // the whole batch's supervised tokens
      dropout_row_base() = 0;
    }
    for (NamedParam& p : params) {
      const Tensor g = p.value.grad();
      out.g.emplace_back(g.data<float>(), g.data<float>() + g.numel());
    }
    return out;
  };
  const Grads whole = run(1, true);
  auto max_rel = [&](const Grads& x) {
    double worst = 0;
    for (size_t i = 0; i < whole.g.size(); ++i) {
      double scale = 0, d = 0;
      for (size_t j = 0; j < whole.g[i].size(); ++j) {
        scale = std::max(scale, double(std::abs(whole.g[i][j])));
        d = std::max(d, double(std::abs(whole.g[i][j] - x.g[i][j])));
      }
      if (scale > 0) worst = std::max(worst, d / scale);
    }
    return worst;
  };
  for (int64_t R : {2, 3, 6}) {
    SCOPED_TRACE(R);
    const Grads split = run(R, true);
    EXPECT_NEAR(split.loss, whole.loss, 1e-6 * whole.loss);
    EXPECT_LE(max_rel(split), 2e-6);  // fp32 summation order only: every element, against its tensor's largest (measured 8.5e-7)
    int64_t rows = 0, targets = 0;
    for (int64_t r = 0; r < R; ++r) {
      Batch part = slice_rows(b, r * b.B / R, (r + 1) * b.B / R);
      EXPECT_EQ(part.T, b.T);
      rows += part.B;
      targets += part.n_targets;
    }
    EXPECT_EQ(rows, b.B);
    EXPECT_EQ(targets, b.n_targets);
  }
  // The masks must follow the global row: drawn per slice, they differ (and so do the gradients).
  EXPECT_GT(max_rel(run(2, false)), 1e-2);  // measured 0.6
}

TEST(DataParallel, BatchThatDoesNotDivideSaysWhatWould) {
  EXPECT_EQ(error_of([] { check_batch_divides(8, 2, 4); }), "");
  const std::string e = error_of([] { check_batch_divides(6, 2, 4); });
  EXPECT_NE(e.find("batch_size 6 does not divide by the 4 ranks"), std::string::npos) << e;
  EXPECT_NE(e.find("12 rows"), std::string::npos) << e;
  EXPECT_NE(e.find("Use --batch-size 4 or 8 (a multiple of 4)"), std::string::npos) << e;
  EXPECT_NE(e.find("N in 1, 2, 3, 6"), std::string::npos) << e;
  const std::string small = error_of([] { check_batch_divides(2, 1, 3); });
  EXPECT_NE(small.find("Use --batch-size 3 (a multiple of 3)"), std::string::npos) << small;
}

TEST(DataParallel, RankDifferencesAreNamedWithTheRanks) {
  nlohmann::json a = {{"settings", {{"seed", 0}}}, {"model", {{"config", {{"config.json", "aa"}}}, {"weights", nlohmann::json::array()}}},
                      {"data", {{{"name", "train.jsonl"}, {"bytes", 10}, {"hash", "x"}}}}};
  nlohmann::json b = a;
  b["settings"]["seed"] = 3;
  b["data"][0]["bytes"] = 11;
  auto d = identity_differences(a, b, IdentitySides::ranks("on rank 0 (h0)", "on rank 2 (h1)"));
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0], "seed: 0 on rank 0 (h0), 3 on rank 2 (h1)");
  EXPECT_EQ(d[1], "data file train.jsonl: 10 bytes on rank 0 (h0), 11 on rank 2 (h1)");
  // The default sides keep --resume's wording.
  d = identity_differences(a, b);
  EXPECT_EQ(d[0], "seed: 0 in the state, 3 now");
  EXPECT_EQ(d[1], "data file train.jsonl: 10 bytes in the state's run, 11 now");
}

TEST(DataParallel, WithoutMpirunEveryCollectiveIsTheIdentity) {
  ASSERT_FALSE(dist::active());  // the test binary is not started by mpirun
  EXPECT_EQ(dist::rank(), 0);
  EXPECT_EQ(dist::size(), 1);
  EXPECT_EQ(dist::local_size(), 1);
  double x[2] = {1.5, -2};
  dist::allreduce_sum(x, 2);
  EXPECT_EQ(x[0], 1.5);
  EXPECT_EQ(x[1], -2);
  uint64_t m = 7;
  dist::allreduce_max(&m, 1);
  EXPECT_EQ(m, 7u);
  EXPECT_EQ(dist::broadcast("abc"), "abc");
  EXPECT_EQ(dist::allgather("abc"), std::vector<std::string>{"abc"});
  EXPECT_NO_THROW(check_ranks_agree({{"settings", {{"seed", 1}}}}));
  EXPECT_NO_THROW(check_ranks_in_step("0123", 5));
}
