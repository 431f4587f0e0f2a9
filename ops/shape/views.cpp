// shape: the ops whose forward is a zero-copy view of the input (the core gives
// the output its own TensorImpl over the input's storage). They take strided
// inputs as they are. Backward returns contiguous gradients.
//
//   reshape(x; shape)       y = x with sizes `shape` (one -1 inferred); a view when
//                           the strides allow, else a copy.        dx = reshape(g, shape(x))
//   transpose(x; a0, a1)    y = x with axes a0, a1 swapped          dx = transpose(g, a0, a1)
//   permute(x; order)       y axis i = x axis order[i] ([] reverses) dx = permute(g, order^-1)
//   slice(x; axis, start, stop, step)
//                           y = x[..., start:stop:step, ...] (Python clamping, step >= 1)
//                           dx = zeros(shape(x)) with dx[..., start:stop:step, ...] = g
//   expand(x; shape)        y = x broadcast to `shape` (stride 0; -1 keeps an axis)
//                           dx = sum_to(g, shape(x))   (sums the broadcast axes)
//   squeeze(x; axes)        y = x without the size-1 `axes` ([] = all size-1 axes)
//                           dx = reshape(g, shape(x))
//   unsqueeze(x; axis)      y = x with a size-1 axis inserted at `axis` (of y)
//                           dx = reshape(g, shape(x))
//
// Every one moves data only: float32, float64, int64 and bool; gradients for the
// floating dtypes.
#include <algorithm>
#include <limits>

#include "common.hpp"

