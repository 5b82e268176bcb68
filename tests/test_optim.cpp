#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "autograd/ops.h"
#include "optim/optimizer.h"
#include "optim/state.h"

using namespace ft;

// Reference values computed by hand from torch.optim.AdamW's update rule (double precision).
TEST(Optim, AdamWMatchesTorchFormula) {
  Tensor p = Tensor::from_vector({1.0f, -2.0f}, {2}).set_requires_grad(true);
  Optimizer opt({{"p", p}}, OptimizerConfig{"adamw", 0.9f, 0.999f, 1e-8f, 0.1f, 0});
  double pr[2] = {1.0, -2.0}, m[2] = {0, 0}, v[2] = {0, 0};
  double lr = 0.01;
  for (int t = 1; t <= 3; ++t) {
    p.zero_grad();
    sum(square(p)).backward();  // g = 2p
    opt.step(float(lr));
    for (int i = 0; i < 2; ++i) {
      double g = 2 * pr[i];
      pr[i] *= 1 - lr * 0.1;
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.999 * v[i] + 0.001 * g * g;
      double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.999, t));
      pr[i] -= lr * mh / (std::sqrt(vh) + 1e-8);
    }
  }
  std::vector<float> got = p.to_vector();
  EXPECT_NEAR(got[0], pr[0], 1e-6);
  EXPECT_NEAR(got[1], pr[1], 1e-6);
}

// All parameters are stepped in one parallel loop of pieces (autograd/kernels.h parallel_pieces):
// each gets the update rule's result (a plain loop here, within float rounding), whatever its size
// (around the 16K-element piece, many small ones, one with no gradient), for AdamW and SGD with
// momentum.
TEST(Optim, OneLoopOverManyParametersGivesEachItsUpdate) {
  for (const std::string type : {"adamw", "sgd"}) {
    const std::vector<int64_t> sizes = {3, 16384, 16385, 40000, 1, 700, 5};
    std::vector<NamedParam> params;
    std::vector<std::vector<float>> p, m, v;
    for (size_t k = 0; k < sizes.size(); ++k) {
      params.push_back({"p" + std::to_string(k), Tensor::randn({sizes[k]}, 10 + k).set_requires_grad(true)});
      p.push_back(params.back().value.to_vector());
      m.emplace_back(size_t(sizes[k]), 0.f);
      v.emplace_back(size_t(sizes[k]), 0.f);
    }
    const float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, mom = 0.5f;
    Optimizer opt(params, OptimizerConfig{type, b1, b2, eps, wd, mom});
    for (int t = 1; t <= 3; ++t) {
      for (size_t k = 0; k < sizes.size(); ++k) {
        params[k].value.zero_grad();
        if (k == 4) continue;  // no gradient: not stepped
        Tensor gt = Tensor::randn({sizes[k]}, 100 * t + k);
        params[k].value.set_grad(gt);
        std::vector<float> g = gt.to_vector();
        for (size_t i = 0; i < g.size(); ++i) {
          if (type == "adamw") {
            p[k][i] *= 1.f - lr * wd;
            m[k][i] = b1 * m[k][i] + (1.f - b1) * g[i];
            v[k][i] = b2 * v[k][i] + (1.f - b2) * g[i] * g[i];
            const double mh = m[k][i] / (1 - std::pow(0.9, t)), vh = v[k][i] / (1 - std::pow(0.999, t));
            p[k][i] -= float(lr * mh / (std::sqrt(vh) + eps));
          } else {
            float gi = g[i] + wd * p[k][i];
            m[k][i] = t == 1 ? gi : mom * m[k][i] + gi;
            p[k][i] -= lr * m[k][i];
          }
        }
      }
      opt.step(lr);
    }
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::vector<float> got = params[k].value.to_vector();
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], p[k][i], 1e-5f * (1.f + std::fabs(p[k][i]))) << type << " parameter " << k << "[" << i << "]";
    }
  }
}

