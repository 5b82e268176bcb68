#pragma once
// A named trainable tensor: what adapters hand to optimisers (LoRA A/B, DoRA magnitudes, full weights).
#include <string>

#include "autograd/tensor.h"

namespace ft {

struct NamedParam {
  std::string name;
  Tensor value;  // float32 leaf with requires_grad
};

}  // namespace ft
