// mor_ext ops under torch.autocast: they run in their inputs' dtypes, with autocast off inside.
//
// An op without an autocast kernel lets autocast through to the ATen calls inside its kernels, so
// under CPU autocast an internal at::mm would return bf16 where the kernel expects fp32 (and the
// results would depend on where the kernel happens to call ATen). MoRLinear casts its inputs to the
// autocast dtype itself; these kernels make every op, forward and backward, safe to call anywhere.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include "op_table.h"

namespace mor_ext {
namespace {

void without_autocast(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  op.callBoxed(stack);
}

// Every op with tensor arguments, and the test-only ones (testing_cpu_path_counts has none: its
// autocast kernel is never reached, and harmless).
#define MOR_EXT_NAME(name, schema) #name,
constexpr const char* kOps[] = {MOR_EXT_OPS(MOR_EXT_NAME) MOR_EXT_TESTING_OPS(MOR_EXT_NAME)};
#undef MOR_EXT_NAME

void register_all(torch::Library& m) {
  for (const char* name : kOps) m.impl(name, torch::CppFunction::makeFromBoxedFunction<&without_autocast>());
}

}  // namespace

TORCH_LIBRARY_IMPL(mor_ext, AutocastCPU, m) { register_all(m); }
TORCH_LIBRARY_IMPL(mor_ext, AutocastCUDA, m) { register_all(m); }

}  // namespace mor_ext
