// shape: joining tensors (variadic: one or more inputs x, x[1], x[2], ...).
//
//   concat(x_0, ..., x_{n-1}; axis)   y = the x_i one after the other along `axis`
//       (same rank; equal sizes on every other axis)
//       y[..., o_i + j, ...] = x_i[..., j, ...],  o_i = sum_{m<i} size(x_m, axis)
//       dx_i = g[..., o_i : o_i + size(x_i, axis), ...]
//   stack(x_0, ..., x_{n-1}; axis)    y = the x_i along a new axis `axis` (of y)
//       (same shapes)                 y[..., i, ...] = x_i
//       dx_i = g[..., i, ...]
//
// Forward copies each input (any strides) into its slice of a new contiguous
// output, in parallel over elements; backward hands each input a contiguous copy
// of its slice of the gradient. Data movement only: every dtype; gradients for
// float32/float64.
#include <string>

#include "common.hpp"

namespace opforge_shape {

namespace {

// Input i of a variadic op whose first input is 'x': "argument 'x[2]' (input 2)".
std::string arg_label(std::size_t i) {
  return i == 0 ? "argument 'x' (input 0)"
                : "argument 'x[" + std::to_string(i) + "]' (input " + std::to_string(i) + ")";
}

// "[2, *, 4]": `shape` with axis `axis` shown as any size.
std::string shape_except(const Dims& shape, std::size_t axis) {
  std::string s = "[";
  for (std::size_t k = 0; k < shape.size(); ++k) {
    s += k ? ", " : "";
    s += k == axis ? "*" : std::to_string(shape[k]);
  }
  return s + "]";
}

class Concat final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x0 = in[0];
    const std::int64_t r = x0.dim();
    OPFORGE_CHECK(r >= 1, opforge::ShapeError, ctx.op_name(), ": ", arg_label(0),
                  ": expected a tensor of at least 1 dimension (0-d tensors cannot be concatenated), got ",
                  x0.describe());
    const std::int64_t axis = normalize_axis(ctx, "axis", ctx.attr_int(0), r, x0.shape());
    const auto a = static_cast<std::size_t>(axis);
    Dims out_shape = x0.shape();
    out_shape[a] = 0;
    for (std::size_t i = 0; i < in.size(); ++i) {
      const Tensor& x = in[i];
      OPFORGE_CHECK(x.dim() == r, opforge::ShapeError, ctx.op_name(), ": ", arg_label(i), ": expected a ", r,
                    "-D tensor (the rank of 'x'), got ", x.describe());
      bool same = true;
      for (std::size_t k = 0; k < x.shape().size(); ++k) same = same && (k == a || x.shape()[k] == x0.shape()[k]);
      OPFORGE_CHECK(same, opforge::ShapeError, ctx.op_name(), ": ", arg_label(i), ": expected shape ",
                    shape_except(x0.shape(), a), " (the shape of 'x' on every axis but axis ", axis, "), got ",
                    x.shape());
      std::int64_t total = 0;
      OPFORGE_CHECK(!__builtin_add_overflow(out_shape[a], x.shape()[a], &total), opforge::ShapeError, ctx.op_name(),
                    ": the output's size along axis ", axis, " (the sum of the inputs' sizes there) overflows int64 "
                    "at ", arg_label(i), " of shape ", x.shape());
      out_shape[a] = total;
    }
    if (ctx.any_input_needs_grad()) ctx.save_int(static_cast<std::int64_t>(a));  // sizes: ctx.input_shape
    Tensor out = Tensor::empty(out_shape, x0.dtype());
    std::int64_t offset = 0;
    for (const Tensor& x : in) {
      const std::int64_t len = x.shape()[a];
      copy_into(out.slice(axis, offset, offset + len), x);  // [..., len, ...] into its place in [..., sum, ...]
      offset += len;
    }
    return {out};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const std::int64_t axis = ctx.saved_int(0);  // normalized
    const auto a = static_cast<std::size_t>(axis);
    TensorList grads;
    std::int64_t offset = 0;
    for (std::size_t i = 0; i < ctx.num_inputs(); ++i) {
      const std::int64_t len = ctx.input_shape(i)[a];
      grads.push_back(ctx.needs_input_grad(i) ? dense(g[0].slice(axis, offset, offset + len)) : Tensor());
      offset += len;  // [..., sum, ...] -> [..., len, ...]
    }
    return grads;
  }
};

class Stack final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x0 = in[0];
    const std::int64_t r = x0.dim();
    const std::int64_t axis = normalize_axis(ctx, "axis", ctx.attr_int(0), r + 1, x0.shape());
    for (std::size_t i = 1; i < in.size(); ++i) {
      OPFORGE_CHECK(in[i].shape() == x0.shape(), opforge::ShapeError, ctx.op_name(), ": ", arg_label(i),
                    ": expected shape ", x0.shape(), " (the shape of 'x'), got ", in[i].shape());
    }
    Dims out_shape;
    for (std::int64_t k = 0; k <= r; ++k) {
      if (k == axis) out_shape.push_back(static_cast<std::int64_t>(in.size()));
      if (k < r) out_shape.push_back(x0.shape()[static_cast<std::size_t>(k)]);
    }
    if (ctx.any_input_needs_grad()) ctx.save_int(axis);
    Tensor out = Tensor::empty(out_shape, x0.dtype());
    for (std::size_t i = 0; i < in.size(); ++i)
      copy_into(out.select(axis, static_cast<std::int64_t>(i)), in[i]);  // x_i -> y[..., i, ...]
    return {out};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const std::int64_t axis = ctx.saved_int(0);
    TensorList grads;
    for (std::size_t i = 0; i < ctx.num_inputs(); ++i)  // [..., n, ...] -> [...]
      grads.push_back(ctx.needs_input_grad(i) ? dense(g[0].select(axis, static_cast<std::int64_t>(i))) : Tensor());
    return grads;
  }
};

// The harness passes one tensor per declared input, so it runs the variadic ops on
// a single x [3, 4]; the tests cover several inputs.
TensorList single_samples(DType dtype, std::uint64_t seed) { return {Tensor::randn({3, 4}, dtype, seed)}; }

}  // namespace

void register_join_ops(opforge::PluginRegistrar& registrar) {
  using opforge::AttrKind;
  using opforge::DTypeSet;
  using opforge::OpSchema;
  registrar.add<Concat>(OpSchema("shape.concat")
                            .input_names({"x"})
                            .variadic_last_input()
                            .accepts(DTypeSet::all())
                            .takes_strided_inputs()
                            .attr("axis", AttrKind::Int, opforge::Attr(0), "axis to join along")
                            .describe("the inputs joined along an existing axis (NumPy concatenate)")
                            .samples(single_samples));
  registrar.add<Stack>(OpSchema("shape.stack")
                           .input_names({"x"})
                           .variadic_last_input()
                           .accepts(DTypeSet::all())
                           .takes_strided_inputs()
                           .attr("axis", AttrKind::Int, opforge::Attr(0), "position of the new axis in the output")
                           .describe("the inputs (of one shape) joined along a new axis (NumPy stack)")
                           .samples(single_samples));
}

}  // namespace opforge_shape
