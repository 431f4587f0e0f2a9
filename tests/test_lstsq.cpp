// loss.lstsq through the loaded plugin: values, gradients, agreement of the
// fused op with the same loss composed of plugins, and its errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <opforge/opforge.hpp>
#include <opforge/sdk/gradcheck.hpp>

using opforge::DType;
using opforge::Tensor;

namespace {

struct Problem {
  Tensor A, x, y;
};

Problem make_problem(std::int64_t m, std::int64_t n, DType dt, std::uint64_t seed) {
  return {Tensor::randn({m, n}, dt, seed), Tensor::randn({n}, dt, seed + 1), Tensor::randn({m}, dt, seed + 2)};
}

// Naive reference in double: r = y - A x, L = r.r, dL/dx = -2 A^T r.
struct Reference {
  double loss = 0;
  std::vector<double> r, gx;
};
Reference reference(const Problem& p) {
  const auto A = p.A.to_vector(), x = p.x.to_vector(), y = p.y.to_vector();
  const std::size_t m = y.size(), n = x.size();
  Reference ref;
  ref.r.resize(m);
  ref.gx.assign(n, 0.0);
  for (std::size_t i = 0; i < m; ++i) {
    double s = 0;
    for (std::size_t j = 0; j < n; ++j) s += A[i * n + j] * x[j];
    ref.r[i] = y[i] - s;
    ref.loss += ref.r[i] * ref.r[i];
  }
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) ref.gx[j] += -2.0 * A[i * n + j] * ref.r[i];
  return ref;
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

}  // namespace

TEST_CASE("lstsq forward equals ||y - Ax||^2 worked by hand", "[lstsq]") {
  // A = [[1, 2], [3, 4], [5, 6]], x = [1, -1], y = [0, 1, 2]: Ax = [-1, -1, -1], r = [1, 2, 3], L = 14.
  for (DType dt : {DType::Float64, DType::Float32}) {
    Tensor A = Tensor::from_values({1, 2, 3, 4, 5, 6}, {3, 2}, dt);
    Tensor x = Tensor::from_values({1, -1}, dt);
    Tensor y = Tensor::from_values({0, 1, 2}, dt);
    x.requires_grad_(true);
    Tensor L = opforge::op("loss.lstsq")({A, x, y});
    CHECK(L.dim() == 0);
    CHECK(L.dtype() == dt);
    CHECK(L.item() == Approx(14.0));
    L.backward();
    // dL/dx = -2 A^T r = -2 [1+6+15, 2+8+18] = [-44, -56]
    const auto g = x.grad().to_vector();
    CHECK(g[0] == Approx(-44.0));
    CHECK(g[1] == Approx(-56.0));
  }
}

TEST_CASE("lstsq matches a naive reference on sizes that exercise every row block", "[lstsq]") {
  // m not a multiple of 4 (remainder rows), m large enough for many chunks.
  for (std::int64_t m : {1, 3, 7, 64, 1001, 5003}) {
    Problem p = make_problem(m, 13, DType::Float64, 10 + m);
    p.x.requires_grad_(true);
    Tensor L = opforge::op("loss.lstsq")({p.A, p.x, p.y});
    L.backward();
    const Reference ref = reference(p);
    INFO("m = " << m);
    CHECK(L.item() == Approx(ref.loss).epsilon(1e-12));
    CHECK(max_rel_diff(p.x.grad().to_vector(), ref.gx) < 1e-12);
  }
}

TEST_CASE("lstsq gradients pass gradcheck for A, x and y", "[lstsq][gradcheck]") {
  const opforge::OpHandle lstsq = opforge::op("loss.lstsq");
  Problem p = make_problem(9, 4, DType::Float64, 3);
  auto res = opforge::sdk::gradcheck(lstsq, {p.A, p.x, p.y});
  INFO(res.message);
  CHECK(res.ok);
  CHECK(res.elements_checked == 9 * 4 + 4 + 9);
}

TEST_CASE("lstsq gradcheck promotes float32 inputs and says so", "[lstsq][gradcheck]") {
  Problem p = make_problem(6, 3, DType::Float32, 4);
  auto res = opforge::sdk::gradcheck(opforge::op("loss.lstsq"), {p.A, p.x, p.y});
  INFO(res.message);
  CHECK(res.ok);
  CHECK(res.note == "inputs 0, 1, 2 promoted from float32 to float64 for the check");
}

TEST_CASE("lstsq computes only the gradients that are needed", "[lstsq]") {
  Problem p = make_problem(8, 3, DType::Float64, 5);
  p.y.requires_grad_(true);  // only y
  opforge::op("loss.lstsq")({p.A, p.x, p.y}).backward();
  CHECK_FALSE(p.A.grad().defined());
  CHECK_FALSE(p.x.grad().defined());
  REQUIRE(p.y.grad().defined());
  const Reference ref = reference(p);
  const auto gy = p.y.grad().to_vector();
  for (std::size_t i = 0; i < gy.size(); ++i) CHECK(gy[i] == Approx(2.0 * ref.r[i]));
}

