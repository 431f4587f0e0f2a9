// The autograd contract an op author and a user rely on (docs/autograd.md):
// version counters on saved tensors, needs_input_grad, mark_non_differentiable,
// non-tensor saved values, backward with a given gradient, the functional
// opforge::grad(), gradient hooks, in-place refusals and the optimiser-step
// pattern, integer and multiple outputs, and the memory a forward+backward pass
// of the least-squares graph leaves behind (exactly) and needs at its peak.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <opforge/opforge.hpp>

using opforge::AutogradError;
using opforge::Context;
using opforge::Dims;
using opforge::DType;
using opforge::OpHandle;
using opforge::OpSchema;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
using Catch::Matchers::Message;
using V = std::vector<double>;

namespace {

const OpHandle& plugin(const char* name) {
  static const OpHandle add = opforge::op("elementwise.add");
  static const OpHandle sub = opforge::op("elementwise.sub");
  static const OpHandle mul = opforge::op("elementwise.mul");
  static const OpHandle square = opforge::op("elementwise.square");
  static const OpHandle sum = opforge::op("reduce.sum");
  static const OpHandle mv = opforge::op("linalg.mv");
  const std::string n = name;
  if (n == "add") return add;
  if (n == "sub") return sub;
  if (n == "mul") return mul;
  if (n == "square") return square;
  if (n == "sum") return sum;
  return mv;
}
Tensor add(const Tensor& a, const Tensor& b) { return plugin("add")({a, b}); }
Tensor sub(const Tensor& a, const Tensor& b) { return plugin("sub")({a, b}); }
Tensor mul(const Tensor& a, const Tensor& b) { return plugin("mul")({a, b}); }
Tensor square(const Tensor& x) { return plugin("square")({x}); }
Tensor sum(const Tensor& x) { return plugin("sum")({x}); }
Tensor mv(const Tensor& A, const Tensor& x) { return plugin("mv")({A, x}); }

Tensor leaf(const V& v, DType dt = DType::Float64) { return Tensor::from_values(v, dt).requires_grad_(); }

// k * t, a new tensor of t's shape and dtype.
Tensor scaled(const Tensor& t, double k) {
  V v = t.to_vector();
  for (double& e : v) e *= k;
  return Tensor::from_values(v, t.shape(), t.dtype());
}

// The message of a saved tensor modified in place, as the engine reports it.
std::string modified_msg(const std::string& op, int index, const std::string& what, int was, int now) {
  return "in backward of '" + op + "': saved tensor " + std::to_string(index) + " (" + what +
         ") was modified in place after forward saved it (version " + std::to_string(was) + ", now " +
         std::to_string(now) +
         "); backward needs its value from forward. Modify a copy instead (detach().clone()), or do the in-place "
         "change before the op";
}

}  // namespace

// ---- version counters --------------------------------------------------------------------------

TEST_CASE("contract: a saved input modified through detach() before backward is an error naming op and index",
          "[contract]") {
  Tensor x = leaf({1, 2, 3});
  Tensor L = sum(square(x));  // square saves x
  CHECK(x.version() == 0);
  x.detach().add_(Tensor::ones({3}));  // shares x's storage, so its version counter
  CHECK(x.version() == 1);
  REQUIRE_THROWS_MATCHES(L.backward(), AutogradError,
                         Message(modified_msg("elementwise.square", 0, "float64[3]", 0, 1)));
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("contract: a saved input modified under NoGradGuard before backward is an error", "[contract]") {
  Tensor x = leaf({1, 2, 3});
  Tensor L = sum(square(x));
  {
    opforge::NoGradGuard g;
    x.fill_(0.5);
    x.mul_(2.0);
  }
  REQUIRE_THROWS_MATCHES(L.backward(), AutogradError,
                         Message(modified_msg("elementwise.square", 0, "float64[3]", 0, 2)));
  CHECK_FALSE(x.grad().defined());
  // A change made before the op is not an error: the op saved the new value.
  Tensor L2 = sum(square(x));
  L2.backward();
  CHECK(x.grad().to_vector() == V{2, 2, 2});
}

TEST_CASE("contract: the error names the index of the modified saved tensor (1), also when written via a view",
          "[contract]") {
  // mul(a, b) saves {a if b needs grad, b if a needs grad}: here {undefined, b}.
  Tensor a = leaf({1, 2, 3});
  Tensor b = Tensor::from_values({4, 5, 6});
  Tensor L = sum(mul(a, b));
  b.slice(0, 1, 2).fill_(0.0);  // b does not require grad: allowed, and seen by b's counter
  CHECK(b.version() == 1);
  REQUIRE_THROWS_MATCHES(L.backward(), AutogradError,
                         Message(modified_msg("elementwise.mul", 1, "float64[3]", 0, 1)));
  CHECK_FALSE(a.grad().defined());
  // Unmodified, the same graph differentiates.
  Tensor b2 = Tensor::from_values({4, 5, 6});
  sum(mul(a, b2)).backward();
  CHECK(a.grad().to_vector() == V{4, 5, 6});
}

namespace {
// y = exp(x); saves its own output.
struct ExpFn final : opforge::Function {
  TensorList forward(Context& ctx, TensorSpan in) const override {
    V v = in[0].to_vector();
    for (double& e : v) e = std::exp(e);
    Tensor y = Tensor::from_values(v, in[0].shape());
    ctx.save_for_backward(y);
    return {y};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor& y = ctx.saved_tensors()[0];
    V gv = g[0].to_vector(), yv = y.to_vector();
    for (std::size_t i = 0; i < gv.size(); ++i) gv[i] *= yv[i];
    return {Tensor::from_values(gv, y.shape())};
  }
};
}  // namespace

TEST_CASE("contract: a saved output is covered by the version check too", "[contract]") {
  const OpHandle exp = opforge::make_op(OpSchema("test.exp").input_names({"x"}), std::make_unique<ExpFn>());
  Tensor x = leaf({0.0, 1.0});
  Tensor y = exp({x});
  REQUIRE_THROWS_MATCHES(y.fill_(0.0), AutogradError,
                         Message("Tensor::fill_: the tensor is the output of 'test.exp' and part of a recorded graph; "
                                 "in-place changes would corrupt its backward. Use an op that returns a new tensor, "
                                 "or detach() first (clone(), contiguous() and to() of a tensor that requires grad "
                                 "are recorded too: detach().clone() is a copy of its own to write into)"));
  {
    opforge::NoGradGuard g;
    y.fill_(0.0);  // allowed here, but the Context's alias of y shares its counter
  }
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), AutogradError,
                         Message(modified_msg("test.exp", 0, "float64[2]", 0, 1)));
}

