// elementwise, two or three inputs, with NumPy broadcasting: the output has the
// broadcast shape [out]; g is its gradient, and sum_to reduces each operand's
// gradient [out] -> [operand] over the axes broadcasting added or stretched.
//
//   div(a, b)      = a / b       da = sum_to(g / b, a)
//                                db = sum_to(-(g (a / b)) / b, b)
//   pow(a, b)      = aᵇ          da = sum_to(g b aᵇ⁻¹, a)             (0 where b = 0: a⁰ is constant)
//                                db = sum_to(g aᵇ ln a, b) where a > 0, 0 where a = 0
//                                     (0ᵇ is constant in b on either side of b = 0); NaN where a < 0
//   maximum(a, b)  = a if a > b else b          da = sum_to(g w, a), db = sum_to(g (1 - w), b),
//   minimum(a, b)  = a if a < b else b          w = 1 where a is taken, 1/2 on ties, 0 elsewhere
//                    (NaN propagates, from a first, and its operand gets the gradient)
//   where(cond, a, b) = a where cond else b     da = sum_to(g where cond else 0, a)
//                                               db = sum_to(0 where cond else g, b); cond gets none
//
// div and pow take float32 and float64; maximum and minimum also int64; where
// takes a bool cond and a, b of one dtype (any). The int64 kernels of add, sub
// and mul (with_int64) live here too: they wrap on overflow, as NumPy.
// Every kernel, forward and backward, is a broadcast_map (elementwise_ops.hpp):
// chunks of the flat output, so big tensors use every core whatever their shape.
#include <cmath>

#include "elementwise_ops.hpp"
#include "../vector_math.hpp"

namespace opforge_elementwise {
namespace {

using opforge::sum_to;

// An int64 add/sub/mul in unsigned arithmetic: wraps instead of overflowing (undefined for int64).
template <IntBinary Op>
std::int64_t int_op(std::int64_t x, std::int64_t y) {
  const auto ux = static_cast<std::uint64_t>(x), uy = static_cast<std::uint64_t>(y);
  if constexpr (Op == IntBinary::Add) return static_cast<std::int64_t>(ux + uy);
  if constexpr (Op == IntBinary::Sub) return static_cast<std::int64_t>(ux - uy);
  if constexpr (Op == IntBinary::Mul) return static_cast<std::int64_t>(ux * uy);
}

template <IntBinary Op>
Tensor int_kernel(const Context& ctx, const Tensor& a, const Tensor& b) {
  return binary_map<std::int64_t>(ctx, a, b, [](std::int64_t x, std::int64_t y) { return int_op<Op>(x, y); });
}

class WithInt64 final : public opforge::Function {
 public:
  WithInt64(std::unique_ptr<opforge::Function> floating, IntBinary op) : floating_(std::move(floating)), op_(op) {}
  TensorList forward(Context& ctx, TensorSpan in) const override {
    if (in[0].dtype() != DType::Int64) return floating_->forward(ctx, in);
    switch (op_) {
      case IntBinary::Add: return {int_kernel<IntBinary::Add>(ctx, in[0], in[1])};
      case IntBinary::Sub: return {int_kernel<IntBinary::Sub>(ctx, in[0], in[1])};
      case IntBinary::Mul: return {int_kernel<IntBinary::Mul>(ctx, in[0], in[1])};
    }
    return {};
  }
  // Only float calls record a node.
  TensorList backward(Context& ctx, TensorSpan g) const override { return floating_->backward(ctx, g); }

