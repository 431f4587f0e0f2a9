// "shady": ops that each break one check of the op test harness (reused_output
// two), the way real op code goes wrong. Every other check must pass (or be
// skipped, with a reason) for each of them.
//
//   shady.wrong_grad(x)            = x^2, backward says 3 x g          -> gradcheck
//   shady.float64_grad(x)          = 2 x, backward always in float64   -> backward_contract (float32)
//   shady.clobbers_input(x, work)  = 2 x, and uses `work` as scratch   -> inputs_unchanged
//   shady.noisy(x)                 = x + calls * 1e-13                 -> deterministic
//   shady.shared_buffer(x)         = 2 x, through one static buffer    -> thread_safe
//   shady.flat_grad(x)             = 2 x, backward reads g as flat memory -> strided_grads
//   shady.nan_grad(x)              = x^2, backward returns NaN         -> gradcheck
//   shady.flat_input(x)            = x^2, takes strided inputs but reads x as flat memory -> strided_inputs
//   shady.step_input(x)            = x^2, takes strided inputs but walks x with one step -> strided_inputs
//   shady.step_grad(x)             = 2 x, backward walks g with one step -> strided_grads
//   shady.kept_input(x)            = x^2, keeps x in a member for backward -> interleaved_calls
//   shady.float32_grad(x)          = 2 x, backward 3 g in float32 only  -> dtypes_agree
//   shady.int64_off(x)             = x, but x + 1 for int64              -> dtypes_agree
//   shady.partial_grad(a, b)       = a b, gb off by 1 when a needs no gradient -> subset_grads
//   shady.chunk_offset(x)          = 2 x, a parallel_for body that indexes from 0 -> split_work
//   shady.thread_count_sum(x)      = x + a weighted sum of x cut into num_threads() parts
//                                    (its rounding changes with the thread count) -> split_work
//   shady.borrows_input(x)         = 2 x, negating x in place for a moment -> thread_safe
//   shady.reused_output(x)         = 2 x, into one buffer kept for every call -> interleaved_calls
//                                    (and thread_safe: overlapping calls share it too)
//
// wrong_grad has no sample provider on purpose: the harness falls back to randn [3, 4].
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include <opforge/sdk.hpp>

namespace {

using opforge::Context;
using opforge::DType;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// out[i] = f(a[i]) computed in double, stored in a's dtype.
template <class F>
Tensor map1(const Tensor& a, F f) {
  std::vector<double> v = a.to_vector();
  for (double& e : v) e = f(e);
  return Tensor::from_values(v, a.shape(), a.dtype());
}

// out[i] = f(a[i], b[i]) computed in double, stored in a's dtype.
template <class F>
Tensor map2(const Tensor& a, const Tensor& b, F f) {
  std::vector<double> va = a.to_vector();
  const std::vector<double> vb = b.to_vector();
  for (std::size_t i = 0; i < va.size(); ++i) va[i] = f(va[i], vb[i]);
  return Tensor::from_values(va, a.shape(), a.dtype());
}

Tensor twice(const Tensor& t) {
  return map1(t, [](double v) { return 2 * v; });
}

// x^2, whose backward has the wrong factor: 3 x g instead of 2 x g.
class WrongGrad final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    ctx.save_for_backward(in[0]);
    return {map1(in[0], [](double v) { return v * v; })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {map2(g[0], ctx.saved_tensors()[0], [](double gv, double xv) { return 3 * xv * gv; })};  // bug: 2 x g
  }
};

// 2 x, whose backward always returns float64, whatever the input's dtype.
class Float64Grad final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override { return {twice(in[0])}; }
  TensorList backward(Context&, TensorSpan g) const override {
    return {twice(g[0]).to(DType::Float64)};  // bug: should keep g's dtype
  }
};

// 2 x, written through `work` first: the op uses its second input as scratch.
class ClobbersInput final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    sdk::expect_shape(ctx, in[1], "work", in[0].shape(), "the shape of 'x'");
    sdk::expect_contiguous(ctx, in[1], "work");
    const Tensor y = twice(in[0]);
    std::memcpy(in[1].data_ptr(), y.data_ptr(), y.nbytes());  // bug: writes into an input
    return {in[1].clone()};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {twice(g[0]), Tensor()}; }
};

// x + calls * 1e-13: a per-call counter leaks into the result (far below
// gradcheck's tolerance, but not bit-identical from one call to the next).
std::atomic<std::uint64_t> g_calls{0};
class Noisy final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    const double noise = static_cast<double>(g_calls.fetch_add(1)) * 1e-13;  // bug: state across calls
    return {map1(in[0], [&](double v) { return v + noise; })};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

