// NumPy broadcasting: the shape two operands broadcast to, and the reduction
// of a broadcast gradient back to an operand's shape.
#pragma once

#include "opforge/dims.hpp"
#include "opforge/export.hpp"
#include "opforge/tensor.hpp"

namespace opforge {

/// The NumPy broadcast of two shapes: aligned from the last axis, sizes must be
/// equal or one of them 1. Throws ShapeError naming `op` and the first axis
/// that does not broadcast.
OPFORGE_API Dims broadcast_shapes(const Dims& a, const Dims& b, const char* op = "broadcast_shapes",
                                  const char* name_a = "a", const char* name_b = "b");

/// Sums `grad` (the gradient of a broadcast result) over the axes that
/// broadcasting added or stretched, so that it has `shape` (the operand's).
/// Returns grad itself when the shapes already match. float32 and float64
/// (both summed in float64, so a float32 sum keeps counting past 2^24).
OPFORGE_API Tensor sum_to(const Tensor& grad, const Dims& shape);

/// A walk over `shape` through two tensors' strides, with size-1 axes dropped and
/// neighbouring axes merged where both step through them as one, so that the
/// innermost run is as long as it can be (a [n, 1] column with a scalar is one
/// run of n, not n runs of one). rank 0: a single element.
struct MergedAxes {
  std::size_t rank = 0;
  std::int64_t size[kMaxDims] = {}, a[kMaxDims] = {}, b[kMaxDims] = {};
};
inline MergedAxes merge_axes(const Dims& shape, const Dims& strides_a, const Dims& strides_b) {
  MergedAxes m;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    const std::int64_t n = shape[k], sa = strides_a[k], sb = strides_b[k];
    if (n == 1) continue;
    const std::size_t r = m.rank;
    if (r > 0 && m.a[r - 1] == sa * n && m.b[r - 1] == sb * n) {
      m.size[r - 1] *= n;
      m.a[r - 1] = sa;
      m.b[r - 1] = sb;
      continue;
    }
    m.size[r] = n;
    m.a[r] = sa;
    m.b[r] = sb;
    ++m.rank;
  }
  return m;
}

}  // namespace opforge
