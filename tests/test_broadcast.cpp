// NumPy broadcasting: broadcast_shapes, sum_to, and the elementwise plugin's
// broadcasting ops with their gradients, through the loaded plugin.
#include <catch2/catch.hpp>

#include <opforge/opforge.hpp>
#include <opforge/sdk/gradcheck.hpp>

using opforge::Dims;
using opforge::DType;
using opforge::Tensor;
using Catch::Matchers::Message;

TEST_CASE("broadcast_shapes follows NumPy's rules", "[broadcast]") {
  CHECK(opforge::broadcast_shapes({3, 1}, {1, 4}) == Dims{3, 4});
  CHECK(opforge::broadcast_shapes({5, 3, 1}, {4}) == Dims{5, 3, 4});
  CHECK(opforge::broadcast_shapes({}, {2, 2}) == Dims{2, 2});
  CHECK(opforge::broadcast_shapes({0, 1}, {1, 3}) == Dims{0, 3});
  CHECK_THROWS_MATCHES(opforge::broadcast_shapes({2, 3}, {3, 3}, "test.op", "x", "y"), opforge::ShapeError,
                       Message("test.op: argument 'x' of shape [2, 3] and argument 'y' of shape [3, 3] do not "
                               "broadcast: axis -2 has sizes 2 and 3 (sizes must be equal, or one of them 1)"));
}

TEST_CASE("sum_to reduces a broadcast gradient to the operand's shape", "[broadcast]") {
  // g = [[1, 2, 3], [4, 5, 6]]
  Tensor g = Tensor::from_values({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(opforge::sum_to(g, {2, 1}).to_vector() == std::vector<double>{6, 15});
  CHECK(opforge::sum_to(g, {1, 3}).to_vector() == std::vector<double>{5, 7, 9});
  CHECK(opforge::sum_to(g, {3}).to_vector() == std::vector<double>{5, 7, 9});
  CHECK(opforge::sum_to(g, {}).to_vector() == std::vector<double>{21});
  CHECK(opforge::sum_to(g, {2, 3}).is_same(g));  // nothing to reduce: the same tensor
  CHECK_THROWS_AS(opforge::sum_to(g, {4, 3}), opforge::ShapeError);
}

TEST_CASE("add of [N,1] and [1,M] gives the outer sum and correct gradients for both", "[broadcast]") {
  Tensor a = Tensor::from_values({1, 2, 3}, {3, 1});
  Tensor b = Tensor::from_values({10, 20}, {1, 2});
  a.requires_grad_(true);
  b.requires_grad_(true);
  Tensor c = opforge::op("elementwise.add")({a, b});
  CHECK(c.shape() == Dims{3, 2});
  CHECK(c.to_vector() == std::vector<double>{11, 21, 12, 22, 13, 23});
  c.backward(Tensor::ones({3, 2}));
  CHECK(a.grad().shape() == Dims{3, 1});
  CHECK(a.grad().to_vector() == std::vector<double>{2, 2, 2});  // each a[i] feeds 2 outputs
  CHECK(b.grad().shape() == Dims{1, 2});
  CHECK(b.grad().to_vector() == std::vector<double>{3, 3});  // each b[j] feeds 3 outputs
}

TEST_CASE("broadcasting add, sub and mul pass gradcheck in float64", "[broadcast][gradcheck]") {
  const std::vector<std::pair<Dims, Dims>> shapes = {
      {{4, 1}, {1, 3}}, {{2, 3, 4}, {4}}, {{3}, {2, 3}}, {{}, {2, 2}}, {{2, 1, 3}, {1, 4, 1}}};
  for (const char* name : {"elementwise.add", "elementwise.sub", "elementwise.mul"}) {
    for (const auto& [sa, sb] : shapes) {
      Tensor a = Tensor::randn(sa, DType::Float64, 1), b = Tensor::randn(sb, DType::Float64, 2);
      auto res = opforge::sdk::gradcheck(opforge::op(name), {a, b});
      INFO(name << " " << sa << " with " << sb << ": " << res.message);
      CHECK(res.ok);
    }
  }
}

TEST_CASE("strided inputs reach kernels as contiguous copies and gradients flow to the view's base", "[broadcast]") {
  // A transposed (non-contiguous) operand: the core hands the kernel a contiguous
  // copy; the result and gradient are those of the transposed values.
  Tensor m = Tensor::from_values({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor t = m.transpose(0, 1);  // [[1, 4], [2, 5], [3, 6]]
  REQUIRE_FALSE(t.is_contiguous());
  Tensor w = Tensor::from_values({1, 10}, {2});
  w.requires_grad_(true);
  Tensor out = opforge::op("elementwise.mul")({t, w});
  CHECK(out.to_vector() == std::vector<double>{1, 40, 2, 50, 3, 60});
  out.backward(Tensor::ones({3, 2}));
  CHECK(w.grad().to_vector() == std::vector<double>{1 + 2 + 3, 4 + 5 + 6});
}

TEST_CASE("sum_to sums a float32 gradient in float64: a broadcast operand's gradient keeps counting past 2^24",
          "[broadcast]") {
  // A float32 running sum stops growing at 2^24 (2^24 + 1 rounds back to 2^24):
  // b's gradient over [2^24, 1, 1, ..., 1] came out as 2^24, not 2^24 + 100.
  std::vector<double> gv(101, 1.0);
  gv[0] = 16777216.0;
  const Tensor g = Tensor::from_values(gv, DType::Float32);
  Tensor b = Tensor::scalar(1.0, DType::Float32).requires_grad_();
  (Tensor::zeros({101}, DType::Float32) + b).backward(g);  // elementwise.add: [101] + [] -> [101]
  CHECK(b.grad().dtype() == DType::Float32);
  CHECK(b.grad().item() == 16777316.0);
  // [101, 1] * [1, 1]: one element a row, summed across rows.
  Tensor c = Tensor::scalar(1.0, DType::Float32).reshape({1, 1}).detach().requires_grad_();
  (Tensor::ones({101, 1}, DType::Float32) * c).backward(g.reshape({101, 1}));
  CHECK(c.grad().item() == 16777316.0);
  CHECK(opforge::sum_to(g, {}).item() == 16777316.0);
}
