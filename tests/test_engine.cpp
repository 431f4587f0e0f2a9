// The backward engine and the op call path: deep graphs (iterative backward and
// destruction), accumulation, the engine's checks of what backward returns, misuse
// of backward, grad mode, needs_input_grad, output aliasing, saved outputs,
// memory release, and backward from many threads.
#include <catch2/catch.hpp>

#include <malloc.h>
#include <pthread.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
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

namespace {

// ---- helpers ---------------------------------------------------------------------

// out[i] = f(a[i]) for a contiguous floating tensor.
template <class F>
Tensor map1(const Tensor& a, F f) {
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  const std::int64_t n = a.numel();
  if (a.dtype() == DType::Float32) {
    const float* p = a.data<float>();
    float* o = out.data<float>();
    for (std::int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(f(static_cast<double>(p[i])));
  } else {
    const double* p = a.data<double>();
    double* o = out.data<double>();
    for (std::int64_t i = 0; i < n; ++i) o[i] = f(p[i]);
  }
  return out;
}

// out[i] = f(a[i], b[i]).
template <class F>
Tensor map2(const Tensor& a, const Tensor& b, F f) {
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  const auto va = a.to_vector(), vb = b.to_vector();
  std::vector<double> vo(va.size());
  for (std::size_t i = 0; i < va.size(); ++i) vo[i] = f(va[i], vb[i]);
  return Tensor::from_values(vo, a.shape(), a.dtype());
}

OpHandle make(const char* name, std::vector<std::string> inputs, std::unique_ptr<opforge::Function> fn) {
  return opforge::make_op(OpSchema(name).input_names(std::move(inputs)), std::move(fn));
}

// y = k * x (k fixed per op), saves nothing.
class Scale final : public opforge::Function {
 public:
  explicit Scale(double k) : k_(k) {}
  TensorList forward(Context&, TensorSpan in) const override {
    return {map1(in[0], [k = k_](double v) { return k * v; })};
  }
  TensorList backward(Context&, TensorSpan g) const override {
    return {map1(g[0], [k = k_](double v) { return k * v; })};
  }

 private:
  double k_;
};

// Sum of all elements as a 0-d tensor. Saves its input (for its shape in backward).
class SumAll final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    ctx.save_for_backward(in[0]);
    double s = 0;
    for (double v : in[0].to_vector()) s += v;
    return {Tensor::scalar(s, in[0].dtype())};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor& x = ctx.saved_tensors()[0];
    return {Tensor::full(x.shape(), g[0].item(), x.dtype())};
  }
};

// y = exp(x); saves its own output, as backward is g * y.
class Exp final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    Tensor y = map1(in[0], [](double v) { return std::exp(v); });
    ctx.save_for_backward(y);
    return {y};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {map2(g[0], ctx.saved_tensors()[0], [](double a, double b) { return a * b; })};
  }
};

// Returns its first input unchanged (the very same tensor object).
class Identity final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override { return {in[0]}; }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    TensorList out(ctx.num_inputs());
    out[0] = g[0];
    return out;
  }
};

const OpHandle& scale_op(double k) {
  // One op per distinct factor used in this file.
  static const OpHandle s2 = make("test.scale2", {"x"}, std::make_unique<Scale>(2.0));
  static const OpHandle s3 = make("test.scale3", {"x"}, std::make_unique<Scale>(3.0));
  static const OpHandle s1p = make("test.scale1p", {"x"}, std::make_unique<Scale>(1.0001));
  static const OpHandle s1pp = make("test.scale1pp", {"x"}, std::make_unique<Scale>(1.0000001));
  if (k == 2.0) return s2;
  if (k == 3.0) return s3;
  if (k == 1.0001) return s1p;
  return s1pp;
}
const OpHandle& sum_op() {
  static const OpHandle h = make("test.sum", {"x"}, std::make_unique<SumAll>());
  return h;
}
const OpHandle& exp_op() {
  static const OpHandle h = make("test.exp", {"x"}, std::make_unique<Exp>());
  return h;
}
const OpHandle& ew(const char* name) {
  static const OpHandle add = opforge::op("elementwise.add");
  static const OpHandle sub = opforge::op("elementwise.sub");
  static const OpHandle mul = opforge::op("elementwise.mul");
  static const OpHandle square = opforge::op("elementwise.square");
  const std::string n = name;
  if (n == "add") return add;
  if (n == "sub") return sub;
  if (n == "mul") return mul;
  return square;
}

Tensor leaf(const std::vector<double>& v, DType dt = DType::Float64) {
  return Tensor::from_values(v, dt).requires_grad_();
}

// Runs `fn` on a thread with a small stack (bytes) and waits for it.
void run_on_small_stack(std::size_t stack_bytes, std::function<void()> fn) {
  pthread_attr_t attr;
  REQUIRE(pthread_attr_init(&attr) == 0);
  REQUIRE(pthread_attr_setstacksize(&attr, stack_bytes) == 0);
  pthread_t th;
  auto* heap_fn = new std::function<void()>(std::move(fn));
  REQUIRE(pthread_create(
              &th, &attr,
              [](void* p) -> void* {
                std::unique_ptr<std::function<void()>> f(static_cast<std::function<void()>*>(p));
                (*f)();
                return nullptr;
              },
              heap_fn) == 0);
  pthread_join(th, nullptr);
  pthread_attr_destroy(&attr);
}

}  // namespace

// ---- deep graphs --------------------------------------------------------------------

TEST_CASE("engine: a chain of 100,000 custom nodes backpropagates the exact gradient and is freed", "[engine]") {
  const int n = 100000;
  const std::int64_t base = opforge::live_bytes();
  {
    Tensor x = leaf({1.0});
    Tensor y = x;
    for (int i = 0; i < n; ++i) y = scale_op(1.0001)({y});
    const double expect = std::pow(1.0001, n);
    CHECK(y.item() == Approx(expect).epsilon(1e-9));
    CHECK_FALSE(y.is_leaf());
    y.backward();
    REQUIRE(x.grad().defined());
    CHECK(x.grad().item() == Approx(expect).epsilon(1e-9));
    // Only x, its grad and y remain: every intermediate output was freed.
    CHECK(opforge::live_bytes() - base == 3 * 8);
    y = Tensor();  // destroys the 100,000 nodes, iteratively
    CHECK(opforge::live_bytes() - base == 2 * 8);
  }
  CHECK(opforge::live_bytes() == base);
}

TEST_CASE("engine: a chain of 100,000 elementwise.add nodes gives gradient 1 and is destroyed without backward",
          "[engine]") {
  const int n = 100000;
  const std::int64_t base = opforge::live_bytes();
  {
    Tensor x = leaf({0.5, -1.0});
    const Tensor c = Tensor::from_values({0.25, 0.5});
    Tensor y = x;
    for (int i = 0; i < n; ++i) y = ew("add")({y, c});
    CHECK(y.to_vector() == std::vector<double>{0.5 + 0.25 * n, -1.0 + 0.5 * n});  // exact in binary
    Tensor z = y;
    y.backward(Tensor::ones({2}), /*retain_graph=*/true);
    CHECK(x.grad().to_vector() == std::vector<double>{1.0, 1.0});
    // A second chain, never backpropagated, destroyed with all its nodes in place.
    Tensor w = x;
    for (int i = 0; i < n; ++i) w = ew("add")({w, c});
    w = Tensor();
    y = Tensor();
    z = Tensor();
  }
  CHECK(opforge::live_bytes() == base);
}