TEST_CASE("fused, graph and explicit gradients agree", "[lstsq]") {
  const opforge::OpHandle lstsq = opforge::op("loss.lstsq"), mv = opforge::op("linalg.mv"),
                          sub = opforge::op("elementwise.sub"), square = opforge::op("elementwise.square"),
                          sum = opforge::op("reduce.sum");
  for (DType dt : {DType::Float64, DType::Float32}) {
    Problem p = make_problem(300, 30, dt, 7);
    p.x.requires_grad_(true);
    lstsq({p.A, p.x, p.y}).backward();
    const auto fused = p.x.grad().to_vector();
    p.x.zero_grad();
    Tensor L = sum({square({sub({p.y, mv({p.A, p.x})})})});
    L.backward();
    const auto graph = p.x.grad().to_vector();
    const Reference ref = reference(p);  // explicit -2 A^T (y - A x), in double
    const double tol = dt == DType::Float64 ? 1e-12 : 1e-5;
    INFO(opforge::dtype_name(dt));
    CHECK(max_rel_diff(fused, ref.gx) < tol);
    CHECK(max_rel_diff(graph, ref.gx) < tol);
    CHECK(max_rel_diff(fused, graph) < tol);
    CHECK(L.item() == Approx(ref.loss).epsilon(dt == DType::Float64 ? 1e-12 : 1e-5));
  }
}

TEST_CASE("lstsq is bit-identical from run to run", "[lstsq]") {
  Problem p = make_problem(4097, 50, DType::Float64, 8);
  p.x.requires_grad_(true);
  const opforge::OpHandle lstsq = opforge::op("loss.lstsq");
  lstsq({p.A, p.x, p.y}).backward();
  const auto first = p.x.grad().to_vector();
  for (int i = 0; i < 5; ++i) {
    p.x.zero_grad();
    lstsq({p.A, p.x, p.y}).backward();
    CHECK(p.x.grad().to_vector() == first);
  }
}

TEST_CASE("lstsq rejects bad shapes and dtypes with messages that name the argument", "[lstsq][errors]") {
  const opforge::OpHandle lstsq = opforge::op("loss.lstsq");
  Tensor A = Tensor::zeros({5, 4}), x = Tensor::zeros({4}), y = Tensor::zeros({5});
  CHECK_THROWS_WITH(lstsq({Tensor::zeros({20}), x, y}),
                    "loss.lstsq: argument 'A': expected a 2-D tensor, got float64[20]");
  CHECK_THROWS_WITH(lstsq({A, Tensor::zeros({3}), y}),
                    "loss.lstsq: argument 'x': expected shape [4] (the number of columns of 'A'), got [3]");
  CHECK_THROWS_WITH(lstsq({A, x, Tensor::zeros({4})}),
                    "loss.lstsq: argument 'y': expected shape [5] (the number of rows of 'A'), got [4]");
  CHECK_THROWS_WITH(lstsq({A, Tensor::zeros({4}, DType::Float32), y}),
                    "loss.lstsq: argument 'x' (input 1): expected dtype float64 (the dtype of 'A'; all inputs "
                    "must share one dtype), got float32; convert one of them with .to() first");
  CHECK_THROWS_AS(lstsq({A, x}), opforge::ValueError);
  CHECK_THROWS_WITH(lstsq({A, x}), "loss.lstsq: expected 3 inputs (A, x, y), got 2");
}

TEST_CASE("lstsq: sizes around the kernels' block-width boundaries match the reference, with remainder rows",
          "[lstsq]") {
  // Through the plugin, so with the kernel variant picked for this CPU
  // (tests/test_lstsq_kernel.cpp runs both). "pipelined" takes 4 rows a step while
  // 8 rows of A fit in 40 KiB (float64 n <= 640, float32 n <= 1280), else 8;
  // "two_phase" takes 8 unless a row is over 32 KiB. Sizes on both sides of the
  // boundaries, m with remainders of every row count.
  struct Case {
    DType dt;
    std::int64_t m, n;
  };
  for (const Case c : {Case{DType::Float64, 1203, 640}, Case{DType::Float64, 1205, 641},
                       Case{DType::Float64, 6007, 700},
                       Case{DType::Float32, 1203, 1280}, Case{DType::Float32, 1207, 1281},
                       Case{DType::Float32, 3001, 1500}}) {
    Problem p = make_problem(c.m, c.n, c.dt, 40 + static_cast<std::uint64_t>(c.n));
    p.x.requires_grad_(true);
    Tensor L = opforge::op("loss.lstsq")({p.A, p.x, p.y});
    L.backward();
    const Reference ref = reference(p);
    const double tol = c.dt == DType::Float64 ? 1e-11 : 2e-5;
    INFO(opforge::dtype_name(c.dt) << " m = " << c.m << " n = " << c.n);
    CHECK(L.item() == Approx(ref.loss).epsilon(tol));
    CHECK(max_rel_diff(p.x.grad().to_vector(), ref.gx) < tol);
  }
}

TEST_CASE("lstsq: the gradient is bit-identical for 1 and 2 threads, short and long rows", "[lstsq]") {
  const opforge::OpHandle lstsq = opforge::op("loss.lstsq");
  for (const std::int64_t n : {100, 900}) {
    Problem p = make_problem(4001, n, DType::Float64, 60 + static_cast<std::uint64_t>(n));
    p.x.requires_grad_(true);
    std::vector<std::vector<double>> grads;
    for (int threads : {1, 2}) {
      opforge::set_num_threads(threads);
      p.x.zero_grad();
      lstsq({p.A, p.x, p.y}).backward();
      grads.push_back(p.x.grad().to_vector());
    }
    opforge::set_num_threads(0);
    INFO("n = " << n);
    CHECK(grads[0] == grads[1]);
  }
}