// 2 x, accumulated in one static buffer that every call shares without a lock:
// right on one thread, wrong when calls overlap (one call's zeroing or sum lands
// in another's). The sleeps only widen the window so the test sees it every time.
constexpr std::int64_t kScratch = 4096;
std::atomic<double> g_scratch[kScratch];
class SharedBuffer final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const std::vector<double> x = in[0].to_vector();
    OPFORGE_CHECK(in[0].numel() <= kScratch, ValueError, ctx.op_name(), ": argument 'x': at most ", kScratch,
                  " elements, got ", in[0].numel());
    const auto n = x.size();
    for (std::size_t i = 0; i < n; ++i) g_scratch[i].store(0.0, std::memory_order_relaxed);
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    for (std::size_t i = 0; i < n; ++i)  // bug: unsynchronised read-modify-write of shared state
      g_scratch[i].store(g_scratch[i].load(std::memory_order_relaxed) + x[i], std::memory_order_relaxed);
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    std::vector<double> y(n);
    for (std::size_t i = 0; i < n; ++i) y[i] = 2 * g_scratch[i].load(std::memory_order_relaxed);
    return {Tensor::from_values(y, in[0].shape(), in[0].dtype())};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {twice(g[0])}; }
};

// 2 x, whose backward copies the gradient's memory as if it were contiguous:
// right for a contiguous g, wrong for a strided one. (Only the strided case is
// ever reached: the check stops at the first difference, before it would hand
// over a broadcast g whose memory is one element.)
class FlatGrad final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override { return {twice(in[0])}; }
  TensorList backward(Context&, TensorSpan g) const override {
    Tensor flat = Tensor::empty(g[0].shape(), g[0].dtype());
    std::memcpy(flat.data_ptr(), g[0].data_ptr(), flat.nbytes());  // bug: ignores g's strides
    return {twice(flat)};
  }
};

// x^2, whose backward returns NaN (a 0/0 in real code): gradcheck must fail it,
// not pass it because NaN compares false with every tolerance.
class NanGrad final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    return {map1(in[0], [](double v) { return v * v; })};
  }
  TensorList backward(Context&, TensorSpan g) const override {
    return {map1(g[0], [](double) { return std::nan(""); })};  // bug
  }
};

// x^2 for an op whose schema takes strided inputs, but whose forward copies
// x's memory as if it were contiguous: right for a contiguous x, wrong for a
// transposed or sliced one (it reads the elements the view skips).
class FlatInput final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    Tensor flat = Tensor::empty(in[0].shape(), in[0].dtype());
    std::memcpy(flat.data_ptr(), in[0].data_ptr(), flat.nbytes());  // bug: ignores x's strides
    ctx.save_for_backward(flat);
    return {map1(flat, [](double v) { return v * v; })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {map2(g[0], ctx.saved_tensors()[0], [](double gv, double xv) { return 2 * xv * gv; })};
  }
};

// t's elements read by walking its memory with one step, its smallest stride
// (a kernel that takes any "uniformly strided" block for a dense one): right for
// contiguous tensors and for every stride doubled, wrong for a transpose. Stays
// inside t's storage for the harness's layouts.
Tensor read_with_one_step(const Tensor& t) {
  std::int64_t step = 1;
  bool first = true;
  for (std::size_t k = 0; k < t.shape().size(); ++k)
    if (t.shape()[k] > 1 && (first || t.strides()[k] < step)) {
      step = t.strides()[k];
      first = false;
    }
  std::vector<double> v(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::int64_t at = static_cast<std::int64_t>(i) * step;  // bug: one step for every axis
    v[i] = t.dtype() == DType::Float64 ? static_cast<const double*>(t.data_ptr())[at]
                                       : static_cast<const float*>(t.data_ptr())[at];
  }
  return Tensor::from_values(v, t.shape(), t.dtype());
}

// x^2, taking strided inputs, whose forward reads x with one step.
class StepInput final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    Tensor x = read_with_one_step(in[0]);
    ctx.save_for_backward(x);
    return {map1(x, [](double v) { return v * v; })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    return {map2(g[0], ctx.saved_tensors()[0], [](double gv, double xv) { return 2 * xv * gv; })};
  }
};

// 2 x, whose backward reads the output gradient with one step.
class StepGrad final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override { return {twice(in[0])}; }
  TensorList backward(Context&, TensorSpan g) const override { return {twice(read_with_one_step(g[0]))}; }
};

// x^2, whose forward keeps x in a member for backward instead of on ctx: right
// when each backward follows its own forward, wrong when a second forward runs
// before the first one's backward (it then differentiates at the second x).
// The lock only keeps the race out of it: the bug is the shared state.
class KeptInput final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    std::lock_guard<std::mutex> lock(mu_);
    kept_ = in[0].to_vector();  // bug: per-call state in the shared Function
    return {map1(in[0], [](double v) { return v * v; })};
  }
  TensorList backward(Context&, TensorSpan g) const override {
    std::vector<double> v = g[0].to_vector();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (kept_.size() != v.size()) throw std::runtime_error("shady.kept_input: the kept input has another size");
      for (std::size_t i = 0; i < v.size(); ++i) v[i] *= 2 * kept_[i];
    }
    return {Tensor::from_values(v, g[0].shape(), g[0].dtype())};
  }

 private:
  mutable std::mutex mu_;
  mutable std::vector<double> kept_;
};