// ---- what forward receives -------------------------------------------------------------------

namespace {
struct LayoutLog {
  bool contiguous = false;
  const void* data = nullptr;
  Dims strides;
};
// Returns a copy of its input; logs the layout forward was given.
struct LayoutProbe final : opforge::Function {
  LayoutLog* log;
  explicit LayoutProbe(LayoutLog* l) : log(l) {}
  TensorList forward(Context&, TensorSpan in) const override {
    log->contiguous = in[0].is_contiguous();
    log->data = in[0].data_ptr();
    log->strides = in[0].strides();
    return {in[0].clone()};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};
}  // namespace

TEST_CASE("contract: forward gets contiguous copies of strided inputs unless the schema takes strided ones",
          "[contract]") {
  double buf[4] = {1, 2, 3, 4};
  // A strided leaf: column-major 2 x 2, logically [[1, 3], [2, 4]].
  Tensor x = Tensor::from_blob(buf, {2, 2}, {1, 2}, DType::Float64).requires_grad_();
  REQUIRE_FALSE(x.is_contiguous());
  LayoutLog log;
  const OpHandle dense =
      opforge::make_op(OpSchema("test.dense").input_names({"x"}), std::make_unique<LayoutProbe>(&log));
  Tensor y = dense({x});
  CHECK(log.contiguous);
  CHECK(log.data != static_cast<const void*>(buf));
  CHECK(log.strides == Dims{2, 1});
  CHECK(y.to_vector() == V{1, 3, 2, 4});
  // The graph still points at the caller's tensor: its .grad is filled.
  y.backward(Tensor::from_values({10, 30, 20, 40}, {2, 2}));
  CHECK(x.grad().to_vector() == V{10, 30, 20, 40});
  CHECK(x.grad().shape() == Dims{2, 2});

  const OpHandle strided = opforge::make_op(OpSchema("test.strided").input_names({"x"}).takes_strided_inputs(),
                                            std::make_unique<LayoutProbe>(&log));
  strided({x});
  CHECK_FALSE(log.contiguous);
  CHECK(log.data == static_cast<const void*>(buf));
  CHECK(log.strides == Dims{1, 2});
  // Through a plugin: square of the strided leaf, gradient 2 x in logical order.
  x.zero_grad();
  sum(square(x)).backward();
  CHECK(x.grad().to_vector() == V{2, 6, 4, 8});
}

// ---- needs_input_grad ---------------------------------------------------------------------------

namespace {
struct NeedsLog {
  V forward, backward;
};
// out = a * 2 + b * 3 (no saved tensors); backward returns only what is needed,
// plus (on purpose) a wrong-shaped gradient for input 1 when it is not needed.
struct NeedsFn final : opforge::Function {
  NeedsLog* log;
  explicit NeedsFn(NeedsLog* l) : log(l) {}
  TensorList forward(Context& ctx, TensorSpan in) const override {
    log->forward = {double(ctx.needs_input_grad(0)), double(ctx.needs_input_grad(1)),
                    double(ctx.any_input_needs_grad())};
    V a = in[0].to_vector(), b = in[1].to_vector();
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = 2 * a[i] + 3 * b[i];
    return {Tensor::from_values(a, in[0].shape())};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    log->backward = {double(ctx.needs_input_grad(0)), double(ctx.needs_input_grad(1))};
    return {ctx.needs_input_grad(0) ? scaled(g[0], 2) : Tensor(),
            ctx.needs_input_grad(1) ? scaled(g[0], 3) : Tensor::ones({7})};
  }
};
}  // namespace

TEST_CASE("contract: needs_input_grad tells forward and backward which gradients to compute", "[contract]") {
  NeedsLog log;
  const OpHandle op =
      opforge::make_op(OpSchema("test.needs").input_names({"a", "b"}), std::make_unique<NeedsFn>(&log));
  Tensor a = leaf({1, 2});
  Tensor b = Tensor::from_values({5, 6});
  SECTION("only a") {
    Tensor y = op({a, b});
    CHECK(log.forward == V{1, 0, 1});
    y.backward(Tensor::ones({2}));
    CHECK(log.backward == V{1, 0});
    // The wrong-shaped gradient returned for b (which needs none) is ignored.
    CHECK(a.grad().to_vector() == V{2, 2});
    CHECK_FALSE(b.grad().defined());
  }
  SECTION("a non-leaf input needs a gradient too") {
    Tensor h = square(leaf({1, 1}));
    Tensor y = op({b, h});
    CHECK(log.forward == V{0, 1, 1});
    y.backward(Tensor::ones({2}));
    CHECK(log.backward == V{0, 1});
  }
  SECTION("none, or grad mode off") {
    op({b, b});
    CHECK(log.forward == V{0, 0, 0});
    opforge::NoGradGuard g;
    Tensor y = op({a, b});
    CHECK(log.forward == V{0, 0, 0});
    CHECK(y.grad_fn() == nullptr);
  }
}

// ---- mark_non_differentiable, integer outputs, several outputs --------------------------------

namespace {
struct SeenGrads {
  V g1;
  DType dt1 = DType::Float64;
  Dims shape1;
  int calls = 0;
};
// (2x, floor(x)); output 1 is marked non-differentiable.
struct TwoOutMarked final : opforge::Function {
  SeenGrads* seen;
  explicit TwoOutMarked(SeenGrads* s) : seen(s) {}
  TensorList forward(Context& ctx, TensorSpan in) const override {
    V f = in[0].to_vector();
    for (double& e : f) e = std::floor(e);
    ctx.mark_non_differentiable(1);
    return {scaled(in[0], 2), Tensor::from_values(f, in[0].shape())};
  }
  TensorList backward(Context&, TensorSpan g) const override {
    ++seen->calls;
    seen->g1 = g[1].to_vector();
    seen->dt1 = g[1].dtype();
    seen->shape1 = g[1].shape();
    return {scaled(g[0], 2)};
  }
};
}  // namespace

TEST_CASE("contract: mark_non_differentiable: no grad_fn, requires_grad false, backward gets zeros for it",
          "[contract]") {
  SeenGrads seen;
  const OpHandle op = opforge::make_op(OpSchema("test.marked").input_names({"x"}).outputs(2),
                                       std::make_unique<TwoOutMarked>(&seen));
  Tensor x = leaf({1.5, -0.5, 2.0});
  TensorList out = op.call({x});
  REQUIRE(out.size() == 2);
  CHECK(out[0].grad_fn() != nullptr);
  CHECK(out[0].requires_grad());
  CHECK(out[1].grad_fn() == nullptr);
  CHECK_FALSE(out[1].requires_grad());
  CHECK(out[1].is_leaf());
  CHECK(out[1].to_vector() == V{1, -1, 2});
  REQUIRE_THROWS_MATCHES(out[1].backward(Tensor::ones({3})), AutogradError,
                         Message("backward: output 0 (float64[3]) does not require grad and has no grad_fn: it is a "
                                 "leaf that was not marked (call requires_grad_(true) on it to differentiate with "
                                 "respect to it), or the output of ops none of whose inputs required grad, of a call "
                                 "made under a NoGradGuard, or of an output its op marked non-differentiable. (A "
                                 "gradient from backward() or grad() has no history: opforge computes first "
                                 "derivatives only, so a gradient penalty or a Hessian-vector product cannot be "
                                 "backpropagated)"));
  // Both outputs used downstream: only output 0 carries a gradient back.
  Tensor L = sum(add(out[0], out[1]));
  L.backward();
  CHECK(seen.calls == 1);
  CHECK(seen.g1 == V{0, 0, 0});
  CHECK(seen.dt1 == DType::Float64);
  CHECK(seen.shape1 == Dims{3});
  CHECK(x.grad().to_vector() == V{2, 2, 2});
}

namespace {
// 2 x, marking an output it does not have (index 3 of 1).
struct MarksMissingOutput final : opforge::Function {
  TensorList forward(Context& ctx, TensorSpan in) const override {
    ctx.mark_non_differentiable(3);
    return {scaled(in[0], 2)};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {scaled(g[0], 2)}; }
};
}  // namespace

TEST_CASE("contract: marking an output past the last one is refused, recorded or not", "[contract]") {
  const OpHandle op = opforge::make_op(OpSchema("test.marks_missing").input_names({"x"}),
                                       std::make_unique<MarksMissingOutput>());
  const char* msg =
      "test.marks_missing: forward marked output 3 non-differentiable (ctx.mark_non_differentiable), but returns 1 "
      "output; mark an index from 0 to 0";
  REQUIRE_THROWS_MATCHES(op.call({leaf({1.0, 2.0})}), AutogradError, Message(msg));
  opforge::NoGradGuard no_grad;
  REQUIRE_THROWS_MATCHES(op.call({leaf({1.0, 2.0})}), AutogradError, Message(msg));
}

namespace {
// 2 x, marking output 64 (past the 64 bits the core keeps) or -1 (a size_t).
struct MarksFarOutput final : opforge::Function {
  std::size_t index;
  explicit MarksFarOutput(std::size_t i) : index(i) {}
  TensorList forward(Context& ctx, TensorSpan in) const override {
    ctx.mark_non_differentiable(index);
    return {scaled(in[0], 2)};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {scaled(g[0], 2)}; }
};
}  // namespace

TEST_CASE("contract: marking output 64 or beyond is refused, not ignored", "[contract]") {
  for (std::size_t index : {std::size_t{64}, std::size_t{100}, static_cast<std::size_t>(-1)}) {
    const OpHandle op = opforge::make_op(OpSchema("test.marks_far").input_names({"x"}),
                                         std::make_unique<MarksFarOutput>(index));
    REQUIRE_THROWS_MATCHES(op.call({leaf({1.0, 2.0})}), AutogradError,
                           Message("test.marks_far: forward marked output " + std::to_string(index) +
                                   " non-differentiable (ctx.mark_non_differentiable), but an op has at most 64 "
                                   "outputs; mark the index of one of its outputs"));
  }
}

namespace {
// (max(x), argmax(x)) as 0-d tensors; the index is int64.
struct MaxFn final : opforge::Function {
  SeenGrads* seen;
  explicit MaxFn(SeenGrads* s) : seen(s) {}
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const V v = in[0].to_vector();
    std::size_t k = 0;
    for (std::size_t i = 1; i < v.size(); ++i)
      if (v[i] > v[k]) k = i;
    ctx.save_int(in[0].numel());
    ctx.save_int(static_cast<std::int64_t>(k));
    return {Tensor::scalar(v[k]), Tensor::scalar(static_cast<double>(k), DType::Int64)};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    ++seen->calls;
    seen->g1 = g[1].to_vector();
    seen->dt1 = g[1].dtype();
    seen->shape1 = g[1].shape();
    V out(static_cast<std::size_t>(ctx.saved_int(0)), 0.0);
    out[static_cast<std::size_t>(ctx.saved_int(1))] = g[0].item();
    return {Tensor::from_values(out)};
  }
};
}  // namespace

