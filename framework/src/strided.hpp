// Walking the elements of a strided tensor in row-major order. Internal to the core.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "opforge/broadcast.hpp"
#include "opforge/dims.hpp"

namespace opforge {

struct TensorImpl;

/// Calls f(offset) for each index of the first `r` axes (sizes sh, strides st,
/// none of size 0), in row-major order; offset = sum of index * stride. r may be
/// 0 (one call, offset 0).
template <class F>
void for_each_outer(int r, const std::int64_t* sh, const std::int64_t* st, F&& f) {
  std::int64_t idx[kMaxDims] = {};
  std::int64_t base = 0;
  while (true) {
    f(base);
    // Advance the index (odometer), updating the base offset.
    int k = r;
    while (k-- > 0) {
      ++idx[k];
      base += st[k];
      if (idx[k] < sh[k]) break;
      base -= idx[k] * st[k];
      idx[k] = 0;
    }
    if (k < 0) return;
  }
}

/// Calls f(offset) for every element, in row-major order of `shape`, where
/// offset is in elements from the tensor's first element.
template <class F>
void for_each_offset(const Dims& shape, const Dims& strides, F&& f) {
  const std::size_t r = shape.size();
  if (r == 0) {
    f(std::int64_t{0});
    return;
  }
  for (std::int64_t s : shape)
    if (s == 0) return;
  const std::int64_t inner = shape[r - 1], inner_stride = strides[r - 1];
  for_each_outer(static_cast<int>(r - 1), shape.data(), strides.data(), [&](std::int64_t base) {
    for (std::int64_t j = 0; j < inner; ++j) f(base + j * inner_stride);
  });
}

/// The axes of `shape` longer than 1, in the memory order of `strides`: by |stride|,
/// largest first, ties in axis order (an insertion sort of at most kMaxDims axes:
/// std::stable_sort asks the heap for a buffer on every call). Writes them to
/// order[] and returns their count; -1 when an axis is empty.
inline int memory_order(const Dims& shape, const Dims& strides, int* order) noexcept {
  int r = 0;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] == 0) return -1;
    if (shape[k] == 1) continue;
    const std::int64_t s = std::abs(strides[k]);
    int j = r++;
    for (; j > 0 && std::abs(strides[static_cast<std::size_t>(order[j - 1])]) < s; --j) order[j] = order[j - 1];
    order[j] = static_cast<int>(k);
  }
  return r;
}

/// Calls f(a, b, n, step_a, step_b) for each innermost run of `walk` (merge_axes,
/// no axis of size 0), its outer axes in row-major order: a and b the run's first
/// offsets through the two strides, n its length, step_a and step_b the steps
/// within it. Rank 0: one run of one element.
template <class F>
void for_each_run(const MergedAxes& walk, F&& f) {
  const int m = static_cast<int>(walk.rank);
  if (m == 0) {
    f(std::int64_t{0}, std::int64_t{0}, std::int64_t{1}, std::int64_t{1}, std::int64_t{1});
    return;
  }
  // Odometer over the outer m - 1 axes, both offsets at once.
  std::int64_t idx[kMaxDims] = {};
  std::int64_t oa = 0, ob = 0;
  while (true) {
    f(oa, ob, walk.size[m - 1], walk.a[m - 1], walk.b[m - 1]);
    int k = m - 1;
    while (k-- > 0) {
      ++idx[k];
      oa += walk.a[k];
      ob += walk.b[k];
      if (idx[k] < walk.size[k]) break;
      oa -= idx[k] * walk.a[k];
      ob -= idx[k] * walk.b[k];
      idx[k] = 0;
    }
    if (k < 0) return;
  }
}

/// for_each_run over every element of `shape` through strides sa and sb, in the
/// memory order of sa (memory_order, then merge_axes). For in-place writes into a
/// view (a.fill_, a.add_(b)) whose logical row-major order would stride through
/// memory (a transpose: a cache miss an element); the order of the runs is not
/// row-major, so f must not depend on it.
template <class F>
void for_each_run_by_memory(const Dims& shape, const Dims& sa, const Dims& sb, F&& f) {
  int order[kMaxDims];
  const int r = memory_order(shape, sa, order);
  if (r < 0) return;
  Dims ps, pa, pb;  // the axes in that order
  for (int i = 0; i < r; ++i) {
    const auto k = static_cast<std::size_t>(order[i]);
    ps.push_back(shape[k]);
    pa.push_back(sa[k]);
    pb.push_back(sb[k]);
  }
  for_each_run(merge_axes(ps, pa, pb), f);
}

/// True when the layout is row-major dense (size-1 axes may have any stride).
bool compute_contiguous(const Dims& shape, const Dims& strides);

/// dst[i] = src[i] for every element (same shape; any strides; dtypes may differ).
void copy_elements(TensorImpl& dst, const TensorImpl& src);

}  // namespace opforge
