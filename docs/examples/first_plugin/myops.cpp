// myops.silu: y = x sigmoid(x), element by element (SiLU, or swish).
//   dy/dx = s (1 + x (1 - s)),  s = sigmoid(x) = 1 / (1 + exp(-x))
#include <opforge/sdk.hpp>

#include <cmath>

using namespace opforge;

namespace {

template <class T>
T sigmoid(T x) {
  const T e = std::exp(-std::abs(x));  // never overflows
  return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

class Silu final : public Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    if (ctx.any_input_needs_grad()) ctx.save_for_backward(x);  // backward reads x, nothing else
    return {sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);  // float or double
      Tensor y = Tensor::empty(x.shape(), x.dtype());
      const T* px = x.data<T>();
      T* py = y.data<T>();
      sdk::parallel_for(0, x.numel(), sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) py[i] = px[i] * sigmoid(px[i]);
      });
      return y;
    })};
  }

  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Tensor& x = ctx.saved_tensors()[0];
    const Tensor g = grads[0].contiguous();
    return {sdk::dispatch_floating(x.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      Tensor dx = Tensor::empty(x.shape(), x.dtype());
      const T* px = x.data<T>();
      const T* pg = g.data<T>();
      T* pd = dx.data<T>();
      sdk::parallel_for(0, x.numel(), sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const T s = sigmoid(px[i]);
          pd[i] = pg[i] * s * (T(1) + px[i] * (T(1) - s));
        }
      });
      return dx;  // one gradient per input, of the input's shape and dtype
    })};
  }
};

// What `opforge check` and sdk::check_op run the op on: x [4, 5].
TensorList silu_samples(DType dtype, std::uint64_t seed) { return {Tensor::randn({4, 5}, dtype, seed)}; }

}  // namespace

OPFORGE_PLUGIN("myops", "1.0.0") {
  registrar.add<Silu>(OpSchema("myops.silu")
                          .input_names({"x"})
                          .describe("x sigmoid(x), element by element")
                          .samples(silu_samples));
}
