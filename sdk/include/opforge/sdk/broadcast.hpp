// Broadcasting element-wise kernels for op authors.
//
//   Tensor out = sdk::broadcast_map2<T>(ctx, a, b, [](T x, T y) { return x + y; });
//   // backward: the gradient of each operand is sum_to(g, operand.shape())
#pragma once

#include <cstdint>
#include <type_traits>

#include "opforge/broadcast.hpp"
#include "opforge/function.hpp"
#include "opforge/sdk/parallel.hpp"

namespace opforge::sdk {

/// out[i] = f(a[i'], b[i'']) over the NumPy broadcast of a and b (any strides).
/// Same-shape contiguous operands take a flat parallel loop.
template <class T, class F>
Tensor broadcast_map2(const Context& ctx, const Tensor& a, const Tensor& b, F f, const char* name_a = "a",
                      const char* name_b = "b") {
  const Dims shape = broadcast_shapes(a.shape(), b.shape(), ctx.op_name(), name_a, name_b);
  Tensor out = Tensor::empty(shape, a.dtype());
  T* po = out.data<T>();
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  const std::int64_t n = out.numel();
  if (a.shape() == shape && b.shape() == shape && a.is_contiguous() && b.is_contiguous()) {
    parallel_for(0, n, kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) po[i] = f(pa[i], pb[i]);
    });
    return out;
  }
  if (n == 0) return out;
  const Tensor ea = a.expand(shape), eb = b.expand(shape);  // stride-0 views, no copy
  // Size-1 axes dropped and neighbours merged (a column [n, 1] times a scalar was n
  // rows of one element: 10-20x NumPy).
  const MergedAxes walk = merge_axes(shape, ea.strides(), eb.strides());
  const std::size_t r = walk.rank;
  const std::int64_t* dims = walk.size;
  const std::int64_t* sa = walk.a;
  const std::int64_t* sb = walk.b;
  if (r == 0) {
    po[0] = f(pa[0], pb[0]);
    return out;
  }
  const std::int64_t inner = dims[r - 1], rows = n / inner;
  const std::int64_t ia = sa[r - 1], ib = sb[r - 1];
  parallel_for(0, rows, std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(inner, 1)),
               [&](std::int64_t lo, std::int64_t hi) {
                 for (std::int64_t row = lo; row < hi; ++row) {
                   // Offsets of this row's first element in a and b.
                   std::int64_t rem = row, oa = 0, ob = 0;
                   for (std::size_t k = r - 1; k-- > 0;) {
                     const std::int64_t idx = rem % dims[k];
                     rem /= dims[k];
                     oa += idx * sa[k];
                     ob += idx * sb[k];
                   }
                   T* o = po + row * inner;
                   // Strides of 0 or 1 as constants, so that the loop vectorises (a
                   // runtime stride of 0, a column broadcast along a row, kept it scalar).
                   auto run = [&](auto sa_c, auto sb_c) {
                     constexpr std::int64_t SA = decltype(sa_c)::value, SB = decltype(sb_c)::value;
                     const std::int64_t da = SA >= 0 ? SA : ia, db = SB >= 0 ? SB : ib;
                     const T* xa = pa + oa;
                     const T* xb = pb + ob;
                     for (std::int64_t j = 0; j < inner; ++j) o[j] = f(xa[j * da], xb[j * db]);
                   };
                   using Zero = std::integral_constant<std::int64_t, 0>;
                   using One = std::integral_constant<std::int64_t, 1>;
                   using Any = std::integral_constant<std::int64_t, -1>;
                   if (ia == 1 && ib == 0)
                     run(One{}, Zero{});
                   else if (ia == 0 && ib == 1)
                     run(Zero{}, One{});
                   else if (ia == 1 && ib == 1)
                     run(One{}, One{});
                   else
                     run(Any{}, Any{});
                 }
               });
  return out;
}

}  // namespace opforge::sdk