TEST_CASE("engine: backward and destruction of 100,000-node chains never recurse (256 KiB stack)", "[engine]") {
  // A recursive backward or destructor needs tens of bytes of stack per node at
  // the least: 100,000 nodes would need megabytes. Run both on a 256 KiB stack.
  const int n = 100000;
  const std::int64_t base = opforge::live_bytes();
  {
    Tensor x = leaf({1.0, 2.0});
    const Tensor one = Tensor::ones({2});
    // mul saves both inputs: node k -> saved y_k -> node k-1 -> ... The chain is
    // reachable through the Contexts as well as through the edges.
    Tensor y = x;
    for (int i = 0; i < n; ++i) y = ew("mul")({y, one});
    Tensor y2 = x;
    for (int i = 0; i < n; ++i) y2 = ew("mul")({y2, one});
    bool backward_ok = false;
    std::string error;
    std::vector<double> grad;
    run_on_small_stack(256 * 1024, [&] {
      try {
        y.backward(Tensor::ones({2}));
        grad = x.grad().to_vector();
        backward_ok = true;
      } catch (const std::exception& e) {
        error = e.what();
      }
      y = Tensor();   // backpropagated chain (saved tensors already freed)
      y2 = Tensor();  // never backpropagated (every Context still holds its inputs)
    });
    INFO(error);
    CHECK(backward_ok);
    CHECK(grad == std::vector<double>{1.0, 1.0});
    CHECK_FALSE(y.defined());
    CHECK_FALSE(y2.defined());
    // Only x, its grad and `one` are left.
    CHECK(opforge::live_bytes() - base == 3 * 16);
  }
  CHECK(opforge::live_bytes() == base);
}

TEST_CASE("engine: 100,000 leaves whose hooks each hold the last are freed without recursion (256 KiB stack)",
          "[engine]") {
  // Each hook captures the previous leaf, whose hook captures the one before:
  // dropping the last leaf used to free the chain recursively (a stack overflow
  // from ~100,000 leaves on an 8 MiB stack). Freed on a 256 KiB stack here.
  const int n = 100000;
  const std::int64_t base = opforge::live_bytes();
  int calls = 0;
  {
    Tensor last = leaf({1.0, 2.0});
    for (int i = 0; i < n; ++i) {
      Tensor x = leaf({1.0, 2.0});
      x.register_hook([prev = last, &calls](const Tensor&) {
        ++calls;
        return Tensor();
      });
      last = x;
    }
    // The hooks still run: the newest leaf's, in a backward through it.
    ew("mul")({last, Tensor::ones({2})}).backward(Tensor::ones({2}));
    CHECK(calls == 1);
    CHECK(last.grad().to_vector() == std::vector<double>{1.0, 1.0});
    run_on_small_stack(256 * 1024, [&] { last = Tensor(); });
    CHECK_FALSE(last.defined());
  }
  CHECK(opforge::live_bytes() == base);
}

TEST_CASE("engine: many hooked leaves, each reached twice, and roots that share a node", "[engine]") {
  // More hooked leaves than the engine searches one by one (it indexes them
  // past 16): each leaf's hooks run once, on the sum of its two gradients.
  const int n = 200;
  std::vector<Tensor> xs;
  std::vector<int> calls(n, 0);
  std::vector<std::vector<double>> seen(n);
  TensorList roots;
  for (int i = 0; i < n; ++i) {
    xs.push_back(leaf({double(i), 1.0}));
    xs.back().register_hook([&calls, &seen, i](const Tensor& g) {
      ++calls[i];
      seen[i] = g.to_vector();
      return Tensor();
    });
    roots.push_back(sum_op()({ew("mul")({xs[i], xs[i]})}));  // d/dx = 2x, along two edges of mul
  }
  opforge::backward(roots);
  for (int i = 0; i < n; ++i) {
    INFO("leaf " << i);
    CHECK(calls[i] == 1);
    CHECK(seen[i] == std::vector<double>{2.0 * i, 2.0});
    CHECK(xs[i].grad().to_vector() == std::vector<double>{2.0 * i, 2.0});
  }
  // The same root three times, and two roots on one node: each node runs once,
  // with the roots' gradients summed.
  Tensor x = leaf({1.0, 2.0});
  Tensor y = sum_op()({ew("mul")({x, x})});
  opforge::backward({y, y, y}, {Tensor::full({}, 1.0), Tensor::full({}, 2.0), Tensor::full({}, 4.0)});
  CHECK(x.grad().to_vector() == std::vector<double>{14.0, 28.0});
}

TEST_CASE("engine: a chain of 1,000,000 nodes backpropagates and is destroyed", "[engine]") {
  // On the main thread's 8 MB stack. (A recursive node destructor, tried on a
  // copy of the core, survives 100,000 nodes there in a Release build but not
  // 1,000,000: hence this size, and the 256 KiB-stack test above.) About 1 s.
  const int n = 1000000;
  const std::int64_t base = opforge::live_bytes();
  {
    Tensor x = leaf({1.0});
    Tensor y = x;
    for (int i = 0; i < n; ++i) y = scale_op(1.0000001)({y});
    const double expect = std::pow(1.0000001, n);  // e^0.1
    CHECK(y.item() == Approx(expect).epsilon(1e-8));
    y.backward();
    CHECK(x.grad().item() == Approx(expect).epsilon(1e-8));
    y = Tensor();
  }
  CHECK(opforge::live_bytes() == base);
}

// ---- accumulation ------------------------------------------------------------------

TEST_CASE("engine: a diamond accumulates both paths: c = (x^2) * (3x) gives dc/dx = 9x^2", "[engine]") {
  Tensor x = leaf({1.0, -2.0, 0.5});
  Tensor a = ew("square")({x});
  Tensor b = scale_op(3.0)({x});
  Tensor c = ew("mul")({a, b});
  CHECK(c.to_vector() == std::vector<double>{3.0, -24.0, 0.375});
  Tensor s = sum_op()({c});
  s.backward();
  const auto g = x.grad().to_vector();
  REQUIRE(g.size() == 3);
  CHECK(g[0] == Approx(9.0));
  CHECK(g[1] == Approx(36.0));
  CHECK(g[2] == Approx(2.25));
  // Intermediate tensors get no .grad (only leaves accumulate).
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("engine: a diamond over a non-leaf: h = 2x, y = h*h gives 8x", "[engine]") {
  Tensor x = leaf({1.5, -3.0});
  Tensor h = scale_op(2.0)({x});
  Tensor y = ew("mul")({h, h});
  y.backward(Tensor::ones({2}));
  CHECK(x.grad().to_vector() == std::vector<double>{12.0, -24.0});
}

TEST_CASE("engine: a tensor used twice in one op (x*x) gets 2x", "[engine]") {
  for (DType dt : {DType::Float32, DType::Float64}) {
    CAPTURE(opforge::dtype_name(dt));
    Tensor x = leaf({3.0, -1.5, 0.0}, dt);
    Tensor y = ew("mul")({x, x});
    y.backward(Tensor::ones({3}, dt));
    CHECK(x.grad().dtype() == dt);
    CHECK(x.grad().to_vector() == std::vector<double>{6.0, -3.0, 0.0});
  }
  // Through add, which returns the same tensor as both gradients.
  Tensor x = leaf({1.0, 2.0});
  Tensor y = ew("add")({x, x});
  y.backward(Tensor::ones({2}));
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 2.0});
}

