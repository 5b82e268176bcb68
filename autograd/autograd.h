#pragma once
// Reverse-mode autodiff.
//
// An op is a public function (autograd/ops.h) that computes its result with a kernel and, only when
// grad mode is on and some input requires grad, records a Node: the op's vector-Jacobian product.
// backward() walks nodes in reverse topological order, accumulating gradients; leaves that require
// grad (parameters) receive .grad(). A frozen weight (requires_grad false) gets no gradient, and ops
// skip the work for it (Node::needs(i)).
#include <functional>
#include <memory>
#include <vector>

#include "autograd/tensor.h"

namespace ft {

struct Node {
  std::vector<Tensor> inputs;  // differentiable inputs (edges of the graph), in the op's order
  std::vector<Tensor> saved;   // anything else the vjp needs (freed after backward)
  virtual ~Node() = default;
  virtual const char* name() const = 0;
  // Gradients with respect to inputs, given the gradient of the output. Entries may be undefined
  // when !needs(i). Shapes must equal the inputs' shapes.
  virtual std::vector<Tensor> backward(const Tensor& grad_out) = 0;
  bool needs(size_t i) const { return i < inputs.size() && inputs[i].requires_grad(); }
};

bool grad_enabled();
struct NoGradGuard {  // no recording inside this scope
  bool prev;
  NoGradGuard();
  ~NoGradGuard();
};
struct EnableGradGuard {
  bool prev;
  EnableGradGuard();
  ~EnableGradGuard();
};

// True when an op on these inputs must be recorded.
bool should_record(std::initializer_list<const Tensor*> inputs);
bool should_record(const std::vector<Tensor>& inputs);
// `t` as a graph edge only, for a node whose vjp needs nothing of that input but its shape (add,
// scale, rope, shape ops): same shape, dtype, grad_fn and requires_grad, no storage, so the
// activation is freed as soon as nothing else holds it. A leaf that requires grad is returned as
// it is (its .grad accumulates into that very tensor). Reading the data of an edge is an ft::Error.
Tensor graph_edge(const Tensor& t);
// Attaches `node` (whose inputs are set) as out's history. Returns out.
Tensor record(Tensor out, std::shared_ptr<Node> node);

// Runs backward from `root`. `grad` defaults to ones (root must then have one element).
void run_backward(const Tensor& root, const Tensor& grad);

// Gradient checkpointing: runs fn(inputs) without recording and keeps only the inputs; during
// backward, recomputes fn with recording (same dropout masks: the RNG stream is saved and restored)
// and backpropagates through the recomputed segment. Parameters used inside fn receive their
// gradients as usual. fn must be a pure function of its inputs and parameters.
using SegmentFn = std::function<Tensor(const std::vector<Tensor>&)>;
Tensor checkpoint(const SegmentFn& fn, const std::vector<Tensor>& inputs);
// True on the thread that is recomputing a checkpointed segment for backward. The value of the
// segment's output is then never read (only its graph is), so the segment's last op may skip
// computing it (lora_linear's graph_only).
bool in_checkpoint_recompute();

// g reduced (summed) to `shape` (inverse of broadcasting).
Tensor sum_to(const Tensor& g, const Shape& shape);

}  // namespace ft
