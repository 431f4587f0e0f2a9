// Views (strided tensors over shared storage), adopted memory, in-place writes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "cached_op.hpp"
#include "node.hpp"
#include "opforge/tensor.hpp"
#include "strided.hpp"
#include "tensor_impl.hpp"

namespace opforge {

bool compute_contiguous(const Dims& shape, const Dims& strides) {
  std::int64_t expected = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 1) continue;
    if (shape[i] == 0) return true;
    if (strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

namespace {

std::int64_t normalize_axis(const char* what, std::int64_t axis, std::int64_t rank, const Dims& shape,
                           const char* arg = "axis") {
  OPFORGE_CHECK(axis >= -rank && axis < rank, IndexError, "Tensor::", what, ": argument '", arg,
                "': expected an axis in [", -rank, ", ", rank, ") for a tensor of shape ", shape, ", got ", axis);
  return axis < 0 ? axis + rank : axis;
}

// A new impl over the same storage with the given layout.
Tensor make_view(const TensorImpl& base, const Dims& shape, const Dims& strides, std::int64_t offset) {
  TensorImplPtr t = new_tensor_impl();
  t->dtype = base.dtype;
  t->storage = base.storage;
  t->shape = shape;
  t->strides = strides;
  t->offset = offset;
  // Every caller passes a shape whose count fits int64: a view keeps or shrinks
  // its base's count, except expand, which checks it (and reshape/view, whose
  // target infer_shape checks).
  t->numel = shape.product();
  t->contiguous = compute_contiguous(shape, strides);
  return Tensor(std::move(t));
}

// PyTorch's rule for when a reshape can be a view: each run of input axes that
// is contiguous in memory must map onto a run of output axes with the same
// number of elements. Returns false when it cannot.
bool view_strides(const Dims& old_shape, const Dims& old_strides, const Dims& new_shape, Dims& new_strides) {
  new_strides.resize(new_shape.size());
  if (old_shape.product() == 0 || old_shape.empty()) {
    new_strides = contiguous_strides(new_shape);
    return true;
  }
  std::int64_t view_d = static_cast<std::int64_t>(new_shape.size()) - 1;
  std::int64_t chunk_base_stride = old_strides.back();
  std::int64_t tensor_numel = 1, view_numel = 1;
  for (std::int64_t tensor_d = static_cast<std::int64_t>(old_shape.size()) - 1; tensor_d >= 0; --tensor_d) {
    tensor_numel *= old_shape[tensor_d];
    if (tensor_d == 0 || (old_shape[tensor_d - 1] != 1 &&
                          old_strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        new_strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (tensor_d > 0) {
        chunk_base_stride = old_strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

// " element" or " elements", after a count in a message.
const char* elements(std::int64_t n) { return n == 1 ? " element" : " elements"; }

Dims infer_shape(const char* what, const Dims& shape, std::int64_t numel, const Dims& from) {
  Dims out = shape;
  std::int64_t known = 1;
  int infer = -1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      OPFORGE_CHECK(infer < 0, ShapeError, "Tensor::", what, ": argument 'shape': only one entry may be -1, got ",
                    shape);
      infer = static_cast<int>(i);
    } else {
      OPFORGE_CHECK(shape[i] >= 0, ShapeError, "Tensor::", what, ": argument 'shape': sizes must be >= 0 or -1, got ",
                    shape);
      OPFORGE_CHECK(!__builtin_mul_overflow(known, shape[i], &known), ShapeError, "Tensor::", what,
                    ": cannot reshape ", from, " (", numel, elements(numel), ") into ", shape,
                    " (the product of its sizes overflows int64)");
    }
  }
  if (infer >= 0) {
    OPFORGE_CHECK(known != 0 && numel % known == 0, ShapeError, "Tensor::", what, ": cannot reshape ", from, " (",
                  numel, elements(numel), ") into ", shape);
    out[static_cast<std::size_t>(infer)] = numel / known;
  }
  // No overflow here: the given sizes' product was checked above, and an
  // inferred size makes the product at most numel.
  OPFORGE_CHECK(out.product() == numel, ShapeError, "Tensor::", what, ": cannot reshape ", from, " (", numel,
                elements(numel), ") into ", shape, " (", out.product(), elements(out.product()), ")");
  return out;
}

// In memory order (for_each_run_by_memory): a transposed view is filled row by
// row of its memory, not a cache line an element (4000 x 4000 float64: 31-47 ms,
// where PyTorch took 12-16).
template <class T>
void fill_strided(const TensorImpl& t, T v) {
  T* d = static_cast<T*>(t.data());
  for_each_run_by_memory(t.shape, t.strides, t.strides,
                         [&](std::int64_t o, std::int64_t, std::int64_t n, std::int64_t step, std::int64_t) {
                           if (step == 1) std::fill(d + o, d + o + n, v);
                           else
                             for (std::int64_t j = 0; j < n; ++j) d[o + j * step] = v;
                         });
}

}  // namespace

// Whether a view of this tensor must be recorded in the graph: then the view
// methods run the shape plugin's differentiable ops (which make the same views).
bool Tensor::check_view_allowed(const char* what) const {
  check_defined(what);
  return grad_enabled() && (impl_->requires_grad || impl_->grad_fn);
}

Tensor Tensor::transpose(std::int64_t axis0, std::int64_t axis1) const {
  if (check_view_allowed("transpose"))
    return OPFORGE_CACHED_OP("shape.transpose")({*this}, {{"axis0", Attr(axis0)}, {"axis1", Attr(axis1)}});
  const std::int64_t r = dim();
  const auto a = static_cast<std::size_t>(normalize_axis("transpose", axis0, r, impl_->shape, "axis0"));
  const auto b = static_cast<std::size_t>(normalize_axis("transpose", axis1, r, impl_->shape, "axis1"));
  Dims shape = impl_->shape, strides = impl_->strides;
  std::swap(shape[a], shape[b]);
  std::swap(strides[a], strides[b]);
  return make_view(*impl_, shape, strides, impl_->offset);
}

Tensor Tensor::permute(const Dims& order_in) const {
  if (check_view_allowed("permute")) return OPFORGE_CACHED_OP("shape.permute")({*this}, {{"order", Attr(order_in)}});
  const std::int64_t r = dim();
  Dims order = order_in;  // [] reverses the axes, as op("shape.permute") does
  if (order.empty())
    for (std::int64_t k = r - 1; k >= 0; --k) order.push_back(k);
  OPFORGE_CHECK(static_cast<std::int64_t>(order.size()) == r, ShapeError,
                "Tensor::permute: argument 'order': expected ", r, " axes (one per axis of ", impl_->shape, "), got ",
                order);
  Dims shape, strides;
  shape.resize(order.size());
  strides.resize(order.size());
  std::uint32_t seen = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto a = static_cast<std::size_t>(normalize_axis("permute", order[i], r, impl_->shape, "order"));
    OPFORGE_CHECK(!((seen >> a) & 1u), ShapeError, "Tensor::permute: argument 'order': axis ", a,
                  " appears twice in ", order);
    seen |= 1u << a;
    shape[i] = impl_->shape[a];
    strides[i] = impl_->strides[a];
  }
  return make_view(*impl_, shape, strides, impl_->offset);
}

Tensor Tensor::slice(std::int64_t axis, std::int64_t start, std::int64_t stop, std::int64_t step) const {
  if (check_view_allowed("slice"))
    return OPFORGE_CACHED_OP("shape.slice")(
        {*this}, {{"axis", Attr(axis)}, {"start", Attr(start)}, {"stop", Attr(stop)}, {"step", Attr(step)}});
  const auto a = static_cast<std::size_t>(normalize_axis("slice", axis, dim(), impl_->shape));
  OPFORGE_CHECK(step >= 1, ValueError, "Tensor::slice: argument 'step': expected >= 1, got ", step);
  const std::int64_t n = impl_->shape[a];
  auto clamp = [n](std::int64_t v) { return std::min(std::max(v < 0 ? v + n : v, std::int64_t{0}), n); };
  const std::int64_t lo = clamp(start), hi = std::max(clamp(stop), lo);
  Dims shape = impl_->shape, strides = impl_->strides;
  shape[a] = hi == lo ? 0 : (hi - lo - 1) / step + 1;  // no overflow for any step
  // With two or more elements, step < n and the stride stays inside the base's span.
  if (shape[a] > 1) strides[a] = impl_->strides[a] * step;
  return make_view(*impl_, shape, strides, impl_->offset + lo * impl_->strides[a]);
}

Tensor Tensor::select(std::int64_t axis, std::int64_t index) const {
  if (check_view_allowed("select")) {
    const std::int64_t r = dim();
    const std::int64_t a = normalize_axis("select", axis, r, impl_->shape);
    const std::int64_t n = impl_->shape[static_cast<std::size_t>(a)];
    OPFORGE_CHECK(index >= -n && index < n, IndexError, "Tensor::select: argument 'index': expected an index in [",
                  -n, ", ", n, ") along axis ", a, " of ", impl_->shape, ", got ", index);
    const std::int64_t i = index < 0 ? index + n : index;
    return OPFORGE_CACHED_OP("shape.squeeze")({slice(a, i, i + 1)}, {{"axes", Attr(Dims{a})}});
  }
  const auto a = static_cast<std::size_t>(normalize_axis("select", axis, dim(), impl_->shape));
  const std::int64_t n = impl_->shape[a];
  OPFORGE_CHECK(index >= -n && index < n, IndexError, "Tensor::select: argument 'index': expected an index in [", -n,
                ", ", n, ") along axis ", a, " of ", impl_->shape, ", got ", index);
  const std::int64_t i = index < 0 ? index + n : index;
  Dims shape, strides;
  for (std::size_t k = 0; k < impl_->shape.size(); ++k) {
    if (k == a) continue;
    shape.push_back(impl_->shape[k]);
    strides.push_back(impl_->strides[k]);
  }
  return make_view(*impl_, shape, strides, impl_->offset + i * impl_->strides[a]);
}

Tensor Tensor::view(const Dims& shape) const {
  const bool record = check_view_allowed("view");
  const Dims target = infer_shape("view", shape, impl_->numel, impl_->shape);
  Dims strides;
  OPFORGE_CHECK(view_strides(impl_->shape, impl_->strides, target, strides), ShapeError, "Tensor::view: a tensor of ",
                "shape ", impl_->shape, " and strides ", impl_->strides, " cannot be viewed as ", target,
                " without a copy; use reshape() (which copies when it must) or contiguous() first");
  if (record) return OPFORGE_CACHED_OP("shape.reshape")({*this}, {{"shape", Attr(target)}});
  return make_view(*impl_, target, strides, impl_->offset);
}

Tensor Tensor::reshape(const Dims& shape) const {
  if (check_view_allowed("reshape")) return OPFORGE_CACHED_OP("shape.reshape")({*this}, {{"shape", Attr(shape)}});
  const Dims target = infer_shape("reshape", shape, impl_->numel, impl_->shape);
  Dims strides;
  if (view_strides(impl_->shape, impl_->strides, target, strides)) return make_view(*impl_, target, strides, impl_->offset);
  const Tensor c = contiguous();
  return make_view(*c.impl_, target, contiguous_strides(target), c.impl_->offset);
}

Tensor Tensor::expand(const Dims& shape) const {
  if (check_view_allowed("expand")) return OPFORGE_CACHED_OP("shape.expand")({*this}, {{"shape", Attr(shape)}});
  const std::size_t r = impl_->shape.size();
  OPFORGE_CHECK(shape.size() >= r, ShapeError, "Tensor::expand: argument 'shape': expected at least ", r,
                " axes to expand ", impl_->shape, ", got ", shape);
  Dims strides;
  strides.resize(shape.size());
  const std::size_t lead = shape.size() - r;
  Dims target = shape;  // -1 keeps an existing axis, as op("shape.expand") does
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      OPFORGE_CHECK(shape[i] >= 0, ShapeError,
                    "Tensor::expand: argument 'shape': new leading axes must have sizes >= 0, got ", shape);
      strides[i] = 0;
      continue;
    }
    const std::int64_t have = impl_->shape[i - lead];
    if (shape[i] == -1) target[i] = have;
    OPFORGE_CHECK(target[i] >= 0, ShapeError, "Tensor::expand: argument 'shape': sizes must be >= 0 or -1, got ",
                  shape);
    OPFORGE_CHECK(have == target[i] || have == 1, ShapeError, "Tensor::expand: cannot expand ", impl_->shape, " to ",
                  shape, ": axis ", i, " has size ", have, " (only size-1 axes can be expanded)");
    strides[i] = have == target[i] ? impl_->strides[i - lead] : 0;
  }
  std::int64_t count = 0;
  OPFORGE_CHECK(checked_product(target, count), ShapeError, "Tensor::expand: argument 'shape': ", shape,
                " has more elements than int64 can count (the product of its sizes overflows)");
  return make_view(*impl_, target, strides, impl_->offset);
}

Tensor Tensor::contiguous() const {
  check_defined("contiguous");
  if (impl_->contiguous) return *this;
  // Recorded: a differentiable copy (x + (-0) makes a new contiguous tensor whose
  // gradient is the identity).
  // -0.0, not 0.0: x + -0.0 is x for every x, where -0.0 + 0.0 gave +0.0.
  if (check_view_allowed("contiguous"))
    return OPFORGE_CACHED_OP("elementwise.add")({*this, Tensor::scalar(-0.0, impl_->dtype)});
  return clone();
}

Tensor Tensor::from_blob(void* data, const Dims& shape, DType dtype, Deleter deleter, void* context) {
  return from_blob(data, shape, contiguous_strides(shape), dtype, deleter, context);
}

Tensor Tensor::from_blob(void* data, const Dims& shape, const Dims& strides, DType dtype, Deleter deleter,
                         void* context) {
  return adopt_memory(data, shape, strides, dtype, deleter, context, reinterpret_cast<const void*>(deleter));
}


Tensor adopt_memory(void* data, const Dims& shape, const Dims& strides, DType dtype, Tensor::Deleter deleter,
                    void* context, const void* deleter_code, bool check_bools) {
  OPFORGE_CHECK(strides.size() == shape.size(), ShapeError, "Tensor::from_blob: argument 'strides': expected ",
                shape.size(), " strides for shape ", shape, ", got ", strides);
  for (std::size_t i = 0; i < shape.size(); ++i)
    OPFORGE_CHECK(shape[i] >= 0 && strides[i] >= 0, ShapeError, "Tensor::from_blob: shape ", shape, " and strides ",
                  strides, " must be >= 0");
  std::int64_t numel = 0;
  OPFORGE_CHECK(checked_product(shape, numel), ShapeError, "Tensor::from_blob: argument 'shape': ", shape,
                " has more elements than int64 can count (the product of its sizes overflows)");
  OPFORGE_CHECK(data != nullptr || numel == 0, ValueError,
                "Tensor::from_blob: argument 'data': expected a pointer, got null for ", numel, " elements");
  // Elements reachable from data, and their bytes: the storage's size.
  std::int64_t span = 0, bytes = 0;
  bool overflow = !element_span(shape, strides, span);
  overflow = __builtin_mul_overflow(span, static_cast<std::int64_t>(itemsize(dtype)), &bytes) || overflow;
  OPFORGE_CHECK(numel == 0 || !overflow, ShapeError, "Tensor::from_blob: shape ", shape, " with strides ", strides,
                " reaches more than 2^63 bytes past 'data'");
  // Bool kernels read a byte as 0 or 1 (a mask of 2 and 255 summed to 258, as a
  // float64 tensor). Checked before anything is adopted: a refusal calls no deleter.
  if (check_bools && dtype == DType::Bool && numel > 0) {
    const auto* b = static_cast<const std::uint8_t*>(data);
    for_each_offset(shape, strides, [&](std::int64_t off) {
      if (b[off] > 1)
        throw DTypeError(detail::concat("Tensor::from_blob: argument 'data': bool elements must hold 0 or 1 in each "
                                        "byte; the byte ", off, " past 'data' is ", int(b[off]),
                                        " (make it a 0/1 mask first, or adopt the bytes as another dtype)"));
    });
  }
  TensorImplPtr t = new_tensor_impl();
  t->dtype = dtype;
  t->shape = shape;
  t->strides = strides;
  t->numel = numel;
  t->contiguous = compute_contiguous(shape, strides);
  t->storage = Storage::adopt(data, static_cast<std::size_t>(bytes), deleter, context, deleter_code);
  return Tensor(std::move(t));
}

// ---- in place -------------------------------------------------------------------

namespace {

// "" when no two elements of a view share memory, else why they may. Views made
// by transpose, slice, select and reshape never overlap; expand() (stride 0)
// does, and so can from_blob with strides of the caller's choosing.
std::string internal_overlap(const Dims& shape, const Dims& strides) {
  // (|stride|, size) of the axes longer than 1, in an array: no heap traffic on
  // the in-place path (an optimizer's step on a view).
  std::pair<std::int64_t, std::int64_t> axes[kMaxDims];
  int n = 0;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] == 0) return {};
    if (shape[k] < 2) continue;
    if (strides[k] == 0)
      return "axis " + std::to_string(k) + " has size " + std::to_string(shape[k]) +
             " and stride 0 (it repeats one element, as a view made by expand() or a from_blob tensor with a zero "
             "stride does)";
    axes[n++] = {strides[k] < 0 ? -strides[k] : strides[k], shape[k]};
  }
  std::sort(axes, axes + n);
  std::int64_t extent = 0;  // the farthest element reached by the axes with smaller strides
  bool separated = true;
  for (int i = 0; i < n; ++i) {
    const auto [stride, size] = axes[i];
    if (stride <= extent) separated = false;
    extent += (size - 1) * stride;
  }
  if (separated) return {};
  // Strides that interleave (possible through from_blob): compare every offset.
  std::vector<std::int64_t> offsets;
  for_each_offset(shape, strides, [&](std::int64_t off) { offsets.push_back(off); });
  std::sort(offsets.begin(), offsets.end());
  if (std::adjacent_find(offsets.begin(), offsets.end()) == offsets.end()) return {};
  return "its strides " + strides.to_string() + " reach one memory location from two elements";
}

