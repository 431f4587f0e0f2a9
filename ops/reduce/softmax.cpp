// reduce: softmax and log_softmax along one axis (attribute axis: Int = -1).
//
//   softmax(x)_i     = exp(x_i - m) / Σ_j exp(x_j - m)        m = max_j x_j
//   log_softmax(x)_i = (x_i - m) - log Σ_j exp(x_j - m)
// (i, j along the axis; subtracting m keeps every exp <= 1 and does not change the
// result). Backward, in closed form from the output y and its gradient g:
//   softmax:      dx_i = y_i (g_i - Σ_j g_j y_j)
//   log_softmax:  dx_i = g_i - exp(y_i) Σ_j g_j
// The sums are accumulated in double (float32 too). x is seen as [outer, n, inner]
// (n: the axis). Each line along the axis is computed by one thread, so the result
// does not depend on the thread count. With inner = 1 a task takes whole rows; else
// it takes up to kColumns neighbouring lines at once, so the inner loops run over
// contiguous memory.
#include <algorithm>
#include <cmath>
#include <limits>

#include <opforge/sdk.hpp>

#include "../vector_math.hpp"

namespace {

using opforge::Context;
using opforge::Dims;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

constexpr std::int64_t kColumns = 256;

// x as [outer, n, inner] around the axis. A 0-d tensor is one line of one element
// (axis 0 or -1), as in NumPy and PyTorch.
struct Lines {
  std::int64_t outer = 1, n = 1, inner = 1;
};

Lines lines_of(const Context& ctx, const Dims& shape) {
  const std::int64_t axis = ctx.attr_int(0);
  const auto rank = static_cast<std::int64_t>(shape.size());
  // A 0-D tensor is one line of one element: axis 0 or -1.
  const std::int64_t a = sdk::normalize_axis(ctx, "axis", axis, std::max<std::int64_t>(rank, 1), shape);
  Lines l;
  if (rank == 0) return l;
  for (std::int64_t k = 0; k < a; ++k) l.outer *= shape[static_cast<std::size_t>(k)];
  l.n = shape[static_cast<std::size_t>(a)];
  for (std::int64_t k = a + 1; k < rank; ++k) l.inner *= shape[static_cast<std::size_t>(k)];
  return l;
}

// Runs body(line0, j0, jn) over blocks of jn <= kColumns neighbouring lines (inner > 1)
// or body(row, 0, 1) over rows (inner = 1), in parallel.
template <class Body>
void for_each_block(const Lines& l, Body&& body) {
  if (l.n == 0 || l.inner == 0 || l.outer == 0) return;  // no element (an empty axis after the softmax axis too)
  if (l.inner == 1) {
    sdk::parallel_for(0, l.outer, std::max<std::int64_t>(1, sdk::kElementwiseGrain / l.n),
                      [&](std::int64_t lo, std::int64_t hi) {
                        for (std::int64_t row = lo; row < hi; ++row) body(row, 0, 1);
                      });
    return;
  }
  const std::int64_t jb = std::min(l.inner, kColumns);
  const std::int64_t nj = (l.inner + jb - 1) / jb;
  sdk::parallel_for(0, l.outer * nj, std::max<std::int64_t>(1, sdk::kElementwiseGrain / (l.n * jb)),
                    [&](std::int64_t lo, std::int64_t hi) {
                      for (std::int64_t t = lo; t < hi; ++t) {
                        const std::int64_t j0 = (t % nj) * jb;
                        body(t / nj, j0, std::min(jb, l.inner - j0));
                      }
                    });
}

// The kernels below are compiled for baseline x86-64, AVX2 and AVX-512
// (sdk::run_vectorized, as in reduce.cpp): exp(x - m) runs at the copy's vector width,
// from libmvec; everything else gives the same bits in every copy.

// The largest of x[0, n), NaN aside (a NaN still reaches the sum of exps). A max
// does not depend on the order it is taken in, so the vector reduction is exact.
template <class T>
OPFORGE_KERNEL_BODY T row_max(const T* x, std::int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (std::int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Σ f(i) for i < n, in double, with eight interleaved accumulators: a fixed order of
// additions that the compiler keeps in vector registers.
template <class F>
OPFORGE_KERNEL_BODY double row_sum(std::int64_t n, F f) {
  double acc[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += f(i + l);
  double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += f(i);
  return s;
}

// One line along the axis (inner = 1): y = exp(x - m), its sum, then y scaled (softmax)
// or y = (x - m) - log Σ (log_softmax).
template <class T, bool kLog>
struct ForwardRow {
  OPFORGE_KERNEL_BODY static void run(const T* xr, T* yr, std::int64_t n) {
    const T m = row_max(xr, n);
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) yr[i] = std::exp(xr[i] - m);
    const double s = row_sum(n, [&](std::int64_t i) { return static_cast<double>(yr[i]); });
    if constexpr (kLog) {
      const T ls = static_cast<T>(std::log(s));
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) - ls;
    } else {
      const T inv = static_cast<T>(1.0 / s);
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) yr[i] *= inv;
    }
  }
};

// jn <= kColumns neighbouring lines (inner > 1), lines j at xb[i * inner + j].
template <class T, bool kLog>
struct ForwardBlock {
  OPFORGE_KERNEL_BODY static void run(const T* xb, T* yb, std::int64_t n, std::int64_t inner, std::int64_t jn) {
    T m[kColumns];
    double s[kColumns];
    std::fill(m, m + jn, -std::numeric_limits<T>::infinity());
    std::fill(s, s + jn, 0.0);
    for (std::int64_t i = 0; i < n; ++i)
#pragma omp simd
      for (std::int64_t j = 0; j < jn; ++j) m[j] = xb[i * inner + j] > m[j] ? xb[i * inner + j] : m[j];
    for (std::int64_t i = 0; i < n; ++i)
#pragma omp simd
      for (std::int64_t j = 0; j < jn; ++j) {
        const T e = std::exp(xb[i * inner + j] - m[j]);
        if constexpr (!kLog) yb[i * inner + j] = e;
        s[j] += e;
      }
    T k[kColumns];  // log Σ (log_softmax) or 1 / Σ (softmax)
    for (std::int64_t j = 0; j < jn; ++j) k[j] = static_cast<T>(kLog ? std::log(s[j]) : 1.0 / s[j]);
    for (std::int64_t i = 0; i < n; ++i)
#pragma omp simd
      for (std::int64_t j = 0; j < jn; ++j) {
        if constexpr (kLog)
          yb[i * inner + j] = (xb[i * inner + j] - m[j]) - k[j];
        else
          yb[i * inner + j] *= k[j];
      }
  }
};

template <class T, bool kLog>
void softmax_forward(const Lines& l, const T* x, T* y) {
  const sdk::VectorIsa isa = sdk::vector_isa();
  if (l.inner == 1) {
    for_each_block(l, [&](std::int64_t row, std::int64_t, std::int64_t) {
      sdk::run_for_isa<ForwardRow<T, kLog>>(isa, x + row * l.n, y + row * l.n, l.n);
    });
    return;
  }
  for_each_block(l, [&](std::int64_t o, std::int64_t j0, std::int64_t jn) {
    const std::int64_t b = o * l.n * l.inner + j0;
    sdk::run_for_isa<ForwardBlock<T, kLog>>(isa, x + b, y + b, l.n, l.inner, jn);
  });
}

// softmax: dx = y (g - Σ g y);  log_softmax: dx = g - exp(y) Σ g.
template <class T, bool kLog>
struct BackwardRow {
  OPFORGE_KERNEL_BODY static void run(const T* y, const T* g, T* dx, std::int64_t n) {
    const double s =
        row_sum(n, [&](std::int64_t i) { return kLog ? static_cast<double>(g[i]) : static_cast<double>(g[i]) * y[i]; });
    const T st = static_cast<T>(s);
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      if constexpr (kLog)
        dx[i] = g[i] - std::exp(y[i]) * st;
      else
        dx[i] = y[i] * (g[i] - st);
    }
  }
};
template <class T, bool kLog>
struct BackwardBlock {
  OPFORGE_KERNEL_BODY static void run(const T* y, const T* g, T* dx, std::int64_t n, std::int64_t inner,
                                      std::int64_t jn) {
    double s[kColumns];
    std::fill(s, s + jn, 0.0);
    for (std::int64_t i = 0; i < n; ++i)
#pragma omp simd
      for (std::int64_t j = 0; j < jn; ++j) {
        const std::int64_t k = i * inner + j;
        s[j] += kLog ? static_cast<double>(g[k]) : static_cast<double>(g[k]) * y[k];
      }
    T st[kColumns];
    for (std::int64_t j = 0; j < jn; ++j) st[j] = static_cast<T>(s[j]);
    for (std::int64_t i = 0; i < n; ++i)
#pragma omp simd
      for (std::int64_t j = 0; j < jn; ++j) {
        const std::int64_t k = i * inner + j;
        if constexpr (kLog)
          dx[k] = g[k] - std::exp(y[k]) * st[j];
        else
          dx[k] = y[k] * (g[k] - st[j]);
      }
  }
};

