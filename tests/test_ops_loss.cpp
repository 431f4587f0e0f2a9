// The loss plugin's mse, huber, bce_with_logits and cross_entropy (loss.lstsq has tests/test_lstsq.cpp),
// tested through the loaded-plugin path only: every op is resolved by name with
// opforge::op(), as a user program does.
//
// For every op and every reduction (attribute "reduction": 0 mean, 1 sum, 2 none):
// values against hand-worked cases and a naive loop, float32 against float64,
// gradients against closed forms and finite differences (sdk::gradcheck in float64,
// with attributes bound by OpHandle::bind), the harness (sdk::check_op), sums that do
// not depend on the thread count, and the exact message of each bad call.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
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

constexpr std::int64_t kMean = 0, kSum = 1, kNone = 2;

// ---- helpers --------------------------------------------------------------------------

Tensor values(const std::vector<double>& v, const Dims& shape, DType dtype = DType::Float64) {
  return Tensor::from_values(v, shape, dtype);
}

// Class indices, int64.
Tensor classes(const std::vector<double>& v) {
  return Tensor::from_values(v, Dims{static_cast<std::int64_t>(v.size())}, DType::Int64);
}

// Every element within abs + rel * |want| (NaN matches NaN); on failure, reports the
// first element that is not.
void require_values(const Tensor& got, const std::vector<double>& want, double rel, double abs = 0) {
  const std::vector<double> g = got.to_vector();
  REQUIRE(g.size() == want.size());
  auto same = [&](std::size_t i) {
    if (std::isnan(want[i])) return std::isnan(g[i]);
    return g[i] == Approx(want[i]).epsilon(rel).margin(abs);
  };
  std::size_t i = 0;
  while (i < g.size() && same(i)) ++i;
  if (i == g.size()) return;
  INFO("element " << i << " of " << g.size() << ": got " << g[i] << ", want " << want[i]);
  REQUIRE(same(i));
}

double tolerance(DType dtype) { return dtype == DType::Float32 ? 2e-6 : 1e-12; }

// The reduced value of per-term losses, as the op defines it.
std::vector<double> reduced(const std::vector<double>& terms, std::int64_t reduction) {
  if (reduction == kNone) return terms;
  double s = 0;
  for (double t : terms) s += t;
  return {reduction == kMean ? s / static_cast<double>(terms.size()) : s};
}

double huber_term(double d, double delta) {
  return std::abs(d) <= delta ? 0.5 * d * d : delta * (std::abs(d) - 0.5 * delta);
}

// -t log σ(z) - (1 - t) log(1 - σ(z)) with -log σ(z) = log1p(e^-z), -log(1 - σ(z)) = log1p(e^z):
// not the op's formula (it splits on the sign of z), and accurate wherever e^|z| is finite.
double bce_term(double z, double t) { return t * std::log1p(std::exp(-z)) + (1 - t) * std::log1p(std::exp(z)); }

// ---- gradcheck and the harness ------------------------------------------------------------------

using opforge_tests::require_gradcheck;
// Every loss op runs every harness check (none skipped).
void require_all_checks_pass(const OpHandle& op) {
  opforge_tests::require_all_checks_pass(op, opforge_tests::Skipped::refused);
}