TEST(Optim, SgdMomentumAndClipping) {
  Tensor p = Tensor::from_vector({3.0f, 4.0f}, {2}).set_requires_grad(true);
  Optimizer opt({{"p", p}}, OptimizerConfig{"sgd", 0.9f, 0.999f, 1e-8f, 0.0f, 0.5f});
  p.set_grad(Tensor::from_vector({3.0f, 4.0f}, {2}));
  double n = clip_grad_norm(opt.params(), 1.0);
  EXPECT_NEAR(n, 5.0, 1e-6);
  std::vector<float> g = p.grad().to_vector();
  EXPECT_NEAR(g[0], 0.6, 1e-5);
  opt.step(1.0f);  // b = g
  EXPECT_NEAR(p.to_vector()[0], 3.0 - 0.6, 1e-5);
  opt.step(1.0f);  // b = 0.5 b + g = 0.9
  EXPECT_NEAR(p.to_vector()[0], 3.0 - 0.6 - 0.9, 1e-5);
  EXPECT_THROW(Optimizer({{"p", p}}, OptimizerConfig{"adam8bit"}), Error);
}

TEST(Optim, Schedules) {
  Schedule c = make_schedule("cosine", 1.0f, 10, 110);
  EXPECT_FLOAT_EQ(c.at(0), 0.1f);
  EXPECT_FLOAT_EQ(c.at(9), 1.0f);
  EXPECT_FLOAT_EQ(c.at(10), 1.0f);
  EXPECT_NEAR(c.at(60), 0.5f, 1e-6);
  EXPECT_NEAR(c.at(110), 0.0f, 1e-6);
  Schedule l = make_schedule("linear", 2.0f, 0, 100);
  EXPECT_FLOAT_EQ(l.at(0), 2.0f);
  EXPECT_FLOAT_EQ(l.at(50), 1.0f);
  EXPECT_FLOAT_EQ(make_schedule("constant", 3.0f, 0, 5).at(100), 3.0f);
  EXPECT_THROW(make_schedule("exp", 1, 0, 1), Error);
}

TEST(TrainingState, RoundTripAndCorruption) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "ft_state_test";
  fs::create_directories(dir);
  std::string path = (dir / "state.h5").string();
  TrainingState st;
  st.step = 17;
  st.optimizer_steps = 16;
  st.rng = {123, 456};
  st.params["layers.0.q_proj.lora_A"] = Tensor::randn({4, 8}, 1);
  st.optimizer["layers.0.q_proj.lora_A.exp_avg"] = Tensor::randn({4, 8}, 2);
  st.settings = {{"lora_rank", 4}, {"model", "x"}};
  st.data = {{"epoch", 1}, {"index", 5}};
  save_training_state(path, st);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  TrainingState r = load_training_state(path);
  EXPECT_EQ(r.step, 17);
  EXPECT_EQ(r.optimizer_steps, 16);
  EXPECT_EQ(r.rng.seed, 123u);
  EXPECT_EQ(r.rng.counter, 456u);
  EXPECT_EQ(r.settings["lora_rank"], 4);
  EXPECT_EQ(r.data["index"], 5);
  EXPECT_EQ(r.params.at("layers.0.q_proj.lora_A").to_vector(), st.params["layers.0.q_proj.lora_A"].to_vector());
  EXPECT_EQ(r.optimizer.at("layers.0.q_proj.lora_A.exp_avg").to_vector(), st.optimizer["layers.0.q_proj.lora_A.exp_avg"].to_vector());
  // Truncated file: a clear error naming the file.
  auto size = fs::file_size(path);
  fs::resize_file(path, size / 2);
  try {
    load_training_state(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("state.h5"), std::string::npos) << e.what();
  }
  { std::ofstream(path) << "garbage"; }
  EXPECT_THROW(load_training_state(path), Error);
  EXPECT_THROW(load_training_state((dir / "missing.h5").string()), Error);
  fs::remove_all(dir);
}