TEST_CASE("contract: an integer output gets no grad_fn, backward gets an integer zero for it", "[contract]") {
  SeenGrads seen;
  const OpHandle op =
      opforge::make_op(OpSchema("test.max").input_names({"x"}).outputs(2), std::make_unique<MaxFn>(&seen));
  Tensor x = leaf({3, 9, -1, 4});
  TensorList out = op.call({x});
  CHECK(out[0].grad_fn() != nullptr);
  CHECK(out[1].dtype() == DType::Int64);
  CHECK(out[1].grad_fn() == nullptr);
  CHECK_FALSE(out[1].requires_grad());
  CHECK(out[1].item() == 1.0);
  out[0].backward(Tensor::scalar(5.0));
  CHECK(seen.calls == 1);
  CHECK(seen.dt1 == DType::Int64);
  CHECK(seen.shape1 == Dims{});
  CHECK(seen.g1 == V{0});
  CHECK(x.grad().to_vector() == V{0, 5, 0, 0});
}

namespace {
// (x[:2] copy, x[2:] copy) of a [4] tensor.
struct SplitFn final : opforge::Function {
  TensorList forward(Context&, TensorSpan in) const override {
    return {in[0].slice(0, 0, 2).clone(), in[0].slice(0, 2, 4).clone()};
  }
  TensorList backward(Context&, TensorSpan g) const override {
    const V a = g[0].to_vector(), b = g[1].to_vector();
    return {Tensor::from_values({a[0], a[1], b[0], b[1]})};
  }
};
}  // namespace