// Inputs of each loss for a case of n terms.
std::vector<Tensor> inputs_for(const std::string& name, std::int64_t n, DType dtype, std::uint64_t seed) {
  if (name == "loss.cross_entropy") {
    const std::int64_t C = 5;
    std::vector<double> t(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<double>((i * 7 + seed) % C);
    return {Tensor::randn({n, C}, dtype, seed), classes(t)};
  }
  std::vector<double> p = Tensor::randn({n}, DType::Float64, seed).to_vector();
  for (double& v : p) v *= 2;  // huber: differences on both sides of delta
  if (name == "loss.bce_with_logits") {  // logits 2 randn, targets σ(randn): probabilities
    std::vector<double> t = Tensor::randn({n}, DType::Float64, seed + 1).to_vector();
    for (double& v : t) v = 1 / (1 + std::exp(-v));
    return {Tensor::from_values(p, Dims{n}, dtype), Tensor::from_values(t, Dims{n}, dtype)};
  }
  return {Tensor::from_values(p, Dims{n}, dtype), Tensor::randn({n}, dtype, seed + 1)};
}

// The per-term losses by a naive loop, in double.
std::vector<double> naive_terms(const std::string& name, const std::vector<Tensor>& in, double delta = 1.0) {
  const std::vector<double> a = in[0].to_vector(), b = in[1].to_vector();
  std::vector<double> terms;
  if (name == "loss.cross_entropy") {
    const std::int64_t C = in[0].size(1);
    for (std::size_t n = 0; n < b.size(); ++n) {
      double m = -std::numeric_limits<double>::infinity(), s = 0;
      for (std::int64_t c = 0; c < C; ++c) m = std::max(m, a[n * C + c]);
      for (std::int64_t c = 0; c < C; ++c) s += std::exp(a[n * C + c] - m);
      terms.push_back(m + std::log(s) - a[n * C + static_cast<std::size_t>(b[n])]);
    }
    return terms;
  }
  if (name == "loss.bce_with_logits") {
    for (std::size_t i = 0; i < a.size(); ++i) terms.push_back(bce_term(a[i], b[i]));
    return terms;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = a[i] - b[i];
    terms.push_back(name == "loss.mse" ? d * d : huber_term(d, delta));
  }
  return terms;
}

const std::vector<std::string>& loss_ops() {
  static const std::vector<std::string> names = {"loss.mse", "loss.huber", "loss.bce_with_logits",
                                                 "loss.cross_entropy"};
  return names;
}

// ---- mse, huber: hand-worked values ---------------------------------------------------------------

TEST_CASE("loss_mse_matches_hand_computed_values_for_each_reduction", "[ops][loss]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const OpHandle mse = opforge::op("loss.mse");
  // d = [1, 0, -2, 0.5]: squares [1, 0, 4, 0.25].
  const Tensor pred = values({1, 2, 3, 4}, {2, 2}, dtype);
  const Tensor target = values({0, 2, 5, 3.5}, {2, 2}, dtype);
  Tensor l = mse({pred, target});
  REQUIRE(l.shape() == Dims{});
  REQUIRE(l.dtype() == dtype);
  require_values(l, {1.3125}, 0);
  l = mse({pred, target}, {{"reduction", kSum}});
  REQUIRE(l.shape() == Dims{});
  require_values(l, {5.25}, 0);
  l = mse({pred, target}, {{"reduction", kNone}});
  REQUIRE(l.shape() == Dims{2, 2});
  require_values(l, {1, 0, 4, 0.25}, 0);
  require_values(mse.call({pred, target}, {Attr(kMean)})[0], {1.3125}, 0);  // positional
}

TEST_CASE("loss_huber_matches_hand_computed_values_for_each_reduction_and_delta", "[ops][loss]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const OpHandle huber = opforge::op("loss.huber");
  // d = [0.5, -2, 1, 3]
  const Tensor pred = values({0.5, -2, 1, 3}, {4}, dtype);
  const Tensor target = Tensor::zeros({4}, dtype);
  // delta 1: [0.125, 1.5, 0.5, 2.5]
  require_values(huber({pred, target}), {4.625 / 4}, 0);
  require_values(huber({pred, target}, {{"reduction", kSum}}), {4.625}, 0);
  require_values(huber({pred, target}, {{"reduction", kNone}}), {0.125, 1.5, 0.5, 2.5}, 0);
  // delta 2: [0.125, 2, 0.5, 4]
  require_values(huber({pred, target}, {{"reduction", kNone}, {"delta", 2.0}}), {0.125, 2, 0.5, 4}, 0);
  require_values(huber({pred, target}, {{"delta", 2}}), {6.625 / 4}, 0);  // an int is a valid Float attribute
}

// Each huber term has the bits of the two-branch formula (d² / 2 within delta,
// delta (|d| - delta / 2) beyond), on both sides of delta, at it, and for inf and NaN.
TEST_CASE("loss_huber_terms_have_the_bits_of_the_two_branch_formula", "[ops][loss]") {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  for (const double delta : {1.0, 0.3, 2.5}) {
    INFO("delta " << delta);
    std::vector<double> d = {0, 0.1, -0.7, delta, -delta, std::nextafter(delta, 0.0), std::nextafter(delta, 9.0),
                             3.3, -1e10, 1e-150, inf, -inf, nan};
    const Tensor r = Tensor::randn({1000}, DType::Float64, 7);
    for (double v : r.to_vector()) d.push_back(v * 2);
    const Tensor pred = values(d, {static_cast<std::int64_t>(d.size())});
    const std::vector<double> got =
        opforge::op("loss.huber")({pred, Tensor::zeros(pred.shape())}, {{"reduction", kNone}, {"delta", delta}})
            .to_vector();
    for (std::size_t i = 0; i < d.size(); ++i) {
      const double a = std::abs(d[i]);
      const double want = a <= delta ? 0.5 * d[i] * d[i] : delta * (a - 0.5 * delta);
      INFO("d = " << d[i]);
      if (std::isnan(want)) CHECK(std::isnan(got[i]));
      else CHECK(got[i] == want);
    }
  }
}

// dpred = 2 d g (mse), clamp(d, -delta, delta) g (huber); dtarget = -dpred; g / N for mean.
TEST_CASE("loss_mse_and_huber_gradients_match_closed_form", "[ops][loss][grad]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const std::vector<double> d = {0.5, -2, 1, 3};
  auto run = [&](const std::string& name, std::initializer_list<opforge::NamedAttr> attrs, const Tensor& g,
                 const std::vector<double>& want) {
    Tensor pred = values(d, {4}, dtype);
    Tensor target = Tensor::zeros({4}, dtype);
    pred.requires_grad_(true);
    target.requires_grad_(true);
    opforge::op(name)({pred, target}, attrs).backward(g);
    require_values(pred.grad(), want, tolerance(dtype));
    std::vector<double> neg;
    for (double w : want) neg.push_back(-w);
    require_values(target.grad(), neg, tolerance(dtype));
  };
  const Tensor one = Tensor::scalar(1.0, dtype);
  run("loss.mse", {}, one, {0.25, -1, 0.5, 1.5});
  run("loss.mse", {{"reduction", kSum}}, Tensor::scalar(2.0, dtype), {2, -8, 4, 12});
  run("loss.mse", {{"reduction", kNone}}, values({1, 2, 3, 4}, {4}, dtype), {1, -8, 6, 24});
  run("loss.huber", {}, one, {0.125, -0.25, 0.25, 0.25});
  run("loss.huber", {{"reduction", kSum}, {"delta", 2.0}}, one, {0.5, -2, 1, 2});
  run("loss.huber", {{"reduction", kNone}}, values({1, 2, 3, 4}, {4}, dtype), {0.5, -2, 3, 4});
}

// ---- bce_with_logits: hand-worked values, extremes, PyTorch --------------------------------------

// z = [0, 2, -3, ln 3], t = [0.3, 0, 1, 0.25]: l = [ln 2, ln(1 + e²), ln(1 + e³), -(ln(3/4) + 3 ln(1/4)) / 4]
// (σ(ln 3) = 3/4); dz = σ(z) - t = [0.2, σ(2), -σ(3), 0.5], dt = -z.
TEST_CASE("loss_bce_with_logits_matches_hand_computed_values_and_gradients", "[ops][loss][grad]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const OpHandle bce = opforge::op("loss.bce_with_logits");
  const double ln3 = std::log(3.0);
  const std::vector<double> z = {0, 2, -3, ln3}, t = {0.3, 0, 1, 0.25};
  const std::vector<double> l = {std::log(2.0), std::log1p(std::exp(2.0)), std::log1p(std::exp(3.0)),
                                 -(std::log(0.75) + 3 * std::log(0.25)) / 4};
  auto sig = [](double v) { return 1 / (1 + std::exp(-v)); };
  const std::vector<double> dz = {0.2, sig(2), -sig(3), 0.5}, dt = {0, -2, 3, -ln3};
  const double tol = tolerance(dtype);
  Tensor loss = bce({values(z, {2, 2}, dtype), values(t, {2, 2}, dtype)});
  REQUIRE(loss.shape() == Dims{});
  REQUIRE(loss.dtype() == dtype);
  require_values(loss, {(l[0] + l[1] + l[2] + l[3]) / 4}, tol);
  require_values(bce({values(z, {2, 2}, dtype), values(t, {2, 2}, dtype)}, {{"reduction", kSum}}),
                 {l[0] + l[1] + l[2] + l[3]}, tol);
  loss = bce({values(z, {2, 2}, dtype), values(t, {2, 2}, dtype)}, {{"reduction", kNone}});
  REQUIRE(loss.shape() == Dims{2, 2});
  require_values(loss, l, tol);
  // Gradients of both inputs: mean (g / 4), sum (g = 2), none (g per element).
  auto grads = [&](std::int64_t reduction, const Tensor& g) {
    Tensor zl = values(z, {2, 2}, dtype).requires_grad_(), tl = values(t, {2, 2}, dtype).requires_grad_();
    bce({zl, tl}, {{"reduction", reduction}}).backward(g);
    return std::make_pair(zl.grad(), tl.grad());
  };
  auto scaled = [](const std::vector<double>& v, const std::vector<double>& k) {
    std::vector<double> out;
    for (std::size_t i = 0; i < v.size(); ++i) out.push_back(v[i] * k[i % k.size()]);
    return out;
  };
  auto [gz, gt] = grads(kMean, Tensor::scalar(1.0, dtype));
  require_values(gz, scaled(dz, {0.25}), tol, tol);
  require_values(gt, scaled(dt, {0.25}), tol, tol);
  std::tie(gz, gt) = grads(kSum, Tensor::scalar(2.0, dtype));
  require_values(gz, scaled(dz, {2}), tol, tol);
  require_values(gt, scaled(dt, {2}), tol, tol);
  std::tie(gz, gt) = grads(kNone, values({1, -2, 0.5, 3}, {2, 2}, dtype));
  require_values(gz, scaled(dz, {1, -2, 0.5, 3}), tol, tol);
  require_values(gt, scaled(dt, {1, -2, 0.5, 3}), tol, tol);
}

// |z| = 800: exp(800) overflows both dtypes, but the loss only ever takes exp(-|z|) (0 here),
// so it is max(z, 0) - z t exactly, and σ(z) is 1 or 0. NaN in either input stays NaN.
TEST_CASE("loss_bce_with_logits_is_finite_and_exact_at_large_logits_and_propagates_nan", "[ops][loss][grad]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const OpHandle bce = opforge::op("loss.bce_with_logits");
  Tensor z = values({800, 800, -800, -800, 800}, {5}, dtype).requires_grad_();
  Tensor t = values({1, 0, 1, 0, 0.25}, {5}, dtype).requires_grad_();
  const Tensor l = bce({z, t}, {{"reduction", kNone}});
  require_values(l, {0, 800, 800, 0, 600}, 0);
  l.backward(values({1, 1, 1, 1, 1}, {5}, dtype));
  require_values(z.grad(), {0, 1, -1, 0, 0.75}, 0);
  require_values(t.grad(), {-800, -800, 800, 800, -800}, 0);
  require_values(bce({z.detach(), t.detach()}, {{"reduction", kSum}}), {2200}, 0);

  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor zn = values({nan, 1, 0}, {3}, dtype).requires_grad_();
  const Tensor tn = values({0.5, nan, 0.5}, {3}, dtype);
  const Tensor ln = bce({zn, tn}, {{"reduction", kNone}});
  require_values(ln, {nan, nan, std::log(2.0)}, tolerance(dtype));
  ln.backward(values({1, 1, 1}, {3}, dtype));
  require_values(zn.grad(), {nan, nan, 0}, 0);
  require_values(bce({zn.detach(), tn}), {nan}, 0);  // the mean too
}

// Literal values printed by PyTorch 1.13 (torch.float64, /usr/bin/python3):
// torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction=...), and the
// gradients of z and t (t with requires_grad) for the output gradient g (none) or 1.
// Within 5e-15: PyTorch takes log(e^-m + e^(-z-m)), m = max(-z, 0), which rounds 1 + e^-3
// before the log, and its loss at z = -3 is 2.1e-15 (relative) off the exact value
// 0.048587351573742058759 (mpmath, 40 digits), which opforge's is within 3e-16 of.
TEST_CASE("loss_bce_with_logits_agrees_with_pytorch", "[ops][loss][grad]") {
  const OpHandle bce = opforge::op("loss.bce_with_logits");
  const std::vector<double> z = {-3.0, -0.5, 0.0, 0.7, 2.5, 12.0}, t = {0.0, 1.0, 0.5, 0.3, 1.0, 0.0};
  struct Ref {
    std::int64_t reduction;
    std::vector<double> loss, dz, dt;
  };
  const std::vector<Ref> refs = {
      {kNone,
       {0.048587351573741965, 0.9740769841801067, 0.6931471805599453, 0.8931860488854577, 0.07888973429254957,
        12.000006144193478},
       {0.04742587317756678, 1.2449186624037092, 0.0, 1.1045633165044986, -0.11378727003186517, -0.9999938558253978},
       {3.0, -1.0, -0.0, -2.0999999999999996, -3.75, 12.0}},
      {kMean,
       {2.447982240614213},
       {0.00790431219626113, -0.10374322186697577, 0.0, 0.06136462869469436, -0.012643030003540575,
        0.1666656426375663},
       {0.5, 0.08333333333333333, -0.0, -0.11666666666666665, -0.4166666666666667, -2.0}},
      {kSum,
       {14.687893443685278},
       {0.04742587317756678, -0.6224593312018546, 0.0, 0.36818777216816617, -0.07585818002124345, 0.9999938558253978},
       {3.0, 0.5, -0.0, -0.7, -2.5, -12.0}},
  };
  for (const Ref& r : refs) {
    INFO("reduction " << r.reduction);
    Tensor zl = values(z, {6}).requires_grad_(), tl = values(t, {6}).requires_grad_();
    const Tensor l = bce({zl, tl}, {{"reduction", r.reduction}});
    require_values(l, r.loss, 5e-15);
    if (r.reduction == kNone) CHECK(l.to_vector()[0] == Approx(0.048587351573742058759).epsilon(3e-16));
    l.backward(r.reduction == kNone ? values({1.0, -2.0, 0.5, 3.0, 1.5, -1.0}, {6}) : Tensor::scalar(1.0));
    require_values(zl.grad(), r.dz, 2e-15);
    require_values(tl.grad(), r.dt, 2e-15);
  }
}

// ---- cross_entropy: hand-worked values ----------------------------------------------------------

TEST_CASE("loss_cross_entropy_matches_hand_computed_values_for_each_reduction", "[ops][loss]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const OpHandle ce = opforge::op("loss.cross_entropy");
  const double e = std::exp(1.0);
  // Rows [0, 0, 0] (class 1) and [1, 2, 3] (class 2).
  const Tensor logits = values({0, 0, 0, 1, 2, 3}, {2, 3}, dtype);
  const Tensor target = classes({1, 2});
  const double l0 = std::log(3.0), l1 = std::log(e + e * e + e * e * e) - 3;
  Tensor l = ce({logits, target});
  REQUIRE(l.shape() == Dims{});
  REQUIRE(l.dtype() == dtype);
  require_values(l, {(l0 + l1) / 2}, tolerance(dtype));
  require_values(ce({logits, target}, {{"reduction", kSum}}), {l0 + l1}, tolerance(dtype));
  l = ce({logits, target}, {{"reduction", kNone}});
  REQUIRE(l.shape() == Dims{2});
  require_values(l, {l0, l1}, tolerance(dtype));
}

// exp(1000) overflows both dtypes and exp(100) float32: the loss subtracts the row's max first.
TEST_CASE("loss_cross_entropy_is_stable_for_large_logits", "[ops][loss]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const OpHandle ce = opforge::op("loss.cross_entropy");
  const Tensor logits = values({1000, 0, 100, 100, -1000, -1000}, {3, 2}, dtype);
  require_values(ce({logits, classes({1, 0, 0})}, {{"reduction", kNone}}), {1000, std::log(2.0), std::log(2.0)},
                 tolerance(dtype), 1e-5);
}

// A row with a +inf logit has no defined loss: NaN, with a NaN gradient row, as in
// PyTorch (log_softmax gives inf - inf). It gave inf, and a gradient row part NaN,
// part finite numbers that are not its limit. Other rows are unaffected; a row of
// -inf only is NaN too (0 probability for every class).
TEST_CASE("loss_cross_entropy_of_a_row_with_an_infinite_logit_is_nan", "[ops][loss][grad]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const OpHandle ce = opforge::op("loss.cross_entropy");
  for (const double target_class : {0.0, 1.0}) {
    INFO("target class " << target_class);
    Tensor logits = values({inf, 0, 1, 0, 1, 2, -inf, -inf, -inf}, {3, 3}, dtype).requires_grad_();
    const Tensor loss = ce({logits, classes({target_class, 2, 0})}, {{"reduction", kNone}});
    const std::vector<double> l = loss.to_vector();
    CHECK(std::isnan(l[0]));
    CHECK(l[1] == Approx(std::log(std::exp(0.0) + std::exp(1.0) + std::exp(2.0)) - 2).epsilon(1e-6));
    CHECK(std::isnan(l[2]));
    loss.backward(values({1, 1, 1}, {3}, dtype));
    const std::vector<double> g = logits.grad().to_vector();
    for (int c = 0; c < 3; ++c) CHECK(std::isnan(g[static_cast<std::size_t>(c)]));
    CHECK_FALSE(std::isnan(g[3]));
    require_values(ce({logits.detach(), classes({target_class, 2, 0})}), {nan}, 0);  // the mean too
  }
}

// Far from 0 (1e30 in float64, 1e7 in float32, where the float32 spacing is 1), the row's
// logsumexp rounds to about its max and log Σ exp(x - m) is lost in it: the loss and the
// softmax of the gradient are computed from the shift and log Σ apart (a row [1e30, 1e30, 0]
// has loss log 2 and gradient [-1/2, 1/2, 0] for class 0, not 0 and [0, 1, 0]).
TEST_CASE("loss_cross_entropy_is_exact_for_logits_far_from_zero", "[ops][loss][grad]") {
  const DType dtype = GENERATE(DType::Float64, DType::Float32);
  const double base = dtype == DType::Float64 ? 1e30 : 1e7;
  INFO(opforge::dtype_name(dtype));
  const std::vector<double> offsets = {0, 0, -3, 1, 1, -2};  // float64 rounds every b + d to b
  std::vector<double> v;
  for (double d : offsets) v.push_back(base + d);
  Tensor logits = values(v, {2, 3}, dtype);
  logits.requires_grad_(true);
  const opforge::Tensor loss = opforge::op("loss.cross_entropy")({logits, classes({0, 2})}, {{"reduction", kNone}});
  // Softmax and loss of each row, from the differences that the dtype holds exactly.
  const std::vector<double> xs = logits.to_vector();
  std::vector<double> p(6), want_loss(2);
  for (std::size_t n = 0; n < 2; ++n) {
    const double m = xs[3 * n];
    double s = 0;
    for (std::size_t k = 0; k < 3; ++k) s += std::exp(xs[3 * n + k] - m);
    for (std::size_t k = 0; k < 3; ++k) p[3 * n + k] = std::exp(xs[3 * n + k] - m) / s;
    want_loss[n] = -std::log(p[3 * n + (n == 0 ? 0 : 2)]);
  }
  const double tol = tolerance(dtype);
  require_values(loss, want_loss, tol);
  loss.backward(values({1, 1}, {2}, dtype));
  require_values(logits.grad(), {p[0] - 1, p[1], p[2], p[3], p[4], p[5] - 1}, tol, tol);
}

// dlogits = (softmax - onehot) g, scaled by 1/N for mean; the target gets no gradient.
TEST_CASE("loss_cross_entropy_gradient_is_softmax_minus_onehot", "[ops][loss][grad]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  INFO(opforge::dtype_name(dtype));
  const OpHandle ce = opforge::op("loss.cross_entropy");
  const double e = std::exp(1.0), s = e + e * e + e * e * e;
  const std::vector<double> p = {1.0 / 3, 1.0 / 3, 1.0 / 3, e / s, e * e / s, e * e * e / s};
  const Tensor target = classes({1, 2});
  REQUIRE_FALSE(target.requires_grad());

  Tensor logits = values({0, 0, 0, 1, 2, 3}, {2, 3}, dtype);
  logits.requires_grad_(true);
  ce({logits, target}).backward();
  require_values(logits.grad(), {p[0] / 2, (p[1] - 1) / 2, p[2] / 2, p[3] / 2, p[4] / 2, (p[5] - 1) / 2},
                 tolerance(dtype));

  Tensor logits2 = values({0, 0, 0, 1, 2, 3}, {2, 3}, dtype);
  logits2.requires_grad_(true);
  ce({logits2, target}, {{"reduction", kNone}}).backward(values({2, -1}, {2}, dtype));
  require_values(logits2.grad(), {2 * p[0], 2 * (p[1] - 1), 2 * p[2], -p[3], -p[4], -(p[5] - 1)}, tolerance(dtype));
}

// ignore_index and label_smoothing, as PyTorch's: against a naive loop, every reduction,
// and the gradient against finite differences.
TEST_CASE("loss_cross_entropy_ignores_rows_and_smooths_labels", "[ops][loss][grad]") {
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  const double eps = GENERATE(0.0, 0.1, 1.0);
  const std::int64_t ignore = GENERATE(-100, 2);
  INFO(opforge::dtype_name(dtype) << " label_smoothing " << eps << " ignore_index " << ignore);
  const std::int64_t N = 7, C = 5;
  const std::vector<double> t = {1, -100, 4, 2, 0, -100, 2};
  const Tensor logits = Tensor::randn({N, C}, dtype, 11), target = classes(t);
  const std::vector<double> x = logits.to_vector();
  std::vector<double> want(N, 0.0);
  std::int64_t kept = 0;
  for (std::int64_t n = 0; n < N; ++n) {
    const auto tn = static_cast<std::int64_t>(t[std::size_t(n)]);
    if (tn == ignore) continue;
    ++kept;
    double m = -std::numeric_limits<double>::infinity(), s = 0;
    for (std::int64_t c = 0; c < C; ++c) m = std::max(m, x[std::size_t(n * C + c)]);
    for (std::int64_t c = 0; c < C; ++c) s += std::exp(x[std::size_t(n * C + c)] - m);
    const double lse = m + std::log(s);
    double l = 0;  // -Σ_c q_c log_softmax_c
    for (std::int64_t c = 0; c < C; ++c)
      l += ((c == tn ? 1 - eps : 0) + eps / C) * (lse - x[std::size_t(n * C + c)]);
    want[std::size_t(n)] = l;
  }
  double total = 0;
  for (double l : want) total += l;
  const OpHandle ce = opforge::op("loss.cross_entropy")
                          .bind({{"ignore_index", Attr(ignore)}, {"label_smoothing", Attr(eps)}});
  if (ignore == -100) {  // targets of -100 would be out of range otherwise
    require_values(ce.call({logits, target}, {{"reduction", kNone}})[0], want, tolerance(dtype), tolerance(dtype));
    require_values(ce.call({logits, target}, {{"reduction", kSum}})[0], {total}, tolerance(dtype));
    require_values(ce({logits, target}), {total / static_cast<double>(kept)}, tolerance(dtype));
    // Ignored rows get no gradient; the others (softmax - q) / kept.
    Tensor leaf = logits.detach().requires_grad_();
    ce({leaf, target}).backward();
    const std::vector<double> g = leaf.grad().to_vector();
    for (std::int64_t c = 0; c < C; ++c) CHECK(g[std::size_t(1 * C + c)] == 0.0);
    if (dtype == DType::Float64) {
      for (const std::int64_t red : {kMean, kSum, kNone})
        require_gradcheck(ce.bind({{"reduction", Attr(red)}}), {Tensor::randn({N, C}, DType::Float64, 3), target});
    }
  } else {
    // ignore_index 2, a real class: its rows are ignored, and -100 is an out-of-range target.
    CHECK_THROWS_MATCHES(ce({logits, target}), opforge::IndexError,
                         Message("loss.cross_entropy: argument 'target': class index -100 at position 1 is out of "
                                 "range for C = 5 classes (expected 0 <= index < 5, or ignore_index = 2)"));
    const Tensor t2 = classes({1, 3, 4, 2, 0, 3, 2});
    const Tensor l = ce.call({logits, t2}, {{"reduction", kNone}})[0];
    CHECK(l.to_vector()[3] == 0.0);
    CHECK(l.to_vector()[6] == 0.0);
    if (dtype == DType::Float64) require_gradcheck(ce, {Tensor::randn({N, C}, DType::Float64, 4), t2});
  }
}

TEST_CASE("loss_cross_entropy_with_every_row_ignored", "[ops][loss]") {
  const OpHandle ce = opforge::op("loss.cross_entropy");
  Tensor logits = Tensor::randn({2, 3}, DType::Float64, 1).requires_grad_();
  const Tensor target = classes({-100, -100});
  const Tensor mean = ce({logits, target});
  CHECK(std::isnan(mean.item()));  // 0 / 0, as PyTorch
  CHECK(ce.call({logits, target}, {{"reduction", kSum}})[0].item() == 0.0);
  mean.backward();
  for (double g : logits.grad().to_vector()) CHECK(g == 0.0);
  CHECK_THROWS_MATCHES(ce.call({logits, classes({0, 1})}, {{"label_smoothing", 1.5}}), opforge::ValueError,
                       Message("loss.cross_entropy: attribute 'label_smoothing': expected a number in [0, 1], got "
                               "1.5"));
}

// ---- every loss against the naive loop ---------------------------------------------------------

// Above the parallel grain and the 4096-term chunks of the sums.
TEST_CASE("losses_match_naive_loop_on_large_inputs", "[ops][loss]") {
  const std::string name = GENERATE(Catch::Generators::from_range(loss_ops()));
  const DType dtype = GENERATE(DType::Float32, DType::Float64);
  const std::int64_t reduction = GENERATE(kMean, kSum, kNone);
  INFO(name << ", " << opforge::dtype_name(dtype) << ", reduction " << reduction);
  const std::int64_t n = name == "loss.cross_entropy" ? 20000 : 120001;
  const std::vector<Tensor> in = inputs_for(name, n, dtype, 5);
  const std::vector<double> want = reduced(naive_terms(name, in), reduction);
  const Tensor got = opforge::op(name)(in, {{"reduction", reduction}});
  REQUIRE(got.dtype() == dtype);
  REQUIRE(got.shape() == (reduction == kNone ? Dims{n} : Dims{}));
  // float32 inputs are exact in double; the op rounds each term (none) or the sum once.
  const double tol = dtype == DType::Float32 ? 1e-6 : 1e-12;
  require_values(got, want, tol, reduction == kNone ? tol : 0);
}

TEST_CASE("loss_sums_are_bitwise_identical_for_any_thread_count", "[ops][loss]") {
  const std::string name = GENERATE(Catch::Generators::from_range(loss_ops()));
  const std::int64_t reduction = GENERATE(kMean, kSum);
  INFO(name << ", reduction " << reduction);
  const std::vector<Tensor> in = inputs_for(name, 300000, DType::Float32, 7);
  const int saved_threads = opforge::num_threads();
  std::vector<double> results;
  for (int threads : {1, 2, 4}) {
    opforge::set_num_threads(threads);
    results.push_back(opforge::op(name)(in, {{"reduction", reduction}}).item());
  }
  opforge::set_num_threads(saved_threads);
  REQUIRE(results[0] == results[1]);
  REQUIRE(results[0] == results[2]);
}

TEST_CASE("losses_of_no_elements_are_nan_for_mean_and_zero_for_sum", "[ops][loss]") {
  for (const std::string& name :
       {std::string("loss.mse"), std::string("loss.huber"), std::string("loss.bce_with_logits")}) {
    INFO(name);
    const Tensor z = Tensor::zeros({0, 3});
    REQUIRE(std::isnan(opforge::op(name)({z, z}).item()));
    REQUIRE(opforge::op(name)({z, z}, {{"reduction", kSum}}).item() == 0.0);
    REQUIRE(opforge::op(name)({z, z}, {{"reduction", kNone}}).shape() == Dims{0, 3});
  }
  const Tensor logits = Tensor::zeros({0, 3});
  const Tensor target = Tensor::zeros({0}, DType::Int64);
  REQUIRE(std::isnan(opforge::op("loss.cross_entropy")({logits, target}).item()));
  REQUIRE(opforge::op("loss.cross_entropy")({logits, target}, {{"reduction", kSum}}).item() == 0.0);
}

// ---- gradients, float32, the harness -----------------------------------------------------------

TEST_CASE("every_loss_passes_gradcheck_for_each_reduction", "[ops][loss][grad]") {
  const std::string name = GENERATE(Catch::Generators::from_range(loss_ops()));
  const std::int64_t reduction = GENERATE(kMean, kSum, kNone);
  INFO(name << ", reduction " << reduction);
  for (std::uint64_t seed : {10u, 20u}) {
    const std::vector<Tensor> in = inputs_for(name, 6, DType::Float64, seed);
    const OpHandle op = opforge::op(name);
    require_gradcheck(op.bind({{"reduction", reduction}}), in);
    if (name == "loss.huber") {
      require_gradcheck(op.bind({{"reduction", reduction}, {"delta", 0.5}}), in);
      require_gradcheck(op.bind({{"reduction", reduction}, {"delta", 2.5}}), in);
    }
  }
  require_gradcheck(opforge::op(name), inputs_for(name, 6, DType::Float64, 30));  // the op itself, defaults
}

// With one input requiring grad, it gets the same gradient as when both do, and the other none.
TEST_CASE("loss_only_the_input_that_requires_grad_gets_a_gradient", "[ops][loss][grad]") {
  const std::string name =
      GENERATE(std::string("loss.mse"), std::string("loss.huber"), std::string("loss.bce_with_logits"));
  const std::int64_t reduction = GENERATE(kMean, kNone);
  const std::size_t which = GENERATE(0u, 1u);
  INFO(name << ", reduction " << reduction << ", only input " << which);
  const OpHandle op = opforge::op(name);
  const std::vector<Tensor> in = inputs_for(name, 9, DType::Float64, 3);
  auto run = [&](bool a, bool b) {
    std::vector<Tensor> x = {in[0].clone(), in[1].clone()};
    x[0].requires_grad_(a);
    x[1].requires_grad_(b);
    Tensor l = op(x, {{"reduction", reduction}});
    l.backward(Tensor::randn(l.shape(), DType::Float64, 4));
    return x;
  };
  const std::vector<Tensor> both = run(true, true);
  const std::vector<Tensor> one = run(which == 0, which == 1);
  REQUIRE(one[which].grad().defined());
  REQUIRE_FALSE(one[1 - which].grad().defined());
  require_values(one[which].grad(), both[which].grad().to_vector(), 1e-15);
}

TEST_CASE("every_loss_passes_the_harness", "[ops][loss][harness]") {
  const std::string name = GENERATE(Catch::Generators::from_range(loss_ops()));
  INFO(name);
  require_all_checks_pass(opforge::op(name));
  require_all_checks_pass(opforge::op(name).bind({{"reduction", kSum}}));
  require_all_checks_pass(opforge::op(name).bind({{"reduction", kNone}}));
}

// Inputs drawn in float32 and widened exactly to float64: forward and gradients differ
// by float32 rounding in the op only.
TEST_CASE("loss_float32_agrees_with_float64", "[ops][loss][grad]") {
  const std::string name = GENERATE(Catch::Generators::from_range(loss_ops()));
  const std::int64_t reduction = GENERATE(kMean, kSum, kNone);
  INFO(name << ", reduction " << reduction);
  const std::vector<Tensor> in32 = inputs_for(name, 50, DType::Float32, 41);
  std::vector<Tensor> x32, x64;
  for (const Tensor& t : in32) {
    x32.push_back(t.clone());
    x64.push_back(opforge::is_floating(t.dtype()) ? t.to(DType::Float64) : t.clone());
  }
  x32[0].requires_grad_(true);
  x64[0].requires_grad_(true);
  const OpHandle op = opforge::op(name);
  Tensor l32 = op(x32, {{"reduction", reduction}}), l64 = op(x64, {{"reduction", reduction}});
  REQUIRE(l32.dtype() == DType::Float32);
  require_values(l32, l64.to_vector(), 1e-5, 1e-6);
  const Tensor w = Tensor::randn(l64.shape(), DType::Float32, 42);
  l32.backward(w);
  l64.backward(w.to(DType::Float64));
  REQUIRE(x32[0].grad().dtype() == DType::Float32);
  require_values(x32[0].grad(), x64[0].grad().to_vector(), 1e-4, 1e-6);
}

// ---- bad input ---------------------------------------------------------------------------------

TEST_CASE("losses_refuse_mismatched_shapes_and_dtypes", "[ops][loss][errors]") {
  using opforge::DTypeError;
  using opforge::ShapeError;
  const Tensor a = Tensor::ones({3, 4});
  CHECK_THROWS_MATCHES(opforge::op("loss.mse")({a, Tensor::ones({4})}), ShapeError,
                       Message("loss.mse: argument 'target': expected shape [3, 4] (the shape of 'pred'), got [4]"));
  CHECK_THROWS_MATCHES(opforge::op("loss.huber")({a, Tensor::ones({4, 3})}), ShapeError,
                       Message("loss.huber: argument 'target': expected shape [3, 4] (the shape of 'pred'), got "
                               "[4, 3]"));
  CHECK_THROWS_MATCHES(opforge::op("loss.mse")({a, Tensor::ones({3, 4}, DType::Float32)}), DTypeError,
                       Message("loss.mse: argument 'target' (input 1): expected dtype float64 (the dtype of 'pred'; "
                               "all inputs must share one dtype), got float32; convert one of them with .to() first"));
  CHECK_THROWS_MATCHES(opforge::op("loss.huber")({Tensor::zeros({3}, DType::Int64), Tensor::zeros({3}, DType::Int64)}),
                       DTypeError,
                       Message("loss.huber: argument 'pred' (input 0): expected dtype float32, float64, got int64; convert it with .to() first"));
  CHECK_THROWS_MATCHES(opforge::op("loss.mse").call({a}), opforge::ValueError,
                       Message("loss.mse: expected 2 inputs (pred, target), got 1"));
  const OpHandle bce = opforge::op("loss.bce_with_logits");
  CHECK_THROWS_MATCHES(bce({a, Tensor::ones({4})}), ShapeError,
                       Message("loss.bce_with_logits: argument 'target': expected shape [3, 4] (the shape of 'logits'), "
                               "got [4]"));
  CHECK_THROWS_MATCHES(bce({a, Tensor::ones({1, 4})}), ShapeError,  // no broadcasting, as mse and huber
                       Message("loss.bce_with_logits: argument 'target': expected shape [3, 4] (the shape of 'logits'), "
                               "got [1, 4]"));
  CHECK_THROWS_MATCHES(bce({a, Tensor::ones({3, 4}, DType::Float32)}), DTypeError,
                       Message("loss.bce_with_logits: argument 'target' (input 1): expected dtype float64 (the dtype of "
                               "'logits'; all inputs must share one dtype), got float32; convert one of them with .to() "
                               "first"));
  CHECK_THROWS_MATCHES(bce({Tensor::zeros({3}, DType::Int64), Tensor::zeros({3}, DType::Int64)}), DTypeError,
                       Message("loss.bce_with_logits: argument 'logits' (input 0): expected dtype float32, float64, got "
                               "int64; convert it with .to() first"));
  CHECK_THROWS_MATCHES(bce.call({a}), opforge::ValueError,
                       Message("loss.bce_with_logits: expected 2 inputs (logits, target), got 1"));
}

TEST_CASE("losses_refuse_bad_reduction_and_delta", "[ops][loss][errors]") {
  using opforge::ValueError;
  const Tensor a = Tensor::ones({3});
  CHECK_THROWS_MATCHES(opforge::op("loss.mse")({a, a}, {{"reduction", 3}}), ValueError,
                       Message("loss.mse: attribute 'reduction': expected 0 (mean), 1 (sum) or 2 (none), got 3"));
  CHECK_THROWS_MATCHES(opforge::op("loss.huber")({a, a}, {{"reduction", -1}}), ValueError,
                       Message("loss.huber: attribute 'reduction': expected 0 (mean), 1 (sum) or 2 (none), got -1"));
  CHECK_THROWS_MATCHES(opforge::op("loss.bce_with_logits")({a, a}, {{"reduction", 3}}), ValueError,
                       Message("loss.bce_with_logits: attribute 'reduction': expected 0 (mean), 1 (sum) or 2 (none), "
                               "got 3"));
  CHECK_THROWS_MATCHES(
      opforge::op("loss.cross_entropy")({Tensor::ones({2, 3}), classes({0, 1})}, {{"reduction", 7}}), ValueError,
      Message("loss.cross_entropy: attribute 'reduction': expected 0 (mean), 1 (sum) or 2 (none), got 7"));
  CHECK_THROWS_MATCHES(opforge::op("loss.huber")({a, a}, {{"delta", 0.0}}), ValueError,
                       Message("loss.huber: attribute 'delta': expected a positive finite number, got 0"));
  CHECK_THROWS_MATCHES(opforge::op("loss.huber")({a, a}, {{"delta", -1.5}}), ValueError,
                       Message("loss.huber: attribute 'delta': expected a positive finite number, got -1.5"));
  CHECK_THROWS_MATCHES(opforge::op("loss.mse")({a, a}, {{"reduction", true}}), ValueError,
                       Message("loss.mse: attribute 'reduction': expected int, got bool true"));
  CHECK_THROWS_MATCHES(opforge::op("loss.mse")({a, a}, {{"delta", 1.0}}), ValueError,
                       Message("loss.mse: no attribute named 'delta' (it has: reduction)"));
}

TEST_CASE("loss_cross_entropy_refuses_bad_logits_and_targets", "[ops][loss][errors]") {
  const OpHandle ce = opforge::op("loss.cross_entropy");
  const Tensor logits = Tensor::ones({3, 4});
  CHECK_THROWS_MATCHES(ce({logits, classes({0, 4, 1})}), opforge::IndexError,
                       Message("loss.cross_entropy: argument 'target': class index 4 at position 1 is out of range for "
                               "C = 4 classes (expected 0 <= index < 4, or ignore_index = -100)"));
  CHECK_THROWS_MATCHES(ce({logits, classes({0, 1, -1})}), opforge::IndexError,
                       Message("loss.cross_entropy: argument 'target': class index -1 at position 2 is out of range "
                               "for C = 4 classes (expected 0 <= index < 4, or ignore_index = -100)"));
  CHECK_THROWS_MATCHES(ce({Tensor::ones({4}), classes({0})}), opforge::ShapeError,
                       Message("loss.cross_entropy: argument 'logits': expected a 2-D tensor, got float64[4]"));
  CHECK_THROWS_MATCHES(ce({logits, classes({0, 1})}), opforge::ShapeError,
                       Message("loss.cross_entropy: argument 'target': expected shape [3] (one class index per row of "
                               "'logits'), got [2]"));
  CHECK_THROWS_MATCHES(ce({logits, Tensor::zeros({3})}), opforge::DTypeError,
                       Message("loss.cross_entropy: argument 'target': expected dtype int64 (class indices), got "
                               "float64"));
  CHECK_THROWS_MATCHES(ce({Tensor::zeros({3, 4}, DType::Int64), classes({0, 1, 2})}), opforge::DTypeError,
                       Message("loss.cross_entropy: argument 'logits': expected dtype float32 or float64, got int64"));
  // Each input's own dtypes, also for bool (not "expected float32, float64, int64" for either).
  CHECK_THROWS_MATCHES(ce({logits, Tensor::zeros({3}, DType::Bool)}), opforge::DTypeError,
                       Message("loss.cross_entropy: argument 'target': expected dtype int64 (class indices), got "
                               "bool"));
  CHECK_THROWS_MATCHES(ce({Tensor::zeros({3, 4}, DType::Bool), classes({0, 1, 2})}), opforge::DTypeError,
                       Message("loss.cross_entropy: argument 'logits': expected dtype float32 or float64, got bool"));
}

}  // namespace
