// Every op's schema, in one place. Device kernels register themselves in csrc/cpu/ (and
// csrc/cuda/ where built); autograd kernels of the per-layer ops in csrc/autograd.cpp, the losses'
// and every fake (meta) kernel from Python in python/mor_ext/ops.py; autocast in csrc/autocast.cpp.
// Spec arguments are flat lists, one entry per role.
#include <Python.h>
#include <torch/library.h>

#include "cpu/gemm_avx512.h"

// Importing mor_ext._C only has to load this library, whose static initialisers register the ops;
// no Python bindings are needed (the pattern of pytorch/extension-cpp).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "mor_ext compiled ops (see torch.ops.mor_ext)", -1,
                                      nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(mor_ext, m) {
  m.def(
      "route(Tensor x, Tensor router_weight, Tensor shared_gate_weight, Tensor role_ids, int[] num_experts, "
      "int[] top_k, int[] has_shared, bool sigmoid_gate) -> (Tensor lora_index, Tensor lora_weight, "
      "Tensor router_probs)");
  m.def(
      "route_backward(Tensor grad_lora_weight, Tensor grad_router_probs, Tensor x, Tensor router_weight, "
      "Tensor shared_gate_weight, Tensor role_ids, Tensor lora_index, Tensor router_probs, int[] num_experts, "
      "int[] top_k, int[] has_shared, bool sigmoid_gate) -> (Tensor grad_x, Tensor grad_router_weight, "
      "Tensor grad_shared_gate_weight)");
  // out = (x @ weight^T + bias, if weight is given) + scaling * sum_k w_k B_k A_k x ; shrink = A_k x per slot.
  m.def(
      "grouped_lora(Tensor x, Tensor lora_A, Tensor lora_B, Tensor lora_index, Tensor lora_weight, float scaling, "
      "Tensor? weight, Tensor? bias) -> (Tensor out, Tensor shrink)");
  m.def(
      "grouped_lora_backward(Tensor grad_out, Tensor x, Tensor lora_A, Tensor lora_B, Tensor lora_index, "
      "Tensor lora_weight, Tensor shrink, float scaling, Tensor? weight) -> (Tensor grad_x, Tensor grad_lora_A, "
      "Tensor grad_lora_B, Tensor grad_lora_weight)");
  // The whole adapted layer in one op: y = x @ weight^T + bias + grouped LoRA(route(x)). Also returns
  // the routing, and for backward the per-slot shrink [N, K, r] and the fp32 shared-gate logit [N].
  m.def(
      "mor_linear(Tensor x, Tensor weight, Tensor? bias, Tensor lora_A, Tensor lora_B, Tensor router_weight, "
      "Tensor shared_gate_weight, Tensor role_ids, int[] num_experts, int[] top_k, int[] has_shared, "
      "bool sigmoid_gate, float scaling) -> (Tensor y, Tensor lora_index, Tensor lora_weight, Tensor router_probs, "
      "Tensor shrink, Tensor shared_gate_logit)");
  // mor_linear computed the way its decode path does (csrc/kernels/decode.h): on CUDA the kernels
  // mor_linear runs for a few tokens, on CPU their per-token bodies in loops, for the tests.
  // Forward only.
  m.def(
      "mor_linear_decode(Tensor x, Tensor weight, Tensor? bias, Tensor lora_A, Tensor lora_B, Tensor router_weight, "
      "Tensor shared_gate_weight, Tensor role_ids, int[] num_experts, int[] top_k, int[] has_shared, "
      "bool sigmoid_gate, float scaling) -> (Tensor y, Tensor lora_index, Tensor lora_weight, Tensor router_probs, "
      "Tensor shrink, Tensor shared_gate_logit)");
  m.def(
      "mor_linear_backward(Tensor grad_y, Tensor grad_lora_weight, Tensor grad_router_probs, Tensor x, "
      "Tensor weight, Tensor lora_A, Tensor lora_B, Tensor router_weight, Tensor shared_gate_weight, "
      "Tensor role_ids, Tensor lora_index, Tensor lora_weight, Tensor router_probs, Tensor shrink, "
      "Tensor shared_gate_logit, int[] num_experts, int[] top_k, int[] has_shared, bool sigmoid_gate, float scaling) -> "
      "(Tensor grad_x, Tensor grad_lora_A, Tensor grad_lora_B, Tensor grad_router_weight, "
      "Tensor grad_shared_gate_weight)");
  m.def(
      "load_balance_loss(Tensor router_probs, Tensor lora_index, Tensor role_ids, int[] num_experts, int[] top_k, "
      "int[] has_shared) -> Tensor");
  m.def(
      "load_balance_loss_backward(Tensor grad, Tensor router_probs, Tensor lora_index, Tensor role_ids, "
      "int[] num_experts, int[] top_k, int[] has_shared) -> Tensor");
  // Over the layers of one model call (sum over layers; they share the call's role ids).
  m.def(
      "load_balance_loss_layers(Tensor[] router_probs, Tensor[] lora_index, Tensor role_ids, int[] num_experts, "
      "int[] top_k, int[] has_shared) -> Tensor");
  m.def(
      "load_balance_loss_layers_backward(Tensor grad, Tensor[] router_probs, Tensor[] lora_index, Tensor role_ids, "
      "int[] num_experts, int[] top_k, int[] has_shared) -> Tensor[]");
  // Over many layers at once (sum over layers), and the r x r products it is built from (fp32
  // [layers * per layer, r, r], as orthogonal_products returns them), which the backward reuses.
  m.def(
      "orthogonal_loss_layers(Tensor[] lora_A, Tensor[] lora_B, int[] num_experts, int[] top_k, int[] has_shared) "
      "-> (Tensor loss, Tensor products)");
  m.def(
      "orthogonal_loss_layers_backward(Tensor grad, Tensor products, Tensor[] lora_A, Tensor[] lora_B, "
      "int[] num_experts, int[] top_k, int[] has_shared) -> (Tensor[] grad_lora_A, Tensor[] grad_lora_B)");
  m.def(
      "orthogonal_products(Tensor[] lora_A, Tensor[] lora_B, int[] num_experts, int[] top_k, int[] has_shared) "
      "-> Tensor");
  // The gradients of orthogonal_loss_layers computed from those products (what the CUDA backward
  // runs; on CPU, its per-thread steps in loops, for the tests).
  m.def(
      "orthogonal_grads(Tensor grad, Tensor products, Tensor[] lora_A, Tensor[] lora_B, int[] num_experts, "
      "int[] top_k, int[] has_shared) -> (Tensor[] grad_lora_A, Tensor[] grad_lora_B)");
  m.def("orthogonal_loss(Tensor lora_A, Tensor lora_B, int[] num_experts, int[] top_k, int[] has_shared) -> Tensor");
  // Whether mor_linear's CPU kernel has its AVX-512 paths here (decode, and the by-role GEMMs; for
  // backend_info); no tensor arguments, so one kernel for every dispatch key.
  m.def("cpu_avx512() -> bool", &mor_ext::cpu::avx512::available);
  // For the tests only: how often each of mor_linear's CPU paths ran in this process (counts in the
  // order of cpu/path_counts.h), so a test sees that a switch such as ATEN_CPU_CAPABILITY took effect.
  m.def("testing_cpu_path_counts() -> int[]");
  m.def(
      "orthogonal_loss_backward(Tensor grad, Tensor lora_A, Tensor lora_B, int[] num_experts, int[] top_k, "
      "int[] has_shared) -> (Tensor grad_lora_A, Tensor grad_lora_B)");
}
