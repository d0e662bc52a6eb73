// mor_ext ops under torch.autocast: they run in their inputs' dtypes, with autocast off inside.
//
// An op without an autocast kernel lets autocast through to the ATen calls inside its kernels, so
// under CPU autocast an internal at::mm would return bf16 where the kernel expects fp32 (and the
// results would depend on where the kernel happens to call ATen). MoRLinear casts its inputs to the
// autocast dtype itself; these kernels make every op, forward and backward, safe to call anywhere.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace mor_ext {
namespace {

void without_autocast(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  op.callBoxed(stack);
}

constexpr const char* kOps[] = {
    "route",           "route_backward",         "grouped_lora",
    "grouped_lora_backward", "mor_linear",        "mor_linear_backward",
    "load_balance_loss", "load_balance_loss_backward", "load_balance_loss_layers",
    "load_balance_loss_layers_backward", "orthogonal_loss", "orthogonal_loss_backward",
    "orthogonal_loss_layers", "orthogonal_loss_layers_backward", "orthogonal_products",
    "orthogonal_grads", "mor_linear_decode",
};

void register_all(torch::Library& m) {
  for (const char* name : kOps) m.impl(name, torch::CppFunction::makeFromBoxedFunction<&without_autocast>());
}

}  // namespace

TORCH_LIBRARY_IMPL(mor_ext, AutocastCPU, m) { register_all(m); }
TORCH_LIBRARY_IMPL(mor_ext, AutocastCUDA, m) { register_all(m); }

}  // namespace mor_ext
