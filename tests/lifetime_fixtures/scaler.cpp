// A plugin for tests/test_plugin_lifetime.cpp, built several times from this one
// source with compile definitions, so that two builds can share a plugin name
// (or an op name) while computing different things:
//   FIXTURE_PLUGIN_NAME  the plugin's name
//   FIXTURE_OP_FAMILY    family of its ops (default: the plugin's name)
//   FIXTURE_SCALE        k, below
//   FIXTURE_EXTRA_OP     when defined, it also registers <family>.extra
//   FIXTURE_SAMPLES      when defined, scale and square have sample inputs:
//                        scale: randn [5] (seed); square: the same, but seed 13 throws
//
//   <family>.scale(x)  = k x       backward: k g
//   <family>.square(x) = k x^2     backward: 2 k x g (x saved for backward)
//   <family>.extra(x)  = x         backward: g
#include <stdexcept>

#include <opforge/sdk/plugin.hpp>

#ifndef FIXTURE_PLUGIN_NAME
#error "FIXTURE_PLUGIN_NAME must be defined"
#endif
#ifndef FIXTURE_SCALE
#error "FIXTURE_SCALE must be defined"
#endif
#ifndef FIXTURE_OP_FAMILY
#define FIXTURE_OP_FAMILY FIXTURE_PLUGIN_NAME
#endif

namespace {

constexpr double k = FIXTURE_SCALE;

opforge::Tensor times(const opforge::Tensor& t, double factor) {
  opforge::Tensor y = t.clone();
  double* p = y.data<double>();
  for (std::int64_t i = 0; i < y.numel(); ++i) p[i] *= factor;
  return y;
}

class Scale final : public opforge::Function {
 public:
  opforge::TensorList forward(opforge::Context&, opforge::TensorSpan in) const override { return {times(in[0], k)}; }
  opforge::TensorList backward(opforge::Context&, opforge::TensorSpan g) const override { return {times(g[0], k)}; }
};

class Square final : public opforge::Function {
 public:
  opforge::TensorList forward(opforge::Context& ctx, opforge::TensorSpan in) const override {
    ctx.save_for_backward({in[0]});
    opforge::Tensor y = in[0].clone();
    double* p = y.data<double>();
    for (std::int64_t i = 0; i < y.numel(); ++i) p[i] = k * p[i] * p[i];
    return {y};
  }
  opforge::TensorList backward(opforge::Context& ctx, opforge::TensorSpan g) const override {
    const opforge::Tensor& x = ctx.saved_tensors()[0];
    opforge::Tensor d = g[0].clone();
    double* p = d.data<double>();
    const double* px = x.data<double>();
    for (std::int64_t i = 0; i < d.numel(); ++i) p[i] *= 2 * k * px[i];
    return {d};
  }
};

class Extra final : public opforge::Function {
 public:
  opforge::TensorList forward(opforge::Context&, opforge::TensorSpan in) const override { return {in[0].clone()}; }
  opforge::TensorList backward(opforge::Context&, opforge::TensorSpan g) const override { return {g[0]}; }
};

opforge::OpSchema schema(const char* op, const char* doc) {
  return opforge::OpSchema(std::string(FIXTURE_OP_FAMILY ".") + op)
      .input_names({"x"})
      .accepts(opforge::DTypeSet{opforge::DType::Float64})
      .describe(doc);
}

#ifdef FIXTURE_SAMPLES
opforge::TensorList scale_samples(opforge::DType dtype, std::uint64_t seed) {
  return {opforge::Tensor::randn(opforge::Dims{5}, dtype, seed)};
}
opforge::TensorList square_samples(opforge::DType dtype, std::uint64_t seed) {
  if (seed == 13) throw std::runtime_error("square_samples: seed 13 is unlucky");
  return scale_samples(dtype, seed);
}
#endif

}  // namespace

OPFORGE_PLUGIN(FIXTURE_PLUGIN_NAME, "1.0.0") {
#ifdef FIXTURE_SAMPLES
  registrar.add<Scale>(schema("scale", "k x").samples(&scale_samples));
  registrar.add<Square>(schema("square", "k x^2").samples(square_samples));
#else
  registrar.add<Scale>(schema("scale", "k x"));
  registrar.add<Square>(schema("square", "k x^2"));
#endif
#ifdef FIXTURE_EXTRA_OP
  registrar.add<Extra>(schema("extra", "x"));
#endif
}