TEST_CASE("engine: gradients accumulate into .grad across backward calls until zero_grad", "[engine]") {
  Tensor x = leaf({1.0, 2.0, 3.0});
  auto pass = [&] { sum_op()({ew("mul")({x, x})}).backward(); };  // d/dx sum(x*x) = 2x
  pass();
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 4.0, 6.0});
  const Tensor first = x.grad();  // a handle the user keeps must not change
  pass();
  CHECK(x.grad().to_vector() == std::vector<double>{4.0, 8.0, 12.0});
  CHECK(first.to_vector() == std::vector<double>{2.0, 4.0, 6.0});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  pass();
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 4.0, 6.0});
}

TEST_CASE("engine: backward with a given gradient weights the leaves' gradients", "[engine]") {
  Tensor x = leaf({1.0, 2.0});
  Tensor y = scale_op(3.0)({x});
  const Tensor g = Tensor::from_values({10.0, -1.0});
  y.backward(g);
  CHECK(x.grad().to_vector() == std::vector<double>{30.0, -3.0});
  CHECK(g.to_vector() == std::vector<double>{10.0, -1.0});  // the caller's gradient is untouched
  // Backward from a leaf itself: the gradient is the given one, in a copy.
  Tensor w = leaf({5.0, 6.0});
  w.backward(g);
  CHECK(w.grad().to_vector() == std::vector<double>{10.0, -1.0});
  CHECK(w.grad().data_ptr() != g.data_ptr());
}

TEST_CASE("engine: backward from several outputs at once, one depending on the other", "[engine]") {
  Tensor x = leaf({1.0, 4.0});
  Tensor y = scale_op(2.0)({x});  // dy/dx = 2
  Tensor z = scale_op(3.0)({y});  // dz/dx = 6
  opforge::backward({y, z}, {Tensor::ones({2}), Tensor::ones({2})});
  CHECK(x.grad().to_vector() == std::vector<double>{8.0, 8.0});
  REQUIRE_THROWS_MATCHES(opforge::backward({y, z}, {Tensor::ones({2})}), opforge::ValueError,
                         Message("backward: argument 'grads': expected 2 gradients (one per output) or none, got 1"));
  REQUIRE_THROWS_MATCHES(opforge::backward({Tensor()}), opforge::ValueError, Message("backward: output 0 is undefined"));
}

// ---- the engine checks what backward returns -------------------------------------------

namespace {
enum class Bad { Count, Shape, DType };
class Misbehaving final : public opforge::Function {
 public:
  explicit Misbehaving(Bad b) : b_(b) {}
  TensorList forward(Context&, TensorSpan in) const override { return {in[0].clone()}; }
  TensorList backward(Context&, TensorSpan g) const override {
    switch (b_) {
      case Bad::Count: return {g[0], g[0]};
      case Bad::Shape: return {Tensor::ones({3})};
      case Bad::DType: return {Tensor::ones(g[0].shape(), DType::Float32)};
    }
    return {};
  }

 private:
  Bad b_;
};
}  // namespace

TEST_CASE("engine: a backward returning the wrong number of gradients is an AutogradError", "[engine]") {
  OpHandle bad = make("test.bad_count", {"x"}, std::make_unique<Misbehaving>(Bad::Count));
  Tensor x = leaf({1.0, 2.0});
  Tensor y = bad({x});
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), AutogradError,
                         Message("in backward of 'test.bad_count': backward returned 2 gradient(s), expected 1 "
                                 "(one per input; return an undefined Tensor for an input that needs none)"));
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("engine: a backward returning a gradient of the wrong shape is an AutogradError", "[engine]") {
  OpHandle bad = make("test.bad_shape", {"x"}, std::make_unique<Misbehaving>(Bad::Shape));
  Tensor x = leaf({1.0, 2.0});
  Tensor y = bad({x});
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), AutogradError,
                         Message("in backward of 'test.bad_shape': the gradient for input 0 'x' has shape [3], "
                                 "expected [2] (the input's shape); return a gradient of the input's shape "
                                 "(opforge::sum_to reduces a broadcast one)"));
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("engine: a backward returning a gradient of the wrong dtype is an AutogradError", "[engine]") {
  OpHandle bad = make("test.bad_dtype", {"x"}, std::make_unique<Misbehaving>(Bad::DType));
  Tensor x = leaf({1.0, 2.0});
  Tensor y = bad({x});
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), AutogradError,
                         Message("in backward of 'test.bad_dtype': the gradient for input 0 'x' has dtype float32, "
                                 "expected float64 (the input's dtype); return the gradient in the input's dtype "
                                 "(convert it with .to(ctx.input_dtype(i)))"));
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("engine: an error thrown in backward names the forward op", "[engine]") {
  struct Thrower final : opforge::Function {
    int kind;
    explicit Thrower(int k) : kind(k) {}
    TensorList forward(Context&, TensorSpan in) const override { return {in[0].clone()}; }
    TensorList backward(Context&, TensorSpan) const override {
      if (kind == 0) throw std::runtime_error("boom");
      if (kind == 1) throw opforge::ValueError("value out of range");
      throw 42;
    }
  };
  Tensor x = leaf({1.0});
  {
    OpHandle op = make("test.throws_std", {"x"}, std::make_unique<Thrower>(0));
    REQUIRE_THROWS_MATCHES(op({x}).backward(), opforge::Error,
                           Message("in backward of 'test.throws_std': std::runtime_error: boom"));
  }
  {
    OpHandle op = make("test.throws_value", {"x"}, std::make_unique<Thrower>(1));
    REQUIRE_THROWS_MATCHES(op({x}).backward(), opforge::ValueError,
                           Message("in backward of 'test.throws_value': value out of range"));
  }
  {
    OpHandle op = make("test.throws_int", {"x"}, std::make_unique<Thrower>(2));
    REQUIRE_THROWS_MATCHES(op({x}).backward(), opforge::PluginError,
                           Message("in backward of 'test.throws_int': threw an exception of a type opforge does not "
                                   "know (not derived from std::exception); op code must throw opforge::Error or a "
                                   "std::exception"));
  }
  // Deeper in the graph, the message names the failing node, not the root's op.
  {
    OpHandle op = make("test.throws_deep", {"x"}, std::make_unique<Thrower>(0));
    Tensor y = scale_op(2.0)({op({x})});
    REQUIRE_THROWS_MATCHES(y.backward(), opforge::Error,
                           Message("in backward of 'test.throws_deep': std::runtime_error: boom"));
  }
  CHECK_FALSE(x.grad().defined());
}

// Identity whose first backward throws; later ones pass the gradient on.
struct FailOnce final : opforge::Function {
  std::atomic<int>* calls;
  explicit FailOnce(std::atomic<int>* c) : calls(c) {}
  TensorList forward(Context&, TensorSpan in) const override { return {in[0].clone()}; }
  TensorList backward(Context&, TensorSpan g) const override {
    if ((*calls)++ == 0) throw opforge::ValueError("first call fails");
    return {g[0]};
  }
};

TEST_CASE("engine: a failed backward frees its gradient buffers and leaves a retained graph usable", "[engine]") {
  std::atomic<int> calls{0};
  OpHandle fail_once = make("test.fail_once", {"x"}, std::make_unique<FailOnce>(&calls));
  Tensor x = leaf(std::vector<double>(100, 1.0));
  Tensor w = scale_op(3.0)({fail_once({scale_op(2.0)({x})})});
  const std::int64_t before = opforge::live_bytes();
  // scale3 runs and hands fail_once an 800-byte gradient; fail_once throws.
  REQUIRE_THROWS_MATCHES(w.backward(Tensor::ones({100}), true), opforge::ValueError,
                         Message("in backward of 'test.fail_once': first call fails"));
  CHECK(opforge::live_bytes() == before);  // no gradient left behind in any buffer
  CHECK_FALSE(x.grad().defined());
  w.backward(Tensor::ones({100}), true);
  CHECK(x.grad().to_vector() == std::vector<double>(100, 6.0));
}

