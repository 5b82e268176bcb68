// The one tensor list (models/tensors.h): expected_weights, Model::load, init_random, projections(),
// weight_bytes(), the parameter count and export all agree with it, for every fixture family and for
// the fused layouts with biases (where hand-written copies used to disagree: gate_proj.bias vs
// gate_up_proj.bias).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "models/export.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "models/tensors.h"

namespace ft {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(FT_TEST_DATA).parent_path() / "fixtures" / "models";

std::set<std::string> names_of(const std::vector<ModelTensor>& ts) {
  std::set<std::string> s;
  for (auto& t : ts) s.insert(t.name);
  return s;
}

TEST(TensorList, FusedLayersCarryTheirOwnBiases) {
  ModelConfig c;
  c.vocab_size = 11, c.hidden_size = 8, c.intermediate_size = 12, c.num_layers = 2;
  c.num_heads = 2, c.num_kv_heads = 1, c.head_dim = 4;
  c.fused_qkv = c.fused_gate_up = c.qkv_bias = c.mlp_bias = c.o_bias = true;
  std::vector<ModelTensor> ts = model_tensors(c);
  std::set<std::string> n = names_of(ts);
  EXPECT_EQ(n.size(), ts.size());  // no duplicates
  EXPECT_TRUE(n.count("model.layers.1.self_attn.qkv_proj.bias"));
  EXPECT_TRUE(n.count("model.layers.1.mlp.gate_up_proj.bias"));
  EXPECT_TRUE(n.count("model.layers.1.mlp.down_proj.bias"));
  EXPECT_TRUE(n.count("model.layers.0.self_attn.o_proj.bias"));
  EXPECT_FALSE(n.count("model.layers.1.mlp.gate_proj.bias"));
  EXPECT_FALSE(n.count("model.layers.1.self_attn.q_proj.bias"));
  for (auto& t : ts) {
    if (t.name == "model.layers.1.self_attn.qkv_proj.weight") { EXPECT_EQ(t.shape, (std::vector<int64_t>{16, 8})); }
    if (t.name == "model.layers.1.self_attn.qkv_proj.bias") { EXPECT_EQ(t.shape, (std::vector<int64_t>{16})); }
    if (t.name == "model.layers.1.mlp.gate_up_proj.bias") { EXPECT_EQ(t.shape, (std::vector<int64_t>{24})); }
    if (t.name == "model.layers.1.mlp.gate_up_proj.weight") { EXPECT_EQ(t.gguf_name, "blk.1.ffn_up.weight"); }
  }
  // 1 embedding + 2 layers × (2 norms + 4 projections (qkv, o, gate_up, down) × (weight, bias)) + final norm + head
  EXPECT_EQ(ts.size(), 1u + 2u * (2u + 4u * 2u) + 1u + 1u);
  std::vector<WeightSpec> w = expected_weights(c);
  ASSERT_EQ(w.size(), ts.size());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(w[i].name, ts[i].name);
  c.tie_word_embeddings = true;
  EXPECT_FALSE(names_of(model_tensors(c)).count("lm_head.weight"));
}

// Each fixture family: the loaded model holds exactly the list's tensors with the list's shapes, and
// every count derived from the model agrees with the list; an export writes exactly those names.
TEST(TensorList, LoadCountExportAgreeForEveryFamily) {
  int n = 0;
  std::error_code ec;
  if (!fs::is_directory(kFixtures, ec)) GTEST_SKIP() << "no fixture models";
  for (auto& e : fs::directory_iterator(kFixtures)) {
    if (!fs::exists(e.path() / "model.safetensors") && !fs::exists(e.path() / "model.safetensors.index.json")) continue;
    SCOPED_TRACE(e.path().string());
    ++n;
    Model m = Model::load(e.path().string());
    std::vector<ModelTensor> ts = model_tensors(m.cfg);
    int64_t numel = 0, bytes = 0, projs = 0;
    for (auto& t : ts) {
      const Tensor& x = m.tensor(t);
      ASSERT_TRUE(x.defined()) << t.name;
      EXPECT_EQ(x.shape(), t.shape) << t.name;
      numel += x.numel();
      bytes += int64_t(x.nbytes());
      if (t.role == TensorRole::Projection && !t.bias) {
        ++projs;
        EXPECT_EQ(m.projection(t)->name + ".weight", t.name);
      }
    }
    EXPECT_EQ(m.checkpoint_parameters, numel);
    EXPECT_EQ(m.weight_bytes(), bytes);
    EXPECT_EQ(int64_t(m.projections().size()), projs);

    Model r = Model::init_random(e.path().string(), 1);
    EXPECT_EQ(r.checkpoint_parameters, numel);
    for (auto& t : ts) EXPECT_EQ(r.tensor(t).shape(), t.shape) << t.name;

    fs::path out = fs::temp_directory_path() / ("ft_test_tensors_" + e.path().filename().string());
    fs::remove_all(out);
    export_model(m, out.string(), {});
    CheckpointReader ck = CheckpointReader::open(out.string());
    const std::vector<std::string> names = ck.names();
    std::set<std::string> written(names.begin(), names.end());
    EXPECT_EQ(written, names_of(ts));
    fs::remove_all(out);
  }
  EXPECT_GT(n, 0);
}

}  // namespace
}  // namespace ft
