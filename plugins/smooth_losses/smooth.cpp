// smooth: two smooth functions for training losses, an example of an op plugin
// built outside opforge's tree against the installed SDK.
//
// smooth.huber(pred, target) -> scalar          pred, target: one shape, N elements
//   r_i = pred_i - target_i,  delta = 1
//   loss = (1/N) sum_i h(r_i),   h(r) = 0.5 r^2                if |r| <= delta
//                                       delta (|r| - delta/2)  otherwise
//   dloss/dpred_i   =  g clamp(r_i, -delta, delta) / N
//   dloss/dtarget_i = -g clamp(r_i, -delta, delta) / N
//   (g: the incoming scalar gradient; h' = clamp(r, -delta, delta) is continuous,
//   so the gradient has no jump at |r| = delta.)
//
// smooth.softplus(x) -> y, x's shape
//   y_i = log(1 + exp(x_i)), computed as max(x_i, 0) + log1p(exp(-|x_i|)), which
//         never overflows (exp of a non-positive number) and keeps full precision
//         where exp(x) is tiny (log1p)
//   dy_i/dx_i = sigmoid(x_i) = 1 / (1 + exp(-x_i)), evaluated with exp of -|x_i|
//
// float32 and float64; the huber sum is accumulated in double, in fixed blocks
// added in order, so the result does not depend on how threads split the work.
#include <opforge/sdk.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using opforge::Context;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

constexpr double kDelta = 1.0;

template <class T>
double huber_term(T r) {
  // q (a - q / 2) with q = min(a, delta): a² / 2 within delta, delta (a - delta / 2)
  // beyond, without a branch (random residuals mispredict one: 10x slower).
  const double a = std::abs(static_cast<double>(r));
  const double q = std::min(a, kDelta);
  return q * (a - 0.5 * q);
}

// sum_i huber_term(p_i - t_i), deterministic: blocks of a fixed size are summed
// in parallel, then the block sums are added in block order.
template <class T>
double huber_sum(const T* p, const T* t, std::int64_t n) {
  constexpr std::int64_t kBlock = 16384;
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<std::size_t>(blocks), 0.0);
  sdk::parallel_for(0, blocks, 1, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t b = lo; b < hi; ++b) {
      double s = 0.0;
      for (std::int64_t i = b * kBlock, e = std::min(n, i + kBlock); i < e; ++i) s += huber_term<T>(p[i] - t[i]);
      partial[static_cast<std::size_t>(b)] = s;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

class Huber final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& pred = in[0];
    const Tensor& target = in[1];
    sdk::expect_shape(ctx, target, "target", pred.shape(), "the shape of 'pred'");
    OPFORGE_CHECK(pred.numel() > 0, ValueError, ctx.op_name(),
                  ": argument 'pred': expected at least one element (the mean of nothing is undefined), got ",
                  pred.describe());
    if (ctx.any_input_needs_grad()) ctx.save_for_backward({pred, target});  // backward recomputes r
    return sdk::dispatch_floating(pred.dtype(), ctx, "pred", [&](auto tag) -> TensorList {
      using T = decltype(tag);
      const double mean = huber_sum(pred.data<T>(), target.data<T>(), pred.numel()) / double(pred.numel());
      return {Tensor::scalar(mean, pred.dtype())};
    });
  }

  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // pred, target
    const Tensor& pred = s[0];
    const Tensor& target = s[1];
    const std::int64_t n = pred.numel();
    const double scale = grads[0].item() / double(n);  // g / N
    return sdk::dispatch_floating(pred.dtype(), ctx, "pred", [&](auto tag) -> TensorList {
      using T = decltype(tag);
      Tensor dpred = Tensor::empty(pred.shape(), pred.dtype());
      const T* p = pred.data<T>();
      const T* t = target.data<T>();
      T* d = dpred.data<T>();
      sdk::parallel_for(0, n, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          const double r = static_cast<double>(p[i]) - static_cast<double>(t[i]);
          d[i] = static_cast<T>(scale * std::clamp(r, -kDelta, kDelta));
        }
      });
      Tensor dtarget;
      if (ctx.needs_input_grad(1)) {
        dtarget = Tensor::empty(target.shape(), target.dtype());
        T* dt = dtarget.data<T>();
        sdk::parallel_for(0, n, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
          for (std::int64_t i = lo; i < hi; ++i) dt[i] = -d[i];
        });
      }
      if (!ctx.needs_input_grad(0)) dpred = Tensor();
      return {dpred, dtarget};
    });
  }
};

template <class T>
T softplus(T x) {
  return std::max(x, T(0)) + std::log1p(std::exp(-std::abs(x)));
}

template <class T>
T sigmoid(T x) {
  const T e = std::exp(-std::abs(x));  // in (0, 1]: no overflow
  return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

class Softplus final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    if (ctx.any_input_needs_grad()) ctx.save_for_backward(x);
    return {sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      Tensor y = Tensor::empty(x.shape(), x.dtype());
      const T* px = x.data<T>();
      T* py = y.data<T>();
      sdk::parallel_for(0, x.numel(), sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) py[i] = softplus(px[i]);
      });
      return y;
    })};
  }

  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Tensor& x = ctx.saved_tensors()[0];
    const Tensor g = grads[0].contiguous();
    return {sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      Tensor dx = Tensor::empty(x.shape(), x.dtype());
      const T* px = x.data<T>();
      const T* pg = g.data<T>();
      T* pd = dx.data<T>();
      sdk::parallel_for(0, x.numel(), sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) pd[i] = pg[i] * sigmoid(px[i]);  // g sigmoid(x)
      });
      return dx;
    })};
  }
};

}  // namespace

// Sample inputs for the harness (`opforge check`, sdk::check_op).
// huber: pred 1.5 randn, target randn [4, 5]: residuals in both branches.
static TensorList huber_samples(opforge::DType dtype, std::uint64_t seed) {
  Tensor pred = Tensor::randn({4, 5}, dtype, seed);
  pred.mul_(1.5);
  return {pred, Tensor::randn({4, 5}, dtype, seed + 1)};
}
// softplus: x 4 randn [4, 5]: both tails as well as the middle.
static TensorList softplus_samples(opforge::DType dtype, std::uint64_t seed) {
  Tensor x = Tensor::randn({4, 5}, dtype, seed);
  x.mul_(4.0);
  return {x};
}

OPFORGE_PLUGIN("smooth", "1.0.0") {
  using opforge::OpSchema;
  registrar.add<Huber>(OpSchema("smooth.huber")
                           .input_names({"pred", "target"})
                           .describe("Huber loss, delta 1: mean of 0.5 r^2 (|r| <= 1) or |r| - 0.5, r = pred - target")
                           .samples(huber_samples));
  registrar.add<Softplus>(OpSchema("smooth.softplus")
                              .input_names({"x"})
                              .describe("log(1 + exp(x)), element by element, without overflow")
                              .samples(softplus_samples));
}
