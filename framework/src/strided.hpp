// Walking the elements of a strided tensor in row-major order. Internal to the core.
#pragma once

#include <cstdint>

#include "opforge/dims.hpp"

namespace opforge {

struct TensorImpl;

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
  std::int64_t idx[kMaxDims] = {};
  const std::int64_t inner = shape[r - 1], inner_stride = strides[r - 1];
  std::int64_t base = 0;
  while (true) {
    for (std::int64_t j = 0; j < inner; ++j) f(base + j * inner_stride);
    // Advance the outer index (odometer), updating the base offset.
    std::size_t k = r - 1;
    while (k-- > 0) {
      ++idx[k];
      base += strides[k];
      if (idx[k] < shape[k]) break;
      base -= idx[k] * strides[k];
      idx[k] = 0;
    }
    if (k == static_cast<std::size_t>(-1)) return;
  }
}

/// True when the layout is row-major dense (size-1 axes may have any stride).
bool compute_contiguous(const Dims& shape, const Dims& strides);

/// dst[i] = src[i] for every element (same shape; any strides; dtypes may differ).
void copy_elements(TensorImpl& dst, const TensorImpl& src);

}  // namespace opforge