// Whether two tensors' memory may meet: the same storage, or byte ranges that
// cross (two from_blob tensors over one buffer have storages of their own).
// A source that may is read from a copy first.
bool shares_memory(const TensorImpl& a, const TensorImpl& b) noexcept {
  if (a.storage == b.storage) return true;
  if (a.numel == 0 || b.numel == 0) return false;
  auto range = [](const TensorImpl& t, std::uintptr_t& lo, std::uintptr_t& hi) {
    std::int64_t span = 0;
    element_span(t.shape, t.strides, span);  // a tensor that exists: no overflow
    lo = reinterpret_cast<std::uintptr_t>(t.data());
    hi = lo + static_cast<std::uintptr_t>(span) * itemsize(t.dtype);
  };
  std::uintptr_t alo, ahi, blo, bhi;
  range(a, alo, ahi);
  range(b, blo, bhi);
  return alo < bhi && blo < ahi;
}

}  // namespace

void Tensor::check_inplace_allowed(const char* what) const {
  check_defined(what);
  if (!impl_->contiguous) {
    const std::string overlap = internal_overlap(impl_->shape, impl_->strides);
    OPFORGE_CHECK(overlap.empty(), ValueError, "Tensor::", what, ": the tensor (", describe(),
                  ") has elements that share memory: ", overlap,
                  "; an in-place write would land on one location several times. Write to a tensor of its own "
                  "(clone() or contiguous()) instead");
  }
  if (!grad_enabled()) return;
  OPFORGE_CHECK(!impl_->grad_fn, AutogradError, "Tensor::", what, ": the tensor is the output of '",
                impl_->grad_fn->name(),
                "' and part of a recorded graph; in-place changes would corrupt its backward. Use an op that "
                "returns a new tensor, or detach() first (clone(), contiguous() and to() of a tensor that "
                "requires grad are recorded too: detach().clone() is a copy of its own to write into)");
  OPFORGE_CHECK(!impl_->requires_grad, AutogradError, "Tensor::", what,
                ": the tensor is a leaf that requires grad; changing it in place would corrupt the graphs that "
                "use it. Update parameters under a NoGradGuard");
}