// 2 x, whose float32 backward has the wrong factor: float64 is right, so only a
// comparison of the two dtypes sees it.
class Float32Grad final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override { return {twice(in[0])}; }
  TensorList backward(Context&, TensorSpan g) const override {
    const double k = g[0].dtype() == DType::Float32 ? 3 : 2;  // bug: float32 path
    return {map1(g[0], [k](double v) { return k * v; })};
  }
};

// The identity, whose int64 path adds one.
class Int64Off final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    if (in[0].dtype() == DType::Int64) return {map1(in[0], [](double v) { return v + 1; })};  // bug
    return {in[0].clone()};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {g[0]}; }
};

// a b, whose gradient for b is off by one when a needs none (a shortcut taken
// only on that path).
class PartialGrad final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    ctx.save_for_backward({in[0], in[1]});
    return {map2(in[0], in[1], [](double a, double b) { return a * b; })};
  }
  TensorList backward(Context& ctx, TensorSpan g) const override {
    const Tensor& a = ctx.saved_tensors()[0];
    const Tensor& b = ctx.saved_tensors()[1];
    Tensor ga, gb;
    if (ctx.needs_input_grad(0)) ga = map2(g[0], b, [](double gv, double bv) { return gv * bv; });
    if (ctx.needs_input_grad(1)) {
      const double off = ctx.needs_input_grad(0) ? 0 : 1;  // bug
      gb = map2(g[0], a, [off](double gv, double av) { return gv * av + off; });
    }
    return {ga, gb};
  }
};

// 2 x through sdk::parallel_for, whose body reads x from the start of its
// range as if every range began at 0: right while the range runs in one piece
// (any tensor below the grain), wrong once it is cut.
class ChunkOffset final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    const Tensor x = in[0].to(DType::Float64);
    Tensor y = Tensor::empty(x.shape(), DType::Float64);
    const double* px = x.data<double>();
    double* py = y.data<double>();
    sdk::parallel_for(0, x.numel(), 1 << 20, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) py[i] = 2 * px[i - lo];  // bug: px[i]
    });
    return {y.to(in[0].dtype())};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {twice(g[0])}; }
};

// x + Σ_i Σ_k w_k x_i (w_k = 0.001 (k + 1), k < 100), the 100 n terms summed as
// num_threads() partial sums added in order: the rounding depends on the thread
// count (the derivative does not: each x_i gets g_i + 5.05 Σ g).
class ThreadCountSum final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    const std::vector<double> v = in[0].to_vector();
    const std::size_t terms = v.size() * 100;
    const std::size_t parts = static_cast<std::size_t>(opforge::num_threads());  // bug: cut by the thread count
    double total = 0;
    for (std::size_t p = 0; p < parts; ++p) {
      double partial = 0;
      for (std::size_t t = p * terms / parts; t < (p + 1) * terms / parts; ++t)
        partial += v[t / 100] * (0.001 * static_cast<double>(t % 100 + 1));
      total += partial;
    }
    return {map1(in[0], [total](double e) { return e + total; })};
  }
  TensorList backward(Context&, TensorSpan g) const override {
    const std::vector<double> v = g[0].to_vector();
    double total = 0;
    for (double e : v) total += e * 5.05;
    return {map1(g[0], [total](double e) { return e + total; })};
  }
};

// 2 x, computed as -2 (-x) with x negated in place for a moment and put back:
// every input is as it was after the call, but two calls on one tensor at once
// see each other's sign.
class BorrowsInput final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    const Tensor& x = in[0];
    auto negate = [&] {
      if (x.dtype() == DType::Float32)
        for (float* p = x.data<float>(), *e = p + x.numel(); p != e; ++p) *p = -*p;
      else
        for (double* p = x.data<double>(), *e = p + x.numel(); p != e; ++p) *p = -*p;
    };
    negate();  // bug: writes into an input, if only for a while
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    Tensor y = map1(x, [](double v) { return -2 * v; });
    negate();
    return {y};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {twice(g[0])}; }
};

// 2 x, written into one buffer the Function keeps and hands out on every call:
// a caller that keeps one result sees it change when the op runs again.
class ReusedOutput final : public opforge::Function {
 public:
  TensorList forward(Context&, TensorSpan in) const override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!buffer_.defined() || buffer_.shape() != in[0].shape() || buffer_.dtype() != in[0].dtype())
      buffer_ = Tensor::empty(in[0].shape(), in[0].dtype());
    buffer_.copy_(twice(in[0]));  // bug: the same storage for every call
    return {buffer_};
  }
  TensorList backward(Context&, TensorSpan g) const override { return {twice(g[0])}; }

 private:
  mutable std::mutex mu_;
  mutable Tensor buffer_;
};

}  // namespace

