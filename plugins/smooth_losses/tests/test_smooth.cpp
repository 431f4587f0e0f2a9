// Tests of the smooth plugin: values and gradients against hand-computed ones,
// extreme inputs, argument errors, and the opforge harness on every op.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/harness.hpp>

namespace {

using opforge::DType;
using opforge::Tensor;

// The plugin's ops. A plugin loads once per process: reuse it when another test
// case of this run has loaded it already.
std::vector<std::string> smooth_ops() {
  for (const opforge::PluginInfo& p : opforge::loaded_plugins())
    if (p.name == "smooth") return p.ops;
  return opforge::load_plugin(SMOOTH_PLUGIN).ops;
}

void require_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::isfinite(got[i]));
    CHECK(std::abs(got[i] - want[i]) <= tol * (1.0 + std::abs(want[i])));
  }
}

}  // namespace

TEST_CASE("smooth: the plugin provides huber and softplus") {
  std::vector<std::string> ops = smooth_ops();
  std::sort(ops.begin(), ops.end());
  CHECK(ops == std::vector<std::string>{"smooth.huber", "smooth.softplus"});
}

TEST_CASE("smooth.huber: value and gradients, both branches") {
  smooth_ops();
  for (DType dtype : {DType::Float64, DType::Float32}) {
    INFO(opforge::dtype_name(dtype));
    const double tol = dtype == DType::Float64 ? 1e-14 : 1e-6;
    // r = 0, 0.5, 3, -2, 1 -> 0, 0.125, 2.5, 1.5, 0.5; mean 4.625 / 5
    Tensor pred = Tensor::from_values({1.0, 0.5, 3.0, -1.0, 2.0}, dtype).requires_grad_();
    Tensor target = Tensor::from_values({1.0, 0.0, 0.0, 1.0, 1.0}, dtype).requires_grad_();
    Tensor loss = opforge::op("smooth.huber")({pred, target});
    CHECK(loss.dim() == 0);
    CHECK(loss.dtype() == dtype);
    require_close({loss.item()}, {4.625 / 5}, tol);
    loss.backward();
    // clamp(r, -1, 1) / N
    require_close(pred.grad().to_vector(), {0.0, 0.1, 0.2, -0.2, 0.2}, tol);
    require_close(target.grad().to_vector(), {0.0, -0.1, -0.2, 0.2, -0.2}, tol);
  }
}

TEST_CASE("smooth.huber: gradient for target only, and argument errors") {
  smooth_ops();
  Tensor pred = Tensor::from_values({0.25, -4.0});
  Tensor target = Tensor::zeros({2}).requires_grad_();
  opforge::op("smooth.huber")({pred, target}).backward();
  CHECK_FALSE(pred.grad().defined());
  require_close(target.grad().to_vector(), {-0.125, 0.5}, 1e-15);

  CHECK_THROWS_WITH(opforge::op("smooth.huber")({Tensor::zeros({2, 3}), Tensor::zeros({3, 2})}),
                    Catch::Contains("argument 'target'") && Catch::Contains("expected shape [2, 3]"));
  CHECK_THROWS_WITH(opforge::op("smooth.huber")({Tensor::zeros({0}), Tensor::zeros({0})}),
                    Catch::Contains("at least one element"));
}

TEST_CASE("smooth.softplus: values, gradients and extreme inputs without overflow") {
  smooth_ops();
  const std::vector<double> xs = {-1000.0, -30.0, -1.0, 0.0, 1e-8, 1.0, 30.0, 1000.0};
  std::vector<double> y_want, g_want;
  for (double x : xs) {
    // log(1 + e^x) written two ways, each exact where it is used.
    y_want.push_back(x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)));
    g_want.push_back(x > 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)));
  }
  for (DType dtype : {DType::Float64, DType::Float32}) {
    INFO(opforge::dtype_name(dtype));
    const double tol = dtype == DType::Float64 ? 1e-14 : 1e-6;
    Tensor x = Tensor::from_values(xs, dtype).requires_grad_();
    Tensor y = opforge::op("smooth.softplus")({x});
    CHECK(y.shape() == x.shape());
    require_close(y.to_vector(), y_want, tol);
    CHECK(y.to_vector()[0] >= 0.0);  // never negative, even where e^x underflows
    CHECK(y.to_vector()[3] == Approx(std::log(2.0)));
    opforge::op("reduce.sum")({y}).backward();  // gradient 1 for every element
    require_close(x.grad().to_vector(), g_want, tol);
  }
}

TEST_CASE("smooth: every op passes the opforge harness") {
  for (const std::string& name : smooth_ops()) {
    for (const opforge::sdk::CheckResult& r : opforge::sdk::check_op(opforge::op(name))) {
      INFO(opforge::sdk::format_result(r));
      CHECK(r.passed);
      CHECK_FALSE(r.skipped);  // both ops are differentiable and deterministic: nothing to skip
    }
  }
}
