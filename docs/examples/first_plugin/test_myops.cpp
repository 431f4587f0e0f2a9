#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/harness.hpp>

// The plugin's ops, from the file this build made. A plugin loads once per
// process: reuse it when another test case of this run has loaded it already.
// An installed copy of "myops" (in the standard plugin folder, which loads
// first) is replaced, so the test never checks an old build.
static std::vector<std::string> myops() {
  for (const opforge::PluginInfo& p : opforge::loaded_plugins())
    if (p.name == "myops" && p.file == std::filesystem::canonical(MYOPS_PLUGIN).string()) return p.ops;
  opforge::LoadOptions options;
  options.replace_same_name = true;
  return opforge::load_plugin(MYOPS_PLUGIN, options).ops;
}

TEST_CASE("myops.silu: values and gradient") {
  myops();
  opforge::Tensor x = opforge::Tensor::from_values({-2.0, 0.0, 3.0}).requires_grad_();
  opforge::Tensor y = opforge::op("myops.silu")({x});
  const std::vector<double> xs = x.to_vector(), ys = y.to_vector();
  for (std::size_t i = 0; i < xs.size(); ++i) CHECK(ys[i] == Approx(xs[i] / (1 + std::exp(-xs[i]))));
  opforge::op("reduce.sum")({y}).backward();  // a standard op, from the installed opforge
  CHECK(x.grad().to_vector()[1] == Approx(0.5));  // silu'(0) = 1/2
}

TEST_CASE("myops: every op passes the opforge harness") {
  for (const std::string& name : myops()) {
    for (const opforge::sdk::CheckResult& r : opforge::sdk::check_op(opforge::op(name))) {
      INFO(opforge::sdk::format_result(r));  // "FAIL myops.silu gradcheck: ..."
      CHECK(r.passed);
    }
  }
}