TEST_CASE("engine: retrying a backward that stopped with an error, without retain_graph, says why it cannot",
          "[engine]") {
  std::atomic<int> calls{0};
  OpHandle fail_once = make("test.fail_once_free", {"x"}, std::make_unique<FailOnce>(&calls));
  Tensor x = leaf({0.5, 1.0});
  // exp's backward runs first and frees what it saved; then fail_once throws.
  Tensor y = exp_op()({fail_once({x})});
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), opforge::ValueError,
                         Message("in backward of 'test.fail_once_free': first call fails"));
  CHECK_FALSE(x.grad().defined());
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), AutogradError,
                         Message("in backward of 'test.exp': this part of the graph was already backpropagated (by "
                                 "an earlier backward, or by one that stopped with an error after passing here) and "
                                 "what forward saved was freed; pass retain_graph=true to the first backward to "
                                 "backpropagate twice or to retry after an error"));
  CHECK(calls == 1);  // the retry stopped before reaching fail_once
  CHECK_FALSE(x.grad().defined());
}

// A hook that drops the caller's last handles on the root (and on the tensor it
// is registered on) while backward() runs: the engine holds the roots for the pass.
TEST_CASE("engine: a hook that drops the root's handles during backward does not free the graph under it",
          "[engine]") {
  {
    Tensor x = leaf({1.0, 2.0});
    Tensor h = scale_op(2.0)({x});
    Tensor y = sum_op()({ew("mul")({h, h})});
    h.register_hook([&](const Tensor&) {
      y = Tensor();
      h = Tensor();
      return Tensor();
    });
    y.backward();
    CHECK(x.grad().to_vector() == std::vector<double>{8.0, 16.0});  // d/dx sum(4 x^2)
    CHECK_FALSE(y.defined());
  }
  {
    Tensor x = leaf({1.0, 2.0});
    Tensor y = sum_op()({ew("mul")({x, x})});
    y.register_hook([&](const Tensor&) {
      y = Tensor();
      return Tensor();
    });
    y.backward();
    CHECK(x.grad().to_vector() == std::vector<double>{2.0, 4.0});
  }
  {
    // grad() holds its inputs too.
    Tensor x = leaf({1.0, 2.0});
    Tensor h = scale_op(2.0)({x});
    Tensor y = sum_op()({ew("mul")({h, h})});
    y.register_hook([&](const Tensor&) {
      x = Tensor();
      h = Tensor();
      y = Tensor();
      return Tensor();
    });
    const Tensor xs = x;  // the caller's copy of the handle, for the result's check
    const TensorList g = opforge::grad({y}, {x, h});
    CHECK(g[0].to_vector() == std::vector<double>{8.0, 16.0});
    CHECK(g[1].to_vector() == std::vector<double>{4.0, 8.0});
    CHECK_FALSE(xs.grad().defined());
  }
}

TEST_CASE("engine: set_grad refuses the tensor itself and stores a gradient that requires grad detached",
          "[engine]") {
  Tensor x = leaf({1.0, 2.0});
  REQUIRE_THROWS_MATCHES(x.set_grad(x), opforge::ValueError,
                         Message("Tensor::set_grad: argument 'grad': a tensor cannot be its own gradient (it would "
                                 "hold itself); pass a copy, clone()"));
  CHECK_FALSE(x.grad().defined());
  Tensor w = leaf({3.0, 4.0});
  x.set_grad(w);
  CHECK(x.grad().to_vector() == std::vector<double>{3.0, 4.0});
  CHECK_FALSE(x.grad().requires_grad());
  x.set_grad(scale_op(2.0)({w}));  // an op's output: stored without its history
  CHECK_FALSE(x.grad().requires_grad());
  CHECK(x.grad().grad_fn() == nullptr);
  CHECK(x.grad().to_vector() == std::vector<double>{6.0, 8.0});
}

// ---- misuse of backward ----------------------------------------------------------------

TEST_CASE("engine: backward on a non-scalar needs a gradient", "[engine]") {
  Tensor x = leaf({1.0, 2.0, 3.0});
  Tensor y = scale_op(2.0)({x});
  REQUIRE_THROWS_MATCHES(y.backward(), AutogradError,
                         Message("backward: output 0 has shape [3]; a gradient can be implied only for a "
                                 "one-element output: pass grad with that shape"));
  CHECK_FALSE(x.grad().defined());
  // A one-element tensor of any rank is fine.
  Tensor x1 = leaf({4.0});
  scale_op(3.0)({x1}).backward();
  CHECK(x1.grad().to_vector() == std::vector<double>{3.0});
}

TEST_CASE("engine: backward with a gradient of the wrong shape or dtype", "[engine]") {
  Tensor x = leaf({1.0, 2.0, 3.0});
  Tensor y = scale_op(2.0)({x});
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), opforge::ShapeError,
                         Message("backward: argument 'grad' 0: expected float64[3] (the output's dtype and shape), "
                                 "got float64[2]"));
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({3}, DType::Float32)), opforge::DTypeError,
                         Message("backward: argument 'grad' 0: expected float64[3] (the output's dtype and shape), "
                                 "got float32[3]; convert it with .to() first"));
  CHECK_FALSE(x.grad().defined());
  // The graph was not consumed by the failed calls.
  y.backward(Tensor::ones({3}));
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 2.0, 2.0});
}

TEST_CASE("engine: grad() names itself and its argument grad_outputs in its errors, not backward's", "[engine]") {
  Tensor x = leaf({1.0, 2.0, 3.0});
  Tensor y = scale_op(2.0)({x});
  REQUIRE_THROWS_MATCHES(opforge::grad({y}, {x}), AutogradError,
                         Message("grad: output 0 has shape [3]; a gradient can be implied only for a one-element "
                                 "output: pass grad_outputs with that shape"));
  REQUIRE_THROWS_MATCHES(opforge::grad({y}, {x}, {Tensor::ones({2})}), opforge::ShapeError,
                         Message("grad: argument 'grad_outputs' 0: expected float64[3] (the output's dtype and "
                                 "shape), got float64[2]"));
  REQUIRE_THROWS_MATCHES(opforge::grad({y}, {x}, {Tensor::ones({3}, DType::Float32)}), opforge::DTypeError,
                         Message("grad: argument 'grad_outputs' 0: expected float64[3] (the output's dtype and "
                                 "shape), got float32[3]; convert it with .to() first"));
  REQUIRE_THROWS_MATCHES(opforge::grad({y, y}, {x}, {Tensor::ones({3})}), opforge::ValueError,
                         Message("grad: argument 'grad_outputs': expected 2 gradients (one per output) or none, got 1"));
  // The graph was not consumed by the failed calls.
  CHECK(opforge::grad({y}, {x}, {Tensor::ones({3})})[0].to_vector() == std::vector<double>{2.0, 2.0, 2.0});
}