TEST_CASE("contract: an op with two outputs, both used, backpropagates both", "[contract]") {
  const OpHandle split =
      opforge::make_op(OpSchema("test.split").input_names({"x"}).outputs(2), std::make_unique<SplitFn>());
  Tensor x = leaf({1, -2, 3, 4});
  TensorList parts = split.call({x});
  CHECK(parts[0].grad_fn() == parts[1].grad_fn());
  CHECK(parts[1].output_nr() == 1);
  // L = sum(a^2) + sum(3 b): dL/dx = [2 x0, 2 x1, 3, 3]
  Tensor L = add(sum(square(parts[0])), sum(mul(parts[1], Tensor::full({2}, 3.0))));
  CHECK(L.item() == 1 + 4 + 9 + 12);
  L.backward();
  CHECK(x.grad().to_vector() == V{2, -4, 3, 3});
  // From one output only: the other output's gradient is zero.
  x.zero_grad();
  TensorList p2 = split.call({x});
  sum(p2[1]).backward();
  CHECK(x.grad().to_vector() == V{0, 0, 1, 1});
}

// ---- saved non-tensor values --------------------------------------------------------------------

namespace {
struct SavedLog {
  double value = 0;
  std::int64_t i0 = 0, i1 = 0;
  bool read_past_end = false;
};
// y = k x + c, with k and c saved as values/ints for backward.
struct SavesFn final : opforge::Function {
  SavedLog* log;
  explicit SavesFn(SavedLog* l) : log(l) {}
  TensorList forward(Context& ctx, TensorSpan in) const override {
    ctx.save_value(2.5);
    ctx.save_int(-7);
    ctx.save_int(std::int64_t{1} << 40);
    return {scaled(in[0], 2.5)};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    log->value = ctx.saved_value(0);
    log->i0 = ctx.saved_int(0);
    log->i1 = ctx.saved_int(1);
    if (log->read_past_end) ctx.saved_int(2);
    return {scaled(g[0], ctx.saved_value(0))};
  }
};
}  // namespace

TEST_CASE("contract: save_value and save_int round-trip to backward, and are freed with the graph", "[contract]") {
  SavedLog log;
  const OpHandle op = opforge::make_op(OpSchema("test.saves").input_names({"x"}), std::make_unique<SavesFn>(&log));
  Tensor x = leaf({1, 2});
  Tensor y = op({x});
  y.backward(Tensor::ones({2}));
  CHECK(log.value == 2.5);
  CHECK(log.i0 == -7);
  CHECK(log.i1 == (std::int64_t{1} << 40));
  CHECK(x.grad().to_vector() == V{2.5, 2.5});
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), AutogradError,
                         Message("in backward of 'test.saves': this part of the graph was already backpropagated "
                                 "(by an earlier backward, or by one that stopped with an error after passing here) "
                                 "and what forward saved was freed; pass retain_graph=true to the first backward to "
                                 "backpropagate twice or to retry after an error"));
  log.read_past_end = true;
  REQUIRE_THROWS_MATCHES(op({x}).backward(Tensor::ones({2})), opforge::IndexError,
                         Message("in backward of 'test.saves': saved_int(2): only 2 ints were saved"));
}

// ---- backward with a given gradient, and grad() ------------------------------------------------

TEST_CASE("contract: backward of a non-scalar output takes the output's gradient", "[contract]") {
  Tensor x = leaf({1, 2, 3});
  Tensor y = square(x);
  y.backward(Tensor::from_values({1, 0.5, -2}));  // x.grad = 2 x g
  CHECK(x.grad().to_vector() == V{2, 2, -12});
  // Several roots at once, each with its gradient.
  Tensor w = leaf({1, 2});
  Tensor a = square(w), b = mul(w, Tensor::full({2}, 3.0));
  opforge::backward({a, b}, {Tensor::ones({2}), Tensor::full({2}, 2.0)});  // 2 w + 6
  CHECK(w.grad().to_vector() == V{8, 10});
}

TEST_CASE("contract: grad() returns gradients and leaves every .grad untouched", "[contract]") {
  Tensor x = leaf({1, 2, 3});
  Tensor w = leaf({0.5, -1, 2});
  Tensor h = mul(x, w);        // [0.5, -2, 6], a non-leaf
  Tensor L = sum(square(h));   // dL/dh = 2h, dL/dx = 2 h w, dL/dw = 2 h x
  TensorList g = opforge::grad({L}, {x, h}, {}, /*retain_graph=*/true);
  REQUIRE(g.size() == 2);
  CHECK(g[0].to_vector() == V{0.5, 4, 24});
  CHECK(g[1].to_vector() == V{1, -4, 12});
  CHECK_FALSE(x.grad().defined());
  CHECK_FALSE(w.grad().defined());  // reached by the pass, but not an input of grad()
  CHECK_FALSE(h.grad().defined());
  // grad_outputs for a non-scalar output: dh/dw weighted by ones is x.
  TensorList gw = opforge::grad({h}, {w}, {Tensor::ones({3})}, true);
  CHECK(gw[0].to_vector() == V{1, 2, 3});
  CHECK_FALSE(w.grad().defined());
  // The graph was retained: a real backward still works, and accumulates.
  L.backward();
  CHECK(x.grad().to_vector() == V{0.5, 4, 24});
  CHECK(w.grad().to_vector() == V{1, -8, 36});
  // The results are the caller's: not the memory of any .grad.
  CHECK(g[0].data_ptr() != x.grad().data_ptr());
}

