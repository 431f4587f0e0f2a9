// The elementwise family beyond add/sub/mul/square: unary functions (neg ...
// pow_scalar, log1p, expm1, softplus), div, pow, maximum, minimum, where, and the comparisons, plus int64
// add/sub/mul. Every op is reached through the loaded plugin (opforge::op), as a
// user program does.
//
// For every op: values against a naive loop in the test (NumPy broadcasting
// worked out index by index) and hand-worked cases, gradients against finite
// differences (sdk::gradcheck, float64; a local central-difference check for the
// ops whose attributes gradcheck cannot pass), float32 against float64, the test
// harness (sdk::check_op), and the exact message of each bad call.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include <opforge/opforge.hpp>
#include <opforge/sdk/gradcheck.hpp>
#include <opforge/sdk/harness.hpp>

#include "op_checks.hpp"

namespace {

using Catch::Matchers::Message;
using opforge::Attr;
using opforge::Dims;
using opforge::DType;
using opforge::OpHandle;
using opforge::Tensor;
using opforge::TensorList;
namespace sdk = opforge::sdk;

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- helpers ----------------------------------------------------------------------------------

Tensor values(const std::vector<double>& v, const Dims& shape, DType dtype = DType::Float64) {
  return Tensor::from_values(v, shape, dtype);
}

// An int64 tensor written element by element (from_values goes through double,
// which cannot hold every int64).
Tensor ints(const std::vector<std::int64_t>& v, const Dims& shape) {
  Tensor t = Tensor::empty(shape, DType::Int64);
  std::int64_t* p = t.data<std::int64_t>();
  for (std::size_t i = 0; i < v.size(); ++i) p[i] = v[i];
  return t;
}
std::vector<std::int64_t> int_values(const Tensor& t) {
  const Tensor c = t.contiguous();
  const std::int64_t* p = c.data<std::int64_t>();
  return {p, p + c.numel()};
}

// Every element within abs + rel * |want| (NaN matches NaN, inf the same inf);
// on failure reports the first element that is not.
void require_values(const Tensor& got, const std::vector<double>& want, double rel, double abs = 0) {
  const std::vector<double> g = got.to_vector();
  REQUIRE(g.size() == want.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    const bool same_special = (std::isnan(g[i]) && std::isnan(want[i])) || (std::isinf(want[i]) && g[i] == want[i]);
    if (same_special) continue;
    if (!std::isnan(g[i]) && !std::isnan(want[i]) && !std::isinf(want[i]) &&
        g[i] == Approx(want[i]).epsilon(rel).margin(abs))
      continue;
    INFO("element " << i << " of " << g.size() << ": got " << g[i] << ", want " << want[i]);
    REQUIRE(false);
  }
}

// The flat index into an operand of shape `s` that NumPy broadcasting reads for
// flat index `i` of the broadcast shape `out`.
std::size_t broadcast_index(const Dims& out, const Dims& s, std::int64_t i) {
  std::int64_t idx = 0, stride = 1;
  const auto lead = static_cast<std::int64_t>(out.size()) - static_cast<std::int64_t>(s.size());
  for (auto ax = static_cast<std::int64_t>(out.size()) - 1; ax >= 0; --ax) {
    const std::int64_t coord = i % out[static_cast<std::size_t>(ax)];
    i /= out[static_cast<std::size_t>(ax)];
    const std::int64_t sa = ax - lead;
    if (sa < 0) continue;
    const std::int64_t size = s[static_cast<std::size_t>(sa)];
    if (size != 1) idx += coord * stride;
    stride *= size;
  }
  return static_cast<std::size_t>(idx);
}

// out[i] = f(a[i'], b[i'']) by the naive rule above, in double.
std::vector<double> naive_binary(const Tensor& a, const Tensor& b, const std::function<double(double, double)>& f) {
  const Dims out = opforge::broadcast_shapes(a.shape(), b.shape());
  const std::vector<double> av = a.to_vector(), bv = b.to_vector();
  std::vector<double> r(static_cast<std::size_t>(out.product()));
  for (std::size_t i = 0; i < r.size(); ++i) {
    const auto k = static_cast<std::int64_t>(i);
    r[i] = f(av[broadcast_index(out, a.shape(), k)], bv[broadcast_index(out, b.shape(), k)]);
  }
  return r;
}

// randn of `shape` passed through f.
Tensor mapped_randn(const Dims& shape, std::uint64_t seed, const std::function<double(double)>& f,
                    DType dtype = DType::Float64) {
  std::vector<double> v = Tensor::randn(shape, DType::Float64, seed).to_vector();
  for (double& x : v) x = f(x);
  return Tensor::from_values(v, shape, dtype);
}
double positive(double v) { return 0.5 + std::abs(v); }
double above_minus_one(double v) { return std::abs(v) - 0.5; }  // in log1p's domain, on both sides of 0
double away_from_zero(double v) { return v < 0 ? v - 0.25 : v + 0.25; }

Tensor run(const std::string& name, const TensorList& in, const std::vector<Attr>& attrs = {}) {
  return opforge::op(name).call(in, opforge::AttrSpan(attrs.data(), attrs.size()))[0];
}

// Every floating input element checked (stricter than "some were").
void require_gradcheck(const OpHandle& op, const TensorList& inputs) {
  opforge_tests::require_gradcheck(op, std::vector<Tensor>(inputs.begin(), inputs.end()));
}
void require_gradcheck(const std::string& name, const TensorList& inputs) {
  require_gradcheck(opforge::op(name), inputs);
}

// ---- unary: values ------------------------------------------------------------------------------

struct UnaryCase {
  const char* name;
  std::function<double(double)> ref;
  double (*domain)(double);  // maps randn onto valid, differentiable inputs
};
double any(double v) { return v; }

const std::vector<UnaryCase>& unary_cases() {
  static const std::vector<UnaryCase> cases = {
      {"elementwise.neg", [](double v) { return -v; }, any},
      {"elementwise.sqrt", [](double v) { return std::sqrt(v); }, positive},
      {"elementwise.exp", [](double v) { return std::exp(v); }, any},
      {"elementwise.log", [](double v) { return std::log(v); }, positive},
      {"elementwise.log1p", [](double v) { return std::log1p(v); }, above_minus_one},
      {"elementwise.expm1", [](double v) { return std::expm1(v); }, any},
      // Not the op's formula (max(x, 0) + log1p(e^-|x|)): ln(1 + eˣ) directly, exact enough for randn.
      {"elementwise.softplus", [](double v) { return std::log1p(std::exp(v)); }, any},
      {"elementwise.abs", [](double v) { return std::abs(v); }, away_from_zero},
      {"elementwise.sin", [](double v) { return std::sin(v); }, any},
      {"elementwise.cos", [](double v) { return std::cos(v); }, any},
      {"elementwise.tanh", [](double v) { return std::tanh(v); }, any},
      {"elementwise.sigmoid", [](double v) { return 1 / (1 + std::exp(-v)); }, any},
      {"elementwise.relu", [](double v) { return v > 0 ? v : 0; }, away_from_zero},
      {"elementwise.clamp", [](double v) { return v; }, any},                // default bounds: none
      {"elementwise.pow_scalar", [](double v) { return v * v; }, positive},  // default exponent 2
  };
  return cases;
}

TEST_CASE("unary ops match a naive loop in float64, and float32 agrees", "[elementwise][unary]") {
  for (const UnaryCase& c : unary_cases()) {
    INFO(c.name);
    const Tensor x = mapped_randn({3, 4}, 11, c.domain);
    std::vector<double> want;
    for (double v : x.to_vector()) want.push_back(c.ref(v));
    const Tensor y = run(c.name, {x});
    REQUIRE(y.shape() == Dims{3, 4});
    REQUIRE(y.dtype() == DType::Float64);
    require_values(y, want, 1e-14, 1e-15);

    // float32: the same (float32-exact) inputs, to float32 precision.
    const Tensor x32 = x.to(DType::Float32);
    const Tensor y32 = run(c.name, {x32});
    REQUIRE(y32.dtype() == DType::Float32);
    want.clear();
    for (double v : x32.to_vector()) want.push_back(c.ref(v));
    require_values(y32, want, 1e-6, 1e-7);
  }
}

TEST_CASE("vector-math ops give an element the same bits wherever it sits in the tensor", "[elementwise][unary]") {
  // exp, log, log1p, expm1, sin, cos, tanh and pow come from libmvec, whose vector lanes may
  // round unlike the scalar call: an element computed in a loop's tail would
  // then differ from the same element in a vector lane, and results would
  // depend on where a range was cut (the thread count). Each element of a
  // 1003-element tensor is compared with itself in views that start 1, 5 and
  // 999 elements in, and alone.
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor x = Tensor::randn({1003}, dtype, 41).abs() + 0.25;  // in every op's domain
  const Tensor e = Tensor::randn({1003}, dtype, 42);
  struct Case {
    std::string name;
    std::function<Tensor(const Tensor&, const Tensor&)> call;
  };
  const std::vector<Case> cases = {
      {"exp", [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.exp")({a}); }},
      {"log", [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.log")({a}); }},
      {"sin", [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.sin")({a}); }},
      {"cos", [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.cos")({a}); }},
      {"tanh", [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.tanh")({a}); }},
      {"sigmoid", [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.sigmoid")({a}); }},
      {"log1p", [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.log1p")({a}); }},
      {"expm1", [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.expm1")({a}); }},
      {"softplus", [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.softplus")({a}); }},
      {"pow_scalar 2.5",
       [](const Tensor& a, const Tensor&) { return opforge::op("elementwise.pow_scalar")({a}, {{"exponent", 2.5}}); }},
      {"pow", [](const Tensor& a, const Tensor& b) { return opforge::op("elementwise.pow")({a, b}); }},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const std::vector<double> whole = c.call(x, e).to_vector();
    for (const std::int64_t from : {1, 5, 999}) {
      const std::vector<double> part = c.call(x.slice(0, from, 1003), e.slice(0, from, 1003)).to_vector();
      for (std::size_t i = 0; i < part.size(); ++i) {
        INFO("element " << from + static_cast<std::int64_t>(i) << " in a view from " << from);
        REQUIRE(part[i] == whole[static_cast<std::size_t>(from) + i]);
      }
    }
    for (const std::int64_t i : {0, 17, 1002}) {
      INFO("element " << i << " alone");
      REQUIRE(c.call(x.slice(0, i, i + 1), e.slice(0, i, i + 1)).item() == whole[static_cast<std::size_t>(i)]);
    }
  }
}

TEST_CASE("unary ops on hand-worked values, including the edges of their domains", "[elementwise][unary]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor x = values({-2, -0.5, 0, 0.25, 4}, {5}, dtype);
  require_values(run("elementwise.neg", {x}), {2, 0.5, 0, -0.25, -4}, 0);
  require_values(run("elementwise.abs", {x}), {2, 0.5, 0, 0.25, 4}, 0);
  require_values(run("elementwise.relu", {x}), {0, 0, 0, 0.25, 4}, 0);
  require_values(run("elementwise.sqrt", {x}), {kNaN, kNaN, 0, 0.5, 2}, 0);
  require_values(run("elementwise.log", {values({1, 0, -1}, {3}, dtype)}), {0, -kInf, kNaN}, 0);
  require_values(run("elementwise.exp", {values({0, -1000, 1000}, {3}, dtype)}), {1, 0, kInf}, 0);
  require_values(run("elementwise.tanh", {values({0, -1000, 1000}, {3}, dtype)}), {0, -1, 1}, 0);
  // No overflow on either side: e^-x is never formed for a large negative x.
  require_values(run("elementwise.sigmoid", {values({0, -1000, 1000}, {3}, dtype)}), {0.5, 0, 1}, 0);
  require_values(run("elementwise.clamp", {x}, {Attr(-1.0), Attr(0.25)}), {-1, -0.5, 0, 0.25, 0.25}, 0);
  require_values(run("elementwise.clamp", {x}, {Attr(-1.0)}), {-1, -0.5, 0, 0.25, 4}, 0);  // no upper bound
  require_values(opforge::op("elementwise.clamp")({x}, {{"max", 0.0}}), {-2, -0.5, 0, 0, 0}, 0);
  require_values(run("elementwise.pow_scalar", {x}, {Attr(3.0)}), {-8, -0.125, 0, 0.015625, 64}, 0);
  require_values(run("elementwise.pow_scalar", {x}), {4, 0.25, 0, 0.0625, 16}, 0);  // default exponent 2
  require_values(run("elementwise.pow_scalar", {x}, {Attr(0.5)}), {kNaN, kNaN, 0, 0.5, 2}, 0);
  require_values(run("elementwise.pow_scalar", {x}, {Attr(0)}), {1, 1, 1, 1, 1}, 0);  // an Int reads as a Float
  // NaN goes through relu and clamp.
  require_values(run("elementwise.relu", {values({kNaN}, {1}, dtype)}), {kNaN}, 0);
  require_values(run("elementwise.clamp", {values({kNaN}, {1}, dtype)}, {Attr(0.0), Attr(1.0)}), {kNaN}, 0);
  // −0.0: abs, relu and clamp to [0, ...] give +0.0, as IEEE fabs and NumPy do (1 / abs(−0.0) is +inf).
  const Tensor neg_zero = values({-0.0}, {1}, dtype);
  REQUIRE(std::signbit(neg_zero.to_vector()[0]));
  CHECK_FALSE(std::signbit(run("elementwise.abs", {neg_zero}).to_vector()[0]));
  CHECK_FALSE(std::signbit(run("elementwise.relu", {neg_zero}).to_vector()[0]));
  CHECK_FALSE(std::signbit(run("elementwise.clamp", {neg_zero}, {Attr(0.0), Attr(1.0)}).to_vector()[0]));
  CHECK_FALSE(std::signbit(run("elementwise.abs", {values({-0.0, 1, -2}, {3}, dtype)}).to_vector()[0]));
}

// log1p and expm1 keep what 1 + x and eˣ round away near 0; softplus neither overflows nor cuts
// over to x past a threshold. Each at the edges of its domain, in both dtypes.
TEST_CASE("log1p, expm1 and softplus on hand-worked values: near 0, at +-800, at the edges, NaN",
          "[elementwise][unary]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const OpHandle log1p = opforge::op("elementwise.log1p"), expm1 = opforge::op("elementwise.expm1"),
                 softplus = opforge::op("elementwise.softplus");
  // 1e-20 in the dtype (float32 rounds it): log1p and expm1 give it back exactly, where
  // log(1 + x) and exp(x) - 1 give 0.
  const double tiny = values({1e-20}, {1}, dtype).item();
  require_values(log1p({values({1e-20, 0, -1, -2, 1, kInf, kNaN}, {7}, dtype)}),
                 {tiny, 0, -kInf, kNaN, std::log(2.0), kInf, kNaN}, dtype == DType::Float32 ? 1e-6 : 1e-15);
  CHECK(log1p({values({1e-20}, {1}, dtype)}).item() == tiny);
  CHECK(expm1({values({1e-20}, {1}, dtype)}).item() == tiny);
  require_values(expm1({values({1e-20, 0, -800, 800, -kInf, kInf, kNaN}, {7}, dtype)}),
                 {tiny, 0, -1, kInf, -1, kInf, kNaN}, 0);
  // -0.0 keeps its sign through both (IEEE log1p and expm1).
  CHECK(std::signbit(log1p({values({-0.0}, {1}, dtype)}).item()));
  CHECK(std::signbit(expm1({values({-0.0}, {1}, dtype)}).item()));
  // +-800: 800 and e^-800, which is 0 in both dtypes (below the smallest subnormal), not
  // inf or NaN (log(1 + exp(800)) overflows).
  require_values(softplus({values({800, -800, 0, -kInf, kInf, kNaN}, {6}, dtype)}),
                 {800, 0, std::log(2.0), 0, kInf, kNaN}, dtype == DType::Float32 ? 1e-6 : 1e-15);
  const std::vector<double> big = softplus({values({800, -800}, {2}, dtype)}).to_vector();
  CHECK(big[0] == 800);
  CHECK(big[1] == 0);
  // And in the gradient: sigmoid(+-800) is 1 and 0, in float32 too.
  Tensor x = values({800, -800, 0}, {3}, dtype).requires_grad_();
  softplus({x}).backward(values({1, 1, 1}, {3}, dtype));
  require_values(x.grad(), {1, 0, 0.5}, 0);
  if (dtype == DType::Float64) {
    // No threshold: softplus(30) is 30 + e^-30 (9.4e-14, 26 float64 ulps of 30), not 30
    // itself as PyTorch's default threshold=20 gives; softplus(-30) keeps e^-30's digits
    // (log(1 + e^-30) keeps 3).
    const std::vector<double> y = softplus({values({30, -30}, {2})}).to_vector();
    CHECK(y[0] != 30.0);
    CHECK(y[0] == Approx(30 + std::exp(-30.0)).epsilon(2e-16));  // to an ulp of 30
    CHECK(y[1] == Approx(std::exp(-30.0) - std::exp(-60.0) / 2).epsilon(1e-15));
  }
}

// Literal values printed by PyTorch 1.13 (torch.float64, /usr/bin/python3): torch.log1p,
// torch.expm1 and torch.nn.functional.softplus(x, beta=1, threshold=1000) (its default
// threshold=20 returns 30 for 30, where opforge is exact), and their gradients for an
// output gradient of ones. Within 2e-15: libmvec's vector log1p, expm1 and exp are within
// 3 ulp (ops/vector_math.hpp).
TEST_CASE("log1p, expm1 and softplus agree with PyTorch, values and gradients", "[elementwise][unary][grad]") {
  struct Ref {
    std::string op;
    std::vector<double> x, y, dx;
  };
  const std::vector<Ref> refs = {
      {"elementwise.log1p",
       {-0.999, -0.5, -1e-10, 1e-10, 0.25, 3.0, 1e6},
       {-6.907755278982136, -0.6931471805599453, -1.00000000005e-10, 9.999999999500001e-11, 0.22314355131420976,
        1.3862943611198906, 13.815511557963774},
       {999.9999999999991, 2.0, 1.0000000001, 0.9999999999, 0.8, 0.25, 9.99999000001e-07}},
      // expm1's gradient at x = -30 is left out here: PyTorch's, (y + 1), is
      // 9.35918009759007e-14, off in the 4th digit; opforge's is exp(-30) (below).
      {"elementwise.expm1",
       {-2.0, -1e-10, 1e-7, 0.5, 3.0, 50.0},
       {-0.8646647167633873, -9.999999999500001e-11, 1.0000000500000016e-07, 0.6487212707001282, 19.085536923187668,
        5.184705528587072e+21},
       {0.1353352832366127, 0.9999999999, 1.000000100000005, 1.6487212707001282, 20.085536923187668,
        5.184705528587072e+21}},
      {"elementwise.softplus",
       {-40.0, -5.0, -1e-3, 0.0, 0.75, 5.0, 19.5, 30.0, 100.0},
       {4.248354255291589e-18, 0.006715348489118068, 0.6926473055599401, 0.6931471805599453, 1.1368710061148999,
        5.006715348489118, 19.500000003398267, 30.000000000000092, 100.0},
       {4.248354255291589e-18, 0.006692850924284856, 0.49975000002083336, 0.5, 0.679178699175393,
        0.9933071490757152, 0.9999999966017322, 0.9999999999999064, 1.0}},
  };
  for (const Ref& r : refs) {
    INFO(r.op);
    const auto n = static_cast<std::int64_t>(r.x.size());
    Tensor x = values(r.x, {n}).requires_grad_();
    const Tensor y = run(r.op, {x});
    require_values(y, r.y, 2e-15);
    y.backward(Tensor::ones({n}));
    require_values(x.grad(), r.dx, 2e-15);
  }
  // expm1 at -30: y = -0.9999999999999064 (PyTorch's), gradient e^-30.
  Tensor x = values({-30}, {1}).requires_grad_();
  const Tensor y = run("elementwise.expm1", {x});
  require_values(y, {-0.9999999999999064}, 2e-16);
  y.backward(Tensor::ones({1}));
  require_values(x.grad(), {std::exp(-30.0)}, 2e-15);
  CHECK(x.grad().item() != Approx(9.35918009759007e-14).epsilon(1e-6));  // PyTorch's (y + 1)
}

TEST_CASE("neg and abs take int64 and wrap on overflow as NumPy does", "[elementwise][unary][int64]") {
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min();
  constexpr std::int64_t hi = std::numeric_limits<std::int64_t>::max();
  const Tensor x = ints({-3, 0, 7, hi, lo}, {5});
  const Tensor n = run("elementwise.neg", {x});
  REQUIRE(n.dtype() == DType::Int64);
  CHECK(int_values(n) == std::vector<std::int64_t>{3, 0, -7, -hi, lo});
  const Tensor a = run("elementwise.abs", {x});
  REQUIRE(a.dtype() == DType::Int64);
  CHECK(int_values(a) == std::vector<std::int64_t>{3, 0, 7, hi, lo});
  CHECK(n.grad_fn() == nullptr);
}

// ---- unary: gradients ------------------------------------------------------------------------------

TEST_CASE("unary ops pass gradcheck in float64, on a matrix and on a 0-d tensor", "[elementwise][unary][gradcheck]") {
  for (const UnaryCase& c : unary_cases()) {
    INFO(c.name);
    require_gradcheck(c.name, {mapped_randn({3, 4}, 21, c.domain)});
    require_gradcheck(c.name, {mapped_randn({}, 22, c.domain)});
  }
}

TEST_CASE("unary gradients at hand-worked points", "[elementwise][unary][grad]") {
  auto grad_of = [](const std::string& name, const std::vector<double>& xv, const std::vector<Attr>& attrs = {}) {
    Tensor x = values(xv, {static_cast<std::int64_t>(xv.size())});
    x.requires_grad_(true);
    run(name, {x}, attrs).backward(Tensor::ones({static_cast<std::int64_t>(xv.size())}));
    return x.grad();
  };
  require_values(grad_of("elementwise.neg", {1, -2}), {-1, -1}, 0);
  require_values(grad_of("elementwise.abs", {-2, 0, 3}), {-1, 0, 1}, 0);  // sign(x); 0 at the kink
  {
    // g sign(x) is a product: an incoming inf or NaN at the kink gives NaN (as
    // PyTorch's), where 0 hid it; sign(NaN) is 0, as PyTorch's.
    Tensor x = values({0, 0, kNaN, -1}, {4});
    x.requires_grad_(true);
    run("elementwise.abs", {x}).backward(values({kInf, kNaN, 1, 2}, {4}));
    require_values(x.grad(), {kNaN, kNaN, 0, -2}, 0);
  }
  require_values(grad_of("elementwise.relu", {-2, 0, 3}), {0, 0, 1}, 0);
  require_values(grad_of("elementwise.relu", {kNaN, -kNaN}), {1, 1}, 0);  // NaN passes its gradient, as PyTorch's
  require_values(grad_of("elementwise.sqrt", {4, 0}), {0.25, kInf}, 0);
  require_values(grad_of("elementwise.log", {0.5, 4}), {2, 0.25}, 0);
  require_values(grad_of("elementwise.exp", {0}), {1}, 0);
  require_values(grad_of("elementwise.sigmoid", {0}), {0.25}, 0);
  require_values(grad_of("elementwise.tanh", {0}), {1}, 0);
  require_values(grad_of("elementwise.sin", {0}), {1}, 0);
  require_values(grad_of("elementwise.cos", {0}), {0}, 0);
  require_values(grad_of("elementwise.log1p", {0, 1, -0.5, -1}), {1, 0.5, 2, kInf}, 0);  // 1 / (1 + x)
  require_values(grad_of("elementwise.expm1", {0, 1e-20, -800}), {1, 1, 0}, 0);         // eˣ
  require_values(grad_of("elementwise.softplus", {0, 800, -800}), {0.5, 1, 0}, 0);      // sigmoid(x)
  require_values(grad_of("elementwise.log1p", {kNaN}), {kNaN}, 0);
  require_values(grad_of("elementwise.expm1", {kNaN}), {kNaN}, 0);
  require_values(grad_of("elementwise.softplus", {kNaN}), {kNaN}, 0);
  // Only strictly inside the bounds.
  // On a bound the gradient passes, as in PyTorch (relu's zeros clamped to [0, 1] keep theirs).
  require_values(grad_of("elementwise.clamp", {-2, -1, 0, 1, 2}, {Attr(-1.0), Attr(1.0)}), {0, 1, 1, 1, 0}, 0);
  const double inf = std::numeric_limits<double>::infinity();
  require_values(grad_of("elementwise.clamp", {-inf, 0, inf}, {}), {1, 1, 1}, 0);  // no bounds: every x passes
  require_values(grad_of("elementwise.pow_scalar", {0.5, 2, 0}, {Attr(3.0)}), {0.75, 12, 0}, 0);
  require_values(grad_of("elementwise.pow_scalar", {0.5, 2, 0}, {Attr(0.0)}), {0, 0, 0}, 0);  // a constant
  require_values(grad_of("elementwise.pow_scalar", {0.5, -2}, {Attr(1.0)}), {1, 1}, 0);
}

TEST_CASE("clamp and pow_scalar pass gradcheck with their attributes set", "[elementwise][unary][gradcheck]") {
  const OpHandle clamp = opforge::op("elementwise.clamp"), pow = opforge::op("elementwise.pow_scalar");
  // Inputs kept 0.1 away from the bounds, where clamp's gradient jumps.
  const Tensor x = mapped_randn({4, 5}, 31, [](double v) {
    for (double b : {-0.5, 0.7})
      if (std::abs(v - b) < 0.1) v = b + (v < b ? -0.1 : 0.1);
    return v;
  });
  require_gradcheck(clamp.bind({{"min", -0.5}, {"max", 0.7}}), {x});
  require_gradcheck(clamp.bind({{"max", 0.7}}), {x});
  require_gradcheck(clamp.bind({{"min", -0.5}}), {x});
  const Tensor xp = mapped_randn({4, 5}, 32, positive);
  for (double p : {3.0, 0.5, -1.5, 1.0, 0.0, 2.0}) {
    INFO("exponent " << p);
    require_gradcheck(pow.bind({{"exponent", p}}), {xp});
  }
  // Integer exponents work on negative x too.
  require_gradcheck(pow.bind({{"exponent", 3.0}}), {mapped_randn({6}, 33, away_from_zero)});
  // Exponents 3, 4, -1 and -2 go by multiplication (1 and 2 are exact): every sign, gradients too.
  for (double p : {3.0, 4.0, -1.0, -2.0}) {
    INFO("exponent " << p);
    require_gradcheck(pow.bind({{"exponent", p}}), {mapped_randn({4, 5}, 34, away_from_zero)});
  }
}

// A bound handle's attributes stay for the ones a call does not name; bind adds to them.
TEST_CASE("a bound handle merges the attributes a call or a further bind gives", "[elementwise][attrs]") {
  const Tensor x = Tensor::from_values({-2, -0.25, 0.5, 3});
  const OpHandle clamp = opforge::op("elementwise.clamp");
  const OpHandle lo = clamp.bind({{"min", -1.0}});
  CHECK(lo({x}).to_vector() == std::vector<double>{-1, -0.25, 0.5, 3});
  CHECK(lo({x}, {{"max", 1.0}}).to_vector() == std::vector<double>{-1, -0.25, 0.5, 1});   // min stays bound
  CHECK(lo({x}, {{"min", 0.0}}).to_vector() == std::vector<double>{0, 0, 0.5, 3});         // the call's min wins
  const OpHandle both = lo.bind({{"max", 2.0}});
  CHECK(both({x}).to_vector() == std::vector<double>{-1, -0.25, 0.5, 2});
  CHECK(both.bind({{"min", -3.0}})({x}).to_vector() == std::vector<double>{-2, -0.25, 0.5, 2});
  CHECK(lo({x}).to_vector() == std::vector<double>{-1, -0.25, 0.5, 3});  // binding made new handles
  CHECK_THROWS_WITH(lo({x}, {opforge::Attr(0.0), opforge::Attr(1.0), opforge::Attr(2.0)}),
                    "elementwise.clamp: expected at most 2 attributes, got 3");
}

TEST_CASE("pow_scalar with a small integer exponent agrees with std::pow to rounding, in both dtypes",
          "[elementwise][unary]") {
  const OpHandle pow = opforge::op("elementwise.pow_scalar");
  const std::vector<double> xs = {-3.5, -1, -0.25, 0.5, 1, 2.75, 1e8, -1e-5};
  for (const DType dtype : {DType::Float64, DType::Float32}) {
    const Tensor x = values(xs, {8}, dtype);
    for (double p : {1.0, 3.0, 4.0, -1.0, -2.0}) {
      INFO(opforge::dtype_name(dtype) << " exponent " << p);
      std::vector<double> want;
      for (double v : x.to_vector()) want.push_back(std::pow(v, p));
      require_values(pow({x}, {{"exponent", p}}), want, dtype == DType::Float32 ? 3e-7 : 6e-16);
    }
    // 0 and -0 with negative exponents: infinities of the right sign, as pow gives.
    const Tensor z = values({0.0, -0.0}, {2}, dtype);
    require_values(pow({z}, {{"exponent", -1.0}}), {kInf, -kInf}, 0);
    require_values(pow({z}, {{"exponent", -2.0}}), {kInf, kInf}, 0);
    require_values(pow({z}, {{"exponent", 3.0}}), {0, 0}, 0);
  }
}

// ---- binary: values ---------------------------------------------------------------------------------

const std::vector<std::pair<Dims, Dims>>& broadcast_pairs() {
  static const std::vector<std::pair<Dims, Dims>> pairs = {{{3, 4}, {3, 4}}, {{4, 1}, {1, 3}}, {{2, 3, 4}, {4}},
                                                           {{3}, {2, 3}},    {{}, {2, 2}},     {{2, 1, 3}, {1, 4, 1}},
                                                           {{}, {}}};
  return pairs;
}

struct BinaryCase {
  const char* name;
  std::function<double(double, double)> ref;
  double (*domain_a)(double);
  double (*domain_b)(double);
};
const std::vector<BinaryCase>& binary_cases() {
  static const std::vector<BinaryCase> cases = {
      {"elementwise.div", [](double x, double y) { return x / y; }, any, away_from_zero},
      {"elementwise.pow", [](double x, double y) { return std::pow(x, y); }, positive, any},
      {"elementwise.maximum", [](double x, double y) { return x > y ? x : y; }, any, any},
      {"elementwise.minimum", [](double x, double y) { return x < y ? x : y; }, any, any},
  };
  return cases;
}

TEST_CASE("div, pow, maximum, minimum broadcast and match a naive loop, float32 agrees", "[elementwise][binary]") {
  for (const BinaryCase& c : binary_cases()) {
    for (const auto& [sa, sb] : broadcast_pairs()) {
      INFO(c.name << " " << sa << " with " << sb);
      const Tensor a = mapped_randn(sa, 41, c.domain_a), b = mapped_randn(sb, 42, c.domain_b);
      const Tensor y = run(c.name, {a, b});
      REQUIRE(y.shape() == opforge::broadcast_shapes(sa, sb));
      require_values(y, naive_binary(a, b, c.ref), 1e-14, 1e-15);
      const Tensor a32 = a.to(DType::Float32), b32 = b.to(DType::Float32);
      const Tensor y32 = run(c.name, {a32, b32});
      REQUIRE(y32.dtype() == DType::Float32);
      require_values(y32, naive_binary(a32, b32, c.ref), 1e-6, 1e-7);
    }
  }
}

TEST_CASE("binary ops on hand-worked values", "[elementwise][binary]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const Tensor a = values({1, 2, 3, 4, 5, 6}, {2, 3}, dtype);
  require_values(run("elementwise.div", {a, values({2}, {1}, dtype)}), {0.5, 1, 1.5, 2, 2.5, 3}, 0);
  require_values(run("elementwise.div", {values({1, -1, 0}, {3}, dtype), values({0}, {}, dtype)}), {kInf, -kInf, kNaN},
                 0);
  require_values(run("elementwise.pow", {a, values({2, 0.5}, {2, 1}, dtype)}),
                 {1, 4, 9, 2, std::sqrt(5.0), std::sqrt(6.0)}, dtype == DType::Float32 ? 1e-7 : 1e-15);
  require_values(run("elementwise.pow", {values({0, 0, -8}, {3}, dtype), values({0, 2, 3}, {3}, dtype)}), {1, 0, -512},
                 0);
  require_values(run("elementwise.maximum", {a, values({3.5, 0, 10}, {3}, dtype)}), {3.5, 2, 10, 4, 5, 10}, 0);
  require_values(run("elementwise.minimum", {a, values({3.5, 0, 10}, {3}, dtype)}), {1, 0, 3, 3.5, 0, 6}, 0);
  // NaN propagates from either side.
  const Tensor n = values({kNaN, 1}, {2}, dtype), m = values({1, kNaN}, {2}, dtype);
  require_values(run("elementwise.maximum", {n, m}), {kNaN, kNaN}, 0);
  require_values(run("elementwise.minimum", {n, m}), {kNaN, kNaN}, 0);
}

TEST_CASE("an empty broadcast gives an empty result", "[elementwise][binary]") {
  const Tensor y = run("elementwise.maximum", {Tensor::zeros({0, 3}), Tensor::zeros({3})});
  CHECK(y.shape() == Dims{0, 3});
  const Tensor c = run("elementwise.lt", {Tensor::zeros({2, 0}), Tensor::zeros({1, 1})});
  CHECK(c.shape() == Dims{2, 0});
  CHECK(c.dtype() == DType::Bool);
}

// ---- binary: gradients -------------------------------------------------------------------------------

TEST_CASE("div, pow, maximum, minimum pass gradcheck in float64 for every broadcast",
          "[elementwise][binary][gradcheck]") {
  for (const BinaryCase& c : binary_cases()) {
    for (const auto& [sa, sb] : broadcast_pairs()) {
      INFO(c.name << " " << sa << " with " << sb);
      Tensor a = mapped_randn(sa, 51, c.domain_a);
      const Tensor b = mapped_randn(sb, 52, c.domain_b);
      if (std::string(c.name) == "elementwise.maximum" || std::string(c.name) == "elementwise.minimum") {
        // a away from the b it meets (|a - b| >= 0.1): no ties, where the gradient jumps.
        const Dims out = opforge::broadcast_shapes(sa, sb);
        const std::vector<double> bv = b.to_vector();
        std::vector<double> av = a.to_vector();
        for (std::int64_t i = 0; i < out.product(); ++i) {
          double& x = av[broadcast_index(out, sa, i)];
          const double y = bv[broadcast_index(out, sb, i)];
          if (std::abs(x - y) < 0.1) x = y + (x < y ? -0.1 : 0.1);
        }
        a = values(av, sa);
        // A pushed a[k] may meet another b: the naive check below says whether any tie is left.
        std::vector<double> gaps = naive_binary(a, b, [](double x, double y) { return std::abs(x - y); });
        REQUIRE(*std::min_element(gaps.begin(), gaps.end()) > 1e-3);
      }
      require_gradcheck(c.name, {a, b});
    }
  }
}

// Backpropagates ones from op(a, b) with fresh leaves copied from a and b; returns {da, db}.
// The gradients of both operands for an output gradient of `g` everywhere.
std::pair<Tensor, Tensor> grads_of(const std::string& name, const Tensor& a0, const Tensor& b0, double g = 1.0) {
  Tensor a = a0.clone(), b = b0.clone();
  a.requires_grad_(true);
  b.requires_grad_(true);
  const Tensor y = run(name, {a, b});
  y.backward(Tensor::full(y.shape(), g));
  return {a.grad(), b.grad()};
}

TEST_CASE("maximum and minimum split the gradient evenly on ties", "[elementwise][binary][grad]") {
  const Tensor a = values({1, 2, 3}, {3}), b = values({1, 5, 0}, {3});
  auto [ga, gb] = grads_of("elementwise.maximum", a, b);
  require_values(ga, {0.5, 0, 1}, 0);
  require_values(gb, {0.5, 1, 0}, 0);
  std::tie(ga, gb) = grads_of("elementwise.minimum", a, b);
  require_values(ga, {0.5, 1, 0}, 0);
  require_values(gb, {0.5, 0, 1}, 0);
  // Broadcast: the scalar b ties with a[0] and wins over a[2].
  std::tie(ga, gb) = grads_of("elementwise.maximum", values({2, 3, 1}, {3}), values({2}, {}));
  require_values(ga, {0.5, 1, 0}, 0);
  require_values(gb, {0.5 + 1}, 0);
  // The NaN operand is the result, and takes the gradient.
  std::tie(ga, gb) = grads_of("elementwise.maximum", values({kNaN, 1}, {2}), values({1, kNaN}, {2}));
  require_values(ga, {1, 0}, 0);
  require_values(gb, {0, 1}, 0);
}

TEST_CASE("div and pow gradients at hand-worked points", "[elementwise][binary][grad]") {
  // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2; b broadcast over a's 3 elements.
  auto [ga, gb] = grads_of("elementwise.div", values({1, 2, 3}, {3}), values({2}, {1}));
  require_values(ga, {0.5, 0.5, 0.5}, 0);
  require_values(gb, {-(1 + 2 + 3) / 4.0}, 1e-15);
  // pow: d/da = b a^(b-1), d/db = a^b ln a.
  std::tie(ga, gb) = grads_of("elementwise.pow", values({2, 4}, {2}), values({3, 0.5}, {2}));
  require_values(ga, {12, 0.25}, 1e-15);
  require_values(gb, {8 * std::log(2.0), 2 * std::log(4.0)}, 1e-15);
  // a = 0: db is 0 (0^b does not change with b near b = 2); b = 0: da is 0 (a^0 is constant), not 0 * 0^-1.
  std::tie(ga, gb) = grads_of("elementwise.pow", values({0, 0}, {2}), values({2, 0}, {2}));
  require_values(ga, {0, 0}, 0);
  require_values(gb, {0, 0}, 0);
  // a < 0: a^b is not differentiable in b (NaN, as ln a).
  std::tie(ga, gb) = grads_of("elementwise.pow", values({-2}, {1}), values({2}, {1}));
  require_values(ga, {-4}, 0);
  require_values(gb, {kNaN}, 0);
  // No intermediate that overflows where the gradient does not (PyTorch gives
  // these zeros): pow's d/da at a = 0.5 and 0, b = 1e308, g = 4 was (g b) a^(b-1)
  // = inf * 0 = NaN; div's d/db at a = 0, b = 5e-324 was -(g / b)(a / b) = NaN.
  std::tie(ga, gb) = grads_of("elementwise.pow", values({0.5, 0}, {2}), values({1e308, 1e308}, {2}), 4.0);
  require_values(ga, {0, 0}, 0);
  std::tie(ga, gb) = grads_of("elementwise.div", values({0}, {1}), values({5e-324}, {1}), 4.0);
  require_values(gb, {0}, 0);
  // ... and the same values where nothing overflows: -g a / b^2 = -4 * 3 / 4.
  std::tie(ga, gb) = grads_of("elementwise.div", values({3}, {1}), values({2}, {1}), 4.0);
  require_values(ga, {2}, 0);
  require_values(gb, {-3}, 0);
}

TEST_CASE("only the operand that needs a gradient gets one", "[elementwise][binary][grad]") {
  for (const BinaryCase& c : binary_cases()) {
    INFO(c.name);
    Tensor a = mapped_randn({3, 2}, 61, c.domain_a);
    const Tensor b = mapped_randn({2}, 62, c.domain_b);
    a.requires_grad_(true);
    run(c.name, {a, b}).backward(Tensor::ones({3, 2}));
    CHECK(a.grad().shape() == Dims{3, 2});
    CHECK_FALSE(b.grad().defined());
    const Tensor a2 = mapped_randn({3, 2}, 61, c.domain_a);
    Tensor b2 = b.clone();
    b2.requires_grad_(true);
    run(c.name, {a2, b2}).backward(Tensor::ones({3, 2}));
    CHECK(b2.grad().shape() == Dims{2});
    CHECK_FALSE(a2.grad().defined());
  }
}

// ---- where ---------------------------------------------------------------------------------------

TEST_CASE("where picks a or b by a broadcast cond, in every dtype", "[elementwise][where]") {
  // cond [2, 1], a [3], b [] -> [2, 3]
  const Tensor cond = values({1, 0}, {2, 1}, DType::Bool);
  for (DType dtype : {DType::Float32, DType::Float64, DType::Int64, DType::Bool}) {
    INFO(opforge::dtype_name(dtype));
    const Tensor a = values({1, 0, 3}, {3}, dtype), b = values({7}, {}, dtype);
    const Tensor y = run("elementwise.where", {cond, a, b});
    REQUIRE(y.shape() == Dims{2, 3});
    REQUIRE(y.dtype() == dtype);
    // As bool, 3 and 7 read back as true (1).
    const double three = dtype == DType::Bool ? 1 : 3, seven = dtype == DType::Bool ? 1 : 7;
    require_values(y, {1, 0, three, seven, seven, seven}, 0);
  }
  // Against the naive rule on a 3-way broadcast: cond [4, 1, 3], a [5, 1], b [3].
  const Tensor c = mapped_randn(
      {4, 1, 3}, 71, [](double v) { return v > 0 ? 1.0 : 0.0; }, DType::Bool);
  const Tensor a = Tensor::randn({5, 1}, DType::Float64, 72), b = Tensor::randn({3}, DType::Float64, 73);
  const Tensor y = run("elementwise.where", {c, a, b});
  const Dims out{4, 5, 3};
  REQUIRE(y.shape() == out);
  const std::vector<double> cv = c.to_vector(), av = a.to_vector(), bv = b.to_vector();
  std::vector<double> want;
  for (std::int64_t i = 0; i < out.product(); ++i)
    want.push_back(cv[broadcast_index(out, c.shape(), i)] != 0 ? av[broadcast_index(out, a.shape(), i)]
                                                               : bv[broadcast_index(out, b.shape(), i)]);
  require_values(y, want, 0);
}

TEST_CASE("where sends the gradient to a where cond holds, to b elsewhere", "[elementwise][where][grad]") {
  const Tensor cond = values({1, 0}, {2, 1}, DType::Bool);
  Tensor a = values({1, 2, 3}, {3}), b = values({7}, {});
  a.requires_grad_(true);
  b.requires_grad_(true);
  const Tensor y = run("elementwise.where", {cond, a, b});
  REQUIRE(y.requires_grad());
  y.backward(values({1, 2, 3, 4, 5, 6}, {2, 3}));
  require_values(a.grad(), {1, 2, 3}, 0);    // row 0 (cond true)
  require_values(b.grad(), {4 + 5 + 6}, 0);  // row 1, summed onto the 0-d b
  for (const auto& [sa, sb] : broadcast_pairs()) {
    INFO(sa << " with " << sb);
    const Tensor c = mapped_randn(
        {2, 1, 1}, 74, [](double v) { return v > 0 ? 1.0 : 0.0; }, DType::Bool);
    require_gradcheck("elementwise.where",
                      {c, Tensor::randn(sa, DType::Float64, 75), Tensor::randn(sb, DType::Float64, 76)});
  }
}

TEST_CASE("where refuses a cond that is not bool, a and b of two dtypes, and shapes that do not broadcast",
          "[elementwise][where][errors]") {
  const OpHandle where = opforge::op("elementwise.where");
  const Tensor c = Tensor::zeros({3}, DType::Bool), x = Tensor::zeros({3});
  CHECK_THROWS_MATCHES(where({x, x, x}), opforge::DTypeError,
                       Message("elementwise.where: argument 'cond' (input 0): expected dtype bool, got float64; make a "
                               "mask with a comparison (elementwise.ne(cond, 0) for where cond is nonzero)"));
  CHECK_THROWS_MATCHES(where({c, x, Tensor::zeros({3}, DType::Float32)}), opforge::DTypeError,
                       Message("elementwise.where: argument 'b' (input 2): expected dtype float64 (the dtype of 'a'; "
                               "a and b must share one dtype), got float32"));
  CHECK_THROWS_MATCHES(where({c, Tensor::zeros({3}, DType::Int64), x}), opforge::DTypeError,
                       Message("elementwise.where: argument 'b' (input 2): expected dtype int64 (the dtype of 'a'; "
                               "a and b must share one dtype), got float64"));
  CHECK_THROWS_MATCHES(where({c, Tensor::zeros({4}), x}), opforge::ShapeError,
                       Message("elementwise.where: argument 'cond' of shape [3] and argument 'a' of shape [4] do not "
                               "broadcast: axis -1 has sizes 3 and 4 (sizes must be equal, or one of them 1)"));
  CHECK_THROWS_MATCHES(where({Tensor::zeros({2, 1}, DType::Bool), Tensor::zeros({3}), Tensor::zeros({4, 1})}),
                       opforge::ShapeError,
                       Message("elementwise.where: argument 'cond' of shape [2, 1] and argument 'b' of shape [4, 1] do "
                               "not broadcast: axis -2 has sizes 2 and 4 (sizes must be equal, or one of them 1)"));
  CHECK_THROWS_MATCHES(where({Tensor::zeros({1}, DType::Bool), Tensor::zeros({3}), Tensor::zeros({2})}),
                       opforge::ShapeError,
                       Message("elementwise.where: argument 'a' of shape [3] and argument 'b' of shape [2] do not "
                               "broadcast: axis -1 has sizes 3 and 2 (sizes must be equal, or one of them 1)"));
  CHECK_THROWS_MATCHES(where({c, x}), opforge::ValueError,
                       Message("elementwise.where: expected 3 inputs (cond, a, b), got 2"));
}

// ---- comparisons ------------------------------------------------------------------------------------

struct CompareCase {
  const char* name;
  std::function<bool(double, double)> ref;
};
const std::vector<CompareCase>& compare_cases() {
  static const std::vector<CompareCase> cases = {
      {"elementwise.eq", [](double x, double y) { return x == y; }},
      {"elementwise.ne", [](double x, double y) { return x != y; }},
      {"elementwise.lt", [](double x, double y) { return x < y; }},
      {"elementwise.le", [](double x, double y) { return x <= y; }},
      {"elementwise.gt", [](double x, double y) { return x > y; }},
      {"elementwise.ge", [](double x, double y) { return x >= y; }},
  };
  return cases;
}

TEST_CASE("comparisons broadcast, give bool, and match a naive loop in float32, float64 and int64",
          "[elementwise][compare]") {
  for (const CompareCase& c : compare_cases()) {
    for (DType dtype : {DType::Float32, DType::Float64, DType::Int64}) {
      for (const auto& [sa, sb] : broadcast_pairs()) {
        INFO(c.name << " " << opforge::dtype_name(dtype) << " " << sa << " with " << sb);
        // Small integers (exact in every dtype), so ties occur.
        auto round2 = [](double v) { return std::round(2 * v); };
        const Tensor a = mapped_randn(sa, 81, round2, dtype), b = mapped_randn(sb, 82, round2, dtype);
        const Tensor y = run(c.name, {a, b});
        REQUIRE(y.dtype() == DType::Bool);
        REQUIRE(y.shape() == opforge::broadcast_shapes(sa, sb));
        require_values(y, naive_binary(a, b, [&](double x, double z) { return c.ref(x, z) ? 1.0 : 0.0; }), 0);
      }
    }
    INFO(c.name);
    // NaN: unequal to everything, itself included.
    const Tensor n = values({kNaN, kNaN, 1}, {3}), m = values({kNaN, 1, kNaN}, {3});
    require_values(run(c.name, {n, m}), naive_binary(n, m, [&](double x, double z) { return c.ref(x, z) ? 1.0 : 0.0; }),
                   0);
    // Large int64 values compare exactly (as doubles 2^62 and 2^62 + 1 would be equal).
    const std::int64_t big = std::int64_t{1} << 62;
    const Tensor y = run(c.name, {ints({big, big + 1}, {2}), ints({big + 1, big + 1}, {2})});
    const std::vector<double> want = {c.ref(0, 1) ? 1.0 : 0.0, c.ref(1, 1) ? 1.0 : 0.0};
    require_values(y, want, 0);
  }
}

TEST_CASE("a comparison records no graph: bool output, no grad_fn", "[elementwise][compare][grad]") {
  Tensor a = Tensor::randn({3}, DType::Float64, 1);
  a.requires_grad_(true);
  for (const CompareCase& c : compare_cases()) {
    INFO(c.name);
    const Tensor y = run(c.name, {a, Tensor::zeros({3})});
    CHECK(y.dtype() == DType::Bool);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
  }
}

TEST_CASE("comparisons refuse mixed dtypes and bool, naming the argument", "[elementwise][compare][errors]") {
  CHECK_THROWS_MATCHES(run("elementwise.lt", {Tensor::zeros({3}), Tensor::zeros({3}, DType::Int64)}),
                       opforge::DTypeError,
                       Message("elementwise.lt: argument 'b' (input 1): expected dtype float64 (the dtype of 'a'; all "
                               "inputs must share one dtype), got int64; convert one of them with .to() first"));
  CHECK_THROWS_MATCHES(
      run("elementwise.eq", {Tensor::zeros({3}, DType::Bool), Tensor::zeros({3}, DType::Bool)}), opforge::DTypeError,
      Message("elementwise.eq: argument 'a' (input 0): expected dtype float32, float64, int64, got bool; convert it with .to() first"));
  CHECK_THROWS_MATCHES(run("elementwise.ge", {Tensor::zeros({2, 3}), Tensor::zeros({2})}), opforge::ShapeError,
                       Message("elementwise.ge: argument 'a' of shape [2, 3] and argument 'b' of shape [2] do not "
                               "broadcast: axis -1 has sizes 3 and 2 (sizes must be equal, or one of them 1)"));
}

// ---- int64 arithmetic -------------------------------------------------------------------------------

TEST_CASE("add, sub, mul, maximum, minimum take int64, broadcast, and wrap on overflow", "[elementwise][int64]") {
  const Tensor a = ints({1, -2, 3, 40, 5, -6}, {2, 3}), b = ints({10, 20, -30}, {3});
  const std::vector<std::pair<const char*, std::vector<std::int64_t>>> cases = {
      {"elementwise.add", {11, 18, -27, 50, 25, -36}},    {"elementwise.sub", {-9, -22, 33, 30, -15, 24}},
      {"elementwise.mul", {10, -40, -90, 400, 100, 180}}, {"elementwise.maximum", {10, 20, 3, 40, 20, -6}},
      {"elementwise.minimum", {1, -2, -30, 10, 5, -30}},
  };
  for (const auto& [name, want] : cases) {
    INFO(name);
    const Tensor y = run(name, {a, b});
    REQUIRE(y.dtype() == DType::Int64);
    REQUIRE(y.shape() == Dims{2, 3});
    CHECK(int_values(y) == want);
    CHECK(y.grad_fn() == nullptr);
  }
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min();
  constexpr std::int64_t hi = std::numeric_limits<std::int64_t>::max();
  CHECK(int_values(run("elementwise.add", {ints({hi}, {1}), ints({1}, {1})})) == std::vector<std::int64_t>{lo});
  CHECK(int_values(run("elementwise.sub", {ints({lo}, {1}), ints({1}, {1})})) == std::vector<std::int64_t>{hi});
  CHECK(int_values(run("elementwise.mul", {ints({hi}, {1}), ints({2}, {1})})) == std::vector<std::int64_t>{-2});
  // Values beyond 2^53 stay exact.
  const std::int64_t big = (std::int64_t{1} << 60) + 1;
  CHECK(int_values(run("elementwise.add", {ints({big}, {1}), ints({2}, {})})) == std::vector<std::int64_t>{big + 2});
  CHECK(int_values(run("elementwise.maximum", {ints({big}, {1}), ints({big - 1}, {1})})) ==
        std::vector<std::int64_t>{big});
}

TEST_CASE("int64 does not mix with floating dtypes, and float-only ops refuse it", "[elementwise][int64][errors]") {
  const std::string rule = "; all inputs must share one dtype), got ";
  CHECK_THROWS_MATCHES(
      run("elementwise.add", {Tensor::zeros({3}, DType::Int64), Tensor::zeros({3})}), opforge::DTypeError,
      Message("elementwise.add: argument 'b' (input 1): expected dtype int64 (the dtype of 'a'" + rule + "float64; convert one of them with .to() first"));
  CHECK_THROWS_MATCHES(
      run("elementwise.maximum", {Tensor::zeros({3}, DType::Float32), Tensor::zeros({3}, DType::Int64)}),
      opforge::DTypeError,
      Message("elementwise.maximum: argument 'b' (input 1): expected dtype float32 (the dtype of 'a'" + rule +
              "int64; convert one of them with .to() first"));
  const std::string floating_only = ": expected dtype float32, float64, got int64; convert it with .to() first";
  for (const char* name :
       {"elementwise.sqrt", "elementwise.exp", "elementwise.log", "elementwise.sin", "elementwise.cos",
        "elementwise.tanh", "elementwise.sigmoid", "elementwise.relu", "elementwise.clamp", "elementwise.pow_scalar",
        "elementwise.log1p", "elementwise.expm1", "elementwise.softplus"}) {
    INFO(name);
    CHECK_THROWS_MATCHES(run(name, {Tensor::zeros({3}, DType::Int64)}), opforge::DTypeError,
                         Message(std::string(name) + ": argument 'x' (input 0)" + floating_only));
  }
  for (const char* name : {"elementwise.div", "elementwise.pow"}) {
    INFO(name);
    CHECK_THROWS_MATCHES(run(name, {Tensor::zeros({3}, DType::Int64), Tensor::zeros({3}, DType::Int64)}),
                         opforge::DTypeError, Message(std::string(name) + ": argument 'a' (input 0)" + floating_only));
  }
  CHECK_THROWS_MATCHES(
      run("elementwise.neg", {Tensor::zeros({3}, DType::Bool)}), opforge::DTypeError,
      Message("elementwise.neg: argument 'x' (input 0): expected dtype float32, float64, int64, got bool; convert it with .to() first"));
}

// ---- attributes and shapes: bad calls -----------------------------------------------------------------

TEST_CASE("clamp and pow_scalar refuse bad attributes with the op and attribute named", "[elementwise][errors]") {
  const OpHandle clamp = opforge::op("elementwise.clamp");
  const Tensor x = Tensor::zeros({3});
  CHECK_THROWS_MATCHES(clamp({x}, {{"min", 2.0}, {"max", 1.0}}), opforge::ValueError,
                       Message("elementwise.clamp: attribute 'min' (2) must not exceed attribute 'max' (1)"));
  CHECK_THROWS_MATCHES(
      clamp({x}, {{"min", kNaN}}), opforge::ValueError,
      Message("elementwise.clamp: attribute 'min': expected a number (-inf for no lower bound), got nan"));
  CHECK_THROWS_MATCHES(
      clamp({x}, {{"max", kNaN}}), opforge::ValueError,
      Message("elementwise.clamp: attribute 'max': expected a number (inf for no upper bound), got nan"));
  CHECK_THROWS_MATCHES(clamp({x}, {{"min", true}}), opforge::ValueError,
                       Message("elementwise.clamp: attribute 'min': expected float, got bool true"));
  CHECK_THROWS_MATCHES(clamp({x}, {{"low", 0.0}}), opforge::ValueError,
                       Message("elementwise.clamp: no attribute named 'low' (it has: min, max)"));
  CHECK_THROWS_MATCHES(opforge::op("elementwise.pow_scalar")({x}, {{"exponent", opforge::Dims{2}}}),
                       opforge::ValueError,
                       Message("elementwise.pow_scalar: attribute 'exponent': expected float, got int list [2]"));
  CHECK_NOTHROW(clamp({x}, {{"min", 1.0}, {"max", 1.0}}));  // min == max is allowed
}

TEST_CASE("binary ops refuse shapes that do not broadcast, naming both arguments", "[elementwise][errors]") {
  for (const char* name : {"elementwise.div", "elementwise.pow", "elementwise.maximum", "elementwise.minimum"}) {
    INFO(name);
    CHECK_THROWS_MATCHES(
        run(name, {Tensor::ones({2, 3}), Tensor::ones({3, 2})}), opforge::ShapeError,
        Message(std::string(name) +
                ": argument 'a' of shape [2, 3] and argument 'b' of shape [3, 2] do not broadcast: axis "
                "-1 has sizes 3 and 2 (sizes must be equal, or one of them 1)"));
    CHECK_THROWS_MATCHES(run(name, {Tensor::ones({2, 3})}), opforge::ValueError,
                         Message(std::string(name) + ": expected 2 inputs (a, b), got 1"));
  }
  CHECK_THROWS_MATCHES(run("elementwise.sqrt", {Tensor::ones({2}), Tensor::ones({2})}), opforge::ValueError,
                       Message("elementwise.sqrt: expected 1 input (x), got 2"));
}

// ---- big and strided tensors ----------------------------------------------------------------------------

TEST_CASE("big tensors (parallel chunks that cross rows) give the naive loop's values", "[elementwise][parallel]") {
  // [3, 400001] with [400001] and with [3, 1]: 1.2 M elements, chunks start mid-row.
  const Tensor a = Tensor::randn({3, 400001}, DType::Float64, 91);
  const Tensor row = mapped_randn({400001}, 92, away_from_zero);
  const Tensor col = values({0.5, -1, 2}, {3, 1});
  for (const Tensor& b : {row, col}) {
    INFO("b " << b.shape());
    require_values(run("elementwise.div", {a, b}), naive_binary(a, b, [](double x, double y) { return x / y; }), 0);
    require_values(run("elementwise.maximum", {a, b}),
                   naive_binary(a, b, [](double x, double y) { return x > y ? x : y; }), 0);
    require_values(run("elementwise.le", {a, b}),
                   naive_binary(a, b, [](double x, double y) { return x <= y ? 1.0 : 0.0; }), 0);
  }
  // tanh comes from glibc's vector math library in the plugin's loops: within
  // 4 ulp of the scalar tanh (ops/elementwise/vector_math.hpp).
  std::vector<double> want;
  for (double v : a.to_vector()) want.push_back(std::tanh(v));
  require_values(run("elementwise.tanh", {a}), want, 4 * std::numeric_limits<double>::epsilon());
  // Arithmetic rounds alike in every copy of the loops (baseline, AVX2, AVX-512:
  // no a*b+c fused into one FMA rounding): tanh's backward, g (1 - y²), bit for
  // bit against this file's loop over the op's own y.
  {
    Tensor t = a.clone();
    t.requires_grad_(true);
    const Tensor y = run("elementwise.tanh", {t});
    const Tensor g = Tensor::randn({3, 400001}, DType::Float64, 93);
    y.backward(g);
    const std::vector<double> yv = y.to_vector(), gv = g.to_vector();
    std::vector<double> dt(yv.size());
    for (std::size_t i = 0; i < yv.size(); ++i) {
      const volatile double yy = yv[i] * yv[i];  // rounded on its own, whatever this file's flags
      dt[i] = gv[i] * (1.0 - yy);
    }
    require_values(t.grad(), dt, 0);
  }
  // The gradient of the broadcast operand sums 3 rows of a big gradient.
  Tensor b = row.clone();
  b.requires_grad_(true);
  run("elementwise.minimum", {a, b}).backward(Tensor::ones({3, 400001}));
  std::vector<double> gb(400001, 0.0);
  const std::vector<double> av = a.to_vector(), bv = row.to_vector();
  for (std::size_t i = 0; i < av.size(); ++i) gb[i % 400001] += av[i] < bv[i % 400001] ? 0.0 : 1.0;
  require_values(b.grad(), gb, 0);
}

TEST_CASE("a strided output gradient (a transposed view) reaches backward and gives the right gradient",
          "[elementwise][grad]") {
  // The root gradient is passed as given: a non-contiguous view.
  const Tensor g = values({1, 2, 3, 4, 5, 6}, {3, 2}).transpose(0, 1);  // [[1, 3, 5], [2, 4, 6]]
  REQUIRE_FALSE(g.is_contiguous());
  Tensor a = values({1, -2, 3, -4, 5, -6}, {2, 3}), b = values({0, 0, 0}, {3});
  a.requires_grad_(true);
  b.requires_grad_(true);
  run("elementwise.maximum", {a, b}).backward(g);
  require_values(a.grad(), {1, 0, 5, 0, 4, 0}, 0);
  require_values(b.grad(), {2, 3 + 0, 6}, 0);
  Tensor x = values({1, -2, 3, -4, 5, -6}, {2, 3});
  x.requires_grad_(true);
  run("elementwise.abs", {x}).backward(g);
  require_values(x.grad(), {1, -3, 5, -2, 4, -6}, 0);
  const Tensor cond = values({1, 0, 1}, {3}, DType::Bool);
  Tensor p = values({1, 1, 1, 1, 1, 1}, {2, 3}), q = values({0}, {});
  p.requires_grad_(true);
  q.requires_grad_(true);
  run("elementwise.where", {cond, p, q}).backward(g);
  require_values(p.grad(), {1, 0, 5, 2, 0, 6}, 0);
  require_values(q.grad(), {3 + 4}, 0);
}

// ---- float32 against float64, and the harness -------------------------------------------------------

const std::vector<std::string>& all_ops() {
  static const std::vector<std::string> names = {
      "elementwise.add",        "elementwise.sub",     "elementwise.mul",     "elementwise.square", "elementwise.div",
      "elementwise.pow",        "elementwise.maximum", "elementwise.minimum", "elementwise.where",  "elementwise.neg",
      "elementwise.sqrt",       "elementwise.exp",     "elementwise.log",     "elementwise.abs",    "elementwise.sin",
      "elementwise.cos",        "elementwise.tanh",    "elementwise.sigmoid", "elementwise.relu",   "elementwise.clamp",
      "elementwise.pow_scalar", "elementwise.eq",      "elementwise.ne",      "elementwise.lt",     "elementwise.le",
      "elementwise.gt",         "elementwise.ge",      "elementwise.log1p",   "elementwise.expm1",
      "elementwise.softplus"};
  return names;
}

TEST_CASE("every elementwise op: float32 outputs and gradients agree with float64 on the same inputs",
          "[elementwise][float32]") {
  for (const std::string& name : all_ops()) {
    INFO(name);
    // With the attributes the harness uses (clamp's bounds, pow_scalar's exponent).
    const OpHandle plain = opforge::op(name);
    const auto& attrs = plain.schema().sample_attributes;
    const OpHandle op = attrs.empty() ? plain : plain.bind(attrs);
    // The harness's samples (valid, differentiable inputs), rounded to float32; the float64 run sees the same values.
    const TensorList x32 = sdk::harness_inputs(op, DType::Float32, 3);
    TensorList x64;
    for (const Tensor& t : x32) x64.push_back(t.dtype() == DType::Float32 ? t.to(DType::Float64) : t.clone());
    TensorList l32, l64;
    for (std::size_t i = 0; i < x32.size(); ++i) {
      l32.push_back(x32[i].clone());
      l64.push_back(x64[i].clone());
      if (x32[i].dtype() == DType::Float32) {
        l32.back().requires_grad_(true);
        l64.back().requires_grad_(true);
      }
    }
    const Tensor y32 = op(l32), y64 = op(l64);
    REQUIRE(y32.shape() == y64.shape());
    require_values(y32, y64.to_vector(), 1e-5, 1e-6);
    if (!y64.requires_grad()) continue;  // comparisons (int64 samples): nothing to differentiate
    const Tensor w = Tensor::randn(y64.shape(), DType::Float64, 4);
    y32.backward(w.to(DType::Float32));
    y64.backward(w);
    for (std::size_t i = 0; i < l32.size(); ++i) {
      if (!l32[i].requires_grad()) continue;
      INFO("gradient of input " << i);
      REQUIRE(l32[i].grad().dtype() == DType::Float32);
      require_values(l32[i].grad(), l64[i].grad().to_vector(), 1e-4, 1e-5);
    }
  }
}

TEST_CASE("every elementwise op passes the test harness", "[elementwise][harness]") {
  for (const std::string& name : all_ops()) {
    INFO(name);
    const OpHandle op = opforge::op(name);
    REQUIRE(op.schema().sample_inputs != nullptr);
    REQUIRE_FALSE(op.schema().doc.empty());
    const sdk::CheckReport report = sdk::check_op(op);
    REQUIRE(report.size() == sdk::check_names().size());
    for (const sdk::CheckResult& r : report) {
      INFO(sdk::format_result(r));
      CHECK(r.passed);
      // Only the comparisons (bool output, int64 samples) have nothing to differentiate.
      const bool no_gradient = name == "elementwise.eq" || name == "elementwise.ne" || name == "elementwise.lt" ||
                               name == "elementwise.le" || name == "elementwise.gt" || name == "elementwise.ge";
      if (!no_gradient && !opforge_tests::skipped_for_want_of_inputs(r)) CHECK_FALSE(r.skipped);
    }
    CHECK(sdk::all_passed(report));
  }
}

}  // namespace

TEST_CASE("square and sub take strided operands and strided, broadcast gradients", "[elementwise][strided]") {
  // The gradients a backward receives need not be contiguous: a transposed
  // one from the caller, or one value broadcast (stride 0) from a sum. square
  // and sub once read theirs as flat memory (wrong values, and past the end of
  // a broadcast one).
  const Tensor base = Tensor::from_values({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor xt = base.transpose(0, 1);  // [3, 2], strided
  CHECK(opforge::op("elementwise.square")({xt}).to_vector() == std::vector<double>{1, 16, 4, 25, 9, 36});

  const Tensor g = Tensor::from_values({1, 3, 5, 2, 4, 6}, {3, 2}).transpose(0, 1).contiguous().transpose(0, 1);
  REQUIRE_FALSE(g.is_contiguous());  // values [[1, 3], [5, 2], [4, 6]] read through strides
  {
    Tensor x = Tensor::from_values({1, 2, 3, 4, 5, 6}, {3, 2});
    x.requires_grad_(true);
    opforge::backward({opforge::op("elementwise.square")({x})}, {g});
    CHECK(x.grad().to_vector() == std::vector<double>{2, 12, 30, 16, 40, 72});  // 2 x g
  }
  {
    Tensor a = Tensor::zeros({3, 2}), b = Tensor::zeros({3, 2});
    a.requires_grad_(true);
    b.requires_grad_(true);
    opforge::backward({opforge::op("elementwise.sub")({a, b})}, {g});
    CHECK(a.grad().to_vector() == std::vector<double>{1, 3, 5, 2, 4, 6});
    CHECK(b.grad().to_vector() == std::vector<double>{-1, -3, -5, -2, -4, -6});
  }
  {
    Tensor x = Tensor::from_values({1, 2, 3, 4}, {2, 2});
    x.requires_grad_(true);
    opforge::backward({opforge::op("elementwise.square")({x})}, {Tensor::full({}, 0.5).expand({2, 2})});
    CHECK(x.grad().to_vector() == std::vector<double>{1, 2, 3, 4});
  }
}

// The binary ops take strided operands as they are (takes_strided_inputs): x.T + y,
// a broadcast row times a matrix, or contiguous() of a view that requires grad
// (recorded as x + -0.0) allocate the result only, never a copy of an operand,
// and give the values and gradients of contiguous operands.
TEST_CASE("binary ops read strided operands in place: no copy, same values and gradients",
          "[elementwise][binary][views]") {
  const Tensor base = Tensor::randn({300, 200}, DType::Float64, 1);
  const Tensor xt = base.transpose(0, 1);                                  // [200, 300], a view
  const Tensor y = Tensor::randn({200, 300}, DType::Float64, 2);
  const Tensor row = Tensor::randn({1, 300}, DType::Float64, 3).expand({200, 300});  // stride 0
  for (const char* name : {"elementwise.add", "elementwise.sub", "elementwise.mul", "elementwise.div",
                           "elementwise.maximum", "elementwise.lt"}) {
    INFO(name);
    const OpHandle op = opforge::op(name);
    for (const Tensor& a : {xt, row}) {
      opforge::reset_peak_bytes();
      const std::int64_t before = opforge::live_bytes();
      const Tensor out = op({a, y});
      CHECK(opforge::peak_bytes() - before == static_cast<std::int64_t>(out.nbytes()));
      CHECK(out.to_vector() == op({a.contiguous(), y}).to_vector());
    }
  }
  // contiguous() of a strided tensor that requires grad: recorded, one allocation, the identity gradient.
  Tensor leaf = Tensor::randn({1, 300}, DType::Float64, 4).requires_grad_();
  const Tensor wide = leaf.expand({200, 300});
  opforge::reset_peak_bytes();
  const std::int64_t before = opforge::live_bytes();
  const Tensor dense = wide.contiguous();
  // The result, and the 0-d -0.0 it adds (8 bytes): no copy of the operand.
  CHECK(opforge::peak_bytes() - before <= static_cast<std::int64_t>(dense.nbytes()) + 64);
  REQUIRE(dense.grad_fn() != nullptr);
  CHECK(dense.to_vector() == wide.detach().contiguous().to_vector());
  opforge::op("reduce.sum")({dense}).backward();
  for (double g : leaf.grad().to_vector()) CHECK(g == 200.0);  // each element of the row, 200 times
  require_gradcheck("elementwise.mul", {xt.slice(0, 0, 3).slice(1, 0, 4), Tensor::randn({4, 3}, DType::Float64, 5).transpose(0, 1)});
}

TEST_CASE("unary ops on a transposed or permuted input keep its layout and make no copy of it",
          "[elementwise][unary][views]") {
  // A transposed input was copied into a contiguous buffer first (3/4 of the
  // time of relu on [2000, 2000].T); the output now takes the input's layout,
  // as in NumPy and PyTorch, and the map runs over memory in order.
  // |randn| + 0.25: in every op's domain (sqrt), so that values compare equal (no NaN).
  const Tensor base = Tensor::randn({30, 20, 4}, DType::Float64, 7).abs() + 0.25;
  const Tensor xt = base.select(2, 0).transpose(0, 1);  // [20, 30], a slice: not dense, copied
  const Tensor dense_t = (Tensor::randn({30, 20}, DType::Float64, 8).abs() + 0.25).transpose(0, 1);  // dense
  const Tensor perm = base.permute({2, 0, 1});                                          // [4, 30, 20], dense
  for (const char* name : {"elementwise.exp", "elementwise.relu", "elementwise.sqrt", "elementwise.abs",
                           "elementwise.square", "elementwise.tanh"}) {
    INFO(name);
    const OpHandle op = opforge::op(name);
    for (const Tensor& x : {dense_t, perm}) {
      opforge::reset_peak_bytes();
      const std::int64_t before = opforge::live_bytes();
      const Tensor out = op({x});
      CHECK(opforge::peak_bytes() - before == static_cast<std::int64_t>(out.nbytes()));  // no copy of x
      CHECK(out.shape() == x.shape());
      CHECK(out.strides() == x.strides());
      CHECK(out.to_vector() == op({x.contiguous()}).to_vector());
    }
    const Tensor sliced = op({xt});  // gaps: copied, contiguous out
    CHECK(sliced.is_contiguous());
    CHECK(sliced.to_vector() == op({xt.contiguous()}).to_vector());
  }
  // Gradients through a permuted input, against the contiguous input's.
  Tensor leaf = Tensor::randn({4, 30, 20}, DType::Float64, 9).requires_grad_();
  Tensor leaf_c = leaf.detach().clone().requires_grad_();
  const Tensor w = Tensor::randn({20, 4, 30}, DType::Float64, 10);
  opforge::op("reduce.sum")({opforge::op("elementwise.mul")({opforge::op("elementwise.tanh")({leaf.permute({2, 0, 1})}), w})})
      .backward();
  opforge::op("reduce.sum")(
      {opforge::op("elementwise.mul")({opforge::op("elementwise.tanh")({leaf_c.permute({2, 0, 1}).contiguous()}), w})})
      .backward();
  CHECK(leaf.grad().to_vector() == leaf_c.grad().to_vector());
  require_gradcheck("elementwise.tanh", {Tensor::randn({3, 4, 2}, DType::Float64, 11).permute({1, 2, 0})});
}