TEST_CASE("engine: backward on a tensor that does not require grad", "[engine]") {
  const char* msg =
      "backward: output 0 (float64[2]) does not require grad and has no grad_fn: it is a leaf that was not marked "
      "(call requires_grad_(true) on it to differentiate with respect to it), or the output of ops none of whose "
      "inputs required grad, of a call made under a NoGradGuard, or of an output its op marked non-differentiable. "
      "(A gradient from backward() or grad() has no history: opforge computes first derivatives only, so a "
      "gradient penalty or a Hessian-vector product cannot be backpropagated)";
  Tensor plain = Tensor::ones({2});
  REQUIRE_THROWS_MATCHES(plain.backward(Tensor::ones({2})), AutogradError, Message(msg));
  Tensor y = ew("mul")({plain, plain});  // no input requires grad: no node
  CHECK(y.grad_fn() == nullptr);
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), AutogradError, Message(msg));
  // A comparison's result never carries a gradient, even when its inputs do.
  Tensor x = leaf({1.0, 2.0});
  Tensor eq = opforge::op("elementwise.eq")({x, x});
  REQUIRE_THROWS_MATCHES(eq.backward(Tensor::ones({2}, opforge::DType::Bool)), AutogradError,
                         Message("backward: output 0 (bool[2]) does not require grad and has no grad_fn: only float32 "
                                 "and float64 tensors carry gradients (a comparison's result, an index, a mask never "
                                 "does); backpropagate from a floating output"));
}

TEST_CASE("engine: a second backward needs retain_graph on the first", "[engine]") {
  Tensor x = leaf({1.0, 2.0});
  Tensor y = sum_op()({ew("mul")({x, x})});
  y.backward();
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 4.0});
  try {
    y.backward();
    FAIL("a second backward over a freed graph did not throw");
  } catch (const AutogradError& e) {
    CHECK(std::string(e.what()) ==
          "in backward of 'test.sum': this part of the graph was already backpropagated (by an earlier backward, or "
          "by one that stopped with an error after passing here) and what forward saved was freed; pass "
          "retain_graph=true to the first backward to backpropagate twice or to retry after an error");
    CHECK_THAT(e.what(), Catch::Contains("retain_graph"));
  }
  // Nothing was accumulated by the failed call.
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 4.0});
}

TEST_CASE("engine: retain_graph keeps the graph: two backwards double the gradient", "[engine]") {
  Tensor x = leaf({1.0, 2.0});
  Tensor y = sum_op()({ew("mul")({x, x})});
  y.backward(Tensor(), /*retain_graph=*/true);
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 4.0});
  y.backward(Tensor(), /*retain_graph=*/true);
  CHECK(x.grad().to_vector() == std::vector<double>{4.0, 8.0});
  y.backward();  // a last one that frees the graph
  CHECK(x.grad().to_vector() == std::vector<double>{6.0, 8.0 + 4.0});
  CHECK_THROWS_AS(y.backward(), AutogradError);
  CHECK(x.grad().to_vector() == std::vector<double>{6.0, 12.0});
}

TEST_CASE("engine: a second backward over freed saved values also points at retain_graph",
          "[engine]") {
  // An op that saves values but no tensors must give a second backward the same
  // hint as saved_tensors().
  struct ScaleByValue final : opforge::Function {
    TensorList forward(Context& ctx, TensorSpan in) const override {
      ctx.save_value(5.0);
      return {map1(in[0], [](double v) { return 5.0 * v; })};
    }
    TensorList backward(Context& ctx, TensorSpan g) const override {
      const double k = ctx.saved_value(0);
      return {map1(g[0], [k](double v) { return k * v; })};
    }
  };
  OpHandle scale_v = make("test.scale_by_value", {"x"}, std::make_unique<ScaleByValue>());
  Tensor x = leaf({1.0, 2.0});
  Tensor y = scale_v({x});
  y.backward(Tensor::ones({2}));
  CHECK(x.grad().to_vector() == std::vector<double>{5.0, 5.0});
  CHECK_THROWS_AS(y.backward(Tensor::ones({2})), AutogradError);
  CHECK_THROWS_WITH(y.backward(Tensor::ones({2})), Catch::Contains("retain_graph"));

  // elementwise.add saves nothing (it reads its inputs' shapes from the core's
  // record): as in PyTorch, it can be backpropagated again, and the gradient adds up.
  Tensor z = ew("add")({x, Tensor::ones({2})});
  x.zero_grad();
  z.backward(Tensor::ones({2}));
  z.backward(Tensor::ones({2}));
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 2.0});
}

TEST_CASE("engine: backward reads its inputs' shapes and dtypes from the core's record", "[engine]") {
  // out = a * sum(b) with b broadcast: backward needs both shapes and saves none.
  struct ShapeReader final : opforge::Function {
    mutable std::vector<Dims> shapes;
    mutable std::vector<DType> dtypes;
    TensorList forward(Context& ctx, TensorSpan in) const override {
      CHECK_THROWS_MATCHES(ctx.input_shape(0), AutogradError,
                           Message("test.shape_reader: Context::input_shape(0) is known in backward only; in "
                                   "forward, read the input tensor itself"));
      return {map1(in[0], [](double v) { return 2 * v; })};
    }
    TensorList backward(Context& ctx, TensorSpan g) const override {
      for (std::size_t i = 0; i < ctx.num_inputs(); ++i) {
        shapes.push_back(ctx.input_shape(i));
        dtypes.push_back(ctx.input_dtype(i));
      }
      CHECK_THROWS_MATCHES(ctx.input_dtype(2), opforge::IndexError,
                           Message("test.shape_reader: Context::input_dtype(2): the op has 2 inputs"));
      return {map1(g[0], [](double v) { return 2 * v; }), Tensor()};
    }
  };
  auto fn = std::make_unique<ShapeReader>();
  const ShapeReader& reader = *fn;
  OpHandle op = opforge::make_op(OpSchema("test.shape_reader").input_names({"a", "b"}).accepts(
                                     {DType::Float32, DType::Float64}).mixed_dtypes(),
                                 std::move(fn));
  Tensor a = Tensor::full({2, 3}, 1.0);
  a.requires_grad_(true);
  Tensor b = Tensor::full({4}, 1.0, DType::Float32);
  Tensor y = op({a, b});
  y.backward(Tensor::ones({2, 3}), /*retain_graph=*/false);
  REQUIRE(reader.shapes.size() == 2);
  CHECK(reader.shapes[0] == Dims{2, 3});
  CHECK(reader.shapes[1] == Dims{4});
  CHECK(reader.dtypes[0] == DType::Float64);
  CHECK(reader.dtypes[1] == DType::Float32);
  CHECK(a.grad().to_vector() == std::vector<double>(6, 2.0));
  // Outside any backward, on a Context the test makes itself: the same error.
  Context loose;
  CHECK_THROWS_AS(loose.input_shape(0), AutogradError);
}

TEST_CASE("engine: a saved tensor modified in place before backward is an error", "[engine]") {
  Tensor x = leaf({1.0, 2.0});
  Tensor y = ew("square")({x});  // saves x
  Tensor view = x.detach();      // same storage, same version counter
  view.data<double>()[0] = 10.0;
  view.bump_version();
  REQUIRE_THROWS_MATCHES(y.backward(Tensor::ones({2})), AutogradError,
                         Message("in backward of 'elementwise.square': saved tensor 0 (float64[2]) was modified in "
                                 "place after forward saved it (version 0, now 1); backward needs its value from "
                                 "forward. Modify a copy instead (detach().clone()), or do the in-place change "
                                 "before the op"));
  CHECK_FALSE(x.grad().defined());
}

// ---- grad mode -------------------------------------------------------------------------

