// elementwise: add, sub, mul (NumPy broadcasting) and square.
//
//   add(a, b)  = a + b     d/da = sum_to(g, a),      d/db = sum_to(g, b)
//   sub(a, b)  = a - b     d/da = sum_to(g, a),      d/db = sum_to(-g, b)
//   mul(a, b)  = a * b     d/da = sum_to(g * b, a),  d/db = sum_to(g * a, b)
//   square(x)  = x^2       d/dx = 2 x g
//
// sum_to sums a gradient of the broadcast shape over the axes broadcasting added
// or stretched, giving it the operand's shape.
// Large tensors are split over the thread pool; small ones run inline.
#include <opforge/sdk.hpp>

// The rest of the family (unary.cpp, binary.cpp, compare.cpp) registers through
// these; its kernels (map1, broadcast_map) read operands of any strides, so the
// binary ops take strided inputs as they are (takes_strided_inputs: x.T + y, or
// contiguous() of a tensor that requires grad, which is x + -0.0, made a copy of
// the strided operand first).
#include "elementwise_ops.hpp"

namespace {

using opforge::Context;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;
using opforge_elementwise::broadcast_map;
using opforge_elementwise::map1;

// Operands broadcast by NumPy rules; each backward reduces a gradient of the
// broadcast shape back to its operand's shape (recorded by the core, read with
// ctx.input_shape) with sum_to.
class Add final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    return {sdk::dispatch_floating(in[0].dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return sdk::broadcast_map2<T>(ctx, in[0], in[1], [](T x, T y) { return x + y; });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    Tensor ga, gb;
    if (ctx.needs_input_grad(0)) ga = opforge::sum_to(g[0], ctx.input_shape(0));  // [out] -> [a]
    if (ctx.needs_input_grad(1)) gb = opforge::sum_to(g[0], ctx.input_shape(1));  // [out] -> [b]
    return {ga, gb};
  }
};

class Sub final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    return {sdk::dispatch_floating(in[0].dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return sdk::broadcast_map2<T>(ctx, in[0], in[1], [](T x, T y) { return x - y; });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    Tensor ga, gb;
    if (ctx.needs_input_grad(0)) ga = opforge::sum_to(g[0], ctx.input_shape(0));  // [out] -> [a]
    if (ctx.needs_input_grad(1)) {
      const Tensor neg = sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
        using T = decltype(tag);
        return map1<T, T>(g[0], g[0].dtype(), [](T v) { return -v; });  // d(a - b)/db = -1
      });
      gb = opforge::sum_to(neg, ctx.input_shape(1));  // [out] -> [b]
    }
    return {ga, gb};
  }
};

class Mul final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    // a and b are saved only for the other operand's gradient.
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({ctx.needs_input_grad(1) ? in[0] : Tensor(), ctx.needs_input_grad(0) ? in[1] : Tensor()});
    }
    return {sdk::dispatch_floating(in[0].dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return sdk::broadcast_map2<T>(ctx, in[0], in[1], [](T x, T y) { return x * y; });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const TensorList& s = ctx.saved_tensors();  // a (if b needs grad), b (if a needs grad)
    Tensor ga, gb;
    sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      auto times = [](T x, T y) { return x * y; };
      // [out] * [b] -> [out] -> [a];  [out] * [a] -> [out] -> [b]
      if (ctx.needs_input_grad(0))
        ga = opforge::sum_to(sdk::broadcast_map2<T>(ctx, g[0], s[1], times), ctx.input_shape(0));
      if (ctx.needs_input_grad(1))
        gb = opforge::sum_to(sdk::broadcast_map2<T>(ctx, g[0], s[0], times), ctx.input_shape(1));
    });
    return {ga, gb};
  }
};

class Square final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    ctx.save_for_backward(in[0]);
    return {sdk::dispatch_floating(in[0].dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      return map1<T, T>(in[0], in[0].dtype(), [](T v) { return v * v; });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor& x = ctx.saved_tensors()[0];
    return {sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const auto f = [](T gv, T xv) { return T(2) * xv * gv; };  // 2 x g
      return broadcast_map<T, T, T>(x.shape(), x.dtype(), f, g[0], x);
    })};
  }
};

}  // namespace

// Sample inputs for the test harness (`opforge check`): a, b [4, 5].
static TensorList binary_samples(opforge::DType dtype, std::uint64_t seed) {
  // b broadcasts along a's rows, so the checks cover the sum_to in backward.
  return {Tensor::randn({4, 5}, dtype, seed), Tensor::randn({5}, dtype, seed + 1)};
}
// x [4, 5].
static TensorList unary_samples(opforge::DType dtype, std::uint64_t seed) {
  return {Tensor::randn({4, 5}, dtype, seed)};
}


OPFORGE_PLUGIN("elementwise", "0.1.0") {
  using opforge::OpSchema;
  namespace ew = opforge_elementwise;
  // add, sub and mul run the kernels above for float32/float64 and ew::with_int64's for int64.
  registrar.add(OpSchema("elementwise.add")
                    .takes_strided_inputs()
                    .input_names({"a", "b"})
                    .accepts(ew::kNumeric)
                    .describe("a + b, element by element, with NumPy broadcasting (float32, float64, int64)")
                    .samples(binary_samples),
                ew::with_int64(std::make_unique<Add>(), ew::IntBinary::Add));
  registrar.add(OpSchema("elementwise.sub")
                    .takes_strided_inputs()
                    .input_names({"a", "b"})
                    .accepts(ew::kNumeric)
                    .describe("a - b, element by element, with NumPy broadcasting (float32, float64, int64)")
                    .samples(binary_samples),
                ew::with_int64(std::make_unique<Sub>(), ew::IntBinary::Sub));
  registrar.add(OpSchema("elementwise.mul")
                    .takes_strided_inputs()
                    .input_names({"a", "b"})
                    .accepts(ew::kNumeric)
                    .describe("a * b, element by element, with NumPy broadcasting (float32, float64, int64)")
                    .samples(binary_samples),
                ew::with_int64(std::make_unique<Mul>(), ew::IntBinary::Mul));
  registrar.add<Square>(
      OpSchema("elementwise.square")
          .input_names({"x"})
          .describe("x * x, element by element")
          .takes_strided_inputs()  // map1 reads any layout; backward's broadcast_map any strides
          .samples(unary_samples));
  ew::register_unary(registrar);    // unary.cpp
  ew::register_binary(registrar);   // binary.cpp
  ew::register_compare(registrar);  // compare.cpp
}