namespace opforge_shape {

namespace {

// " element" or " elements", after a count in a message.
const char* elements(std::int64_t n) { return n == 1 ? " element" : " elements"; }

// PyTorch's rule (the core's, for Tensor::view): a reshape is a view when each
// run of input axes that is contiguous in memory maps onto a run of output axes
// with the same number of elements.
bool can_view(const Dims& old_shape, const Dims& old_strides, const Dims& new_shape) {
  if (old_shape.empty() || old_shape.product() == 0) return true;
  std::int64_t view_d = static_cast<std::int64_t>(new_shape.size()) - 1;
  std::int64_t chunk_base_stride = old_strides.back();
  std::int64_t tensor_numel = 1, view_numel = 1;
  for (std::int64_t d = static_cast<std::int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    const auto k = static_cast<std::size_t>(d);
    tensor_numel *= old_shape[k];
    if (d == 0 || (old_shape[k - 1] != 1 && old_strides[k - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[static_cast<std::size_t>(view_d)] == 1)) {
        view_numel *= new_shape[static_cast<std::size_t>(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = old_strides[k - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

// x with `shape` (same element count): a view when the strides allow one, else a
// view of a contiguous copy.
Tensor reshaped(const Tensor& x, const Dims& shape) {
  if (can_view(x.shape(), x.strides(), shape)) return x.view(shape);
  return dense(x).view(shape);
}

// A backward's gradient reshaped to the input's shape, contiguous.
Tensor grad_reshaped(const Tensor& g, const Dims& shape) { return dense(g).view(shape); }

class Reshape final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const Dims& want = ctx.attr_ints(0);
    Dims target = want;
    std::int64_t known = 1;
    int infer = -1;
    for (std::size_t i = 0; i < want.size(); ++i) {
      if (want[i] == -1) {
        OPFORGE_CHECK(infer < 0, opforge::ShapeError, ctx.op_name(),
                      ": attribute 'shape': only one entry may be -1, got ", want);
        infer = static_cast<int>(i);
        continue;
      }
      OPFORGE_CHECK(want[i] >= 0, opforge::ShapeError, ctx.op_name(),
                    ": attribute 'shape': sizes must be >= 0 or -1, got ", want);
      OPFORGE_CHECK(!__builtin_mul_overflow(known, want[i], &known), opforge::ShapeError, ctx.op_name(),
                    ": attribute 'shape': cannot reshape ", x.describe(), " into ", want,
                    " (the product of its sizes overflows int64)");
    }
    const std::int64_t n = x.numel();
    if (infer >= 0) {
      // The error path alone builds the reason.
      if (known == 0 || n % known != 0) {
        const std::string why =
            known != 0 ? opforge::detail::concat("the other sizes multiply to ", known, ", which does not divide ", n)
            : n == 0   ? std::string("the other sizes multiply to 0, so every size fits the -1: give the size itself")
                       : opforge::detail::concat("the other sizes multiply to 0, so no size for the -1 gives ", n,
                                                 elements(n));
        throw opforge::ShapeError(opforge::detail::concat(ctx.op_name(), ": attribute 'shape': cannot reshape ",
                                                          x.describe(), " (", n, elements(n), ") into ", want, " (", why,
                                                          ")"));
      }
      target[static_cast<std::size_t>(infer)] = n / known;
    }
    OPFORGE_CHECK(target.product() == n, opforge::ShapeError, ctx.op_name(), ": attribute 'shape': cannot reshape ",
                  x.describe(), " (", n, elements(n), ") into ", want, " (", target.product(),
                  elements(target.product()), ")");
    return {reshaped(x, target)};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {grad_reshaped(g[0], ctx.input_shape(0))};  // [y] -> [x]
  }
};

class Transpose final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const std::int64_t a = normalize_axis(ctx, "axis0", ctx.attr_int(0), x.dim(), x.shape());
    const std::int64_t b = normalize_axis(ctx, "axis1", ctx.attr_int(1), x.dim(), x.shape());
    return {x.transpose(a, b)};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {dense(g[0].transpose(ctx.attr_int(0), ctx.attr_int(1)))};  // swapping back: [y] -> [x]
  }
};

// The permutation `order` asks for on a tensor of `x_shape`, checked ([] reverses).
Dims permutation(const Context& ctx, const Dims& x_shape) {
  const Dims& order = ctx.attr_ints(0);
  const auto r = static_cast<std::int64_t>(x_shape.size());
  Dims p;
  if (order.empty()) {
    for (std::int64_t k = r; k-- > 0;) p.push_back(k);
    return p;
  }
  OPFORGE_CHECK(static_cast<std::int64_t>(order.size()) == r, opforge::ShapeError, ctx.op_name(),
                ": attribute 'order': expected ", r, " axes (one per axis of shape ", x_shape, "), got ", order);
  std::uint32_t seen = 0;
  for (std::int64_t a : order) {
    const std::int64_t k = normalize_axis(ctx, "order", a, r, x_shape);
    OPFORGE_CHECK(!((seen >> k) & 1u), opforge::ShapeError, ctx.op_name(), ": attribute 'order': axis ", k,
                  " appears twice in ", order);
    seen |= 1u << k;
    p.push_back(k);
  }
  return p;
}

class Permute final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    return {x.permute(permutation(ctx, x.shape()))};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    // y axis i is x axis p[i], so x axis p[i] is y axis i: inverse[p[i]] = i.
    const Dims p = permutation(ctx, g[0].shape());  // same rank as x
    Dims inverse;
    inverse.resize(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) inverse[static_cast<std::size_t>(p[i])] = static_cast<std::int64_t>(i);
    return {dense(g[0].permute(inverse))};  // [y] -> [x]
  }
};

class Slice final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const std::int64_t axis = normalize_axis(ctx, "axis", ctx.attr_int(0), x.dim(), x.shape());
    const std::int64_t step = ctx.attr_int(3);
    OPFORGE_CHECK(step >= 1, opforge::ValueError, ctx.op_name(), ": attribute 'step': expected >= 1, got ", step);
    return {x.slice(axis, ctx.attr_int(1), ctx.attr_int(2), step)};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    Tensor gx = Tensor::zeros(ctx.input_shape(0), g[0].dtype());
    // The same slice of a zero tensor of x's shape receives g; the rest stays 0.
    copy_into(gx.slice(ctx.attr_int(0), ctx.attr_int(1), ctx.attr_int(2), ctx.attr_int(3)), g[0]);
    return {gx};
  }
};

class Expand final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const Dims& want = ctx.attr_ints(0);
    const std::size_t r = x.shape().size();
    OPFORGE_CHECK(want.size() >= r, opforge::ShapeError, ctx.op_name(), ": attribute 'shape': expected at least ", r,
                  " axes to expand ", x.describe(), ", got ", want);
    const std::size_t lead = want.size() - r;
    Dims target = want;
    for (std::size_t i = 0; i < want.size(); ++i) {
      if (i < lead) {
        OPFORGE_CHECK(want[i] >= 0, opforge::ShapeError, ctx.op_name(),
                      ": attribute 'shape': new leading axes must have sizes >= 0, got ", want);
        continue;
      }
      const std::int64_t have = x.shape()[i - lead];
      if (want[i] == -1) target[i] = have;  // -1 keeps the axis
      OPFORGE_CHECK(have == target[i] || have == 1, opforge::ShapeError, ctx.op_name(),
                    ": attribute 'shape': cannot expand ", x.describe(), " to ", want, ": axis ", i,
                    " has size ", have, " (only size-1 axes can be expanded)");
      OPFORGE_CHECK(target[i] >= 0, opforge::ShapeError, ctx.op_name(),
                    ": attribute 'shape': sizes must be >= 0 or -1, got ", want);
    }
    std::int64_t count = 1;
    for (std::int64_t n : target)
      OPFORGE_CHECK(!__builtin_mul_overflow(count, n, &count), opforge::ShapeError, ctx.op_name(),
                    ": attribute 'shape': ", want, " has more elements than int64 can count (the product of its "
                    "sizes overflows)");
    return {x.expand(target)};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {dense(opforge::sum_to(g[0], ctx.input_shape(0)))};  // [y] -> [x], summing broadcast axes
  }
};

