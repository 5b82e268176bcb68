#include "autograd/autograd.h"

#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "autograd/ops.h"
#include "autograd/profile.h"
#include "autograd/random.h"

namespace ft {

namespace {
thread_local bool t_grad_enabled = true;
thread_local bool t_recompute = false;
}

bool in_checkpoint_recompute() { return t_recompute; }

int64_t& dropout_row_base() {
  static int64_t base = 0;
  return base;
}

RngState& global_rng() {
  static RngState s;
  return s;
}

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev; }
EnableGradGuard::EnableGradGuard() : prev(t_grad_enabled) { t_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { t_grad_enabled = prev; }

bool should_record(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}
bool should_record(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor graph_edge(const Tensor& t) {
  if (!t.defined() || (t.requires_grad() && !t.grad_fn())) return t;
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = t.shape();
  impl->strides = t.strides();
  impl->dtype = t.dtype();
  impl->requires_grad = t.requires_grad();
  impl->grad_fn = t.grad_fn();
  return Tensor(impl);
}

Tensor record(Tensor out, std::shared_ptr<Node> node) {
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
  return out;
}

namespace {
// Adds b into the accumulator a. Never writes into a tensor that someone else may hold.
Tensor accumulate(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  FT_PROFILE_SCOPE("grad accumulate");
  NoGradGuard ng;
  return add(a, b);
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_in) {
  FT_CHECK(root.defined(), "backward() on an undefined tensor");
  FT_CHECK(root.requires_grad(), "backward() on a tensor that does not require grad (shape ", root.shape_str(), ")");
  Tensor grad = grad_in;
  if (!grad.defined()) {
    FT_CHECK(root.numel() == 1, "backward() without a gradient needs a single-element output, got ", root.shape_str());
    grad = Tensor::full(root.shape(), 1.f);
  }
  FT_CHECK(grad.shape() == root.shape(), "backward(): gradient shape ", grad.shape_str(), " != output shape ", root.shape_str());
  NoGradGuard ng;

  if (!root.grad_fn()) {  // root is a leaf
    root.impl()->grad = accumulate(root.grad(), grad.to(DType::F32)).impl_ptr();
    return;
  }
  // Topological order (iterative DFS, post-order).
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack;
  std::unordered_map<Node*, std::shared_ptr<Node>> owner;
  owner[root.grad_fn().get()] = root.grad_fn();
  stack.push_back({root.grad_fn().get(), 0});
  seen.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto& [n, i] = stack.back();
    if (i < n->inputs.size()) {
      const Tensor& in = n->inputs[i++];
      if (in.defined() && in.grad_fn() && !seen.count(in.grad_fn().get())) {
        seen.insert(in.grad_fn().get());
        owner[in.grad_fn().get()] = in.grad_fn();
        stack.push_back({in.grad_fn().get(), 0});
      }
    } else {
      order.push_back(owner[n]);
      stack.pop_back();
    }
  }
  owner.clear();
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = grad.to(DType::F32);
  for (size_t k = order.size(); k-- > 0;) {
    Node* n = order[k].get();
    auto it = grads.find(n);
    if (it == grads.end()) continue;
    Tensor g = std::move(it->second);
    grads.erase(it);
    std::vector<Tensor> gi;
    {
      FT_PROFILE_SCOPE(n->name(), " bwd", std::strcmp(n->name(), "checkpoint") == 0);
      gi = n->backward(g);
    }
    FT_CHECK(gi.size() == n->inputs.size(), "internal: ", n->name(), " returned ", gi.size(), " gradients for ", n->inputs.size(), " inputs");
    for (size_t i = 0; i < gi.size(); ++i) {
      const Tensor& in = n->inputs[i];
      if (!in.defined() || !in.requires_grad() || !gi[i].defined()) continue;
      FT_CHECK(gi[i].shape() == in.shape(), "internal: ", n->name(), " gradient ", i, " has shape ", gi[i].shape_str(), ", input has ", in.shape_str());
      if (in.grad_fn()) {
        Tensor& acc = grads[in.grad_fn().get()];
        acc = accumulate(acc, gi[i]);
      } else {
        Tensor prev = in.grad();
        // A leaf keeps its own copy: the vjp result may be shared with other consumers.
        in.impl()->grad = (prev.defined() ? accumulate(prev, gi[i]) : gi[i].clone()).impl_ptr();
      }
    }
    // Free what this node kept alive: activations go as soon as they are used.
    n->inputs.clear();
    n->saved.clear();
    order[k].reset();
  }
}

namespace {
struct CheckpointNode : Node {
  SegmentFn fn;
  RngState rng;
  bool f16 = false;   // autocast mode of the forward (the recompute runs in it)
  bool bf16 = false;  // autocast_bf16 mode of the forward, likewise
  const char* name() const override { return "checkpoint"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    std::vector<Tensor> det;
    for (const Tensor& in : inputs) {
      Tensor d = in.detach();
      if (in.requires_grad()) d.set_requires_grad(true);
      det.push_back(d);
    }
    RngState keep = global_rng();
    global_rng() = rng;
    Tensor out;
    {
      FT_PROFILE_PHASE("checkpoint recompute");
      EnableGradGuard eg;
      AutocastF16Guard ac(f16);
      AutocastBF16Guard ab(bf16);
      struct Recompute {  // in_checkpoint_recompute() is true inside, restored on any exit
        bool prev = t_recompute;
        Recompute() { t_recompute = true; }
        ~Recompute() { t_recompute = prev; }
      } rc;
      out = fn(det);
    }
    global_rng() = keep;
    std::vector<Tensor> res(inputs.size());
    if (out.requires_grad()) {
      run_backward(out, g);
      for (size_t i = 0; i < det.size(); ++i)
        if (det[i].requires_grad()) res[i] = det[i].grad();
    }
    return res;
  }
};
}  // namespace

Tensor checkpoint(const SegmentFn& fn, const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return fn(inputs);
  auto node = std::make_shared<CheckpointNode>();
  node->fn = fn;
  node->rng = global_rng();
  node->f16 = autocast_f16();
  node->bf16 = autocast_bf16();
  Tensor out;
  {
    NoGradGuard ng;
    out = fn(inputs);
  }
  node->inputs = inputs;
  // The segment may use parameters that require grad even when no input does: always record.
  return record(out, node);
}

}  // namespace ft
