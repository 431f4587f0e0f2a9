// elementwise: add, sub, mul, square over tensors of one shape.
//
//   add(a, b)  = a + b     d/da = g,      d/db = g
//   sub(a, b)  = a - b     d/da = g,      d/db = -g
//   mul(a, b)  = a * b     d/da = g * b,  d/db = g * a
//   square(x)  = x^2       d/dx = 2 x g
//
// Large tensors are split over the thread pool; small ones run inline.
#include <opforge/sdk.hpp>

namespace {

using opforge::Context;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// out[i] = f(a[i], b[i]) for every element.
template <class T, class F>
Tensor map2(const Tensor& a, const Tensor& b, F f) {
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* po = out.data<T>();
  sdk::parallel_for(0, a.numel(), sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) po[i] = f(pa[i], pb[i]);
  });
  return out;
}

// out[i] = f(a[i]) for every element.
template <class T, class F>
Tensor map1(const Tensor& a, F f) {
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  const T* pa = a.data<T>();
  T* po = out.data<T>();
  sdk::parallel_for(0, a.numel(), sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) po[i] = f(pa[i]);
  });
  return out;
}

void check_binary(const Context& ctx, TensorSpan in) {
  sdk::expect_contiguous(ctx, in[0], "a");
  sdk::expect_contiguous(ctx, in[1], "b");
  sdk::expect_shape(ctx, in[1], "b", in[0].shape(), "the shape of 'a'");
}

class Add final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    check_binary(ctx, in);
    return {sdk::dispatch_floating(in[0].dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return map2<T>(in[0], in[1], [](T x, T y) { return x + y; });
    })};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0], g[0]}; }  // [..] -> [..], [..]
};

class Sub final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    check_binary(ctx, in);
    return {sdk::dispatch_floating(in[0].dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return map2<T>(in[0], in[1], [](T x, T y) { return x - y; });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    Tensor gb;
    if (ctx.needs_input_grad(1)) {
      gb = sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
        using T = decltype(tag);
        return map1<T>(g[0], [](T v) { return -v; });  // d(a - b)/db = -1
      });
    }
    return {g[0], gb};
  }
};

class Mul final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    check_binary(ctx, in);
    ctx.save_for_backward({in[0], in[1]});
    return {sdk::dispatch_floating(in[0].dtype(), ctx, "a", [&](auto tag) {
      using T = decltype(tag);
      return map2<T>(in[0], in[1], [](T x, T y) { return x * y; });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const TensorList& s = ctx.saved_tensors();  // a, b
    Tensor ga, gb;
    sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      auto times = [](T x, T y) { return x * y; };
      if (ctx.needs_input_grad(0)) ga = map2<T>(g[0], s[1], times);  // g * b
      if (ctx.needs_input_grad(1)) gb = map2<T>(g[0], s[0], times);  // g * a
    });
    return {ga, gb};
  }
};

class Square final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    sdk::expect_contiguous(ctx, in[0], "x");
    ctx.save_for_backward(in[0]);
    return {sdk::dispatch_floating(in[0].dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      return map1<T>(in[0], [](T v) { return v * v; });
    })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor& x = ctx.saved_tensors()[0];
    return {sdk::dispatch_floating(g[0].dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      return map2<T>(g[0], x, [](T gv, T xv) { return T(2) * xv * gv; });  // 2 x g
    })};
  }
};

}  // namespace

OPFORGE_PLUGIN("elementwise", "0.1.0") {
  using opforge::OpSchema;
  registrar.add<Add>(OpSchema("elementwise.add").input_names({"a", "b"}).describe("a + b, element by element"));
  registrar.add<Sub>(OpSchema("elementwise.sub").input_names({"a", "b"}).describe("a - b, element by element"));
  registrar.add<Mul>(OpSchema("elementwise.mul").input_names({"a", "b"}).describe("a * b, element by element"));
  registrar.add<Square>(OpSchema("elementwise.square").input_names({"x"}).describe("x * x, element by element"));
}
