// Helpers shared by the shape family's sources: argument checks with the
// family's messages, shapes saved on the Context, and the data-movement kernels
// (strided copy, gather, scatter-add) the ops are built from.
//
// Every kernel moves bits: an element is copied as an unsigned integer of its
// size (1, 4 or 8 bytes), so one instantiation serves float32/float64/int64/bool
// and the copy loops vectorise.
#pragma once

#include <cstdint>
#include <string>

#include <opforge/sdk.hpp>

namespace opforge_shape {

using opforge::Context;
using opforge::Dims;
using opforge::DType;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// ---- argument checks ------------------------------------------------------------------

/// `axis` of a tensor of rank `rank` (negative counts from the end), or IndexError
/// (the SDK's check).
using sdk::normalize_axis;

/// "float64[3, 4]"-style description of a shape alone: "[3, 4]".
inline std::string shape_str(const Dims& d) { return d.to_string(); }

// ---- data movement -------------------------------------------------------------------------

/// Copies src into dst element by element (same shape and dtype; any strides, dst
/// may be a view such as a slice of a larger tensor). Parallel over oneTBB for
/// large tensors; contiguous runs copy with a vectorised loop.
void copy_into(const Tensor& dst, const Tensor& src);

/// `t` itself when contiguous, else a contiguous copy (parallel, unlike the core's).
Tensor dense(const Tensor& t);

/// Output of a gather along `axis`: out[m] = x[m with m[axis] := index[m]], for
/// every multi-index m of `out_shape`. `x` and `index` are views of rank r whose
/// shapes equal out_shape on every axis but `axis` (x) or on all axes (index);
/// stride-0 (broadcast) axes are fine. Negative indices count from the end of
/// x's axis; they must already be validated. Returns a new contiguous tensor.
Tensor gather_strided(const Tensor& x, const Tensor& index, std::int64_t axis, const Dims& out_shape);

/// The adjoint of a gather whose index depends only on (outer, j, inner) through
/// the given strides: returns gx of `x_shape` (float32/float64, zero-filled) with
///   gx[o, idx(o, j, i), i] += g[o, j, i]
/// where the shapes are collapsed to [outer, n, inner] (x) and [outer, k, inner]
/// (g, contiguous) around `axis`, and idx(o, j, i) = index[o*so + j*sj + i*si].
/// Accumulates in j order for each target element: deterministic for any thread count.
Tensor scatter_add(const Context& ctx, const Tensor& g, const std::int64_t* index, std::int64_t so, std::int64_t sj, std::int64_t si,
                   const Dims& x_shape, std::int64_t axis);

/// Checks every element of `index` (int64, any strides) is in [-n, n); else IndexError
/// "<op>: argument 'index': element 3 (at [1, 0]) is 7, out of range for axis 1 of size 4 (expected an index in [-4, 4))".
void check_indices(const Context& ctx, const Tensor& index, std::int64_t axis, std::int64_t n);

/// Checks that an int64 input named `arg` at position `pos` is int64.
void expect_int64(const Context& ctx, const Tensor& t, const char* arg, std::size_t pos);

// ---- registration ----------------------------------------------------------------------------

void register_view_ops(opforge::PluginRegistrar& registrar);
void register_join_ops(opforge::PluginRegistrar& registrar);
void register_index_ops(opforge::PluginRegistrar& registrar);

}  // namespace opforge_shape