class Squeeze final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const Dims& axes = ctx.attr_ints(0);
    const std::int64_t r = x.dim();
    std::uint32_t drop = 0;  // bit k: axis k goes
    if (axes.empty()) {
      for (std::int64_t k = 0; k < r; ++k)
        if (x.shape()[static_cast<std::size_t>(k)] == 1) drop |= 1u << k;
    }
    for (std::int64_t a : axes) {
      const std::int64_t k = normalize_axis(ctx, "axes", a, r, x.shape());
      OPFORGE_CHECK(!((drop >> k) & 1u), opforge::ShapeError, ctx.op_name(), ": attribute 'axes': axis ", k,
                    " appears twice in ", axes);
      OPFORGE_CHECK(x.shape()[static_cast<std::size_t>(k)] == 1, opforge::ShapeError, ctx.op_name(),
                    ": attribute 'axes': axis ", k, " of ", x.describe(), " has size ",
                    x.shape()[static_cast<std::size_t>(k)], " (only size-1 axes can be squeezed)");
      drop |= 1u << k;
    }
    if (drop == 0) return {x.view(x.shape())};  // nothing to remove: still a new view
    Tensor y = x;
    for (std::int64_t k = r; k-- > 0;)  // from the last, so earlier axes keep their numbers
      if ((drop >> k) & 1u) y = y.select(k, 0);
    return {y};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {grad_reshaped(g[0], ctx.input_shape(0))};  // [y] -> [x]
  }
};

class Unsqueeze final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const std::int64_t r = x.dim();
    const std::int64_t axis = normalize_axis(ctx, "axis", ctx.attr_int(0), r + 1, x.shape());
    Dims shape;
    for (std::int64_t k = 0; k <= r; ++k) {
      if (k == axis) shape.push_back(1);
      if (k < r) shape.push_back(x.shape()[static_cast<std::size_t>(k)]);
    }
    return {reshaped(x, shape)};  // inserting a size-1 axis is always a view
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {grad_reshaped(g[0], ctx.input_shape(0))};  // [y] -> [x]
  }
};

// ---- sample inputs for the test harness ---------------------------------------------------

