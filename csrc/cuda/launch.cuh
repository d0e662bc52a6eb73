// Launch constants shared by the CUDA kernels.
#pragma once

#include <cstdint>

namespace mor_ext::cuda {

// The largest gridDim.y a launch may have: kernels whose grid's y runs over tokens (or items) take
// at most this many blocks there and stride over the rest.
constexpr int64_t kMaxGridY = 65535;

}  // namespace mor_ext::cuda
