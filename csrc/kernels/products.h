// Small r x r products P = U V^T with a long inner dimension (P[p, q] = sum_k U[p, k] V[q, k]):
// the cross products A_i A_j^T and the Gram matrices B_i^T B_i of the orthogonal loss.
//
// One CUDA block computes one product. The inner dimension streams through shared memory in tiles
// of kTile (several blocks per SM overlap one's loads with another's arithmetic). The block's
// threads form `groups` groups; each group covers the whole r x r output with one M x M register
// tile per thread and takes every groups-th 4-wide step of k, so that a thread does M*M FMAs for
// 2M 16-byte shared-memory reads (one output per thread needed two 4-byte reads per FMA, which made
// the first version shared-memory-bound). The groups' partial sums are added in group order at the
// end. The functions below are a thread's steps; the CPU build runs them in loops
// (orthogonal_products_cpu) so that the tests check them without a GPU.
#pragma once

#include <cstdint>

#include "routing.h"  // MOR_HD

namespace mor_ext::kernels {

constexpr int kTile = 128;     // inner-dimension elements per shared-memory tile
// Row stride of a tile in shared memory: threads read 4 consecutive k at once (16 bytes), and with
// a stride of kTile + 4 floats neighbouring rows start 4 banks apart, so the 8 threads of one
// 16-byte-load phase that read neighbouring rows of one group (see ProductShape) hit different
// banks. That holds exactly for ranks 1, 2, 4, 16 and 32; at other ranks a phase can span two
// groups, whose k steps differ by 4 floats (4 banks, like a row), so up to 2-way conflicts remain.
constexpr int kTileStride = kTile + 4;
constexpr int kMaxRank = 32;
constexpr int kProductThreads = 256;  // the block size aimed at (r = 16, 32: exactly this)

// One product: U is r x K with element (p, k) at u[p * u_row + k * u_col]; V likewise. Product i
// of a table goes to out[i*r*r .. (i+1)*r*r). Pointers are stored as integers so that a table of
// items can travel to the device as an int64 tensor of kItemFields columns.
struct ProductItem {
  int64_t u, v;
  int64_t u_row, u_col, v_row, v_col;
  int64_t inner;
};
constexpr int kItemFields = sizeof(ProductItem) / sizeof(int64_t);

// A Gram matrix (U == V): the block loads one tile and reads it as both operands.
MOR_HD bool same_operands(const ProductItem& item) {
  return item.u == item.v && item.u_row == item.v_row && item.u_col == item.v_col;
}

// How a block's threads share one r x r product. Thread t is in group t / per_group; within the
// group it owns rows p = pi + side * i and columns q = qi + side * j (i, j < m) of the output, with
// (pi, qi) = (s / side, s % side), s = t % per_group: interleaved, so that the threads of a
// 16-byte-load phase read neighbouring rows of a tile.
struct ProductShape {
  int r = 0, m = 1, side = 0, per_group = 0, groups = 0, threads = 0;
};

MOR_HD constexpr ProductShape product_shape(int r) {
  ProductShape s;
  s.r = r;
  s.m = r % 4 == 0 ? 4 : (r % 2 == 0 ? 2 : 1);
  s.side = r / s.m;
  s.per_group = s.side * s.side;
  const int fit = kProductThreads / s.per_group;  // groups beyond kTile / 4 would have no k step
  s.groups = fit < 1 ? 1 : (fit > kTile / 4 ? kTile / 4 : fit);
  s.threads = s.groups * s.per_group;
  return s;
}

constexpr bool every_rank_fits() {
  for (int r = 1; r <= kMaxRank; ++r) {
    const ProductShape s = product_shape(r);
    if (s.threads > 1024 || s.groups * r * r > 2 * kMaxRank * kTileStride) return false;
  }
  return true;
}
static_assert(every_rank_fits(), "a rank <= kMaxRank needs more threads or shared memory than a block has");

// Slot `idx` in [0, r * kTile) of a tile: row p and inner offset k. The index along which the
// operand is contiguous in memory goes fastest, so that neighbouring threads read neighbouring
// addresses: k for A (col stride 1), p for B^T (element (p, k) = B[k, p]).
MOR_HD void tile_slot(int idx, int r, bool k_fastest, int* p, int* k) {
  if (k_fastest) {
    *p = idx / kTile;
    *k = idx % kTile;
  } else {
    *k = idx / r;
    *p = idx % r;
  }
}

// Element (p, k) of a tile of an operand whose element (p, k0) is at `tile` (row and column strides
// in elements; 32-bit offsets: a tile spans at most r rows of a layer's matrix), in fp32; 0 past
// the inner dimension (`left` = inner - k0 elements remain: the last tile is partial).
template <typename T>
MOR_HD float load_operand(const T* tile, int row, int col, int64_t left, int p, int k) {
  return k < left ? static_cast<float>(tile[p * row + k * col]) : 0.0f;
}

// Where tile element (p, k) lives in shared memory.
MOR_HD int tile_offset(int p, int k) { return p * kTileStride + k; }

// Four floats read as one 16-byte load (LDS.128 on a GPU).
struct alignas(16) Float4 {
  float x, y, z, w;
};
static_assert(kTileStride % 4 == 0, "tile rows must start on 16 bytes");

// One 4-wide step k4 of a tile for thread (pi, qi): acc[i][j] += sum over the 4 k of
// tile_u[pi + side*i][k] * tile_v[qi + side*j][k] (tiles 16-byte aligned).
template <int M>
MOR_HD void accumulate_step(const float* tile_u, const float* tile_v, int side, int pi, int qi, int k4,
                            float (&acc)[M][M]) {
  Float4 u[M], v[M];
#pragma unroll
  for (int i = 0; i < M; ++i) u[i] = reinterpret_cast<const Float4*>(tile_u + tile_offset(pi + side * i, 0))[k4];
#pragma unroll
  for (int j = 0; j < M; ++j) v[j] = reinterpret_cast<const Float4*>(tile_v + tile_offset(qi + side * j, 0))[k4];
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < M; ++j) {
      acc[i][j] += u[i].x * v[j].x;
      acc[i][j] += u[i].y * v[j].y;
      acc[i][j] += u[i].z * v[j].z;
      acc[i][j] += u[i].w * v[j].w;
    }
}

// Where group g's partial sum of output (p, q) goes in shared memory for the final reduction
// (at most kProductThreads * 16 floats: it reuses the tiles' memory).
MOR_HD int partial_offset(int r, int g, int p, int q) { return (g * r + p) * r + q; }

// fn.template operator()<M>() for the shape's micro-tile side.
template <typename Fn>
void with_micro_tile(const ProductShape& shape, Fn&& fn) {
  switch (shape.m) {
    case 4: return fn.template operator()<4>();
    case 2: return fn.template operator()<2>();
    default: return fn.template operator()<1>();
  }
}

}  // namespace mor_ext::kernels
