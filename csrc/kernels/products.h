// Small r x r products P = U V^T with a long inner dimension (P[p, q] = sum_k U[p, k] V[q, k]):
// the cross products A_i A_j^T and the Gram matrices B_i^T B_i of the orthogonal loss.
//
// One CUDA block computes one product: r*r threads, one output each, stream the inner dimension
// through shared memory in tiles of kTile. The tile loading (index math) and the per-thread
// accumulation are the functions below, which the CPU build runs in loops (orthogonal_products_cpu)
// so that the tests check them without a GPU.
#pragma once

#include <cstdint>

#include "routing.h"  // MOR_HD

namespace mor_ext::kernels {

constexpr int kTile = 128;     // inner-dimension elements per shared-memory tile
// Row stride of a tile in shared memory: threads read 4 consecutive k at once (16 bytes), and a
// stride of kTile + 4 floats puts the 8 rows such a read touches per 128-byte wavefront in 8
// different groups of 4 banks (a stride of kTile would put every row in the same banks).
constexpr int kTileStride = kTile + 4;
constexpr int kMaxRank = 32;   // r*r <= 1024 threads per block

// One product: U is r x K with element (p, k) at u[p * u_row + k * u_col]; V likewise. Product i
// of a table goes to out[i*r*r .. (i+1)*r*r). Pointers are stored as integers so that a table of
// items can travel to the device as an int64 tensor of kItemFields columns.
struct ProductItem {
  int64_t u, v;
  int64_t u_row, u_col, v_row, v_col;
  int64_t inner;
};
constexpr int kItemFields = sizeof(ProductItem) / sizeof(int64_t);

// Tile slot `idx` in [0, r * kTile) of a tile that starts at inner index k0: row p, inner index k,
// and whether it lies inside the matrix (the last tile is partial; padding is 0).
MOR_HD void tile_slot(int idx, int64_t k0, int64_t inner, int* p, int* k, bool* inside) {
  *p = idx / kTile;
  *k = idx % kTile;
  *inside = k0 + *k < inner;
}

template <typename T>
MOR_HD float load_u(const ProductItem& item, int p, int64_t k) {
  return static_cast<float>(reinterpret_cast<const T*>(item.u)[p * item.u_row + k * item.u_col]);
}

template <typename T>
MOR_HD float load_v(const ProductItem& item, int q, int64_t k) {
  return static_cast<float>(reinterpret_cast<const T*>(item.v)[q * item.v_row + k * item.v_col]);
}

// Where tile element (p, k) lives in shared memory.
MOR_HD int tile_offset(int p, int k) { return p * kTileStride + k; }

// Four floats read as one 16-byte load (LDS.128 on a GPU: a quarter of the shared-memory reads).
struct alignas(16) Float4 {
  float x, y, z, w;
};
static_assert(kTileStride % 4 == 0, "tile rows must start on 16 bytes");

// Thread (p, q) accumulates one tile: acc += sum_k tile_u[p][k] * tile_v[q][k], k in order, four
// at a time (tiles must be 16-byte aligned).
MOR_HD float accumulate_tile(const float* tile_u, const float* tile_v, int p, int q, float acc) {
  const Float4* u = reinterpret_cast<const Float4*>(tile_u + tile_offset(p, 0));
  const Float4* v = reinterpret_cast<const Float4*>(tile_v + tile_offset(q, 0));
  for (int k4 = 0; k4 < kTile / 4; ++k4) {
    const Float4 a = u[k4], b = v[k4];
    acc += a.x * b.x;
    acc += a.y * b.y;
    acc += a.z * b.z;
    acc += a.w * b.w;
  }
  return acc;
}

}  // namespace mor_ext::kernels
