// The one table of mor_ext's ops: each row is OP(name, schema), the schema without the name.
//
// ops.cpp defines every op from it (m.def), autocast.cpp registers every tensor op's autocast
// kernel from it, and Python (mor_ext.ops.backend) reads the names back from the loaded library.
// Spec arguments are flat lists, one entry per role. Adding an op: a row here, its kernels
// (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu), its fake kernel and autograd in python/mor_ext/ops/, its
// reference in python/mor_ext/ops/reference.py, and its tests in tests/ops/.
#pragma once

// ---- the ops the package runs; each backward op beside its forward.
#define MOR_EXT_OPS(OP)                                                                                              \
  OP(route,                                                                                                          \
     "(Tensor x, Tensor router_weight, Tensor shared_gate_weight, Tensor role_ids, int[] num_experts, int[] top_k, " \
     "int[] has_shared, bool sigmoid_gate) -> (Tensor lora_index, Tensor lora_weight, Tensor router_probs)")         \
  OP(route_backward,                                                                                                 \
     "(Tensor grad_lora_weight, Tensor grad_router_probs, Tensor x, Tensor router_weight, "                         \
     "Tensor shared_gate_weight, Tensor role_ids, Tensor lora_index, Tensor router_probs, int[] num_experts, "       \
     "int[] top_k, int[] has_shared, bool sigmoid_gate) -> (Tensor grad_x, Tensor grad_router_weight, "             \
     "Tensor grad_shared_gate_weight)")                                                                              \
  /* out = (x @ weight^T + bias, if weight is given) + scaling * sum_k w_k B_k A_k x ; shrink = A_k x per slot. */  \
  OP(grouped_lora,                                                                                                   \
     "(Tensor x, Tensor lora_A, Tensor lora_B, Tensor lora_index, Tensor lora_weight, float scaling, "              \
     "Tensor? weight, Tensor? bias) -> (Tensor out, Tensor shrink)")                                                 \
  OP(grouped_lora_backward,                                                                                          \
     "(Tensor grad_out, Tensor x, Tensor lora_A, Tensor lora_B, Tensor lora_index, Tensor lora_weight, "            \
     "Tensor shrink, float scaling, Tensor? weight) -> (Tensor grad_x, Tensor grad_lora_A, Tensor grad_lora_B, "    \
     "Tensor grad_lora_weight)")                                                                                     \
  /* The whole adapted layer in one op: y = x @ weight^T + bias + grouped LoRA(route(x)). Also returns the */       \
  /* routing, and for backward the per-slot shrink [N, K, r] and the fp32 shared-gate logit [N]. */                 \
  OP(mor_linear,                                                                                                     \
     "(Tensor x, Tensor weight, Tensor? bias, Tensor lora_A, Tensor lora_B, Tensor router_weight, "                 \
     "Tensor shared_gate_weight, Tensor role_ids, int[] num_experts, int[] top_k, int[] has_shared, "               \
     "bool sigmoid_gate, float scaling) -> (Tensor y, Tensor lora_index, Tensor lora_weight, "                      \
     "Tensor router_probs, Tensor shrink, Tensor shared_gate_logit)")                                                \
  OP(mor_linear_backward,                                                                                            \
     "(Tensor grad_y, Tensor grad_lora_weight, Tensor grad_router_probs, Tensor x, Tensor weight, Tensor lora_A, "  \
     "Tensor lora_B, Tensor router_weight, Tensor shared_gate_weight, Tensor role_ids, Tensor lora_index, "         \
     "Tensor lora_weight, Tensor router_probs, Tensor shrink, Tensor shared_gate_logit, int[] num_experts, "        \
     "int[] top_k, int[] has_shared, bool sigmoid_gate, float scaling) -> (Tensor grad_x, Tensor grad_lora_A, "     \
     "Tensor grad_lora_B, Tensor grad_router_weight, Tensor grad_shared_gate_weight)")                              \
  /* The losses take a list of layers (sum over layers; the load balance's layers share the call's role */          \
  /* ids); one layer is a list of one (mor_ext.ops.load_balance_loss / orthogonal_loss). */                          \
  OP(load_balance_loss_layers,                                                                                       \
     "(Tensor[] router_probs, Tensor[] lora_index, Tensor role_ids, int[] num_experts, int[] top_k, "               \
     "int[] has_shared) -> Tensor")                                                                                  \
  OP(load_balance_loss_layers_backward,                                                                              \
     "(Tensor grad, Tensor[] router_probs, Tensor[] lora_index, Tensor role_ids, int[] num_experts, int[] top_k, "  \
     "int[] has_shared) -> Tensor[]")                                                                                \
  /* Also returns the r x r products it is built from (fp32 [layers * per layer, r, r]), which the */               \
  /* backward reuses. */                                                                                             \
  OP(orthogonal_loss_layers,                                                                                         \
     "(Tensor[] lora_A, Tensor[] lora_B, int[] num_experts, int[] top_k, int[] has_shared) "                        \
     "-> (Tensor loss, Tensor products)")                                                                            \
  OP(orthogonal_loss_layers_backward,                                                                                \
     "(Tensor grad, Tensor products, Tensor[] lora_A, Tensor[] lora_B, int[] num_experts, int[] top_k, "            \
     "int[] has_shared) -> (Tensor[] grad_lora_A, Tensor[] grad_lora_B)")

