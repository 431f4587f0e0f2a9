// Argument checks for op authors, with the messages users expect:
//   "linalg.mv: argument 'x': expected a 1-D tensor, got float64[3, 4]"
// Each throws the error type a caller catches for that kind of mistake
// (ShapeError, DTypeError, IndexError, ValueError), naming the op, the argument
// or attribute, what was expected and what came.
#pragma once

#include <cstdint>

#include "opforge/dtype.hpp"
#include "opforge/error.hpp"
#include "opforge/function.hpp"
#include "opforge/tensor.hpp"

namespace opforge::sdk {

inline void expect_rank(const Context& ctx, const Tensor& t, const char* arg, std::int64_t rank) {
  OPFORGE_CHECK(t.dim() == rank, ShapeError, ctx.op_name(), ": argument '", arg, "': expected a ", rank,
                "-D tensor, got ", t.describe());
}

inline void expect_shape(const Context& ctx, const Tensor& t, const char* arg, const Dims& shape,
                         const char* because = nullptr) {
  OPFORGE_CHECK(t.shape() == shape, ShapeError, ctx.op_name(), ": argument '", arg, "': expected shape ", shape,
                because ? " (" : "", because ? because : "", because ? ")" : "", ", got ", t.shape());
}

/// `t` has dtype `dtype`, else DTypeError:
///   "loss.cross_entropy: argument 'target': expected dtype int64 (class indices), got float32".
inline void expect_dtype(const Context& ctx, const Tensor& t, const char* arg, DType dtype,
                         const char* because = nullptr) {
  OPFORGE_CHECK(t.dtype() == dtype, DTypeError, ctx.op_name(), ": argument '", arg, "': expected dtype ",
                dtype_name(dtype), because ? " (" : "", because ? because : "", because ? ")" : "", ", got ",
                dtype_name(t.dtype()));
}

/// `axis` (negative counts from the end) as an index in [0, rank), else IndexError:
///   "shape.concat: attribute 'axis': expected an axis in [-2, 2) for a tensor of shape [3, 4], got 2".
/// `attr` names the attribute (or argument) the axis came from; `rank` is usually
/// shape.size(), one more for an op that inserts an axis (unsqueeze, stack), and
/// 1 for a 0-D tensor that takes axis 0 or -1 as its one element (softmax).
inline std::int64_t normalize_axis(const Context& ctx, const char* attr, std::int64_t axis, std::int64_t rank,
                                   const Dims& shape) {
  OPFORGE_CHECK(axis >= -rank && axis < rank, IndexError, ctx.op_name(), ": attribute '", attr,
                "': expected an axis in [", -rank, ", ", rank, ") for a tensor of shape ", shape, ", got ", axis);
  return axis < 0 ? axis + rank : axis;
}

inline void expect_contiguous(const Context& ctx, const Tensor& t, const char* arg) {
  OPFORGE_CHECK(t.is_contiguous(), ValueError, ctx.op_name(), ": argument '", arg,
                "': expected a contiguous tensor, got a strided view of shape ", t.shape());
}

}  // namespace opforge::sdk