template <class T, bool kLog>
void softmax_backward(const Lines& l, const T* y, const T* g, T* dx) {
  const sdk::VectorIsa isa = sdk::vector_isa();
  if (l.inner == 1) {
    for_each_block(l, [&](std::int64_t row, std::int64_t, std::int64_t) {
      const std::int64_t b = row * l.n;
      sdk::run_for_isa<BackwardRow<T, kLog>>(isa, y + b, g + b, dx + b, l.n);
    });
    return;
  }
  for_each_block(l, [&](std::int64_t o, std::int64_t j0, std::int64_t jn) {
    const std::int64_t b = o * l.n * l.inner + j0;
    sdk::run_for_isa<BackwardBlock<T, kLog>>(isa, y + b, g + b, dx + b, l.n, l.inner, jn);
  });
}

template <bool kLog>
class Softmax final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    sdk::expect_contiguous(ctx, x, "x");
    const Lines l = lines_of(ctx, x.shape());
    Tensor y = sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      Tensor out = Tensor::empty(x.shape(), x.dtype());
      softmax_forward<T, kLog>(l, x.data<T>(), out.data<T>());
      return out;
    });
    if (ctx.any_input_needs_grad()) ctx.save_for_backward({y});  // the gradient reads the output only
    return {y};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Tensor& y = ctx.saved_tensors()[0];
    const Lines l = lines_of(ctx, y.shape());
    const Tensor g = grads[0].contiguous();
    return {sdk::dispatch_floating(g.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      Tensor dx = Tensor::empty(y.shape(), y.dtype());
      softmax_backward<T, kLog>(l, y.data<T>(), g.data<T>(), dx.data<T>());
      return dx;
    })};
  }
};

// Sample inputs for the test harness: x [4, 5], standard normal.
TensorList softmax_samples(opforge::DType dtype, std::uint64_t seed) { return {Tensor::randn({4, 5}, dtype, seed)}; }

}  // namespace

namespace opforge_ops::reduce {

void register_softmax(opforge::PluginRegistrar& registrar) {
  using opforge::AttrKind;
  using opforge::OpSchema;
  const char* axis_doc = "the axis to normalise along, negative from the end";
  registrar.add<Softmax<false>>(OpSchema("reduce.softmax")
                                    .input_names({"x"})
                                    .attr("axis", AttrKind::Int, -1, axis_doc)
                                    .describe("exp(x) / Σ exp(x) along one axis, computed without overflow")
                                    .samples(softmax_samples));
  registrar.add<Softmax<true>>(OpSchema("reduce.log_softmax")
                                   .input_names({"x"})
                                   .attr("axis", AttrKind::Int, -1, axis_doc)
                                   .describe("x - log Σ exp(x) along one axis, computed without overflow")
                                   .samples(softmax_samples));
}

}  // namespace opforge_ops::reduce
