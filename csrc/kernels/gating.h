// Per-element bodies of the grouped-LoRA gate, shared by the CPU kernels (csrc/cpu/grouped_lora.cpp)
// and the CUDA kernels (csrc/cuda/gate_kernels.cuh), so that the CPU tests check the code a GPU
// thread runs.
//
// Vocabulary: a token has K slots (lora_index[t, s], lora_weight[t, s]; index -1 = empty). Its
// "gated" row holds, for every LoRA l and rank j, scaling * (sum of the token's weights for l) *
// (A_l x)_j, so that one expand GEMM with all B's gives the token's delta; zero for LoRAs it did not
// pick. The saved "slots" [K, r] hold A_l x for each slot's LoRA (zeros in empty slots).
#pragma once

#include <cstdint>

#include "routing.h"  // MOR_HD

namespace mor_ext::kernels {

// Sum of the token's weights over the slots that picked `lora` (duplicates add up).
template <typename acc_t, typename index_t, typename scalar_t>
MOR_HD acc_t lora_gate(const index_t* index, const scalar_t* weight, int64_t k, int64_t lora) {
  acc_t g = acc_t(0);
  for (int64_t s = 0; s < k; ++s)
    if (static_cast<int64_t>(index[s]) == lora) g += static_cast<acc_t>(weight[s]);
  return g;
}

// True when slot value `l` names one of `num_loras` LoRAs (-1, or anything out of range, is empty:
// range errors are raised before launch; this keeps a kernel from reading out of bounds regardless).
template <typename index_t>
MOR_HD bool valid_lora(index_t l, int64_t num_loras) {
  return static_cast<int64_t>(l) >= 0 && static_cast<int64_t>(l) < num_loras;
}

// Gated value of rank j of LoRA `lora`, rebuilt from the saved slots [K, r] (backward).
template <typename acc_t, typename index_t, typename scalar_t>
MOR_HD acc_t gated_from_slots(const index_t* index, const scalar_t* weight, const scalar_t* slots, int64_t k,
                              int64_t rank, int64_t lora, int64_t j, acc_t scaling) {
  acc_t g = acc_t(0);
  for (int64_t s = 0; s < k; ++s)
    if (static_cast<int64_t>(index[s]) == lora)
      g += (scaling * static_cast<acc_t>(weight[s])) * static_cast<acc_t>(slots[s * rank + j]);
  return g;
}

// dL/dw of one slot: scaling * <dL/d(gated) of the slot's LoRA, the slot's shrink>.
template <typename acc_t, typename scalar_t>
MOR_HD acc_t slot_weight_grad(const scalar_t* grad_gated_lora, const scalar_t* slot, int64_t rank, acc_t scaling) {
  acc_t dot = acc_t(0);
  for (int64_t j = 0; j < rank; ++j) dot += static_cast<acc_t>(grad_gated_lora[j]) * static_cast<acc_t>(slot[j]);
  return scaling * dot;
}

}  // namespace mor_ext::kernels