// In-place writes are not recorded in the graph: a source that requires grad
// would have its gradient stop here without a word, so it is refused while
// grad mode is on (as the destination is in check_inplace_allowed()).
void Tensor::check_inplace_source(const Tensor& src, const char* what, const char* arg) const {
  if (!grad_enabled() || !src.defined()) return;
  OPFORGE_CHECK(!src.requires_grad(), AutogradError, "Tensor::", what, ": argument '", arg,
                "' requires grad, and in-place writes are not recorded in the graph, so no gradient would reach it "
                "from this tensor. Use an op that returns a new tensor (a + b, or clone()), or pass it detach()ed to "
                "copy its value alone");
}

Tensor& Tensor::fill_(double value) {
  check_inplace_allowed("fill_");
  check_storable(impl_->dtype, value, "Tensor::fill_");
  switch (impl_->dtype) {
    case DType::Float32: fill_strided<float>(*impl_, static_cast<float>(value)); break;
    case DType::Float64: fill_strided<double>(*impl_, value); break;
    case DType::Int64: fill_strided<std::int64_t>(*impl_, static_cast<std::int64_t>(value)); break;
    case DType::Bool: fill_strided<bool>(*impl_, value != 0.0); break;
  }
  bump_version();
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace_allowed("copy_");
  check_inplace_source(src, "copy_", "src");
  OPFORGE_CHECK(src.defined() && src.shape() == impl_->shape, ShapeError,
                "Tensor::copy_: argument 'src': expected shape ", impl_->shape, ", got ", src.describe());
  check_convertible(impl_->dtype, *src.impl_, "Tensor::copy_");
  // A source overlapping this tensor's memory is read from a copy first.
  if (shares_memory(*src.impl_, *impl_)) copy_elements(*impl_, *src.detach().clone().impl_);
  else copy_elements(*impl_, *src.impl_);
  bump_version();
  return *this;
}

