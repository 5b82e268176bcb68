#pragma once
// The gated-MLP activations of the supported decoders. config.json's hidden_act is parsed to this
// once (models/config.cpp); the model passes the enum to gated_act (autograd/ops.h).
namespace ft {

enum class Activation { SiLU, GeluTanh, Gelu };  // silu; gelu_pytorch_tanh (= gelu_new); exact erf gelu
const char* activation_name(Activation a);        // HF's name: "silu", "gelu_pytorch_tanh", "gelu"

}  // namespace ft
