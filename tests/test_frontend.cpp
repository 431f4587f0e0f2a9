// The math front end: Tensor methods and operators run the plugins' ops.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

#include <opforge/opforge.hpp>

using opforge::DType;
using opforge::Tensor;

TEST_CASE("front end: the least-squares loss reads like the maths and matches the fused op", "[frontend]") {
  Tensor A = Tensor::randn({40, 7}, DType::Float64, 1), y = Tensor::randn({40}, DType::Float64, 2);
  Tensor x = Tensor::randn({7}, DType::Float64, 3);
  x.requires_grad_(true);
  Tensor loss = (y - A.mv(x)).square().sum();
  loss.backward();
  const auto g_front = x.grad().to_vector();
  x.zero_grad();
  Tensor fused = opforge::op("loss.lstsq")({A, x, y});
  fused.backward();
  CHECK(loss.item() == Approx(fused.item()).epsilon(1e-12));
  const auto g_fused = x.grad().to_vector();
  for (std::size_t i = 0; i < g_front.size(); ++i) CHECK(g_front[i] == Approx(g_fused[i]).epsilon(1e-12));
}

TEST_CASE("front end: operators broadcast and take scalars", "[frontend]") {
  Tensor a = Tensor::from_values({1, 2, 3}, {3, 1});
  Tensor b = Tensor::from_values({10, 20}, {1, 2});
  CHECK((a + b).to_vector() == std::vector<double>{11, 21, 12, 22, 13, 23});
  CHECK((a * 2.0).to_vector() == std::vector<double>{2, 4, 6});
  CHECK((1.0 - a).to_vector() == std::vector<double>{0, -1, -2});
  CHECK((b - 5.0).to_vector() == std::vector<double>{5, 15});
  Tensor f = Tensor::from_values({1, 2}, DType::Float32);
  CHECK((f * 3.0).dtype() == DType::Float32);  // the scalar takes the tensor's dtype
}

TEST_CASE("front end: an int64 tensor with a double computes in float64, with an integer in int64, as NumPy",
          "[frontend]") {
  const Tensor x = Tensor::from_values({1, 2, 3}, DType::Int64);
  // A double makes float64, whole or not (x * 2.5 was once x * 2; x * 1e18 wrapped).
  CHECK((x * 2.0).dtype() == DType::Float64);
  CHECK((x * 2.0).to_vector() == std::vector<double>{2, 4, 6});
  const Tensor h = x * 2.5;
  CHECK(h.dtype() == DType::Float64);
  CHECK(h.to_vector() == std::vector<double>{2.5, 5, 7.5});
  CHECK((0.5 + x).to_vector() == std::vector<double>{1.5, 2.5, 3.5});
  CHECK((10.0 - x).dtype() == DType::Float64);
  CHECK((x * 1e18).to_vector() == std::vector<double>{1e18, 2e18, 3e18});
  CHECK((Tensor::from_values({100}, DType::Int64) * 1e18).to_vector()[0] == 1e20);
  CHECK((x - 1e30).to_vector()[0] == -1e30 + 1);
  CHECK(std::isnan((x * std::nan("")).to_vector()[1]));
  const std::vector<double> by_neg_zero = (x / -0.0).to_vector();  // the sign of -0.0 is kept
  CHECK(by_neg_zero[0] == -std::numeric_limits<double>::infinity());
  CHECK(std::signbit((x * -0.0).to_vector()[0]));
  // An integer keeps int64, exactly past 2^53, and wraps as NumPy's int64 does.
  CHECK((x * 2).dtype() == DType::Int64);
  CHECK((x * 2).to_vector() == std::vector<double>{2, 4, 6});
  CHECK((10 - x).dtype() == DType::Int64);
  CHECK((x + (std::int64_t{1} << 60)).dtype() == DType::Int64);
  const Tensor big = x + ((std::int64_t{1} << 53) + 1);
  CHECK(big.data<std::int64_t>()[0] == (std::int64_t{1} << 53) + 2);
  const Tensor w = x + std::numeric_limits<std::int64_t>::min();
  CHECK(w.dtype() == DType::Int64);
  CHECK(w.data<std::int64_t>()[0] == std::numeric_limits<std::int64_t>::min() + 1);
  CHECK((x * 3u).dtype() == DType::Int64);
  CHECK((x * (std::uint64_t{1} << 63)).dtype() == DType::Float64);  // past int64: the double it is
  CHECK((x / 2).to_vector() == std::vector<double>{0.5, 1, 1.5});  // true division
  // A float tensor keeps its dtype with either; a bool tensor goes to int64 with an integer.
  const Tensor f = Tensor::from_values({1, 2}, DType::Float32);
  CHECK((f * 3).dtype() == DType::Float32);
  CHECK((f * 3.0).dtype() == DType::Float32);
  const Tensor mask = Tensor::from_values({1, 0}, DType::Bool);
  CHECK((mask + 1).dtype() == DType::Int64);
  CHECK((mask + 1).to_vector() == std::vector<double>{2, 1});
  CHECK((mask * 1.5).dtype() == DType::Float64);
}