// As in PyTorch, grad() runs only the nodes that lead to its inputs: the rest of
// the graph keeps what it saved, is not checked, and its hooks do not run.
TEST_CASE("contract: grad() runs only what leads to its inputs", "[contract]") {
  {
    // square saved x; grad() w.r.t. h = square(x) must not free it: backward through z works after.
    Tensor x = leaf({1, 2});
    Tensor h = square(x);
    Tensor y = sum(mul(h, Tensor::full({2}, 3.0)));
    Tensor z = sum(h);
    CHECK(opforge::grad({y}, {h})[0].to_vector() == V{3, 3});
    CHECK_FALSE(x.grad().defined());
    z.backward();
    CHECK(x.grad().to_vector() == V{2, 4});
  }
  {
    // square's saved x was changed in place: its backward would be refused, but grad() w.r.t. h
    // never runs it.
    Tensor x = leaf({1, 2});
    Tensor h = square(x);
    Tensor y = sum(mul(h, Tensor::full({2}, 3.0)));
    {
      opforge::NoGradGuard no_grad;
      x.add_(Tensor::ones({2}));
    }
    CHECK(opforge::grad({y}, {h})[0].to_vector() == V{3, 3});
  }
  {
    // A hook on a leaf that is not an input does not run; one on the input does.
    Tensor x = leaf({1, 2});
    Tensor w = leaf({3, 4});
    int w_calls = 0, x_calls = 0;
    w.register_hook([&](const Tensor&) {
      ++w_calls;
      return Tensor();
    });
    x.register_hook([&](const Tensor& g) {
      ++x_calls;
      return mul(g, Tensor::full({2}, 10.0));
    });
    CHECK(opforge::grad({sum(mul(x, w))}, {x})[0].to_vector() == V{30, 40});
    CHECK(w_calls == 0);
    CHECK(x_calls == 1);
    CHECK_FALSE(w.grad().defined());
  }
}

TEST_CASE("contract: grad() of an unused input is an error unless allow_unused", "[contract]") {
  Tensor x = leaf({1, 2});
  Tensor z = leaf({7});
  REQUIRE_THROWS_MATCHES(opforge::grad({sum(square(x))}, {x, z}), AutogradError,
                         Message("grad: input 1 (float64[1]) was not used to compute the outputs; pass "
                                 "allow_unused=true to get an undefined gradient"));
  TensorList g = opforge::grad({sum(square(x))}, {x, z}, {}, false, /*allow_unused=*/true);
  REQUIRE(g.size() == 2);
  CHECK(g[0].to_vector() == V{2, 4});
  CHECK_FALSE(g[1].defined());
  CHECK_FALSE(z.grad().defined());
}

// reduce.sum saves nothing (its axes are attributes, its input's shape is the
// core's record), so, as PyTorch's SumBackward, it backpropagates twice.
TEST_CASE("contract: a backward that reads nothing saved runs again without retain_graph", "[contract]") {
  Tensor x = leaf({1, 2});
  Tensor y = sum(add(x, Tensor::ones({2})));
  y.backward();
  y.backward();
  CHECK(x.grad().to_vector() == V{2, 2});
  Tensor m = opforge::op("reduce.mean")({add(x, Tensor::ones({2}))}, {{"axes", Dims{0}}});
  x.zero_grad();
  m.backward();
  m.backward();
  CHECK(x.grad().to_vector() == V{1, 1});
}

TEST_CASE("contract: grad() for an input that does not require grad is an error", "[contract]") {
  Tensor x = leaf({1, 2});
  Tensor c = Tensor::from_values({3, 4});
  Tensor L = sum(mul(x, c));
  REQUIRE_THROWS_MATCHES(opforge::grad({L}, {c}), AutogradError,
                         Message("grad: input 0 (float64[2]) does not require grad, so no gradient can be computed "
                                 "for it"));
  REQUIRE_THROWS_MATCHES(opforge::grad({L}, {Tensor()}), opforge::ValueError, Message("grad: input 0 is undefined"));
  // Refused before anything ran: the graph is intact.
  CHECK(opforge::grad({L}, {x})[0].to_vector() == V{3, 4});
}

// ---- hooks ---------------------------------------------------------------------------------------

// ---- retain_grad ---------------------------------------------------------------------------------

TEST_CASE("contract: retain_grad keeps a non-leaf's gradient, after its hooks, and accumulates it", "[contract]") {
  Tensor x = leaf({1, 2, 3});
  Tensor y = square(x);  // d(sum(3 y))/dy = 3, dy/dx = 2x
  CHECK_FALSE(y.retains_grad());
  // A hook registered before retain_grad and one after: the retained gradient is
  // taken after both, whatever the order (as in PyTorch).
  y.register_hook([](const Tensor& g) { return scaled(g, 2); });
  y.retain_grad();
  y.retain_grad();  // twice: one slot
  y.register_hook([](const Tensor& g) { return scaled(g, 5); });
  CHECK(y.retains_grad());
  CHECK_FALSE(y.grad().defined());
  Tensor L = sum(mul(y, Tensor::from_values({3, 3, 3})));
  L.backward(Tensor(), /*retain_graph=*/true);
  CHECK(y.grad().to_vector() == V{30, 30, 30});
  CHECK(x.grad().to_vector() == V{60, 120, 180});  // what flowed on is what was retained
  const Tensor kept = y.grad();
  L.backward();
  CHECK(y.grad().to_vector() == V{60, 60, 60});  // accumulates across passes, as a leaf's .grad
  CHECK(kept.to_vector() == V{30, 30, 30});      // a handle the user keeps is never written to
  CHECK_FALSE(y.grad().requires_grad());
  y.zero_grad();
  CHECK_FALSE(y.grad().defined());
  y.set_grad(Tensor::from_values({1, 1, 1}));
  CHECK(y.grad().to_vector() == V{1, 1, 1});
  // The functional grad() leaves retained gradients alone, as it leaves leaves' .grad.
  Tensor y2 = square(x);
  y2.retain_grad();
  const TensorList g = opforge::grad({sum(y2)}, {x}, {}, /*retain_graph=*/true);
  CHECK(g[0].to_vector() == V{2, 4, 6});
  CHECK_FALSE(y2.grad().defined());
  sum(y2).backward();
  CHECK(y2.grad().to_vector() == V{1, 1, 1});
}

