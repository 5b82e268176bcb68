// fp64 gradient sums (autograd/grad_sum.h) for data-parallel training: rank slices of a batch give
// one process's LoRA gradients bitwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "autograd/grad_sum.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "data/batching.h"
#include "data/dataset.h"
#include "lora/adapter.h"
#include "models/gguf_load.h"
#include "models/loss.h"
#include "models/model.h"
#include "optim/data_parallel.h"

using namespace ft;
namespace fs = std::filesystem;

namespace {
const fs::path kRoot = fs::path(FT_TEST_DATA).parent_path().parent_path();
}  // namespace

// With fp64 gradient sums (autograd/grad_sum.h, what ft train uses for LoRA), the rank slices give one
// process's gradients: bitwise when the slices are summed in row order (micro-batches), and to within
// one fp32 rounding when each slice is summed apart and the sums added (what the all-reduce does).
TEST(DataParallel, Fp64SumsMakeRankSlicesGiveOneProcesssGradients) {
  const std::string base = (kRoot / "recipes" / "tiny-base").string();
  Model model = Model::load(base, {"float32"});
  Tokenizer tok = load_model_tokenizer(base);
  TokenizerEncoder enc(tok);
  DatasetOptions dopt;
  dopt.max_seq_length = 160;
  dopt.mask_prompt = true;
  Dataset ds = load_dataset((kRoot / "recipes" / "data" / "wikisql" / "valid.jsonl").string(), enc, nullptr, dopt);
  BatchOptions bo;
  bo.batch_size = 6;
  bo.group_by_length = false;
  BatchIterator it(ds, bo, padding_id(enc));
  Batch b;
  ASSERT_TRUE(it.next(b));
  ASSERT_EQ(b.B, 6);
  EXPECT_GT(b.T, kGradRowChunk) << "rows should span more than one row chunk";
  LoraConfig lc;
  lc.rank = 4;
  lc.dropout = 0.2;
  std::vector<NamedParam> params = attach_lora(model, lc);
  std::vector<Tensor> leaves;
  for (NamedParam& p : params) {
    leaves.push_back(p.value);
    if (p.name.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < p.value.numel(); ++i) p.value.data<float>()[i] = 0.01f * float((i * 7919) % 13 - 6);
  }
  ForwardOptions fo;
  fo.training = true;
  // Rows [lo, hi) of the batch, backward into the current GradSum64, as rank lo·R/B would.
  auto slice_backward = [&](int64_t lo, int64_t hi) {
    Batch part = hi - lo == b.B ? b : slice_rows(b, lo, hi);
    global_rng() = {11, 5};
    dropout_row_base() = lo;
    scale(batch_loss_sum(model, part, false, fo), 1.f / float(b.n_targets)).backward();
    dropout_row_base() = 0;
  };
  auto grads = [&] {
    std::vector<std::vector<float>> g;
    for (NamedParam& p : params) {
      const Tensor t = p.value.grad();
      g.emplace_back(t.data<float>(), t.data<float>() + t.numel());
      p.value.set_grad(Tensor());
    }
    return g;
  };
  std::vector<std::vector<float>> whole;
  {
    GradSum64 sums(leaves);
    GradSum64::Scope scope(&sums);
    slice_backward(0, b.B);
    sums.finish();
    whole = grads();
  }
  auto ulps = [](float x, float y) {  // distance in fp32 steps (same sign, or both near zero)
    int32_t a, c;
    std::memcpy(&a, &x, 4), std::memcpy(&c, &y, 4);
    if ((a < 0) != (c < 0)) return int64_t(x == y ? 0 : (int64_t(a & 0x7fffffff) + int64_t(c & 0x7fffffff)));
    return std::abs(int64_t(a) - int64_t(c));
  };
  for (int64_t R : {2, 3, 6}) {
    SCOPED_TRACE(R);
    {  // in row order into one sum: one process's grouping (e.g. micro-batches)
      GradSum64 sums(leaves);
      GradSum64::Scope scope(&sums);
      for (int64_t r = 0; r < R; ++r) slice_backward(r * b.B / R, (r + 1) * b.B / R);
      sums.finish();
      const auto g = grads();
      int64_t differ = 0;
      for (size_t i = 0; i < g.size(); ++i)
        for (size_t j = 0; j < g[i].size(); ++j) differ += std::memcmp(&g[i][j], &whole[i][j], 4) != 0;
      EXPECT_EQ(differ, 0) << "elements not bitwise equal";
    }
    // each rank's own sum, then the sums added (the all-reduce's fp64 sum)
    std::vector<std::vector<double>> total;
    for (int64_t r = 0; r < R; ++r) {
      GradSum64 sums(leaves);
      GradSum64::Scope scope(&sums);
      slice_backward(r * b.B / R, (r + 1) * b.B / R);
      sums.absorb();
      if (total.empty()) total.resize(sums.size());
      for (size_t i = 0; i < sums.size(); ++i) {
        total[i].resize(sums.sum(i).size());
        for (size_t j = 0; j < total[i].size(); ++j) total[i][j] += sums.sum(i)[j];
      }
    }
    int64_t worst = 0, differ = 0, n = 0;
    for (size_t i = 0; i < total.size(); ++i)
      for (size_t j = 0; j < total[i].size(); ++j, ++n) {
        const int64_t u = ulps(float(total[i][j]), whole[i][j]);
        worst = std::max(worst, u);
        differ += u != 0;
      }
    EXPECT_LE(worst, 1) << differ << " of " << n << " elements differ";
    std::printf("%lld slices summed apart: %lld of %lld gradient elements one fp32 step off, the rest bitwise\n", (long long)R,
                (long long)differ, (long long)n);
  }
}


