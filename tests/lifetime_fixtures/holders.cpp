// A plugin whose code and data escape its op entries, built once per plugin name
// (FIXTURE_PLUGIN_NAME, also the op family) so each test of
// tests/test_plugin_lifetime.cpp has its own:
//   <name>.blob(x)        a copy of x in memory the plugin allocated, freed by
//                         the plugin's own deleter (Tensor::from_blob)
//   <name>.static_view(x) a borrowed view (no deleter) of a table in the
//                         plugin's static data: {1.5, 2.5, 3.5, 4.5}
//   <name>.hooked(x)      x; registers on x a gradient hook (plugin code) that
//                         triples x's gradient
//   <name>.refusing_hook(x) x; registers on x a gradient hook that throws an
//                         exception type defined in the plugin
//   <name>.dl_static(x)   from_dlpack of a DLManagedTensor in the plugin's static
//                         data, with no deleter, over a static table {7, 8, 9}
//   <name>.late_add(x)    calls the registrar its registration got (kept in a
//                         static) to add one more op: refused
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include <dlpack/dlpack.h>

#include <opforge/dlpack.hpp>
#include <opforge/sdk.hpp>

#ifndef FIXTURE_PLUGIN_NAME
#error "FIXTURE_PLUGIN_NAME must be defined"
#endif

namespace {

using opforge::Context;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;

void free_copy(void* data, void*) { std::free(data); }

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

double table[4] = {1.5, 2.5, 3.5, 4.5};

class StaticView final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan) const override {
    return {Tensor::from_blob(table, {4}, opforge::DType::Float64)};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

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

// Its type information and its what() live in the plugin's image.
class HookRefused : public std::runtime_error {
 public:
  HookRefused() : std::runtime_error("the plugin's hook refused the gradient") {}
};

class RefusingHook final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    if (in[0].requires_grad() && in[0].is_leaf()) in[0].register_hook([](const Tensor&) -> Tensor { throw HookRefused(); });
    return {in[0].clone()};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

double dl_table[3] = {7, 8, 9};
std::int64_t dl_shape[1] = {3};
DLManagedTensor dl_static = {
    {dl_table, {kDLCPU, 0}, 1, {kDLFloat, 64, 1}, dl_shape, nullptr, 0}, nullptr, nullptr};

class DlStatic final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan) const override { return {opforge::from_dlpack(&dl_static)}; }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

opforge::PluginRegistrar* kept_registrar = nullptr;

class LateAdd final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    kept_registrar->add<LateAdd>(opforge::OpSchema(FIXTURE_PLUGIN_NAME ".added_late").input_names({"x"}));
    return {in[0].clone()};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

}  // namespace

OPFORGE_PLUGIN(FIXTURE_PLUGIN_NAME, "1.0.0") {
  kept_registrar = &registrar;
  registrar.add<DlStatic>(
      opforge::OpSchema(FIXTURE_PLUGIN_NAME ".dl_static").input_names({"x"}).describe("a DLPack view of static data"));
  registrar.add<LateAdd>(
      opforge::OpSchema(FIXTURE_PLUGIN_NAME ".late_add").input_names({"x"}).describe("adds an op after registration"));
  registrar.add<Blob>(opforge::OpSchema(FIXTURE_PLUGIN_NAME ".blob").input_names({"x"}).describe("a copy in plugin memory"));
  registrar.add<StaticView>(
      opforge::OpSchema(FIXTURE_PLUGIN_NAME ".static_view").input_names({"x"}).describe("a view of a static table"));
  registrar.add<Hooked>(
      opforge::OpSchema(FIXTURE_PLUGIN_NAME ".hooked").input_names({"x"}).describe("x, hooking x's gradient"));
  registrar.add<RefusingHook>(opforge::OpSchema(FIXTURE_PLUGIN_NAME ".refusing_hook")
                                  .input_names({"x"})
                                  .describe("x, with a hook on x that throws"));
}