TEST_CASE("contract: retain_grad on a root, on a leaf, on a tensor without grad, and on one dropped early",
          "[contract]") {
  Tensor x = leaf({1, 2});
  // The root itself, with the gradient the caller passed: a copy is retained.
  Tensor y = square(x);
  y.retain_grad();
  Tensor gy = Tensor::from_values({10, 20});
  y.backward(gy);
  CHECK(y.grad().to_vector() == V{10, 20});
  CHECK_FALSE(y.grad().is_same(gy));
  CHECK(x.grad().to_vector() == V{20, 80});
  // A leaf that requires grad keeps its .grad anyway: a no-op, and it does not "retain".
  x.retain_grad();
  CHECK_FALSE(x.retains_grad());
  // A tensor outside the graph would never have a gradient.
  Tensor c = Tensor::from_values({1, 2});
  REQUIRE_THROWS_MATCHES(c.retain_grad(), AutogradError,
                         Message("Tensor::retain_grad: the tensor (float64[2]) does not require grad, so it will "
                                 "never have a gradient to retain"));
  CHECK_THROWS_AS(Tensor().retain_grad(), opforge::ValueError);
  // The tensor dropped before backward: its node keeps the slot, nothing dangles.
  x.zero_grad();
  Tensor L;
  {
    Tensor t = square(x);
    t.retain_grad();
    L = sum(t);
  }
  L.backward();
  CHECK(x.grad().to_vector() == V{2, 4});
  // The graph dropped after backward: the retained gradient stays with the tensor.
  Tensor t = square(x);
  t.retain_grad();
  sum(t).backward();
  CHECK(t.grad().to_vector() == V{1, 1});
  // A detached alias is a new leaf: it does not share the slot.
  CHECK_FALSE(t.detach().retains_grad());
  CHECK_FALSE(t.detach().grad().defined());
}


TEST_CASE("contract: a leaf hook sees the gradient and may replace it", "[contract]") {
  Tensor x = leaf({1, 2, 3});
  V seen;
  int kept = 0;
  x.register_hook([&](const Tensor& g) {
    seen = g.to_vector();
    return scaled(g, 2);  // doubles it
  });
  x.register_hook([&](const Tensor& g) {  // runs second: sees the doubled gradient
    CHECK(g.to_vector() == V{4, 8, 12});
    ++kept;
    return Tensor();  // undefined: keep it as it is
  });
  sum(square(x)).backward();
  CHECK(seen == V{2, 4, 6});
  CHECK(kept == 1);
  CHECK(x.grad().to_vector() == V{4, 8, 12});
  // Hooks run on every pass, and in grad() too.
  const TensorList g = opforge::grad({sum(square(x))}, {x});
  CHECK(g[0].to_vector() == V{4, 8, 12});
  CHECK(kept == 2);
  CHECK(x.grad().to_vector() == V{4, 8, 12});
}

TEST_CASE("contract: a hook's handle removes it, on a leaf and on an op's output, and releases what it holds",
          "[contract]") {
  Tensor x = leaf({1, 2, 3});
  auto captured = std::make_shared<int>(0);
  int doubled = 0, counted = 0;
  const opforge::HookHandle h1 = x.register_hook([&doubled, captured](const Tensor& g) {
    ++doubled;
    return scaled(g, 2);
  });
  const opforge::HookHandle h2 = x.register_hook([&](const Tensor&) {
    ++counted;
    return Tensor();
  });
  CHECK(h1.valid());
  CHECK(captured.use_count() == 2);
  sum(square(x)).backward();
  CHECK(x.grad().to_vector() == V{4, 8, 12});
  h1.remove();
  CHECK(captured.use_count() == 1);  // the hook's captures are gone with it
  x.zero_grad();
  sum(square(x)).backward();
  CHECK(x.grad().to_vector() == V{2, 4, 6});
  CHECK(doubled == 1);
  CHECK(counted == 2);  // the other hook stays
  h1.remove();          // twice: nothing more
  opforge::HookHandle().remove();
  CHECK_FALSE(opforge::HookHandle().valid());

  // On an op's output; and a hook that removes itself while it runs.
  Tensor h = opforge::op("elementwise.mul")({x, Tensor::from_values({1, 1, 1})});
  int runs = 0;
  opforge::HookHandle self;
  self = h.register_hook([&](const Tensor& g) {
    ++runs;
    self.remove();
    return scaled(g, 10);
  });
  x.zero_grad();
  sum(h).backward(Tensor(), true);
  CHECK(x.grad().to_vector() == V{10, 10, 10});
  x.zero_grad();
  sum(h).backward();
  CHECK(x.grad().to_vector() == V{1, 1, 1});
  CHECK(runs == 1);

  // A handle outliving its tensor is harmless.
  opforge::HookHandle late;
  {
    Tensor y = leaf({1});
    late = y.register_hook([](const Tensor& g) { return g; });
  }
  late.remove();
  h2.remove();

  // A loop that registers and removes a hook every step: each registration drops
  // the removed ones from the list, and the pass skips none it should run.
  Tensor w = leaf({1, 1});
  int ran = 0;
  for (int step = 0; step < 2000; ++step) {
    const opforge::HookHandle h = w.register_hook([&](const Tensor&) {
      ++ran;
      return Tensor();
    });
    if (step % 500 == 0) sum(w).backward();
    h.remove();
  }
  CHECK(ran == 4);
}

namespace {
// y = 3 x, logging when its backward runs.
struct LoggedScale final : opforge::Function {
  std::vector<std::string>* log;
  explicit LoggedScale(std::vector<std::string>* l) : log(l) {}
  TensorList forward(Context&, TensorSpan in) const override { return {scaled(in[0], 3)}; }
  TensorList backward(Context&, TensorSpan g) const override {
    log->push_back("backward sees " + std::to_string(g[0].to_vector()[0]));
    return {scaled(g[0], 3)};
  }
};
}  // namespace

TEST_CASE("contract: a hook on a non-leaf runs before its node's backward, its replacement flows on", "[contract]") {
  std::vector<std::string> log;
  const OpHandle op =
      opforge::make_op(OpSchema("test.logged").input_names({"x"}), std::make_unique<LoggedScale>(&log));
  Tensor x = leaf({1, 2});
  Tensor h = op({x});
  h.register_hook([&](const Tensor& g) {
    log.push_back("hook sees " + std::to_string(g.to_vector()[0]));
    return scaled(g, 10);
  });
  sum(h).backward();
  CHECK(log == std::vector<std::string>{"hook sees 1.000000", "backward sees 10.000000"});
  CHECK(x.grad().to_vector() == V{30, 30});
  CHECK_FALSE(h.grad().defined());
}