TEST_CASE("engine: under NoGradGuard ops record no node", "[engine]") {
  Tensor x = leaf({1.0, 2.0});
  CHECK(opforge::grad_enabled());
  {
    opforge::NoGradGuard g;
    CHECK_FALSE(opforge::grad_enabled());
    Tensor y = ew("mul")({x, x});
    CHECK(y.grad_fn() == nullptr);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.is_leaf());
    Tensor z = scale_op(2.0)({x});
    CHECK(z.grad_fn() == nullptr);
    CHECK_FALSE(z.requires_grad());
    {
      opforge::NoGradGuard nested;
      CHECK_FALSE(opforge::grad_enabled());
    }
    CHECK_FALSE(opforge::grad_enabled());  // the inner guard restores "off", not "on"
    REQUIRE_THROWS_AS(y.backward(Tensor::ones({2})), AutogradError);
  }
  CHECK(opforge::grad_enabled());
  Tensor y = ew("mul")({x, x});
  CHECK(y.grad_fn() != nullptr);
  CHECK(y.requires_grad());
}

TEST_CASE("engine: NoGradGuard is per thread", "[engine]") {
  Tensor x = leaf({1.0});
  opforge::NoGradGuard g;
  bool other_enabled = false, other_recorded = false;
  std::thread t([&] {
    other_enabled = opforge::grad_enabled();
    Tensor y = scale_op(2.0)({x});
    other_recorded = y.grad_fn() != nullptr;
  });
  t.join();
  CHECK(other_enabled);
  CHECK(other_recorded);
  CHECK_FALSE(opforge::grad_enabled());
}

namespace {
struct ModeLog {
  std::atomic<int> forward_calls{0}, forward_grad_on{0}, backward_calls{0}, backward_grad_on{0};
};
class ModeProbe final : public opforge::Function {
 public:
  explicit ModeProbe(ModeLog* log) : log_(log) {}
  TensorList forward(Context&, TensorSpan in) const override {
    ++log_->forward_calls;
    if (opforge::grad_enabled()) ++log_->forward_grad_on;
    return {in[0].clone()};
  }
  TensorList backward(Context&, TensorSpan g) const override {
    ++log_->backward_calls;
    if (opforge::grad_enabled()) ++log_->backward_grad_on;
    return {g[0]};
  }

 private:
  ModeLog* log_;
};
}  // namespace

TEST_CASE("engine: forward and backward of a Function run with grad mode off", "[engine]") {
  ModeLog log;
  OpHandle probe = make("test.mode_probe", {"x"}, std::make_unique<ModeProbe>(&log));
  Tensor x = leaf({1.0});
  Tensor y = probe({x});                     // recorded
  CHECK(y.grad_fn() != nullptr);
  probe({Tensor::ones({1})});                // not recorded: no input requires grad
  y.backward();
  CHECK(log.forward_calls == 2);
  CHECK(log.forward_grad_on == 0);
  CHECK(log.backward_calls == 1);
  CHECK(log.backward_grad_on == 0);
  CHECK(opforge::grad_enabled());            // restored after each
  CHECK(x.grad().item() == 1.0);
}

// ---- needs_input_grad ----------------------------------------------------------------

namespace {
struct NeedsLog {
  std::vector<bool> forward, backward;
  bool forward_any = false;
  std::size_t num_inputs = 0;
};
// out = a + b + c; backward computes only the gradients it is asked for.
class NeedsProbe final : public opforge::Function {
 public:
  explicit NeedsProbe(NeedsLog* log) : log_(log) {}
  TensorList forward(Context& ctx, TensorSpan in) const override {
    log_->forward = {ctx.needs_input_grad(0), ctx.needs_input_grad(1), ctx.needs_input_grad(2)};
    log_->forward_any = ctx.any_input_needs_grad();
    log_->num_inputs = ctx.num_inputs();
    std::vector<double> a = in[0].to_vector(), b = in[1].to_vector(), c = in[2].to_vector();
    for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i] + c[i];
    return {Tensor::from_values(a, in[0].shape())};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    log_->backward = {ctx.needs_input_grad(0), ctx.needs_input_grad(1), ctx.needs_input_grad(2)};
    TensorList out(3);
    for (std::size_t i = 0; i < 3; ++i)
      if (ctx.needs_input_grad(i)) out[i] = g[0];
    return out;
  }

 private:
  NeedsLog* log_;
};
}  // namespace

TEST_CASE("engine: needs_input_grad is true exactly for inputs that require grad", "[engine]") {
  NeedsLog log;
  OpHandle probe = make("test.needs", {"a", "b", "c"}, std::make_unique<NeedsProbe>(&log));
  Tensor a = leaf({1.0, 2.0});
  Tensor b = Tensor::from_values({10.0, 20.0});          // a constant
  Tensor c = scale_op(2.0)({leaf({0.5, 0.25})});         // a non-leaf
  Tensor y = probe({a, b, c});
  CHECK(log.forward == std::vector<bool>{true, false, true});
  CHECK(log.forward_any);
  CHECK(log.num_inputs == 3);
  y.backward(Tensor::ones({2}));
  CHECK(log.backward == std::vector<bool>{true, false, true});
  CHECK(a.grad().to_vector() == std::vector<double>{1.0, 1.0});
  CHECK_FALSE(b.grad().defined());  // undefined returned for it: fine, nothing accumulated

  // No input requires grad, or grad mode is off: nothing is needed.
  probe({b, b, b});
  CHECK(log.forward == std::vector<bool>{false, false, false});
  CHECK_FALSE(log.forward_any);
  {
    opforge::NoGradGuard g;
    probe({a, b, c});
    CHECK(log.forward == std::vector<bool>{false, false, false});
    CHECK_FALSE(log.forward_any);
  }
}