// ---- information about the build, no tensor arguments (one kernel for every dispatch key).
#define MOR_EXT_INFO_OPS(OP)                                                                                         \
  /* Whether mor_linear's CPU kernel has its AVX-512 paths here (decode and by-role GEMMs; backend_info). */        \
  OP(cpu_avx512, "() -> bool")

// ---- ops that exist only for the tests (the testing_ prefix says so). A GPU kernel's per-thread
// bodies are plain C++ (csrc/kernels/); these run them on the CPU, in loops, so that the tests check
// the CUDA kernels' arithmetic on any machine, and on CUDA they run the kernels alone.
#define MOR_EXT_TESTING_OPS(OP)                                                                                      \
  /* mor_linear computed the way its decode path does (csrc/kernels/decode.h): on CUDA the kernels */               \
  /* mor_linear runs for a few tokens, on CPU their per-token bodies in loops. Forward only. */                     \
  OP(testing_mor_linear_decode,                                                                                      \
     "(Tensor x, Tensor weight, Tensor? bias, Tensor lora_A, Tensor lora_B, Tensor router_weight, "                 \
     "Tensor shared_gate_weight, Tensor role_ids, int[] num_experts, int[] top_k, int[] has_shared, "               \
     "bool sigmoid_gate, float scaling) -> (Tensor y, Tensor lora_index, Tensor lora_weight, "                      \
     "Tensor router_probs, Tensor shrink, Tensor shared_gate_logit)")                                                \
  /* The r x r products orthogonal_loss_layers is built from (csrc/kernels/products.h). */                          \
  OP(testing_orthogonal_products,                                                                                    \
     "(Tensor[] lora_A, Tensor[] lora_B, int[] num_experts, int[] top_k, int[] has_shared) -> Tensor")              \
  /* The gradients of orthogonal_loss_layers from those products (csrc/kernels/orthogonal_grads.h). */              \
  OP(testing_orthogonal_grads,                                                                                       \
     "(Tensor grad, Tensor products, Tensor[] lora_A, Tensor[] lora_B, int[] num_experts, int[] top_k, "            \
     "int[] has_shared) -> (Tensor[] grad_lora_A, Tensor[] grad_lora_B)")                                            \
  /* How often each of mor_linear's CPU paths ran in this process (csrc/cpu/path_counts.h): the AVX-512 */          \
  /* and generic paths may give identical bits, so a test of a path switch reads these instead. */                  \
  OP(testing_cpu_path_counts, "() -> int[]")