TEST_CASE("front end: a gradient through operators and methods", "[frontend]") {
  // L = sum((2 x + 1)^2), dL/dx = 4 (2 x + 1)
  Tensor x = Tensor::from_values({0.5, -1.0, 2.0});
  x.requires_grad_(true);
  ((2.0 * x + 1.0).square()).sum().backward();
  CHECK(x.grad().to_vector() == std::vector<double>{8.0, -4.0, 20.0});
}

TEST_CASE("front end: division, negation and the unary methods run their plugins", "[frontend]") {
  Tensor x = Tensor::from_values({1.0, 4.0, 9.0});
  CHECK((x / 2.0).to_vector() == std::vector<double>{0.5, 2.0, 4.5});
  CHECK((-x).to_vector() == std::vector<double>{-1.0, -4.0, -9.0});
  CHECK(x.sqrt().to_vector() == std::vector<double>{1.0, 2.0, 3.0});
  CHECK(x.pow(0.5).to_vector() == std::vector<double>{1.0, 2.0, 3.0});
  CHECK(x.mean().item() == Approx(14.0 / 3.0));
  Tensor m = Tensor::from_values({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(m.sum({1}).to_vector() == std::vector<double>{6, 15});
  CHECK(m.sum({0}, true).shape() == opforge::Dims{1, 3});
  // d/dx sum(sqrt(x) / x) = d/dx sum(x^-1/2) = -1/2 x^-3/2
  x.requires_grad_(true);
  (x.sqrt() / x).sum().backward();
  const auto g = x.grad().to_vector();
  CHECK(g[0] == Approx(-0.5));
  CHECK(g[1] == Approx(-0.5 / 8.0));
  CHECK(g[2] == Approx(-0.5 / 27.0));
}

TEST_CASE("front end: division is true division, int64 operands are divided as float64", "[frontend]") {
  // x / 2.0 on an int64 x made 2.0 an int64 scalar, and elementwise.div (float
  // only) refused the call; NumPy and PyTorch give 2.5.
  const Tensor x = Tensor::from_values({5, 3, -7}, DType::Int64);
  const Tensor h = x / 2.0;
  CHECK(h.dtype() == DType::Float64);
  CHECK(h.to_vector() == std::vector<double>{2.5, 1.5, -3.5});
  CHECK((x / x).to_vector() == std::vector<double>{1, 1, 1});
  CHECK((10.0 / x).to_vector() == std::vector<double>{2, 10.0 / 3, -10.0 / 7});
  CHECK((x / 2.5).to_vector() == std::vector<double>{2, 1.2, -2.8});
  // Two tensors of different dtypes are still refused, int64 / float64 included.
  CHECK_THROWS_AS(x / Tensor::from_values({2, 2, 2}), opforge::DTypeError);
}

TEST_CASE("front end: a bool tensor with a double computes in float64", "[frontend]") {
  // mask * 1.0 made 1.0 a bool scalar, and every arithmetic op refused bool.
  const Tensor m = opforge::op("elementwise.lt")({Tensor::from_values({1, 5, 2}), Tensor::from_values({3, 3, 3})});
  REQUIRE(m.dtype() == DType::Bool);
  CHECK((m * 1.0).dtype() == DType::Float64);
  CHECK((m * 2.0).to_vector() == std::vector<double>{2, 0, 2});
  CHECK((0.5 + m).to_vector() == std::vector<double>{1.5, 0.5, 1.5});
  CHECK((1.0 - m).to_vector() == std::vector<double>{0, 1, 0});
  CHECK((m / 2.0).to_vector() == std::vector<double>{0.5, 0, 0.5});
}
