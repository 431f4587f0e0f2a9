// A plugin with a thread_local object that has a destructor: glibc's dynamic
// loader then keeps the library mapped after its last dlclose (the destructor
// may still have to run at thread exit). Built twice (FIXTURE_BUILD 1 and 2):
//   lt_resident.build(x)  a 0-d tensor holding FIXTURE_BUILD
#include <vector>

#include <opforge/sdk.hpp>

#ifndef FIXTURE_BUILD
#error "FIXTURE_BUILD must be defined"
#endif

namespace {

thread_local std::vector<double> scratch;

class Build final : public opforge::Function {
 public:
  opforge::TensorList forward(opforge::Context&, opforge::TensorSpan) const override {
    scratch.assign(1, FIXTURE_BUILD);
    return {opforge::Tensor::from_values({scratch[0]}, {})};
  }
  opforge::TensorList backward(opforge::Context&, opforge::TensorSpan g) const override { return {g[0]}; }
};

}  // namespace

OPFORGE_PLUGIN("lt_resident", "1.0.0") {
  registrar.add<Build>(opforge::OpSchema("lt_resident.build").input_names({"x"}).describe("the build number"));
}