 private:
  std::unique_ptr<opforge::Function> floating_;
  IntBinary op_;
};

class Div final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({ctx.needs_input_grad(1) ? in[0] : Tensor(), in[1]});  // a only for db; b for both
    }
    return {sdk::dispatch_floating(in[0].dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return binary_map<T>(ctx, in[0], in[1], [](T x, T y) { return x / y; });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const TensorList& s = ctx.saved_tensors();  // a (if b needs grad), b
    const Dims& out = g[0].shape();
    Tensor ga, gb;
    sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      // [out] / [b] -> [out] -> [a]
      if (ctx.needs_input_grad(0))
        ga = sum_to(broadcast_map<T, T, T>(
                        out, g[0].dtype(), [](T gv, T bv) { return gv / bv; }, g[0], s[1]),
                    ctx.input_shape(0));
      // -([out] ([a] / [b])) / [b] -> [out] -> [b]; a / b^2 as two quotients, so it overflows only with the
      // result, and a = 0 gives 0 whatever g / b does (-(g / b)(a / b) was inf * 0 = NaN for b = 5e-324)
      if (ctx.needs_input_grad(1))
        gb = sum_to(broadcast_map<T, T, T, T>(
                        out, g[0].dtype(), [](T gv, T av, T bv) { return -(gv * (av / bv)) / bv; }, g[0], s[0], s[1]),
                    ctx.input_shape(1));
    });
    return {ga, gb};
  }
};

class Pow final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    Tensor y = sdk::dispatch_floating(in[0].dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return binary_map<T>(ctx, in[0], in[1], uniform([](T x, T e) { return std::pow(x, e); }));
    });
    if (ctx.any_input_needs_grad()) {
      // a for both gradients; b for da; a^b for db.
      ctx.save_for_backward(
          {in[0], ctx.needs_input_grad(0) ? in[1] : Tensor(), ctx.needs_input_grad(1) ? y : Tensor()});
    }
    return {y};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const TensorList& s = ctx.saved_tensors();  // a, b (if a needs grad), a^b (if b needs grad)
    const Dims& out = g[0].shape();
    Tensor ga, gb;
    sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      // [out] ([b] [a]^([b] - 1)) -> [out] -> [a]; the derivative first, as PyTorch does: (g b) a^(b-1) was
      // inf * 0 = NaN for g = 4, b = 1e308, a = 0.5, where the derivative is 0
      if (ctx.needs_input_grad(0))
        ga = sum_to(broadcast_map<T, T, T, T>(
                        out, g[0].dtype(),
                        uniform([](T gv, T av, T bv) { return bv == T(0) ? T(0) : gv * (bv * std::pow(av, bv - T(1))); }), g[0],
                        s[0], s[1]),
                    ctx.input_shape(0));
      // [out] [out: a^b] ln [a] -> [out] -> [b]
      if (ctx.needs_input_grad(1))
        gb = sum_to(broadcast_map<T, T, T, T>(
                        out, g[0].dtype(), uniform([](T gv, T av, T yv) { return av == T(0) ? T(0) : gv * yv * std::log(av); }),
                        g[0], s[0], s[2]),
                    ctx.input_shape(1));
    });
    return {ga, gb};
  }
};

// maximum (Larger = true) and minimum. `wins(x, y)`: x is the result (strictly
// better, or NaN); on ties the gradient is split evenly.
template <bool Larger>
struct Extremum {
  template <class T>
  static bool wins(T x, T y) {
    bool nan = false;
    if constexpr (std::is_floating_point_v<T>) nan = x != x;
    if constexpr (Larger)
      return x > y || nan;
    else
      return x < y || nan;
  }
};

template <bool Larger>
class MaxMin final : public opforge::Function {
  using E = Extremum<Larger>;

 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({in[0], in[1]});  // both gradients compare a with b
    }
    return {dispatch_numeric(in[0].dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return binary_map<T>(ctx, in[0], in[1], [](T x, T y) { return E::wins(x, y) ? x : y; });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const TensorList& s = ctx.saved_tensors();  // a, b
    const Dims& out = g[0].shape();
    Tensor ga, gb;
    sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      // share(g, x, y): x's part of g; a's is share(g, a, b), b's share(g, b, a)
      // (on NaN only the NaN operand that forward took wins: wins(a, b) is checked first)
      // [out] -> [out] -> [a]
      if (ctx.needs_input_grad(0))
        ga = sum_to(broadcast_map<T, T, T, T>(
                        out, g[0].dtype(),
                        [](T gv, T av, T bv) { return E::wins(av, bv) ? gv : (av == bv ? gv * T(0.5) : T(0)); }, g[0],
                        s[0], s[1]),
                    ctx.input_shape(0));
      // [out] -> [out] -> [b]: b gets what a does not
      if (ctx.needs_input_grad(1))
        gb = sum_to(broadcast_map<T, T, T, T>(
                        out, g[0].dtype(),
                        [](T gv, T av, T bv) { return E::wins(av, bv) ? T(0) : (av == bv ? gv * T(0.5) : gv); }, g[0],
                        s[0], s[1]),
                    ctx.input_shape(1));
    });
    return {ga, gb};
  }
};

