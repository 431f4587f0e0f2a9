// myops.scale: y = 2 x, element by element. The plugin that docs/harness.md's
// Catch2 example (tests/test_myops.cpp there) checks; ctest's
// sdk_install_and_example_plugins builds the two against an installed opforge.
#include <opforge/sdk.hpp>

using namespace opforge;

namespace {

class MyScale final : public Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      sdk::flat_view<T>(y) = T(2) * sdk::flat_view<T>(x);  // [n] -> [n]
    });
    return {y};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Tensor g = grads[0].contiguous();
    Tensor dx = Tensor::empty(g.shape(), g.dtype());
    sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      sdk::flat_view<T>(dx) = T(2) * sdk::flat_view<T>(g);
    });
    return {dx};
  }
};

}  // namespace

OPFORGE_PLUGIN("myops", "1.0.0") {
  registrar.add<MyScale>(OpSchema("myops.scale").input_names({"x"}).describe("2 x"));
}
