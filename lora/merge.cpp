// Adapters, part 4: folding adapters into the base weights (W += s·B·A; DoRA: W = m/‖W+s·B·A‖·(W+s·B·A)),
// re-quantizing a quantized base when asked.
#include <optional>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/quant.h"
#include "lora/adapter.h"

namespace ft {

void merge_lora(Model& model, DType dtype, bool requantize) {
  NoGradGuard ng;
  for (Projection* p : model.projections()) {
    if (p->lora) {
      const LoraAdapter& l = *p->lora;
      std::optional<QuantParams> base_q;
      if (is_quantized(p->weight)) base_q = quant_params(p->weight);
      Tensor w = lora_merged_weight(p->weight, l);
      if (l.magnitude.defined()) {
        const int64_t out = w.size(0), in = w.size(1);
        const std::vector<double> norm = row_norms(w);
        float* pw = w.data<float>();
        const float* m = l.magnitude.data<float>();
        for (int64_t o = 0; o < out; ++o) {
          float f = float(m[o] / norm[size_t(o)]);
          for (int64_t i = 0; i < in; ++i) pw[o * in + i] *= f;
        }
      }
      // (a GGUF Q6_K base's groups of 16 are not MLX's: its merged matrices stay float)
      p->weight = base_q && requantize && quant_group_supported(base_q->group_size) ? quantize_affine(w, base_q->bits, base_q->group_size, base_q->scale_dtype, p->name + ".weight")
                                       : w.to(dtype);
      p->lora.reset();
    } else if (p->weight.dtype() != dtype && !is_quantized(p->weight)) {
      p->weight = p->weight.to(dtype);
    }
  }
}

}  // namespace ft