// The schema takes any dtype for every input (mixed_dtypes); the rules are checked here.
void check_where_dtypes(const Context& ctx, TensorSpan in) {
  OPFORGE_CHECK(in[0].dtype() == DType::Bool, opforge::DTypeError, ctx.op_name(),
                ": argument 'cond' (input 0): expected dtype bool, got ", opforge::dtype_name(in[0].dtype()),
                "; make a mask with a comparison (elementwise.ne(cond, 0) for where cond is nonzero)");
  OPFORGE_CHECK(in[2].dtype() == in[1].dtype(), opforge::DTypeError, ctx.op_name(),
                ": argument 'b' (input 2): expected dtype ", opforge::dtype_name(in[1].dtype()),
                " (the dtype of 'a'; a and b must share one dtype), got ", opforge::dtype_name(in[2].dtype()));
}

// The broadcast of the three shapes. Checked pair by pair, so the message names
// the two arguments that clash (three shapes broadcast together exactly when
// every pair does).
Dims where_shape(const Context& ctx, TensorSpan in) {
  const Dims ca = opforge::broadcast_shapes(in[0].shape(), in[1].shape(), ctx.op_name(), "cond", "a");
  opforge::broadcast_shapes(in[0].shape(), in[2].shape(), ctx.op_name(), "cond", "b");
  opforge::broadcast_shapes(in[1].shape(), in[2].shape(), ctx.op_name(), "a", "b");
  return opforge::broadcast_shapes(ca, in[2].shape(), ctx.op_name());
}

template <class T>
Tensor where_kernel(const Dims& shape, const Tensor& cond, const Tensor& a, const Tensor& b) {
  using S = Stored<T>;
  return broadcast_map<T, bool, T, T>(
      shape, opforge::dtype_v<T>, [](std::uint8_t c, S x, S y) { return select(c, x, y); }, cond, a, b);
}

class Where final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    check_where_dtypes(ctx, in);
    const Dims shape = where_shape(ctx, in);
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward(in[0]);  // cond routes the gradient
    }
    switch (in[1].dtype()) {
      case DType::Float32: return {where_kernel<float>(shape, in[0], in[1], in[2])};
      case DType::Float64: return {where_kernel<double>(shape, in[0], in[1], in[2])};
      case DType::Int64: return {where_kernel<std::int64_t>(shape, in[0], in[1], in[2])};
      case DType::Bool: return {where_kernel<bool>(shape, in[0], in[1], in[2])};
    }
    return {};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor& cond = ctx.saved_tensors()[0];
    const Dims& out = g[0].shape();
    Tensor ga, gb;
    sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      // [out] where [cond] -> [out] -> [a];  [out] where not [cond] -> [out] -> [b]
      if (ctx.needs_input_grad(1))
        ga = sum_to(broadcast_map<T, T, bool>(
                        out, g[0].dtype(), [](T gv, std::uint8_t c) { return select(c, gv, T(0)); }, g[0], cond),
                    ctx.input_shape(1));
      if (ctx.needs_input_grad(2))
        gb = sum_to(broadcast_map<T, T, bool>(
                        out, g[0].dtype(), [](T gv, std::uint8_t c) { return select(c, T(0), gv); }, g[0], cond),
                    ctx.input_shape(2));
    });
    return {Tensor(), ga, gb};
  }
};

// ---- sample inputs for the test harness ----------------------------------------------------

