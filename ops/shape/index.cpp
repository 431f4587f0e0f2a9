// shape: picking elements by integer index (x of any dtype, index int64).
// Indices may be negative (counted from the end, as in NumPy); one outside
// [-n, n) is an IndexError naming the index, its position and the axis size.
//
//   index_select(x, index; axis)   index 1-D of length k
//       y[o, j, i] = x[o, index[j], i]                 (o: axes before `axis`, i: after)
//       dx[o, v, i] = sum_{j : index[j] = v} g[o, j, i]   (scatter-add; index gets none)
//   gather(x, index; axis)         index of x's rank (NumPy take_along_axis: on every
//       axis but `axis`, x and index broadcast; y has index's size along `axis`)
//       y[m] = x[m with m[axis] := index[m]]
//       dx = sum_to(scatter-add of g into x's broadcast shape, shape(x))
//
// Forward reads x through its strides (broadcast axes are stride-0 views), so no
// input is copied; backward accumulates each target element in index order, so
// the gradient is the same bits for any thread count.
#include <vector>

#include "common.hpp"

namespace opforge_shape {

namespace {

class IndexSelect final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const Tensor& index = in[1];
    expect_int64(ctx, index, "index", 1);
    sdk::expect_rank(ctx, index, "index", 1);
    const std::int64_t axis = normalize_axis(ctx, "axis", ctx.attr_int(0), x.dim(), x.shape());
    const auto a = static_cast<std::size_t>(axis);
    check_indices(ctx, index, axis, x.shape()[a]);
    Dims out_shape = x.shape();
    out_shape[a] = index.shape()[0];
    // index as a view of y's shape: its values along `axis`, stride 0 elsewhere.
    Dims column;
    column.resize(out_shape.size(), 1);
    column[a] = out_shape[a];
    const Tensor index_b = index.reshape(column).expand(out_shape);
    if (ctx.needs_input_grad(0)) ctx.save_for_backward(index);
    return {gather_strided(x, index_b, axis, out_shape)};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor index = dense(ctx.saved_tensors()[0]);
    const Dims& x_shape = ctx.input_shape(0);
    const std::int64_t axis = ctx.attr_int(0);
    const std::int64_t a = axis < 0 ? axis + static_cast<std::int64_t>(x_shape.size()) : axis;
    // index(o, j, i) = index[j]: strides 0, 1, 0.   [.., k, ..] -> [.., n, ..]
    return {scatter_add(ctx, g[0], index.data<std::int64_t>(), 0, 1, 0, x_shape, a), Tensor()};
  }
};

// x's and index's shapes broadcast on every axis but `axis`: the output's shape.
Dims gather_shape(const Context& ctx, const Tensor& x, const Tensor& index, std::size_t axis) {
  Dims out = index.shape();
  for (std::size_t k = 0; k < out.size(); ++k) {
    if (k == axis) continue;
    const std::int64_t xs = x.shape()[k], is = index.shape()[k];
    OPFORGE_CHECK(xs == is || xs == 1 || is == 1, opforge::ShapeError, ctx.op_name(), ": argument 'x' of shape ",
                  x.shape(), " and argument 'index' of shape ", index.shape(), " do not broadcast: axis ", k,
                  " has sizes ", xs, " and ", is, " (on every axis but axis ", axis,
                  ", sizes must be equal or one of them 1)");
    out[k] = xs == 1 ? is : xs;
  }
  return out;
}

class Gather final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const Tensor& index = in[1];
    expect_int64(ctx, index, "index", 1);
    OPFORGE_CHECK(index.dim() == x.dim(), opforge::ShapeError, ctx.op_name(), ": argument 'index': expected a ",
                  x.dim(), "-D tensor (the rank of 'x'), got ", index.describe());
    const std::int64_t axis = normalize_axis(ctx, "axis", ctx.attr_int(0), x.dim(), x.shape());
    const auto a = static_cast<std::size_t>(axis);
    const Dims out_shape = gather_shape(ctx, x, index, a);
    check_indices(ctx, index, axis, x.shape()[a]);
    Dims x_shape_b = out_shape;  // x broadcast on every axis but `axis`
    x_shape_b[a] = x.shape()[a];
    if (ctx.needs_input_grad(0)) ctx.save_for_backward(index);
    return {gather_strided(x.expand(x_shape_b), index.expand(out_shape), axis, out_shape)};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor& index = ctx.saved_tensors()[0];
    const Dims& x_shape = ctx.input_shape(0);
    const Dims& out_shape = g[0].shape();
    const std::int64_t axis = ctx.attr_int(0);
    const auto a = static_cast<std::size_t>(axis < 0 ? axis + static_cast<std::int64_t>(x_shape.size()) : axis);
    Dims x_shape_b = out_shape;
    x_shape_b[a] = x_shape[a];
    // index over y's shape, contiguous: [outer, k, inner] with strides k*inner, inner, 1.
    const Tensor index_b = dense(index.expand(out_shape));
    std::int64_t inner = 1;
    for (std::size_t k = a + 1; k < out_shape.size(); ++k) inner *= out_shape[k];
    const std::int64_t k_len = out_shape[a];
    const Tensor gx_b = scatter_add(ctx, g[0], index_b.data<std::int64_t>(), k_len * inner, inner, 1, x_shape_b,
                                    static_cast<std::int64_t>(a));  // [y] -> [x broadcast]
    return {dense(opforge::sum_to(gx_b, x_shape)), Tensor()};    // -> [x]
  }
};

// x [4, 5]; index [4] with a repeated and a negative entry, so the scatter-add
// accumulates (3 twice, and -1 is 3 again) and wraps.
TensorList index_select_samples(DType dtype, std::uint64_t seed) {
  return {Tensor::randn({4, 5}, dtype, seed), Tensor::from_values({3, 0, 3, -1}, {4}, DType::Int64)};
}

// x [4, 5]; index [3, 5] along axis 0 (entries in [-4, 4), repeats within columns),
// from a small generator seeded by `seed`.
TensorList gather_samples(DType dtype, std::uint64_t seed) {
  std::vector<double> v(15);
  std::uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (double& e : v) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    e = static_cast<double>(static_cast<std::int64_t>((s >> 33) % 8) - 4);
  }
  return {Tensor::randn({4, 5}, dtype, seed), Tensor::from_values(v, {3, 5}, DType::Int64)};
}

}  // namespace

void register_index_ops(opforge::PluginRegistrar& registrar) {
  using opforge::AttrKind;
  using opforge::DTypeSet;
  using opforge::OpSchema;
  registrar.add<IndexSelect>(OpSchema("shape.index_select")
                                 .input_names({"x", "index"})
                                 .accepts(DTypeSet::all())
                                 .mixed_dtypes()
                                 .takes_strided_inputs()
                                 .attr("axis", AttrKind::Int, opforge::Attr(0), "axis the indices pick along")
                                 .describe("the slices of x at the int64 indices of a 1-D index, along one axis")
                                 .samples(index_select_samples));
  registrar.add<Gather>(OpSchema("shape.gather")
                            .input_names({"x", "index"})
                            .accepts(DTypeSet::all())
                            .mixed_dtypes()
                            .takes_strided_inputs()
                            .attr("axis", AttrKind::Int, opforge::Attr(0), "axis the indices pick along")
                            .describe("x picked along one axis by an int64 index of x's rank (NumPy take_along_axis)")
                            .samples(gather_samples));
}

}  // namespace opforge_shape