// Sample inputs: x [3, 5] (and work [3, 5]).
static TensorList x_samples(DType dtype, std::uint64_t seed) { return {Tensor::randn({3, 5}, dtype, seed)}; }
static TensorList ab_samples(DType dtype, std::uint64_t seed) {
  return {Tensor::randn({3, 5}, dtype, seed), Tensor::randn({3, 5}, dtype, seed + 1)};
}
static TensorList x_work_samples(DType dtype, std::uint64_t seed) {
  return {Tensor::randn({3, 5}, dtype, seed), Tensor::randn({3, 5}, dtype, seed + 1)};
}

OPFORGE_PLUGIN("shady", "1.0.0") {
  using opforge::OpSchema;
  registrar.add<WrongGrad>(
      OpSchema("shady.wrong_grad").input_names({"x"}).describe("x^2, with a wrong backward (3 x g)"));
  registrar.add<Float64Grad>(OpSchema("shady.float64_grad")
                                 .input_names({"x"})
                                 .describe("2 x, with a backward that always returns float64")
                                 .samples(x_samples));
  registrar.add<ClobbersInput>(OpSchema("shady.clobbers_input")
                                   .input_names({"x", "work"})
                                   .describe("2 x, using its input 'work' as scratch space")
                                   .samples(x_work_samples));
  registrar.add<Noisy>(
      OpSchema("shady.noisy").input_names({"x"}).describe("x + calls * 1e-13 (not deterministic)").samples(x_samples));
  registrar.add<SharedBuffer>(OpSchema("shady.shared_buffer")
                                  .input_names({"x"})
                                  .describe("2 x through a static buffer shared by all calls (not thread-safe)")
                                  .samples(x_samples));
  registrar.add<FlatGrad>(OpSchema("shady.flat_grad")
                              .input_names({"x"})
                              .describe("2 x, with a backward that ignores the gradient's strides")
                              .samples(x_samples));
  registrar.add<FlatInput>(OpSchema("shady.flat_input")
                               .input_names({"x"})
                               .describe("x^2, taking strided inputs but reading x as flat memory")
                               .takes_strided_inputs()
                               .samples(x_samples));
  registrar.add<StepInput>(OpSchema("shady.step_input")
                               .input_names({"x"})
                               .describe("x^2, taking strided inputs but walking x's memory with one step")
                               .takes_strided_inputs()
                               .samples(x_samples));
  registrar.add<StepGrad>(OpSchema("shady.step_grad")
                              .input_names({"x"})
                              .describe("2 x, with a backward that walks the gradient's memory with one step")
                              .samples(x_samples));
  registrar.add<KeptInput>(OpSchema("shady.kept_input")
                               .input_names({"x"})
                               .describe("x^2, keeping x in the shared Function for backward")
                               .samples(x_samples));
  registrar.add<NanGrad>(
      OpSchema("shady.nan_grad").input_names({"x"}).describe("x^2, with a backward that returns NaN").samples(x_samples));
  registrar.add<Float32Grad>(OpSchema("shady.float32_grad")
                                 .input_names({"x"})
                                 .describe("2 x, with a backward wrong in float32 only")
                                 .samples(x_samples));
  registrar.add<Int64Off>(OpSchema("shady.int64_off")
                              .input_names({"x"})
                              .accepts(opforge::DTypeSet{DType::Float32, DType::Float64, DType::Int64})
                              .describe("x, plus one for int64")
                              .samples(x_samples));
  registrar.add<PartialGrad>(OpSchema("shady.partial_grad")
                                 .input_names({"a", "b"})
                                 .describe("a b, whose gradient for b is off when a needs none")
                                 .samples(ab_samples));
  registrar.add<ChunkOffset>(OpSchema("shady.chunk_offset")
                                 .input_names({"x"})
                                 .describe("2 x, through a parallel_for body that indexes from 0")
                                 .samples(x_samples));
  registrar.add<ThreadCountSum>(OpSchema("shady.thread_count_sum")
                                    .input_names({"x"})
                                    .describe("x + a weighted sum of x, summed in num_threads() parts")
                                    .samples(x_samples));
  registrar.add<BorrowsInput>(OpSchema("shady.borrows_input")
                                  .input_names({"x"})
                                  .describe("2 x, negating x in place for a moment")
                                  .samples(x_samples));
  registrar.add<ReusedOutput>(OpSchema("shady.reused_output")
                                  .input_names({"x"})
                                  .describe("2 x, into one buffer kept for every call")
                                  .samples(x_samples));
}