TEST_CASE("engine: backward may return undefined for an input that requires grad", "[engine]") {
  struct OnlyFirst final : opforge::Function {
    TensorList forward(Context&, TensorSpan in) const override { return {in[0].clone()}; }
    TensorList backward(Context&, TensorSpan g) const override { return {g[0], Tensor()}; }
  };
  OpHandle op = make("test.only_first", {"a", "b"}, std::make_unique<OnlyFirst>());
  Tensor a = leaf({1.0}), b = leaf({2.0});
  op({a, b}).backward();
  CHECK(a.grad().item() == 1.0);
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("engine: an output that gets no gradient is passed to backward as zeros", "[engine]") {
  struct Seen {
    std::vector<double> g0, g1;
    DType dt0 = DType::Float64;
    Dims shape0;
  };
  // (2x, 3x); backward: 2 g0 + 3 g1.
  struct TwoOut final : opforge::Function {
    Seen* seen;
    explicit TwoOut(Seen* s) : seen(s) {}
    TensorList forward(Context&, TensorSpan in) const override {
      return {map1(in[0], [](double v) { return 2 * v; }), map1(in[0], [](double v) { return 3 * v; })};
    }
    TensorList backward(Context&, TensorSpan g) const override {
      seen->g0 = g[0].to_vector();
      seen->g1 = g[1].to_vector();
      seen->dt0 = g[0].dtype();
      seen->shape0 = g[0].shape();
      return {map2(g[0], g[1], [](double a, double b) { return 2 * a + 3 * b; })};
    }
  };
  Seen seen;
  OpHandle two = opforge::make_op(OpSchema("test.two_out").input_names({"x"}).outputs(2),
                                  std::make_unique<TwoOut>(&seen));
  Tensor x = leaf({1.0, 2.0}, DType::Float32);
  TensorList out = two.call({x});
  REQUIRE(out.size() == 2);
  CHECK(out[0].grad_fn() == out[1].grad_fn());
  CHECK(out[0].output_nr() == 0);
  CHECK(out[1].output_nr() == 1);
  out[1].backward(Tensor::ones({2}, DType::Float32));
  CHECK(seen.g0 == std::vector<double>{0.0, 0.0});
  CHECK(seen.dt0 == DType::Float32);
  CHECK(seen.shape0 == Dims{2});
  CHECK(seen.g1 == std::vector<double>{1.0, 1.0});
  CHECK(x.grad().to_vector() == std::vector<double>{3.0, 3.0});
}

TEST_CASE("engine: a backward may run another backward inside it", "[engine]") {
  // The inner graph is built beforehand; the outer op's backward backpropagates it.
  struct Nested final : opforge::Function {
    Tensor* inner_root;
    explicit Nested(Tensor* r) : inner_root(r) {}
    TensorList forward(Context&, TensorSpan in) const override { return {in[0].clone()}; }
    TensorList backward(Context&, TensorSpan g) const override {
      inner_root->backward();
      return {g[0]};
    }
  };
  Tensor u = leaf({5.0});
  Tensor inner = sum_op()({ew("mul")({u, u})});  // d/du = 2u = 10
  OpHandle nested = make("test.nested", {"x"}, std::make_unique<Nested>(&inner));
  Tensor x = leaf({1.0, 2.0, 3.0});
  Tensor y = sum_op()({scale_op(2.0)({nested({scale_op(3.0)({x})})})});  // dy/dx = 6
  y.backward();
  CHECK(u.grad().to_vector() == std::vector<double>{10.0});
  CHECK(x.grad().to_vector() == std::vector<double>{6.0, 6.0, 6.0});
  // And again, with fresh graphs, on the same thread (scratch reused at both depths).
  inner = sum_op()({ew("mul")({u, u})});
  sum_op()({scale_op(2.0)({nested({scale_op(3.0)({x})})})}).backward();
  CHECK(u.grad().to_vector() == std::vector<double>{20.0});
  CHECK(x.grad().to_vector() == std::vector<double>{12.0, 12.0, 12.0});
}

TEST_CASE("engine: a pass started in a hook may not go through the outer pass's graph, and says so",
          "[engine]") {
  // A grad() inside a hook on h reached a's node, which the outer pass had not
  // run yet, and reset its dependency count and gradient buffers under it: the
  // hook's own gradient argument was destroyed and the outer pass read freed
  // memory (a garbage dtype, then a crash), or lost gradients silently.
  Tensor x = leaf({1.0, 2.0});
  Tensor a = ew("mul")({x, Tensor::from_values({3.0, 3.0})});  // a = 3x
  Tensor h = ew("square")({a});                                // h = 9x^2
  bool nested = true;
  std::vector<double> seen;
  h.register_hook([&](const Tensor& g) {
    if (nested) opforge::grad({sum_op()({ew("square")({a})})}, {x});  // through a's node
    seen = g.to_vector();
    return Tensor();
  });
  Tensor L = sum_op()({h});
  REQUIRE_THROWS_MATCHES(
      L.backward(Tensor(), /*retain_graph=*/true), AutogradError,
      Message("grad: this pass reaches the node of 'elementwise.mul', which the backward or grad() running around "
              "it on this thread (this pass was started from a hook or an op's backward) has not backpropagated yet; "
              "a pass inside another cannot go through the outer pass's graph. Backpropagate from detach()ed tensors, "
              "or after the outer pass returns"));
  CHECK_FALSE(x.grad().defined());
  // The retained graph is intact: without the nested pass, backward runs as usual.
  nested = false;
  L.backward();
  CHECK(seen == std::vector<double>{1.0, 1.0});
  CHECK(x.grad().to_vector() == std::vector<double>{18.0, 36.0});
  // A nested pass over a graph of its own (from detach()ed tensors) is fine.
  nested = false;
  Tensor x2 = leaf({1.0, 2.0});
  Tensor h2 = ew("square")({x2});
  std::vector<double> inner;
  h2.register_hook([&](const Tensor&) {
    Tensor d = a.detach().requires_grad_();
    inner = opforge::grad({sum_op()({ew("square")({d})})}, {d})[0].to_vector();
    return Tensor();
  });
  sum_op()({h2}).backward();
  CHECK(inner == std::vector<double>{6.0, 12.0});
  CHECK(x2.grad().to_vector() == std::vector<double>{2.0, 4.0});
}

// ---- output aliasing and saved outputs ------------------------------------------------

TEST_CASE("engine: an op returning its input does not take over the input's autograd state", "[engine]") {
  OpHandle id = make("test.identity", {"x"}, std::make_unique<Identity>());
  SECTION("leaf input") {
    Tensor x = leaf({1.0, 2.0});
    Tensor y = id({x});
    CHECK_FALSE(y.is_same(x));
    CHECK(y.data_ptr() == x.data_ptr());  // same data, no copy
    CHECK(x.is_leaf());
    CHECK(x.grad_fn() == nullptr);
    CHECK(x.requires_grad());
    CHECK(y.grad_fn() != nullptr);
    Tensor z = scale_op(3.0)({y});
    z.backward(Tensor::ones({2}));
    CHECK(x.grad().to_vector() == std::vector<double>{3.0, 3.0});
    CHECK_FALSE(y.grad().defined());
  }
  SECTION("non-leaf input") {
    Tensor x = leaf({1.0, 2.0});
    Tensor h = scale_op(2.0)({x});
    opforge::Node* h_node = h.grad_fn();
    Tensor y = id({h});
    CHECK_FALSE(y.is_same(h));
    CHECK(y.data_ptr() == h.data_ptr());
    CHECK(h.grad_fn() == h_node);  // h still points at the node that made it
    CHECK(y.grad_fn() != h_node);
    Tensor z = ew("add")({y, h});  // both paths reach x: 2 + 2
    z.backward(Tensor::ones({2}));
    CHECK(x.grad().to_vector() == std::vector<double>{4.0, 4.0});
  }
  SECTION("input that does not require grad") {
    OpHandle second = make("test.second", {"a", "b"}, [] {
      struct Second final : opforge::Function {
        TensorList forward(Context&, TensorSpan in) const override { return {in[1]}; }
        TensorList backward(Context&, TensorSpan) const override { return {Tensor(), Tensor()}; }
      };
      return std::unique_ptr<opforge::Function>(new Second());
    }());
    Tensor a = leaf({1.0});
    Tensor b = Tensor::from_values({5.0});
    Tensor y = second({a, b});
    CHECK_FALSE(y.is_same(b));
    CHECK(y.grad_fn() != nullptr);
    CHECK(b.grad_fn() == nullptr);
    CHECK(b.is_leaf());
    CHECK_FALSE(b.requires_grad());
  }
}

TEST_CASE("engine: an op that saves its own output differentiates correctly and leaks nothing", "[engine]") {
  const std::int64_t base = opforge::live_bytes();
  SECTION("forward only") {
    {
      Tensor x = leaf({0.0, 1.0});
      Tensor y = exp_op()({x});
      CHECK(y.to_vector()[1] == Approx(std::exp(1.0)));
      CHECK(opforge::live_bytes() - base == 2 * 16);
    }
    CHECK(opforge::live_bytes() == base);
  }
  SECTION("with backward") {
    {
      Tensor x = leaf({0.0, 1.0, -2.0});
      Tensor y = exp_op()({x});
      y.backward(Tensor::ones({3}), /*retain_graph=*/true);
      const auto g = x.grad().to_vector();
      CHECK(g[0] == Approx(1.0));
      CHECK(g[1] == Approx(std::exp(1.0)));
      CHECK(g[2] == Approx(std::exp(-2.0)));
    }
    CHECK(opforge::live_bytes() == base);
  }
  SECTION("chained: exp(exp(x))") {
    {
      Tensor x = leaf({0.5});
      Tensor y = exp_op()({exp_op()({x})});
      y.backward(Tensor(), true);
      CHECK(x.grad().item() == Approx(std::exp(std::exp(0.5)) * std::exp(0.5)));
    }
    CHECK(opforge::live_bytes() == base);
  }
}

// ---- memory ---------------------------------------------------------------------------

TEST_CASE("engine: backward frees saved tensors, retain_graph keeps them", "[engine]") {
  const std::int64_t n = 1000;
  const std::int64_t bytes = n * 8;
  const std::int64_t base = opforge::live_bytes();
  std::vector<double> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = 0.001 * static_cast<double>(i);
  Tensor x = Tensor::from_values(v).requires_grad_();
  // x -> square -> s -> sum -> y; sum saves s, square saves x.
  Tensor y = sum_op()({ew("square")({x})});
  CHECK(opforge::live_bytes() - base == bytes + bytes + 8);  // x, s (held by sum's Context), y

  SECTION("without retain_graph") {
    y.backward();
    // s and every intermediate gradient are gone: x, x.grad and y remain.
    CHECK(opforge::live_bytes() - base == bytes + bytes + 8);
    CHECK(x.grad().numel() == n);
    const auto g = x.grad().to_vector();
    for (std::int64_t i = 0; i < n; ++i) REQUIRE(g[static_cast<std::size_t>(i)] == 2 * v[static_cast<std::size_t>(i)]);
    x.zero_grad();
    CHECK(opforge::live_bytes() - base == bytes + 8);  // so s really was freed
  }
  SECTION("with retain_graph") {
    y.backward(Tensor(), true);
    CHECK(opforge::live_bytes() - base == bytes + bytes + bytes + 8);  // x, s, x.grad, y
    y = Tensor();  // dropping the graph frees s
    CHECK(opforge::live_bytes() - base == bytes + bytes);
  }
  y = Tensor();
  x = Tensor();
  CHECK(opforge::live_bytes() == base);
}

TEST_CASE("engine: the first gradient reaching a leaf becomes its .grad without a copy", "[engine]") {
  // y = 2x with a given gradient G. Backward allocates one tensor, scale's 2G,
  // which nothing else holds: the leaf can take it as its .grad. A copy of it
  // would raise the peak by another n elements.
  const std::int64_t n = 100000, bytes = n * 8;
  const std::int64_t base = opforge::live_bytes();
  Tensor x = Tensor::ones({n}).requires_grad_();
  Tensor y = scale_op(2.0)({x});
  const Tensor G = Tensor::ones({n});
  opforge::reset_peak_bytes();
  CHECK(opforge::peak_bytes() - base == 3 * bytes);
  y.backward(G);
  CHECK(x.grad().to_vector()[n - 1] == 2.0);
  CHECK(opforge::live_bytes() - base == 4 * bytes);  // x, y, G, x.grad
  CHECK(opforge::peak_bytes() - base == 4 * bytes);  // nothing more, at any time
}

// ---- threads ---------------------------------------------------------------------------

TEST_CASE("engine: 8 threads x 1,000 forward+backward passes over independent graphs", "[engine]") {
  const int threads = 8, passes = 1000;
  std::atomic<int> wrong{0}, errors{0}, done{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        // Each thread resolves its ops itself (concurrent lookups, maybe the first load).
        const OpHandle mul = opforge::op("elementwise.mul");
        const OpHandle square = opforge::op("elementwise.square");
        for (int p = 0; p < passes; ++p) {
          const double a0 = t + 1, a1 = 0.5 * p;
          Tensor x = leaf({a0, a1, -1.0});
          Tensor w = leaf({2.0, 3.0, 4.0});
          // L = sum(square(x) * w): dL/dx = 2 x w, dL/dw = x^2
          Tensor L = sum_op()({mul({square({x}), w})});
          L.backward();
          const auto gx = x.grad().to_vector(), gw = w.grad().to_vector();
          if (gx != std::vector<double>{4 * a0, 6 * a1, -8.0}) ++wrong;
          if (gw != std::vector<double>{a0 * a0, a1 * a1, 1.0}) ++wrong;
          if (L.item() != 2 * a0 * a0 + 3 * a1 * a1 + 4.0) ++wrong;
          ++done;
        }
      } catch (...) {
        ++errors;
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(errors == 0);
  CHECK(wrong == 0);
  CHECK(done == threads * passes);
}

TEST_CASE("engine: 4 threads x 1,000 backward passes into one shared leaf accumulate exactly", "[engine]") {
  const int threads = 4, passes = 1000;
  Tensor W = leaf({1.0, -2.0, 0.5, 3.0});
  const std::vector<double> xv{0.5, 2.0, -1.0, 0.25};
  // One pass alone: d sum(W * x) / dW = x.
  sum_op()({ew("mul")({W, Tensor::from_values(xv)})}).backward();
  const std::vector<double> single = W.grad().to_vector();
  REQUIRE(single == xv);
  W.zero_grad();

  // The experiment is repeated a few times: a lost update is a race, so one
  // round alone could miss it (all rounds together take milliseconds).
  for (int round = 0; round < 5; ++round) {
    CAPTURE(round);
    W.zero_grad();
    std::atomic<int> errors{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        try {
          const Tensor x = Tensor::from_values(xv);
          while (!go.load()) std::this_thread::yield();
          for (int p = 0; p < passes; ++p) sum_op()({ew("mul")({W, x})}).backward();
        } catch (...) {
          ++errors;
        }
      });
    }
    go = true;
    for (auto& th : pool) th.join();
    CHECK(errors == 0);
    REQUIRE(W.grad().defined());
    const auto g = W.grad().to_vector();
    for (std::size_t i = 0; i < g.size(); ++i) {
      CAPTURE(i);
      CHECK(g[i] == threads * passes * single[i]);  // all values are exact in binary
    }
  }
  CHECK(W.is_leaf());
  CHECK(W.grad().shape() == Dims{4});
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
TEST_CASE("engine: what a thread's calls cached for reuse goes back to the heap when the thread ends",
          "[engine][memory]") {
  // Nodes, tensor impls and tiny storages are recycled through per-thread
  // caches (up to ~64 KiB a thread). 64 threads each fill theirs, part of it
  // with objects made on the main thread; once they have ended the heap holds
  // no more than before, give or take what the heap keeps for itself.
  OpHandle scale = make("test.cache_scale", {"x"}, std::make_unique<Scale>(1.5));
  const std::int64_t base = opforge::live_bytes();
  const std::size_t heap_before = ::mallinfo2().uordblks;
  for (int round = 0; round < 8; ++round) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      // Made here, dropped by the thread: they land in that thread's cache.
      std::vector<Tensor> handed;
      for (int i = 0; i < 64; ++i) handed.push_back(Tensor::full({2}, 1.0 * i));
      threads.emplace_back([&scale, handed = std::move(handed)]() mutable {
        Tensor x = Tensor::full({1}, 2.0);
        x.requires_grad_(true);
        for (int pass = 0; pass < 3; ++pass) {
          Tensor y = x;
          for (int k = 0; k < 48; ++k) y = scale(y);
          y.backward();
        }
        handed.clear();
      });
    }
    for (std::thread& t : threads) t.join();
  }
  CHECK(opforge::live_bytes() == base);
  const auto heap_after = static_cast<std::int64_t>(::mallinfo2().uordblks);
  // Without the hand-back, 64 threads would leave ~4 MiB behind.
  CHECK(heap_after - static_cast<std::int64_t>(heap_before) < 512 * 1024);
}
#endif