// lora_linear's A and B gradients into fp64 sums (the row-chunk kernels training uses) equal the
// plain fp32 path's within fp32 rounding, on shapes with odd widths, ranks not a multiple of 4,
// sequences longer than a row chunk and outputs wider than a column tile (512).
TEST(DataParallel, LoraGradientsIntoFp64SumsMatchThePlainPath) {
  struct Geom { Shape x; int64_t out, r; };
  for (const Geom& ge : {Geom{{2, 70, 37}, 41, 5}, Geom{{1, 130, 16}, 33, 8}, Geom{{3, 9, 50}, 7, 3}, Geom{{1, 70, 24}, 1100, 6}, Geom{{2, 40, 600}, 9, 4}}) {
    const int64_t in = ge.x.back();
    Tensor W = Tensor::randn({ge.out, in}, 5, 0.5f);
    Tensor x = Tensor::randn(ge.x, 1), A = Tensor::randn({ge.r, in}, 2, 0.5f), B = Tensor::randn({ge.out, ge.r}, 3, 0.5f);
    Shape os = ge.x;
    os.back() = ge.out;
    Tensor gy = Tensor::randn(os, 4);
    auto grads = [&](bool sums) {
      Tensor a = A.detach(), b = B.detach();
      a.set_requires_grad(true);
      b.set_requires_grad(true);
      GradSum64 gs({a, b});
      {
        GradSum64::Scope scope(sums ? &gs : nullptr);
        lora_linear(x, W, Tensor(), a, b, 1.5f).backward(gy);
      }
      if (sums) gs.finish();
      return std::make_pair(a.grad().to_vector(), b.grad().to_vector());
    };
    auto [ga, gb] = grads(false);
    auto [sa, sb] = grads(true);
    ASSERT_EQ(ga.size(), sa.size());
    ASSERT_EQ(gb.size(), sb.size());
    auto close = [](const std::vector<float>& p, const std::vector<float>& q, const char* what) {
      double scale = 0;
      for (float v : p) scale = std::max(scale, double(std::fabs(v)));
      for (size_t i = 0; i < p.size(); ++i)
        EXPECT_NEAR(q[i], p[i], 1e-5 * scale) << what << "[" << i << "]";
    };
    close(ga, sa, "dA");
    close(gb, sb, "dB");
  }
}
