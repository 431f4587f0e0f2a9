// A plugin whose registration makes a tensor over its static data, kept in a
// static of its own, and then (FIXTURE_FAIL) fails: the failed load leaves the
// library held by that tensor. Built twice, failing and healthy:
//   lt_fail_holder.build(x)  a 0-d tensor holding FIXTURE_BUILD
#include <stdexcept>

#include <opforge/sdk.hpp>

#ifndef FIXTURE_BUILD
#error "FIXTURE_BUILD must be defined"
#endif

namespace {

double table[2] = {1, 2};

class Build final : public opforge::Function {
 public:
  opforge::TensorList forward(opforge::Context&, opforge::TensorSpan) const override {
    return {opforge::Tensor::from_values({FIXTURE_BUILD}, {})};
  }
  opforge::TensorList backward(opforge::Context&, opforge::TensorSpan g) const override { return {g[0]}; }
};

}  // namespace

OPFORGE_PLUGIN("lt_fail_holder", "1.0.0") {
  static opforge::Tensor keep = opforge::Tensor::from_blob(table, {2}, opforge::DType::Float64);
#ifdef FIXTURE_FAIL
  throw std::runtime_error("lt_fail_holder fixture: this build fails after making a tensor over its static data");
#endif
  registrar.add<Build>(opforge::OpSchema("lt_fail_holder.build").input_names({"x"}).describe("the build number"));
}
