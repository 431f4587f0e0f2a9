// Tests of the fftconv plugin: values and both gradients against a direct
// O(n k) convolution and correlations, many threads planning sizes at once,
// argument errors, and the opforge harness.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/harness.hpp>

namespace {

using opforge::DType;
using opforge::Tensor;

void load_fftconv() {
  for (const opforge::PluginInfo& p : opforge::loaded_plugins())
    if (p.name == "fftconv") return;
  opforge::load_plugin(FFTCONV_PLUGIN);
}

// y[m] = sum_i s[i] k[m - i]
std::vector<double> direct_conv(const std::vector<double>& s, const std::vector<double>& k) {
  std::vector<double> y(s.size() + k.size() - 1, 0.0);
  for (std::size_t i = 0; i < s.size(); ++i)
    for (std::size_t j = 0; j < k.size(); ++j) y[i + j] += s[i] * k[j];
  return y;
}

// out[i] = sum_j g[i + j] v[j], i < len
std::vector<double> direct_corr(const std::vector<double>& g, const std::vector<double>& v, std::size_t len) {
  std::vector<double> out(len, 0.0);
  for (std::size_t i = 0; i < len; ++i)
    for (std::size_t j = 0; j < v.size(); ++j) out[i] += g[i + j] * v[j];
  return out;
}

// Largest |got - want| over the largest |want|: FFT errors spread evenly over
// the output, so they are judged against its scale.
double rel_err(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double err = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / std::max(scale, 1e-300);
}

double tolerance(DType dtype) { return dtype == DType::Float64 ? 1e-12 : 2e-5; }

}  // namespace

TEST_CASE("fftconv.conv1d: a small convolution, exactly") {
  load_fftconv();
  // [1, 2, 3] * [0, 1, 0.5] = [0, 1, 2.5, 4, 1.5]
  const Tensor y = opforge::op("fftconv.conv1d")({Tensor::from_values({1, 2, 3}), Tensor::from_values({0, 1, 0.5})});
  CHECK(y.shape() == opforge::Dims{5});
  CHECK(rel_err(y.to_vector(), {0, 1, 2.5, 4, 1.5}) < 1e-15);
}

TEST_CASE("fftconv.conv1d: values and gradients match the direct O(n k) sums") {
  load_fftconv();
  const std::vector<std::pair<std::int64_t, std::int64_t>> sizes = {
      {1, 1}, {1, 5}, {5, 1}, {7, 3}, {3, 7}, {64, 64}, {100, 17}, {997, 13}, {1000, 257}, {4099, 31}};
  std::uint64_t seed = 10;
  for (DType dtype : {DType::Float64, DType::Float32}) {
    for (auto [n, k] : sizes) {
      INFO(opforge::dtype_name(dtype) << " n " << n << " k " << k);
      Tensor s = Tensor::randn({n}, dtype, seed++).requires_grad_();
      Tensor kern = Tensor::randn({k}, dtype, seed++).requires_grad_();
      const Tensor g = Tensor::randn({n + k - 1}, dtype, seed++);
      const std::vector<double> sv = s.to_vector(), kv = kern.to_vector(), gv = g.to_vector();

      Tensor y = opforge::op("fftconv.conv1d")({s, kern});
      CHECK(y.dtype() == dtype);
      CHECK(rel_err(y.to_vector(), direct_conv(sv, kv)) < tolerance(dtype));
      y.backward(g);
      CHECK(rel_err(s.grad().to_vector(), direct_corr(gv, kv, std::size_t(n))) < tolerance(dtype));
      CHECK(rel_err(kern.grad().to_vector(), direct_corr(gv, sv, std::size_t(k))) < tolerance(dtype));
    }
  }
}

TEST_CASE("fftconv.conv1d: a gradient for one input only") {
  load_fftconv();
  Tensor s = Tensor::randn({9}, DType::Float64, 1);
  Tensor kern = Tensor::randn({4}, DType::Float64, 2).requires_grad_();
  const Tensor g = Tensor::randn({12}, DType::Float64, 3);
  opforge::op("fftconv.conv1d")({s, kern}).backward(g);
  CHECK_FALSE(s.grad().defined());
  CHECK(rel_err(kern.grad().to_vector(), direct_corr(g.to_vector(), s.to_vector(), 4)) < 1e-12);
}

TEST_CASE("fftconv.conv1d: threads planning and running many sizes at once agree with one thread") {
  load_fftconv();
  const opforge::OpHandle conv = opforge::op("fftconv.conv1d");
  // Sizes no earlier test used, so plans are made while other threads run.
  std::vector<std::pair<Tensor, Tensor>> inputs;
  std::vector<std::vector<double>> want;
  for (std::int64_t i = 0; i < 24; ++i) {
    const DType dtype = i % 2 ? DType::Float32 : DType::Float64;
    inputs.emplace_back(Tensor::randn({50 + 37 * i}, dtype, 100 + std::uint64_t(i)),
                        Tensor::randn({3 + 5 * i}, dtype, 200 + std::uint64_t(i)));
  }
  std::vector<std::vector<std::vector<double>>> got(8, std::vector<std::vector<double>>(inputs.size()));
  std::vector<std::thread> threads;
  std::atomic<bool> go{false};
  for (std::size_t t = 0; t < got.size(); ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (std::size_t c = 0; c < inputs.size(); ++c) {
        const std::size_t i = (c + 3 * t) % inputs.size();  // each thread in its own order
        got[t][i] = conv({inputs[i].first, inputs[i].second}).to_vector();
      }
    });
  }
  go = true;
  for (std::thread& th : threads) th.join();
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    INFO("input " << i);
    const std::vector<double> one = conv({inputs[i].first, inputs[i].second}).to_vector();
    CHECK(rel_err(one, direct_conv(inputs[i].first.to_vector(), inputs[i].second.to_vector())) <
          tolerance(inputs[i].first.dtype()));
    for (std::size_t t = 0; t < got.size(); ++t) CHECK(got[t][i] == one);  // bit for bit
  }
}

TEST_CASE("fftconv.conv1d: argument errors name the argument") {
  load_fftconv();
  const opforge::OpHandle conv = opforge::op("fftconv.conv1d");
  CHECK_THROWS_WITH(conv({Tensor::zeros({2, 3}), Tensor::zeros({3})}),
                    Catch::Contains("argument 'signal'") && Catch::Contains("1-D"));
  CHECK_THROWS_WITH(conv({Tensor::zeros({3}), Tensor::zeros({})}), Catch::Contains("argument 'kernel'"));
  CHECK_THROWS_WITH(conv({Tensor::zeros({0}), Tensor::zeros({3})}), Catch::Contains("non-empty"));
}

TEST_CASE("fftconv: every op passes the opforge harness") {
  load_fftconv();
  for (const std::string& name : {"fftconv.conv1d"}) {
    for (const opforge::sdk::CheckResult& r : opforge::sdk::check_op(opforge::op(name))) {
      INFO(opforge::sdk::format_result(r));
      CHECK(r.passed);
      CHECK_FALSE(r.skipped);
    }
  }
}
