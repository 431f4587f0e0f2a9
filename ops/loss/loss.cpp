// loss: least squares, fused.
//
//   lstsq(A, x, y) = ||y - A x||^2 = r^T r,   r = y - A x      A [m, n], x [n], y [m]
//   dL/dx = -2 A^T r g      [n]
//   dL/dy =  2 r g          [m]
//   dL/dA = -2 r x^T g      [m, n]
// (g: the incoming scalar gradient.)
//
// Forward makes one pass over A that yields r, the loss and, when x needs a
// gradient, A^T r as well (lstsq_kernel.cpp); backward then only scales what
// forward saved. A is read from memory once per forward + backward, against
// twice for the same loss composed of mv, sub, square and sum.
#include <string>

#include <opforge/sdk.hpp>

#include "loss_ops.hpp"

#include "lstsq_kernel.hpp"

namespace {

using opforge::Context;
using opforge::Dims;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// out[i] = s * v[i]
template <class T>
Tensor scaled(const Tensor& v, double s) {
  Tensor out = Tensor::empty(v.shape(), v.dtype());
  const T* pv = v.data<T>();
  T* po = out.data<T>();
  const T k = static_cast<T>(s);
  sdk::parallel_for(0, v.numel(), sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) po[i] = k * pv[i];
  });
  return out;
}

// out[i, j] = s * r[i] * x[j]
template <class T>
Tensor scaled_outer(const Tensor& r, const Tensor& x, double s) {
  const std::int64_t m = r.numel(), n = x.numel();
  Tensor out = Tensor::empty(Dims{m, n}, r.dtype());
  const T* pr = r.data<T>();
  const T* px = x.data<T>();
  T* po = out.data<T>();
  sdk::parallel_for(0, m, std::max<std::int64_t>(1, sdk::kElementwiseGrain / std::max<std::int64_t>(n, 1)),
                    [&](std::int64_t lo, std::int64_t hi) {
                      for (std::int64_t i = lo; i < hi; ++i) {
                        const T ri = static_cast<T>(s) * pr[i];
                        for (std::int64_t j = 0; j < n; ++j) po[i * n + j] = ri * px[j];
                      }
                    });
  return out;
}

class Lstsq final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& A = in[0];
    const Tensor& x = in[1];
    const Tensor& y = in[2];
    sdk::expect_rank(ctx, A, "A", 2);
    const std::int64_t m = A.size(0), n = A.size(1);
    sdk::expect_shape(ctx, x, "x", Dims{n}, "the number of columns of 'A'");
    sdk::expect_shape(ctx, y, "y", Dims{m}, "the number of rows of 'A'");
    sdk::expect_contiguous(ctx, A, "A");
    sdk::expect_contiguous(ctx, x, "x");
    sdk::expect_contiguous(ctx, y, "y");

    return sdk::dispatch_floating(A.dtype(), ctx, "A", [&](auto tag) -> TensorList {
      using T = decltype(tag);
      Tensor r = Tensor::empty(Dims{m}, A.dtype());
      Tensor g = ctx.needs_input_grad(1) ? Tensor::empty(Dims{n}, A.dtype()) : Tensor();
      const double loss = opforge_ops::loss::lstsq_fused(A.data<T>(), x.data<T>(), y.data<T>(), m, n, r.data<T>(),
                                                         g.defined() ? g.data<T>() : nullptr);
      if (ctx.any_input_needs_grad()) {
        // r for dy and dA, A^T r for dx, x for dA: only what backward will read.
        ctx.save_for_backward({r, g, ctx.needs_input_grad(0) ? x : Tensor()});
      }
      return {Tensor::scalar(loss, A.dtype())};
    });
  }

  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const TensorList& s = ctx.saved_tensors();  // r [m], A^T r [n] or undefined, x [n] or undefined
    const double go = grads[0].item();
    return sdk::dispatch_floating(grads[0].dtype(), ctx, "grad", [&](auto tag) -> TensorList {
      using T = decltype(tag);
      Tensor dA, dx, dy;
      if (ctx.needs_input_grad(0)) dA = scaled_outer<T>(s[0], s[2], -2.0 * go);  // [m] x [n] -> [m, n]
      if (ctx.needs_input_grad(1)) dx = scaled<T>(s[1], -2.0 * go);              // [n]
      if (ctx.needs_input_grad(2)) dy = scaled<T>(s[0], 2.0 * go);               // [m]
      return {dA, dx, dy};
    });
  }
};

}  // namespace

// Sample inputs for the test harness (`opforge check`): A [9, 4], x [4], y [9].
static TensorList lstsq_samples(opforge::DType dtype, std::uint64_t seed) {
  return {Tensor::randn({9, 4}, dtype, seed), Tensor::randn({4}, dtype, seed + 1), Tensor::randn({9}, dtype, seed + 2)};
}

OPFORGE_PLUGIN("loss", "0.1.0") {
  registrar.add<Lstsq>(opforge::OpSchema("loss.lstsq")
                           .input_names({"A", "x", "y"})
                           .describe(std::string("||y - A x||^2, fused: one pass over A gives the loss and A^T r "
                                                 "(kernel on this CPU: ") +
                                     opforge_ops::loss::kernel_name(opforge_ops::loss::LstsqKernel::automatic) + ")")
                           .samples(lstsq_samples));
  opforge_ops::loss::register_losses(registrar);  // mse, huber, bce_with_logits, cross_entropy (losses.cpp)
}