// x [2, 3, 4]: reshape's default [-1] flattens it; transpose's default swaps the
// last two axes; permute's default [] reverses all three.
TensorList rank3_samples(DType dtype, std::uint64_t seed) { return {Tensor::randn({2, 3, 4}, dtype, seed)}; }
// x [5, 4]: slice's defaults take all of axis 0.
TensorList matrix_samples(DType dtype, std::uint64_t seed) { return {Tensor::randn({5, 4}, dtype, seed)}; }
// x []: expand's default shape [] (the attribute is always given in real use).
TensorList scalar_samples(DType dtype, std::uint64_t seed) { return {Tensor::randn({}, dtype, seed)}; }
// x [3, 1, 4, 1]: squeeze's default removes both size-1 axes.
TensorList squeezable_samples(DType dtype, std::uint64_t seed) {
  return {Tensor::randn({3, 1, 4, 1}, dtype, seed)};
}

}  // namespace

void register_view_ops(opforge::PluginRegistrar& registrar) {
  using opforge::AttrKind;
  using opforge::DTypeSet;
  using opforge::OpSchema;
  registrar.add<Reshape>(OpSchema("shape.reshape")
                             .input_names({"x"})
                             .accepts(DTypeSet::all())
                             .takes_strided_inputs()
                             .attr("shape", AttrKind::Ints, opforge::Attr(Dims{-1}),
                                   "new sizes, one of them may be -1 (inferred); the default flattens")
                             .describe("x with a new shape and the same elements (a view when the strides allow)")
                             .samples(rank3_samples));
  registrar.add<Transpose>(OpSchema("shape.transpose")
                               .input_names({"x"})
                               .accepts(DTypeSet::all())
                               .takes_strided_inputs()
                               .attr("axis0", AttrKind::Int, opforge::Attr(-2), "first axis to swap")
                               .attr("axis1", AttrKind::Int, opforge::Attr(-1), "second axis to swap")
                               .describe("x with two axes swapped (a view)")
                               .samples(rank3_samples));
  registrar.add<Permute>(OpSchema("shape.permute")
                             .input_names({"x"})
                             .accepts(DTypeSet::all())
                             .takes_strided_inputs()
                             .attr("order", AttrKind::Ints, opforge::Attr(Dims{}),
                                   "output axis i is input axis order[i]; [] reverses the axes")
                             .describe("x with its axes reordered (a view)")
                             .samples(rank3_samples));
  registrar.add<Slice>(OpSchema("shape.slice")
                           .input_names({"x"})
                           .accepts(DTypeSet::all())
                           .takes_strided_inputs()
                           .attr("axis", AttrKind::Int, opforge::Attr(0), "axis to slice")
                           .attr("start", AttrKind::Int, opforge::Attr(0), "first index (negative: from the end)")
                           .attr("stop", AttrKind::Int, opforge::Attr(std::numeric_limits<std::int64_t>::max()),
                                 "end, exclusive (negative: from the end; clamped as in Python)")
                           .attr("step", AttrKind::Int, opforge::Attr(1), "stride, >= 1")
                           .describe("x[..., start:stop:step, ...] along one axis, Python bounds (a view)")
                           .samples(matrix_samples));
  registrar.add<Expand>(OpSchema("shape.expand")
                            .input_names({"x"})
                            .accepts(DTypeSet::all())
                            .takes_strided_inputs()
                            .attr("shape", AttrKind::Ints, opforge::Attr(Dims{}),
                                  "target shape (NumPy broadcast_to; -1 keeps an axis's size)")
                            .describe("x broadcast to a shape, without a copy (stride-0 view)")
                            .samples(scalar_samples));
  registrar.add<Squeeze>(OpSchema("shape.squeeze")
                             .input_names({"x"})
                             .accepts(DTypeSet::all())
                             .takes_strided_inputs()
                             .attr("axes", AttrKind::Ints, opforge::Attr(Dims{}),
                                   "size-1 axes to remove; [] removes every size-1 axis")
                             .describe("x without size-1 axes (a view)")
                             .samples(squeezable_samples));
  registrar.add<Unsqueeze>(OpSchema("shape.unsqueeze")
                               .input_names({"x"})
                               .accepts(DTypeSet::all())
                               .takes_strided_inputs()
                               .attr("axis", AttrKind::Int, opforge::Attr(0),
                                     "position of the new size-1 axis in the output")
                               .describe("x with a size-1 axis inserted (a view)")
                               .samples(matrix_samples));
}

}  // namespace opforge_shape
