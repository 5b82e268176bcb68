#pragma once
// Differentiable ops. Each is a public function; its forward kernel and its vector-Jacobian product
// live together in one autograd/ops_*.cpp file. Inputs may be strided views; results are fresh,
// contiguous float32 tensors unless stated. Misuse (shapes, dtypes) throws ft::Error naming the op
// and the shapes.
#include <optional>
#include <vector>

#include "autograd/activation.h"
#include "autograd/autograd.h"

namespace ft {

// ---- elementwise (numpy broadcasting) -------------------------------------------------- ops_elementwise.cpp
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, float s);        // x * s
Tensor add_scalar(const Tensor& x, float s);   // x + s
Tensor neg(const Tensor& x);
Tensor square(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor gelu_tanh(const Tensor& x);             // HF "gelu_pytorch_tanh" / "gelu_new"
Tensor gelu(const Tensor& x);                  // exact erf GELU
Tensor tanh(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor softcap(const Tensor& x, float cap);    // cap * tanh(x / cap)
// Fused gated MLP activation: act(gate) * up.
Tensor gated_act(const Tensor& gate, const Tensor& up, Activation act);
// Inverted dropout: zeroes with probability p and scales by 1/(1-p). Masks come from the global
// counter-based RNG stream (autograd/random.h): reproducible and recomputable.
Tensor dropout(const Tensor& x, float p, bool training = true);

// ---- reductions ------------------------------------------------------------------------ ops_reduce.cpp
Tensor sum(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);  // {} = all
Tensor mean(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor softmax(const Tensor& x);       // over the last dim
Tensor log_softmax(const Tensor& x);   // over the last dim

// ---- shape ----------------------------------------------------------------------------- ops_shape.cpp
Tensor reshape(const Tensor& x, const Shape& shape);  // no copy when x is contiguous
Tensor transpose(const Tensor& x, int64_t a, int64_t b);  // materialised (contiguous copy)
Tensor permute(const Tensor& x, const std::vector<int64_t>& perm);  // materialised
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);  // materialised
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
Tensor to_dtype(const Tensor& x, DType dtype);  // differentiable cast (gradient cast back)

// ---- linear algebra -------------------------------------------------------------------- ops_matmul.cpp
// Batched matmul: a [..., M, K] (or [..., K, M] with trans_a), b [..., K, N] (or [..., N, K] with
// trans_b). Batch dims must match, or b may be 2-D (shared across the batch).
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// y = x·Wᵀ (+ bias). x [..., in] float32, W [out, in] float32, bfloat16 or float16 (frozen 16-bit
// base weights get no weight gradient; they are widened while the GEMM packs them), bias [out]. No weight-gradient GEMM when W does not require grad.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());
// Linear with a LoRA adapter, fused: y = x·Wᵀ + bias + s·(xa·Aᵀ)·Bᵀ with A [r, in], B [out, r]
// float32 and xa the adapter's input (e.g. dropout(x); undefined = x). Equals
// add(linear(x, W, bias), scale(linear(linear(xa, A), B), s)), but the rank-r update is
// accumulated into the GEMM's output (no extra passes over [.., out]) and backward keeps only
// x, xa and xa·Aᵀ [.., r] (not the [.., out] partial results).
// residual (optional, shape of y): y += residual in the same pass as the bias (a residual
// connection; its gradient is dY). graph_only: record the node but leave y uncomputed (a tensor
// without data; only uT is computed) — for the last op of a checkpointed segment during its
// recomputation, whose output value is never read (see in_checkpoint_recompute()).
Tensor lora_linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& a, const Tensor& b, float s,
                   const Tensor& xa = Tensor(), const Tensor& residual = Tensor(), bool graph_only = false);

// ---- float16 autocast ------------------------------------------------------------------ autocast.cpp
// torch.autocast(dtype=torch.float16) for ft's projections, switched on for a scope (per thread, like
// NoGradGuard):   { AutocastF16Guard ac; Tensor loss = ...; loss.backward(); }
// In the scope, linear and lora_linear round their outputs to fp16 values, and so does every gradient
// they return (for x, the adapter input, W, the bias, LoRA A and B); linear_cross_entropy_sum rounds
// its logits (then computes softmax and loss in fp32) and the gradients it returns for h and W.
// Values stay in float32 storage but are representable in fp16: round to nearest even, anything that
// rounds beyond 65504 (the largest finite fp16) becomes ±inf, magnitudes below 2^-14 become fp16
// subnormals (multiples of 2^-24) and below 2^-25 zero. Everything else (embeddings, norms, RoPE,
// attention and its softmax statistics, the loss) stays fp32, as autocast does. This is why fp16
// training needs loss scaling (optim/grad_scaler.h): unscaled, small gradients underflow to zero.
// Ops record the mode in their graph nodes at forward time, so backward rounds as forward did whether
// or not the scope is still open, and checkpoint() recomputes a segment in the mode of its forward.
bool autocast_f16();
struct AutocastF16Guard {
  bool prev;
  explicit AutocastF16Guard(bool on = true);
  ~AutocastF16Guard();
};
// In place: p[i] = f16_to_f32(f32_to_f16(p[i])) (F16C when the ISA in effect has it; parallel).
void round_to_f16(float* p, int64_t n);
// Same on a contiguous float32 tensor (undefined passes through); returns t.
Tensor round_to_f16(Tensor t);

// ---- bfloat16 compute ----------------------------------------------------------------- autocast.cpp
// The precision contract for bf16 base weights (README "Precision"). Off by default: every GEMM with
// a bfloat16 weight computes exactly in fp32 (the weight's values widened; transformers with
// dtype=float32), on every CPU and ISA path. Switched on for a scope (per thread, like
// AutocastF16Guard) by `--dtype bfloat16` training and `--compute bfloat16` inference, it gives
// torch.autocast(dtype=torch.bfloat16)'s matmul semantics for those weights: linear, lora_linear and
// linear_cross_entropy_sum with a bfloat16 weight round their fp32 input (forward) and their output
// gradient (the input-gradient GEMM of backward) to bf16 and accumulate in fp32 (gemm_bf16w's
// round_a; AMX, AVX512-BF16 or rounding + fp32 FMA, the same values on every path up to summation
// order). LoRA's rank-r products, attention, norms, softmax and the loss stay fp32. Ops record the
// mode in their graph nodes at forward time (backward and checkpoint recomputation follow it).
bool autocast_bf16();
struct AutocastBF16Guard {
  bool prev;
  explicit AutocastBF16Guard(bool on = true);
  ~AutocastBF16Guard();
};

// ---- model ops ------------------------------------------------------------------------- ops_embedding.cpp, ops_norm.cpp, ops_rope.cpp, ops_attention.cpp, ops_loss.cpp
// weight [V, D] (f32 or bf16), ids int32 [...] -> [..., D]; gradient scatter-added into weight rows.
// An id outside [0, V) is an ft::Error naming the id and V.
Tensor embedding(const Tensor& weight, const Tensor& ids);
// RMSNorm over the last dim with fp32 statistics: y = x / sqrt(mean(x²) + eps) * w  (plus_one: * (1 + w)).
Tensor rms_norm(const Tensor& x, const Tensor& w, float eps, bool plus_one = false);
// Rotate-half RoPE on x [B, T, H, D]: the first rot_dim = cos.size(-1) dims of each head are rotated,
// the rest pass through. cos/sin: [T, rot_dim] (positions of x's T rows, already scaled), or
// [B, T, rot_dim] for per-sample positions (packed sequences, batched decode). rot_dim even, <= D.
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin);

