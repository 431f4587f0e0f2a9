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

}  // namespace opforge