TEST_CASE("contract: a leaf used twice in one graph: its hook runs once, on the summed gradient",
          "[contract]") {
  // The engine once ran a leaf's hooks once per edge that reached the leaf,
  // each time on that edge's part of the gradient. A hook on a non-leaf runs
  // once, on the summed gradient (the node's buffer), and tensor.hpp promises
  // the hook "the gradient with respect to this tensor": so must a leaf's.
  Tensor x = leaf({1, 2});
  std::vector<V> seen;
  x.register_hook([&](const Tensor& g) {
    seen.push_back(g.to_vector());
    return Tensor();
  });
  // L = sum(x^2) + sum(3 x): dL/dx = 2 x + 3
  add(sum(square(x)), sum(mul(x, Tensor::full({2}, 3.0)))).backward();
  CHECK(x.grad().to_vector() == V{5, 7});
  CHECK(seen == std::vector<V>{V{5, 7}});
}

TEST_CASE("contract: hook errors: a replacement of the wrong shape or dtype, a hook where no gradient goes",
          "[contract]") {
  Tensor x = leaf({1, 2, 3});
  SECTION("leaf hook, wrong shape") {
    x.register_hook([](const Tensor&) { return Tensor::ones({2}); });
    REQUIRE_THROWS_MATCHES(sum(square(x)).backward(), AutogradError,
                           Message("a gradient hook on a leaf returned float64[2], expected float64[3] (the "
                                   "gradient's dtype and shape)"));
    CHECK_FALSE(x.grad().defined());
  }
  SECTION("non-leaf hook, wrong dtype") {
    Tensor h = square(x);
    h.register_hook([](const Tensor& g) { return g.to(DType::Float32); });
    REQUIRE_THROWS_MATCHES(sum(h).backward(), AutogradError,
                           Message("a gradient hook on an op's output returned float32[3], expected float64[3] (the "
                                   "gradient's dtype and shape)"));
    CHECK_FALSE(x.grad().defined());
  }
  SECTION("no gradient will reach it") {
    const Tensor c = Tensor::ones({3});
    REQUIRE_THROWS_MATCHES(c.register_hook([](const Tensor& g) { return g; }), AutogradError,
                           Message("Tensor::register_hook: the tensor (float64[3]) does not require grad, so no "
                                   "gradient will ever reach the hook; call requires_grad_() first"));
    REQUIRE_THROWS_MATCHES(x.register_hook(nullptr), opforge::ValueError,
                           Message("Tensor::register_hook: argument 'hook' is empty"));
  }
}

TEST_CASE("contract: a hook may register hooks while it runs, which run from the next pass", "[contract]") {
  // The hooks were a std::vector walked by a range-for: a hook that registered
  // another (on its own tensor) reallocated the vector under the running hook
  // (a crash for a non-leaf), and a leaf whose first hook came during the pass
  // lost its gradient.
  Tensor x = leaf({1, 2});
  Tensor h = square(x);
  std::vector<std::string> log;
  h.register_hook([&](const Tensor&) {
    log.push_back("h first");
    if (log.size() == 1) {
      for (int k = 0; k < 40; ++k)  // enough to reallocate any vector
        h.register_hook([&](const Tensor&) {
          log.push_back("h added");
          return Tensor();
        });
    }
    return Tensor();
  });
  Tensor z = leaf({5, 6});  // gets its first hook during the pass
  x.register_hook([&](const Tensor&) {
    log.push_back("x first");
    if (log.size() == 2) {
      for (int k = 0; k < 40; ++k)
        x.register_hook([&](const Tensor&) {
          log.push_back("x added");
          return Tensor();
        });
      z.register_hook([&](const Tensor&) {
        log.push_back("z added");
        return Tensor();
      });
    }
    return Tensor();
  });
  // L = sum(x^2) + sum(x * z): x is reached before z (its mul node runs after the square's).
  sum(add(h, mul(x, z))).backward(Tensor(), /*retain_graph=*/true);
  CHECK(log == std::vector<std::string>{"h first", "x first"});
  CHECK(x.grad().to_vector() == V{2 + 5, 4 + 6});
  CHECK(z.grad().to_vector() == V{1, 2});
  log.clear();
  sum(add(h, mul(x, z))).backward();
  CHECK(log.size() == 1 + 40 + 1 + 40 + 1);
  CHECK(std::count(log.begin(), log.end(), "h added") == 40);
  CHECK(std::count(log.begin(), log.end(), "x added") == 40);
  CHECK(std::count(log.begin(), log.end(), "z added") == 1);
  CHECK(x.grad().to_vector() == V{2 * 7, 2 * 10});
  CHECK(z.grad().to_vector() == V{2, 4});
}

TEST_CASE("contract: a leaf frozen with requires_grad_(false) after recording gets no .grad", "[contract]") {
  // The engine accumulated into every leaf an edge pointed at, whatever its flag.
  Tensor w = leaf({1, 2});
  Tensor b = leaf({3, 4});
  Tensor L = sum(add(square(w), b));
  w.requires_grad_(false);
  L.backward();
  CHECK_FALSE(w.grad().defined());
  CHECK(b.grad().to_vector() == V{1, 1});
  // grad() refuses it, as for any input that does not require grad.
  Tensor L2 = sum(square(b));
  w.requires_grad_(true);
  Tensor L3 = sum(mul(w, b));
  w.requires_grad_(false);
  CHECK_THROWS_AS(opforge::grad({L3}, {w}), AutogradError);
  CHECK(opforge::grad({L2}, {b})[0].to_vector() == V{6, 8});
}

// ---- in place --------------------------------------------------------------------------------------

TEST_CASE("contract: in-place ops are refused on a leaf that requires grad and on an op's output", "[contract]") {
  Tensor w = leaf({1, 2, 3});
  const Tensor other = Tensor::ones({3});
  const auto leaf_msg = [](const char* what) {
    return std::string("Tensor::") + what +
           ": the tensor is a leaf that requires grad; changing it in place would corrupt the graphs that use it. "
           "Update parameters under a NoGradGuard";
  };
  REQUIRE_THROWS_MATCHES(w.fill_(0), AutogradError, Message(leaf_msg("fill_")));
  REQUIRE_THROWS_MATCHES(w.add_(other), AutogradError, Message(leaf_msg("add_")));
  REQUIRE_THROWS_MATCHES(w.mul_(2), AutogradError, Message(leaf_msg("mul_")));
  REQUIRE_THROWS_MATCHES(w.copy_(other), AutogradError, Message(leaf_msg("copy_")));
  Tensor h = square(w);
  const auto out_msg = [](const char* what) {
    return std::string("Tensor::") + what +
           ": the tensor is the output of 'elementwise.square' and part of a recorded graph; in-place changes "
           "would corrupt its backward. Use an op that returns a new tensor, or detach() first (clone(), contiguous() "
           "and to() of a tensor that requires grad are recorded too: detach().clone() is a copy of its own to write "
           "into)";
  };
  REQUIRE_THROWS_MATCHES(h.fill_(0), AutogradError, Message(out_msg("fill_")));
  REQUIRE_THROWS_MATCHES(h.add_(other), AutogradError, Message(out_msg("add_")));
  REQUIRE_THROWS_MATCHES(h.mul_(2), AutogradError, Message(out_msg("mul_")));
  REQUIRE_THROWS_MATCHES(h.copy_(other), AutogradError, Message(out_msg("copy_")));
  // Nothing was changed.
  CHECK(w.to_vector() == V{1, 2, 3});
  CHECK(h.to_vector() == V{1, 4, 9});
  CHECK(w.version() == 0);
  CHECK(h.version() == 0);
}