struct AttentionOptions {
  float scale = 0;            // scores = scale · q·k; 0 = 1/sqrt(D)
  bool causal = true;         // key j visible from query i iff j <= q_offset + i
  // Sliding window (0 = off): key j visible from query i iff (q_offset + i) - j < window, i.e. a
  // query sees itself and the window - 1 keys before it (window keys in total), as HF's
  // masking_utils.sliding_window_overlay (kv_idx > q_idx - sliding_window) for Mistral, Qwen2,
  // Gemma2/3, Phi3. Combined with causal (AND); with causal = false it limits only the look-back.
  int64_t window = 0;
  float softcap = 0;          // logit softcap: s = cap·tanh(s / cap) after scaling, before masking (0 = off)
  int64_t q_offset = 0;       // absolute position of query row 0 (= keys already in the cache for decode)
  // Optional per-token segment ids [B, Tk] (int32): a query attends only to keys of its own segment
  // (packed sequences). Queries use segment_ids[:, q_offset + i] (needs 0 <= q_offset, q_offset + Tq <= Tk).
  Tensor segment_ids;
};
// Fused memory-efficient attention. q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D] with Hq % Hkv == 0 (GQA:
// query head h uses kv head h / (Hq / Hkv), as HF repeat_kv). Returns [B, Tq, Hq, D] (the softmax is
// over the visible keys only). Never materialises a B×H×T×T tensor (online softmax, blockwise
// recompute in backward; extra memory O(B·Tq·Hq)). A fully masked row gives zeros, never NaN, and
// passes no gradient. Without autograd recording, float32 views with dense heads (e.g. a KV-cache
// prefix cache.slice(1, 0, len)) are read in place. Results are bitwise independent of the thread count.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt = {});

// Cross-entropy of logits [N, V] against targets int32 [N]; targets == ignore_index are skipped.
// Returns the SUM of per-token losses (a scalar) — divide by the supervised-token count yourself,
// so that the loss is a token-weighted mean over a whole (accumulated) batch. Never copies logits:
// the gradient is computed row by row from the saved logits and logsumexp.
Tensor cross_entropy_sum(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -100);
// Token-weighted mean (sum / number of supervised tokens); 0 when nothing is supervised.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -100);
// cross_entropy_sum(h·Wᵀ, targets) (with softcap > 0: of cap·tanh(h·Wᵀ / cap)), fused with the
// projection: h [..., H] float32, W [V, H] float32, bfloat16 or float16 (the LM head), targets int32 with
// one entry per row of h. Rows go through in chunks, so the [N, V] logits are never materialised
// (chunk_rows rows at a time; 0 = at most about 128 MB of logits, equal chunks); the gradients for h (and for W, when it
// requires grad) are computed in the same pass and kept for backward, which only scales them.
Tensor linear_cross_entropy_sum(const Tensor& h, const Tensor& w, const Tensor& targets, int32_t ignore_index = -100,
                                float softcap = 0, int64_t chunk_rows = 0);

}  // namespace ft
