// Defines every op of csrc/op_table.h. Device kernels register themselves beside their code
// (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu, csrc/aten/ for device-generic ATen ones); the autograd
// of every differentiable op is in csrc/autograd.cpp, every fake kernel in
// python/mor_ext/ops/; autocast in csrc/autocast.cpp. See csrc/README.md.
#include <Python.h>
#include <torch/library.h>

#include "cpu/gemm_avx512.h"
#include "cpu/path_counts.h"
#include "op_table.h"

// Importing mor_ext._C only has to load this library, whose static initialisers register the ops;
// no Python bindings are needed (the pattern of pytorch/extension-cpp).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "mor_ext compiled ops (see torch.ops.mor_ext)", -1,
                                      nullptr};
  return PyModule_Create(&module);
}

#define MOR_EXT_DEFINE(name, schema) m.def(#name schema);

TORCH_LIBRARY(mor_ext, m) {
  MOR_EXT_OPS(MOR_EXT_DEFINE)
  MOR_EXT_INFO_OPS(MOR_EXT_DEFINE)
  MOR_EXT_TESTING_OPS(MOR_EXT_DEFINE)
  // The ops without tensor arguments: one kernel for every dispatch key.
  m.impl("cpu_avx512", &mor_ext::cpu::avx512::available);
  m.impl("testing_cpu_path_counts", &mor_ext::cpu::path_counts);
}