TEST_CASE("contract: copy_ and add_ refuse a source that requires grad, whose gradient would stop there",
          "[contract]") {
  const Tensor w = leaf({1, 2, 3});
  const Tensor h = square(w);  // a non-leaf source too
  Tensor dst = Tensor::zeros({3});
  const auto msg = [](const char* what, const char* arg) {
    return std::string("Tensor::") + what + ": argument '" + arg +
           "' requires grad, and in-place writes are not recorded in the graph, so no gradient would reach it "
           "from this tensor. Use an op that returns a new tensor (a + b, or clone()), or pass it detach()ed to "
           "copy its value alone";
  };
  for (const Tensor& src : {w, h}) {
    REQUIRE_THROWS_MATCHES(dst.copy_(src), AutogradError, Message(msg("copy_", "src")));
    REQUIRE_THROWS_MATCHES(dst.add_(src), AutogradError, Message(msg("add_", "other")));
  }
  CHECK(dst.to_vector() == V{0, 0, 0});
  CHECK(dst.version() == 0);
  // Its value alone, by detach() or under NoGradGuard, is written.
  dst.copy_(w.detach());
  dst.add_(h.detach());
  CHECK(dst.to_vector() == V{2, 6, 12});
  {
    opforge::NoGradGuard g;
    dst.add_(w, -1.0);
    dst.copy_(h);
  }
  CHECK(dst.to_vector() == V{1, 4, 9});
}

TEST_CASE("contract: the optimiser step: in place under NoGradGuard changes a parameter", "[contract]") {
  Tensor w = leaf({1, 2, 3});
  sum(square(w)).backward();  // grad 2w
  REQUIRE(w.grad().to_vector() == V{2, 4, 6});
  {
    opforge::NoGradGuard g;
    w.add_(w.grad(), -0.25);
  }
  CHECK(w.to_vector() == V{0.5, 1, 1.5});
  CHECK(w.is_leaf());
  CHECK(w.requires_grad());
  CHECK(w.version() == 1);
  CHECK(w.grad().to_vector() == V{2, 4, 6});  // the gradient itself is untouched
  // The next pass sees the new value.
  w.zero_grad();
  sum(square(w)).backward();
  CHECK(w.grad().to_vector() == V{1, 2, 3});
  {
    opforge::NoGradGuard g;
    w.mul_(2.0);
    w.copy_(w.grad());
    w.fill_(4.0);
  }
  CHECK(w.to_vector() == V{4, 4, 4});
}

// ---- memory of the least-squares graph --------------------------------------------------------------

TEST_CASE("contract: lstsq through plugins leaves exactly A, x, y and x.grad, with no A-sized temporary",
          "[contract]") {
  const std::int64_t m = 4096, n = 64;
  plugin("mv");  // plugins loaded and handles resolved before any measurement
  const Tensor A = Tensor::randn({m, n}, DType::Float64, 1);
  Tensor x = Tensor::randn({n}, DType::Float64, 2).requires_grad_();
  const Tensor y = Tensor::randn({m}, DType::Float64, 3);
  const std::int64_t base = opforge::live_bytes();  // A, x, y and nothing else of ours
  const std::int64_t vec = m * 8;
  // Reference gradient: -2 Aᵀ (y - A x).
  V ref(static_cast<std::size_t>(n), 0.0);
  {
    const double* a = A.data<double>();
    const double* xv = x.data<double>();
    const double* yv = y.data<double>();
    for (std::int64_t i = 0; i < m; ++i) {
      double r = yv[i];
      for (std::int64_t j = 0; j < n; ++j) r -= a[i * n + j] * xv[j];
      for (std::int64_t j = 0; j < n; ++j) ref[static_cast<std::size_t>(j)] += -2.0 * a[i * n + j] * r;
    }
  }
  const auto check_grad = [&] {
    REQUIRE(x.grad().defined());
    const V g = x.grad().to_vector();
    for (std::int64_t j = 0; j < n; ++j) CHECK(g[static_cast<std::size_t>(j)] == Approx(ref[static_cast<std::size_t>(j)]));
  };

  SECTION("without retain_graph") {
    opforge::reset_peak_bytes();
    Tensor loss = sum(square(sub(y, mv(A, x))));
    loss.backward();
    // Saved tensors were freed by backward: the loss (8 bytes) and x.grad are all that is new.
    CHECK(opforge::live_bytes() - base == 8 + n * 8);
    loss = Tensor();
    CHECK(opforge::live_bytes() - base == n * 8);
    CHECK(opforge::live_bytes() == base + x.grad().nbytes());
    // No temporary of A's size (m n 8 bytes) at any point: a few vectors of length m.
    CHECK(opforge::peak_bytes() - base <= 6 * vec);
    CHECK(opforge::peak_bytes() - base < static_cast<std::int64_t>(A.nbytes()) / 4);
    check_grad();
  }
  SECTION("with retain_graph") {
    Tensor loss = sum(square(sub(y, mv(A, x))));
    loss.backward(Tensor(), /*retain_graph=*/true);
    // square still holds its input r = y - A x (one vector); A and x are saved by mv but are ours.
    CHECK(opforge::live_bytes() - base == 8 + n * 8 + vec);
    loss = Tensor();
    CHECK(opforge::live_bytes() - base == n * 8);
    check_grad();
  }
  x.zero_grad();
  CHECK(opforge::live_bytes() == base);
}
