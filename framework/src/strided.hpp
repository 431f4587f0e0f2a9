// Walking the elements of a strided tensor in row-major order. Internal to the core.
#pragma once

#include <cstdint>

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

/// True when the layout is row-major dense (size-1 axes may have any stride).
bool compute_contiguous(const Dims& shape, const Dims& strides);

/// dst[i] = src[i] for every element (same shape; any strides; dtypes may differ).
void copy_elements(TensorImpl& dst, const TensorImpl& src);

}  // namespace opforge
