// A plugin whose code escapes its op entries: a tensor whose memory is freed by
// the plugin's own deleter (Tensor::from_blob), and a gradient hook defined in
// the plugin and registered on the caller's tensor. Used by
// tests/test_plugin_lifetime.cpp to check that such code keeps the plugin loaded.
#include <cstdlib>
#include <cstring>

#include <opforge/sdk.hpp>

namespace {

using opforge::Context;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;

void free_copy(void* data, void*) { std::free(data); }

// out = a copy of x in memory the plugin allocated and frees (no gradient).
class Blob final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    const Tensor x = in[0].contiguous();
    void* mem = std::malloc(static_cast<std::size_t>(x.nbytes()) + 1);
    std::memcpy(mem, x.data_ptr(), static_cast<std::size_t>(x.nbytes()));
    return {Tensor::from_blob(mem, x.shape(), x.dtype(), &free_copy, nullptr)};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

// out = x; registers on x a hook (plugin code) that triples x's gradient.
class Hooked final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    if (in[0].requires_grad() && in[0].is_leaf())
      in[0].register_hook([](const Tensor& g) {
        Tensor out = g.clone();
        double* p = out.data<double>();
        for (std::int64_t i = 0; i < out.numel(); ++i) p[i] *= 3.0;
        return out;
      });
    return {in[0].clone()};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

}  // namespace

OPFORGE_PLUGIN("lt_escape", "1.0.0") {
  registrar.add<Blob>(opforge::OpSchema("lt_escape.blob").input_names({"x"}).describe("a copy in plugin memory"));
  registrar.add<Hooked>(opforge::OpSchema("lt_escape.hooked").input_names({"x"}).describe("x, hooking x's gradient"));
}