// randn of `shape` passed through f, in `dtype`.
template <class F>
Tensor transformed_randn(const Dims& shape, DType dtype, std::uint64_t seed, F f) {
  Tensor t = Tensor::randn(shape, DType::Float64, seed);
  double* p = t.data<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = f(p[i]);
  return t.to(dtype);
}

// a [4, 5], b [5] (broadcast along a's rows, so the checks cover sum_to), |b| >= 0.5.
TensorList div_samples(DType dtype, std::uint64_t seed) {
  return {Tensor::randn({4, 5}, dtype, seed),
          transformed_randn({5}, dtype, seed + 1, [](double v) { return v < 0 ? v - 0.5 : v + 0.5; })};
}
// a [4, 5] in [0.5, ~4] (a^b and ln a smooth), b [5].
TensorList pow_samples(DType dtype, std::uint64_t seed) {
  return {transformed_randn({4, 5}, dtype, seed, [](double v) { return 0.5 + std::abs(v); }),
          Tensor::randn({5}, dtype, seed + 1)};
}
// a [4, 5], b [5], no a[i, j] within 0.25 of b[j]: away from ties, where the gradient jumps.
TensorList extremum_samples(DType dtype, std::uint64_t seed) {
  Tensor a = Tensor::randn({4, 5}, DType::Float64, seed);
  const Tensor b = Tensor::randn({5}, DType::Float64, seed + 1);
  double* pa = a.data<double>();
  const double* pb = b.data<double>();
  for (std::int64_t i = 0; i < 20; ++i) {
    const double d = pa[i] - pb[i % 5];
    if (std::abs(d) < 0.25) pa[i] = pb[i % 5] + (d < 0 ? -0.25 : 0.25);
  }
  return {a.to(dtype), b.to(dtype)};
}
// cond [4, 5] (about half true), a [5], b [4, 1]: both gradients go through sum_to.
TensorList where_samples(DType dtype, std::uint64_t seed) {
  return {transformed_randn({4, 5}, DType::Bool, seed, [](double v) { return v > 0 ? 1.0 : 0.0; }),
          Tensor::randn({5}, dtype, seed + 1), Tensor::randn({4, 1}, dtype, seed + 2)};
}

}  // namespace

std::unique_ptr<opforge::Function> with_int64(std::unique_ptr<opforge::Function> floating, IntBinary op) {
  return std::make_unique<WithInt64>(std::move(floating), op);
}

void register_binary(opforge::PluginRegistrar& registrar) {
  using opforge::OpSchema;
  registrar.add<Div>(OpSchema("elementwise.div")
                    .takes_strided_inputs()
                         .input_names({"a", "b"})
                         .describe("a / b, element by element, with NumPy broadcasting")
                         .samples(div_samples));
  registrar.add<Pow>(OpSchema("elementwise.pow")
                    .takes_strided_inputs()
                         .input_names({"a", "b"})
                         .describe("a to the power b, element by element, with NumPy broadcasting; d/db is 0 where a = 0 (0^b is "
                                   "constant in b on either side of b = 0; PyTorch gives -inf for b < 0) and NaN where a < 0")
                         .samples(pow_samples));
  registrar.add<MaxMin<true>>(OpSchema("elementwise.maximum")
                    .takes_strided_inputs()
                                  .input_names({"a", "b"})
                                  .accepts(kNumeric)
                                  .describe("the larger of a and b, element by element, with NumPy broadcasting")
                                  .samples(extremum_samples));
  registrar.add<MaxMin<false>>(OpSchema("elementwise.minimum")
                    .takes_strided_inputs()
                                   .input_names({"a", "b"})
                                   .accepts(kNumeric)
                                   .describe("the smaller of a and b, element by element, with NumPy broadcasting")
                                   .samples(extremum_samples));
  registrar.add<Where>(
      OpSchema("elementwise.where")
          .takes_strided_inputs()
          .input_names({"cond", "a", "b"})
          .accepts(opforge::DTypeSet::all())
          .mixed_dtypes()
          .describe("a where cond is true, else b (cond bool; a, b of one dtype), with NumPy broadcasting")
          .samples(where_samples));
}

}  // namespace opforge_elementwise
