// Argument checks for op authors, with the messages users expect:
//   "linalg.mv: argument 'x': expected a 1-D tensor, got float64[3, 4]"
// Each throws the error type a caller catches for that kind of mistake
// (ShapeError, DTypeError, IndexError, ValueError), naming the op, the argument
// or attribute, what was expected and what came.
#pragma once

#include <cstdint>
#include <string>

#include "opforge/dtype.hpp"
#include "opforge/error.hpp"
#include "opforge/function.hpp"
#include "opforge/tensor.hpp"
#include "opforge/sdk/cpu.hpp"

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

namespace detail {
// Whether any of p[0, count) lies outside [lo, lo + span): one unsigned compare a
// lane (p - lo wraps for p < lo), vectorised in the AVX2 and AVX-512 copies.
struct AnyIndexOutside {
  OPFORGE_KERNEL_BODY static bool run(const std::int64_t* p, std::int64_t count, std::int64_t lo,
                                      std::uint64_t span) {
    std::uint64_t bad = 0;  // a plain loop: GCC vectorises this reduction at -O2 (no OpenMP pragma in
                            // a public header: a plugin built without -fopenmp-simd would warn)
    for (std::int64_t i = 0; i < count; ++i)
      bad |= static_cast<std::uint64_t>(static_cast<std::uint64_t>(p[i]) - static_cast<std::uint64_t>(lo) >= span);
    return bad != 0;
  }
};
}  // namespace detail

/// Every element of `index` (int64, any layout) indexes one of `n` positions:
/// lies in [-n, n) (negative counting from the end, as in NumPy), or in [0, n)
/// without `allow_negative`. Else DTypeError (not int64) or IndexError naming the
/// first element out of range and where it sits:
///   "shape.gather: argument 'index': index 7 at position [1, 0] is out of range
///    for axis 1 of size 4 (expected an index in [-4, 4))"
/// `what` says what is indexed ("axis 1", "the rows of 'weight'"). The scan runs
/// at the CPU's vector width (4M indices: a few ms in a scalar loop).
inline void check_indices(const Context& ctx, const Tensor& index, const char* arg, std::int64_t n,
                          const std::string& what, bool allow_negative = true) {
  expect_dtype(ctx, index, arg, DType::Int64, "indices");
  const Tensor d = index.contiguous();
  const std::int64_t* p = d.data<std::int64_t>();
  const std::int64_t count = d.numel();
  const std::int64_t lo = allow_negative ? -n : 0;
  const std::uint64_t span = (allow_negative ? 2 : 1) * static_cast<std::uint64_t>(n);
  if (!run_vectorized<detail::AnyIndexOutside>(p, count, lo, span)) return;
  std::int64_t i = 0;
  while (p[i] >= lo && p[i] < n) ++i;
  Dims pos;  // element i's position in `index`
  pos.resize(d.shape().size());
  std::int64_t rem = i;
  for (std::size_t k = d.shape().size(); k-- > 0;) {
    pos[k] = rem % d.shape()[k];
    rem /= d.shape()[k];
  }
  // Nothing to index: say so, rather than "expected an index in [0, 0)".
  const std::string expected =
      n == 0 ? what + " is empty, so no index is valid: give an empty '" + arg + "'"
             : ::opforge::detail::concat("expected an index in [", lo, ", ", n, ")");
  throw IndexError(::opforge::detail::concat(ctx.op_name(), ": argument '", arg, "': index ", p[i], " at position ",
                                             pos, " is out of range for ", what, " of size ", n, " (", expected,
                                             ")"));
}

inline void expect_contiguous(const Context& ctx, const Tensor& t, const char* arg) {
  OPFORGE_CHECK(t.is_contiguous(), ValueError, ctx.op_name(), ": argument '", arg,
                "': expected a contiguous tensor, got a strided view of shape ", t.shape());
}

}  // namespace opforge::sdk