namespace {
// x + a y; for int64 in two's complement, wrapping on overflow as NumPy and
// PyTorch do (signed overflow is undefined behaviour in C++: computed unsigned).
template <class T>
inline T multiply_add(T x, T a, T y) noexcept {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(x) + static_cast<U>(a) * static_cast<U>(y));
  } else {
    return x + a * y;
  }
}

template <class T>
inline T multiply(T x, T f) noexcept {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(x) * static_cast<U>(f));
  } else {
    return x * f;
  }
}

// add_'s alpha or mul_'s factor for this tensor's dtype: any value for float32
// and float64; a whole number in int64's range for int64 (a fraction would be
// truncated: refused, as PyTorch does); bool has no arithmetic.
void check_inplace_scale(DType dtype, double value, const char* fn, const char* arg) {
  if (is_floating(dtype)) return;
  OPFORGE_CHECK(dtype == DType::Int64, DTypeError, "Tensor::", fn, ": expected dtype float32, float64 or int64, got ",
                dtype_name(dtype), "; convert the tensor first with .to()");
  OPFORGE_CHECK(std::trunc(value) == value && value >= -9223372036854775808.0 && value < 9223372036854775808.0,
                ValueError, "Tensor::", fn, ": argument '", arg, "': expected a whole number in int64's range for an "
                "int64 tensor, got ", value, "; convert the tensor to a floating dtype first with .to()");
}
}  // namespace

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_inplace_allowed("add_");
  check_inplace_source(other, "add_", "other");
  OPFORGE_CHECK(other.defined() && other.shape() == impl_->shape, ShapeError,
                "Tensor::add_: argument 'other': expected shape ", impl_->shape, " (this tensor's), got ",
                other.describe());
  OPFORGE_CHECK(other.dtype() == impl_->dtype, DTypeError, "Tensor::add_: argument 'other': expected dtype ",
                dtype_name(impl_->dtype), " (this tensor's), got ", dtype_name(other.dtype()),
                "; convert it first with other.to()");
  check_inplace_scale(impl_->dtype, alpha, "add_", "alpha");
  // Both walked in this tensor's memory order, other read through its own strides
  // (a copy when it shares this tensor's memory). Where other's step along the
  // innermost axis of that order is neither 0 nor 1 (it is laid out as a transpose
  // of this tensor), it would be read a cache line an element: it is first copied
  // into this tensor's memory order (the core's tiled copy), then read in sequence.
  // (Contiguous += transposed, n = 1000 float64: 1.14 ms read in place, 0.74 with
  // the copy.) A contiguous source is not copied: the walk follows its order instead,
  // writing this tensor with a stride (transposed += contiguous, n = 4000 float64,
  // one thread: 22.6 ms, where the copy into this tensor's order took 24.8).
  Tensor o = shares_memory(*other.impl_, *impl_) ? other.detach().clone() : other;
  Dims shape = impl_->shape, dst_strides = impl_->strides;
  int order[kMaxDims];
  const int r = memory_order(shape, dst_strides, order);
  bool by_source = false;
  if (r > 0) {
    const auto inner = static_cast<std::size_t>(order[r - 1]);
    const std::int64_t step = o.impl_->strides[inner];
    const bool crosswise = step != 0 && step != 1 && step != -1;  // other laid out as a transpose of this
    if (crosswise && o.is_contiguous()) {
      by_source = true;
    } else if (crosswise) {
      Dims perm;
      for (int i = 0; i < r; ++i) perm.push_back(order[i]);
      for (std::size_t k = 0; k < shape.size(); ++k)
        if (shape[k] == 1) perm.push_back(static_cast<std::int64_t>(k));
      o = o.detach().permute(perm).contiguous();
      Dims ps, pd;
      for (std::int64_t k : perm) {
        ps.push_back(shape[static_cast<std::size_t>(k)]);
        pd.push_back(dst_strides[static_cast<std::size_t>(k)]);
      }
      shape = ps;
      dst_strides = pd;
    }
  }
  auto run = [&](auto* dst, const auto* src) {
    using T = std::remove_pointer_t<decltype(dst)>;
    const T a = static_cast<T>(alpha);
    auto add = [&](std::int64_t od, std::int64_t os, std::int64_t n, std::int64_t sd, std::int64_t ss) {
      T* __restrict p = dst + od;
      const T* __restrict q = src + os;
      if (sd == 1 && ss == 1)
        for (std::int64_t j = 0; j < n; ++j) p[j] = multiply_add(p[j], a, q[j]);
      else
        for (std::int64_t j = 0; j < n; ++j) p[j * sd] = multiply_add(p[j * sd], a, q[j * ss]);
    };
    if (by_source)  // the source's order: the same runs with the roles of the two offsets swapped
      for_each_run_by_memory(shape, o.impl_->strides, dst_strides,
                             [&](std::int64_t os, std::int64_t od, std::int64_t n, std::int64_t ss, std::int64_t sd) {
                               add(od, os, n, sd, ss);
                             });
    else
      for_each_run_by_memory(shape, dst_strides, o.impl_->strides, add);
  };
  if (impl_->dtype == DType::Float32) run(static_cast<float*>(impl_->data()), o.data<float>());
  else if (impl_->dtype == DType::Int64) run(static_cast<std::int64_t*>(impl_->data()), o.data<std::int64_t>());
  else run(static_cast<double*>(impl_->data()), o.data<double>());
  bump_version();
  return *this;
}

Tensor& Tensor::mul_(double factor) {
  check_inplace_allowed("mul_");
  check_inplace_scale(impl_->dtype, factor, "mul_", "factor");
  auto run = [&](auto* dst) {
    using T = std::remove_pointer_t<decltype(dst)>;
    const T f = static_cast<T>(factor);
    for_each_run_by_memory(impl_->shape, impl_->strides, impl_->strides,
                           [&](std::int64_t o, std::int64_t, std::int64_t n, std::int64_t step, std::int64_t) {
                             T* __restrict p = dst + o;
                             if (step == 1)
                               for (std::int64_t j = 0; j < n; ++j) p[j] = multiply(p[j], f);
                             else
                               for (std::int64_t j = 0; j < n; ++j) p[j * step] = multiply(p[j * step], f);
                           });
  };
  if (impl_->dtype == DType::Float32) run(static_cast<float*>(impl_->data()));
  else if (impl_->dtype == DType::Int64) run(static_cast<std::int64_t*>(impl_->data()));
  else run(static_cast<double*>(impl_->data()));
  bump_version();
  return *this;
}

}  // namespace opforge
