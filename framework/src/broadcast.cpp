#include "opforge/broadcast.hpp"

#include <cstring>

#include "strided.hpp"
#include "tensor_impl.hpp"

namespace opforge {

Dims broadcast_shapes(const Dims& a, const Dims& b, const char* op, const char* name_a, const char* name_b) {
  const std::size_t r = std::max(a.size(), b.size());
  Dims out;
  out.resize(r);
  for (std::size_t i = 0; i < r; ++i) {
    // Axis i counted from the end.
    const std::int64_t sa = i < a.size() ? a[a.size() - 1 - i] : 1;
    const std::int64_t sb = i < b.size() ? b[b.size() - 1 - i] : 1;
    OPFORGE_CHECK(sa == sb || sa == 1 || sb == 1, ShapeError, op, ": argument '", name_a, "' of shape ", a,
                  " and argument '", name_b, "' of shape ", b, " do not broadcast: axis -", i + 1, " has sizes ", sa,
                  " and ", sb, " (sizes must be equal, or one of them 1)");
    out[r - 1 - i] = sa == 1 ? sb : sa;
  }
  return out;
}

namespace {

template <class T, class Acc>
void sum_into(const TensorImpl& g, TensorImpl& out, const Dims& out_strides_in_g_layout) {
  // out (of dtype Acc) is contiguous and zeroed; walk g and add each element to
  // the element of out it was broadcast from (stride 0 along summed axes).
  Acc* o = static_cast<Acc*>(out.data());
  const T* src = static_cast<const T*>(g.data());
  for (std::int64_t s : g.shape)
    if (s == 0) return;
  // Size-1 axes dropped and neighbours merged (a [n, 1] gradient summed to a scalar
  // walked n rows of one element: 5x PyTorch's time).
  for_each_run(merge_axes(g.shape, g.strides, out_strides_in_g_layout),
               [&](std::int64_t goff, std::int64_t ooff, std::int64_t inner, std::int64_t gs, std::int64_t os) {
                 if (os == 0 && gs == 1) {
                   // Four independent sums: one chain ran at one addition per add latency
                   // (a [2048, 2048] -> [2048, 1] reduction took 2-3x PyTorch's time).
                   const T* p = src + goff;
                   Acc a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                   std::int64_t j = 0;
                   for (; j + 4 <= inner; j += 4) {
                     a0 += p[j];
                     a1 += p[j + 1];
                     a2 += p[j + 2];
                     a3 += p[j + 3];
                   }
                   for (; j < inner; ++j) a0 += p[j];
                   o[ooff] += (a0 + a1) + (a2 + a3);
                 } else if (os == 0) {
                   Acc acc = 0;
                   for (std::int64_t j = 0; j < inner; ++j) acc += src[goff + j * gs];
                   o[ooff] += acc;
                 } else {
                   for (std::int64_t j = 0; j < inner; ++j) o[ooff + j * os] += src[goff + j * gs];
                 }
               });
}

}  // namespace

Tensor sum_to(const Tensor& grad, const Dims& shape) {
  OPFORGE_CHECK(grad.defined(), ValueError, "sum_to: argument 'grad' is undefined");
  if (grad.shape() == shape) return grad;
  const Dims& gs = grad.shape();
  OPFORGE_CHECK(shape.size() <= gs.size(), ShapeError, "sum_to: cannot reduce a gradient of shape ", gs, " to ",
                shape, " (more axes)");
  const std::size_t lead = gs.size() - shape.size();
  const Dims out_contig = contiguous_strides(shape);
  Dims strides_in_g;  // for each axis of grad: the out stride, 0 where summed
  strides_in_g.resize(gs.size());
  for (std::size_t i = 0; i < gs.size(); ++i) {
    if (i < lead) continue;  // leading axes: summed (stride 0)
    const std::int64_t s = shape[i - lead];
    OPFORGE_CHECK(s == gs[i] || s == 1, ShapeError, "sum_to: cannot reduce a gradient of shape ", gs, " to ", shape,
                  ": axis ", i, " has size ", gs[i], ", the target ", s);
    strides_in_g[i] = (s == gs[i]) ? out_contig[i - lead] : 0;
  }
  OPFORGE_CHECK(is_floating(grad.dtype()), DTypeError, "sum_to: argument 'grad': expected dtype float32 or float64, got ",
                dtype_name(grad.dtype()));
  // Sums in float64 for both dtypes: a float32 running sum stops growing at
  // 2^24 (a broadcast scalar's gradient over 2^25 ones came out as 2^24).
  Tensor out = Tensor::zeros(shape, DType::Float64);
  if (grad.dtype() == DType::Float64) {
    sum_into<double, double>(*grad.unsafe_impl(), *out.unsafe_impl(), strides_in_g);
    return out;
  }
  sum_into<float, double>(*grad.unsafe_impl(), *out.unsafe_impl(), strides_in_g);
  return out.to(DType::Float32);
}

}  // namespace opforge
