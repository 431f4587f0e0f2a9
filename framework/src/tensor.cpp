#include "opforge/tensor.hpp"

#include "opforge/function.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "cached_op.hpp"
#include "node.hpp"
#include "random_bits.hpp"
#include "refcount.hpp"
#include "strided.hpp"
#include "tensor_impl.hpp"
#include "tls.hpp"

namespace opforge {

// ---- impl lifetime ------------------------------------------------------------

// A hook may hold a tensor that has hooks of its own, which hold another, and so
// on: a chain of leaves, each hook capturing the last. Deleting the first would
// recurse down the whole chain and overflow the stack; tensors with hooks whose
// count reaches zero while another is being deleted on this thread are queued
// instead, as graph nodes are (engine.cpp). A tensor without hooks is deleted at
// once: all it holds beyond its storage is a node (queued in turn) and .grad.
namespace {
OPFORGE_TLS TensorImpl* t_pending_impls = nullptr;
OPFORGE_TLS bool t_draining_impls = false;
}  // namespace

void intrusive_ptr_add_ref(TensorImpl* t) noexcept { t->refcount.fetch_add(1, std::memory_order_relaxed); }
void intrusive_ptr_release(TensorImpl* t) noexcept {
  if (!release_is_last(t->refcount)) return;
  if (t->hooks) delete_without_recursion<TensorImpl, &TensorImpl::next_pending>(t, t_pending_impls, t_draining_impls);
  else delete t;
}

// The element count of `shape`, refusing negative sizes and sizes whose bytes
// overflow 63 bits (checked multiplies; a shape with a 0 is empty whatever the
// other sizes, unless their product alone overflows).
// `who` names the public function for the message ("Tensor::zeros"); null for
// the core's own tensors, whose shapes were checked where they came in.
static std::int64_t checked_numel(const Dims& shape, DType dtype, const char* who) {
  OPFORGE_CHECK(static_cast<int>(dtype) >= 0 && static_cast<int>(dtype) < kNumDTypes, DTypeError,
                who ? who : "Tensor", ": argument 'dtype': expected float32, float64, int64 or bool, got the value ",
                static_cast<int>(dtype), " (not a DType)");
  for (std::int64_t s : shape) {
    if (s >= 0) continue;
    if (who) throw ValueError(detail::concat(who, ": argument 'shape': expected sizes >= 0, got ", shape));
    throw ValueError(detail::concat("tensor shape ", shape, ": sizes must be >= 0"));
  }
  std::int64_t n = 0, bytes = 0;
  const bool fits =
      checked_product(shape, n) && !__builtin_mul_overflow(n, static_cast<std::int64_t>(itemsize(dtype)), &bytes);
  OPFORGE_CHECK(fits, ValueError, who ? who : "tensor", who ? ": argument 'shape': " : " shape ", shape, ": ",
                dtype_name(dtype), " data of that size does not fit in memory addresses (more than 2^63 bytes)");
  return n;
}

TensorImplPtr make_contiguous_impl(const Dims& shape, DType dtype, const char* who) {
  const std::int64_t n = checked_numel(shape, dtype, who);
  TensorImplPtr t = new_tensor_impl();
  t->dtype = dtype;
  t->shape = shape;
  // Strides written in place (no overflow: checked_numel checked the product):
  // through a temporary, the copy reloads its 8-byte stores 16 bytes at a
  // time, which store forwarding cannot serve.
  t->strides = shape;
  to_contiguous_strides(t->strides);
  t->numel = n;
  const std::size_t bytes = static_cast<std::size_t>(n) * itemsize(dtype);
  try {
    t->storage = Storage::allocate(bytes);
  } catch (const std::bad_alloc&) {
    std::ostringstream need, held;
    need << std::fixed << std::setprecision(1) << static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0);
    held << std::fixed << std::setprecision(1) << static_cast<double>(live_bytes()) / (1024.0 * 1024.0 * 1024.0);
    throw MemoryError(detail::concat("out of memory: a ", dtype_name(dtype), " tensor of shape ", shape, " needs ",
                                     bytes, " bytes (", need.str(),
                                     " GiB), which the system refused; live tensors hold ", held.str(), " GiB"));
  }
  return t;
}

TensorImplPtr alias_impl(const TensorImpl& src) {
  TensorImplPtr t = new_tensor_impl();
  t->dtype = src.dtype;
  t->contiguous = src.contiguous;
  t->offset = src.offset;
  t->numel = src.numel;
  t->shape = src.shape;
  t->strides = src.strides;
  t->storage = src.storage;
  return t;
}

// ---- printing and small helpers -------------------------------------------------

std::string Dims::to_string() const {
  std::ostringstream os;
  os << *this;
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Dims& d) {
  os << '[';
  for (std::size_t i = 0; i < d.size(); ++i) os << (i ? ", " : "") << d[i];
  return os << ']';
}

DType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "f32" || name == "float") return DType::Float32;
  if (name == "float64" || name == "f64" || name == "double") return DType::Float64;
  if (name == "int64" || name == "i64") return DType::Int64;
  if (name == "bool") return DType::Bool;
  throw ValueError("unknown dtype '" + name + "': expected one of float32, float64, int64, bool");
}

std::string DTypeSet::to_string() const {
  std::string s;
  for (int i = 0; i < kNumDTypes; ++i) {
    auto t = static_cast<DType>(i);
    if (contains(t)) s += (s.empty() ? "" : ", ") + std::string(dtype_name(t));
  }
  return s.empty() ? "none" : s;
}

void throw_error(ErrorKind kind, const std::string& msg) {
  switch (kind) {
    case ErrorKind::Shape: throw ShapeError(msg);
    case ErrorKind::DType: throw DTypeError(msg);
    case ErrorKind::Plugin: throw PluginError(msg);
    case ErrorKind::Autograd: throw AutogradError(msg);
    case ErrorKind::Value: throw ValueError(msg);
    case ErrorKind::Index: throw IndexError(msg);
    case ErrorKind::Memory: throw MemoryError(msg);
    case ErrorKind::Generic: break;
  }
  throw Error(msg);
}

namespace {

template <class T>
void fill_typed(void* p, std::int64_t n, double v) {
  T* d = static_cast<T*>(p);
  const T x = static_cast<T>(v);
  for (std::int64_t i = 0; i < n; ++i) d[i] = x;
}

void fill(TensorImpl& t, double v) {
  switch (t.dtype) {
    case DType::Float32: fill_typed<float>(t.data(), t.numel, v); break;
    case DType::Float64: fill_typed<double>(t.data(), t.numel, v); break;
    case DType::Int64: fill_typed<std::int64_t>(t.data(), t.numel, v); break;
    case DType::Bool: fill_typed<bool>(t.data(), t.numel, v); break;
  }
}

// Where element i (row-major index over the view) lies, in elements from data().
std::int64_t element_offset(const TensorImpl& t, std::int64_t linear) {
  if (t.contiguous) return linear;
  std::int64_t off = 0;
  for (std::size_t k = t.shape.size(); k-- > 0;) {
    off += (linear % t.shape[k]) * t.strides[k];
    linear /= t.shape[k];
  }
  return off;
}

// Reads element i (row-major index over the view) of any dtype as double.
double load_as_double(const TensorImpl& t, std::int64_t linear) {
  const std::int64_t off = element_offset(t, linear);
  const char* base = static_cast<const char*>(t.data());
  switch (t.dtype) {
    case DType::Float32: return reinterpret_cast<const float*>(base)[off];
    case DType::Float64: return reinterpret_cast<const double*>(base)[off];
    case DType::Int64: return static_cast<double>(reinterpret_cast<const std::int64_t*>(base)[off]);
    case DType::Bool: return reinterpret_cast<const bool*>(base)[off] ? 1.0 : 0.0;
  }
  return 0;
}

void store_from_double(TensorImpl& t, std::int64_t i, double v) {
  char* base = static_cast<char*>(t.data());
  switch (t.dtype) {
    case DType::Float32: reinterpret_cast<float*>(base)[i] = static_cast<float>(v); break;
    case DType::Float64: reinterpret_cast<double*>(base)[i] = v; break;
    case DType::Int64: reinterpret_cast<std::int64_t*>(base)[i] = static_cast<std::int64_t>(v); break;
    case DType::Bool: reinterpret_cast<bool*>(base)[i] = v != 0.0; break;
  }
}

}  // namespace

// ---- factories --------------------------------------------------------------------

Tensor Tensor::empty(const Dims& shape, DType dtype) {
  return Tensor(make_contiguous_impl(shape, dtype, "Tensor::empty"));
}

Tensor Tensor::zeros(const Dims& shape, DType dtype) {
  TensorImplPtr t = make_contiguous_impl(shape, dtype, "Tensor::zeros");
  std::memset(t->data(), 0, static_cast<std::size_t>(t->numel) * itemsize(dtype));
  return Tensor(std::move(t));
}

namespace {
// A new tensor of `shape` with every element `value` (which `dtype` holds).
Tensor filled(const Dims& shape, double value, DType dtype, const char* who) {
  TensorImplPtr t = make_contiguous_impl(shape, dtype, who);
  fill(*t, value);
  return Tensor(std::move(t));
}
}  // namespace

Tensor Tensor::ones(const Dims& shape, DType dtype) { return filled(shape, 1.0, dtype, "Tensor::ones"); }

Tensor Tensor::full(const Dims& shape, double value, DType dtype) {
  check_storable(dtype, value, "Tensor::full");
  return filled(shape, value, dtype, "Tensor::full");
}

Tensor Tensor::scalar(double value, DType dtype) {
  check_storable(dtype, value, "Tensor::scalar");
  return filled(Dims{}, value, dtype, "Tensor::scalar");
}

Tensor Tensor::from_values(const std::vector<double>& values, const Dims& shape, DType dtype) {
  const std::int64_t n = checked_numel(shape, dtype, "Tensor::from_values");
  OPFORGE_CHECK(static_cast<std::int64_t>(values.size()) == n, ShapeError,
                "Tensor::from_values: argument 'values': expected ", n,
                " values for shape ", shape, ", got ", values.size());
  if (dtype == DType::Int64) check_storable(values, "Tensor::from_values");
  TensorImplPtr t = make_contiguous_impl(shape, dtype);
  for (std::size_t i = 0; i < values.size(); ++i) store_from_double(*t, static_cast<std::int64_t>(i), values[i]);
  return Tensor(std::move(t));
}

Tensor Tensor::from_values(const std::vector<double>& values, DType dtype) {
  return from_values(values, Dims{static_cast<std::int64_t>(values.size())}, dtype);
}

namespace {
// Tensor::randn without a seed: the n-th call since manual_seed(base) uses seed
// splitmix64(base + n), far from the small seeds programs pass by hand.
std::atomic<std::uint64_t> g_seed_base{0};
std::atomic<std::uint64_t> g_seed_count{0};
}  // namespace

void manual_seed(std::uint64_t seed) {
  g_seed_base.store(seed);
  g_seed_count.store(0);
}

Tensor Tensor::randn(const Dims& shape, DType dtype) {
  const std::uint64_t n = g_seed_count.fetch_add(1);
  return randn(shape, dtype, splitmix64(g_seed_base.load() ^ 0x72616E646E2121ull) + n);
}

Tensor Tensor::randn(const Dims& shape, DType dtype, std::uint64_t seed) {
  OPFORGE_CHECK(is_floating(dtype), DTypeError, "Tensor::randn: argument 'dtype': expected float32 or float64, got ",
                dtype_name(dtype));
  TensorImplPtr t = make_contiguous_impl(shape, dtype, "Tensor::randn");
  const std::uint64_t key = splitmix64(seed ^ 0x6F70666F72676521ull);
  const std::int64_t n = t->numel;
  // Box-Muller: pair k gives elements 2k and 2k+1.
  auto gen = [&](auto* out) {
    constexpr double kTwoPi = 6.283185307179586476925286766559;
    for (std::int64_t k = 0; 2 * k < n; ++k) {
      std::uint64_t a = splitmix64(key + 2 * static_cast<std::uint64_t>(k));
      std::uint64_t b = splitmix64(key + 2 * static_cast<std::uint64_t>(k) + 1);
      double r = std::sqrt(-2.0 * std::log(uniform01(a)));
      double th = kTwoPi * uniform01(b);
      using T = std::remove_pointer_t<decltype(out)>;
      out[2 * k] = static_cast<T>(r * std::cos(th));
      if (2 * k + 1 < n) out[2 * k + 1] = static_cast<T>(r * std::sin(th));
    }
  };
  if (dtype == DType::Float32) gen(static_cast<float*>(t->data()));
  else gen(static_cast<double*>(t->data()));
  return Tensor(std::move(t));
}

// ---- metadata -------------------------------------------------------------------

void Tensor::check_defined(const char* what) const {
  if (!impl_)
    throw ValueError(std::string("Tensor::") + what + ": the tensor is undefined (" + kUndefinedTensorOrigins + ")");
}
DType Tensor::dtype() const { check_defined("dtype"); return impl_->dtype; }
const Dims& Tensor::shape() const { check_defined("shape"); return impl_->shape; }
const Dims& Tensor::strides() const { check_defined("strides"); return impl_->strides; }
std::int64_t Tensor::numel() const { check_defined("numel"); return impl_->numel; }
std::size_t Tensor::nbytes() const {
  check_defined("nbytes");
  std::uint64_t bytes = 0;
  OPFORGE_CHECK(!__builtin_mul_overflow(static_cast<std::uint64_t>(impl_->numel), itemsize(impl_->dtype), &bytes),
                ShapeError, "Tensor::nbytes: ", describe(), " has ", impl_->numel, " elements of ",
                itemsize(impl_->dtype), " bytes, more bytes than 64 bits can count");
  return static_cast<std::size_t>(bytes);
}
bool Tensor::is_contiguous() const { check_defined("is_contiguous"); return impl_->contiguous; }

std::int64_t Tensor::size(std::int64_t axis) const {
  const std::int64_t n = dim();
  OPFORGE_CHECK(axis >= -n && axis < n, IndexError, "Tensor::size: argument 'axis': expected an axis in [", -n,
                ", ", n, ") for a tensor of shape ", shape(), ", got ", axis);
  return impl_->shape[static_cast<std::size_t>(axis < 0 ? axis + n : axis)];
}

std::string Tensor::describe() const {
  if (!impl_) return "undefined";
  return std::string(dtype_name(impl_->dtype)) + impl_->shape.to_string();
}

void Tensor::check_dtype(DType expected, const char* what) const {
  check_defined(what);
  OPFORGE_CHECK(impl_->dtype == expected, DTypeError, what, ": expected dtype ", dtype_name(expected), ", got ",
                dtype_name(impl_->dtype));
}

void* Tensor::data_ptr() const { check_defined("data_ptr"); return impl_->data(); }
Storage* Tensor::storage() const { check_defined("storage"); return impl_->storage.get(); }
std::uint32_t Tensor::version() const { check_defined("version"); return impl_->storage->version.load(); }
void Tensor::bump_version() const { check_defined("bump_version"); impl_->storage->version.fetch_add(1); }

double Tensor::item() const {
  check_defined("item");
  OPFORGE_CHECK(impl_->numel == 1, ShapeError, "Tensor::item: expected a tensor with one element, got shape ",
                impl_->shape, " (", impl_->numel, " elements); reduce it first (sum(), mean()) or read the elements "
                "with to_vector()");
  return load_as_double(*impl_, 0);
}

std::vector<double> Tensor::to_vector() const {
  check_defined("to_vector");
  const std::int64_t n = impl_->numel;
  OPFORGE_CHECK(static_cast<std::uint64_t>(n) <= std::vector<double>().max_size(), MemoryError,
                "Tensor::to_vector: ", describe(), " has ", n, " elements, more than a std::vector<double> can hold; "
                "read a slice of it");
  std::vector<double> v;
  try {
    v.resize(static_cast<std::size_t>(n));
  } catch (const std::bad_alloc&) {
    throw MemoryError(detail::concat("Tensor::to_vector: ", describe(), " needs ", n * 8,
                                     " bytes as doubles, and the system could not supply them; read a slice of it"));
  }
  if (v.empty()) return v;
  Tensor out = from_blob(v.data(), impl_->shape, DType::Float64);
  copy_elements(*out.impl_, *impl_);
  return v;
}

namespace {

// to(dtype) in the graph: a copy in another floating dtype, whose gradient is
// the incoming one converted back to the input's dtype. A core op (not a
// plugin's): a conversion belongs to the tensor, like its views.
class ConvertFunction final : public Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    return {in[0].to(static_cast<DType>(ctx.attr_int(0)))};  // forward runs with grad mode off: a plain copy
  }
  TensorList backward(Context& ctx, TensorSpan g) const override { return {g[0].to(ctx.input_dtype(0))}; }
};

const OpHandle& convert_op() {
  static const OpHandle handle =
      make_op(OpSchema("tensor.to")
                  .input_names({"x"})
                  .attr("dtype", AttrKind::Int, Attr(), "the dtype to convert to (float32 or float64)")
                  .describe("x in another floating dtype; its gradient converted back"),
              std::make_unique<ConvertFunction>());
  return handle;
}

}  // namespace

Tensor Tensor::clone() const {
  // Recorded on a tensor that requires grad (x + -0.0: a new tensor with every
  // value, -0.0 included, and the identity for gradient), as PyTorch's clone().
  if (check_view_allowed("clone")) {
    // A strided tensor: contiguous() makes the recorded copy (the op call would
    // otherwise copy its input through clone() again).
    if (!impl_->contiguous) return contiguous();
    return OPFORGE_CACHED_OP("elementwise.add")({*this, Tensor::scalar(-0.0, impl_->dtype)});
  }
  TensorImplPtr t = make_contiguous_impl(impl_->shape, impl_->dtype);
  copy_elements(*t, *impl_);
  return Tensor(std::move(t));
}

Tensor Tensor::to(DType dtype) const {
  check_defined("to");
  if (dtype == impl_->dtype) return *this;
  check_convertible(dtype, *impl_, "Tensor::to");
  // Between floating dtypes, recorded on a tensor that requires grad (mixed
  // precision inside a model); to an integer or bool dtype the result has no
  // gradient, as in PyTorch.
  if (is_floating(dtype) && is_floating(impl_->dtype) && check_view_allowed("to"))
    return convert_op()({*this}, {{"dtype", static_cast<std::int64_t>(dtype)}});
  TensorImplPtr t = make_contiguous_impl(impl_->shape, dtype);
  copy_elements(*t, *impl_);
  return Tensor(std::move(t));
}

namespace {

// d (dense, row-major) = s viewed with shape and strides. Size-1 axes are dropped
// and axes that are one run in s merged, so that a slice or a batch of rows copies
// whole rows (memcpy within a dtype); where the innermost axis is strided (a
// transpose), the last two axes go in 32 x 32 tiles, whose source lines stay in L1
// while the tile's rows are written (element by element, a transpose of
// [2048, 2048] float32 took 8x NumPy's time).
template <class D, class S>
void copy_to_dense(D* d, const S* s, const Dims& shape, const Dims& strides) {
  std::int64_t sh[kMaxDims], st[kMaxDims];
  int r = 0;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] == 0) return;
    if (shape[k] == 1) continue;
    if (r > 0 && st[r - 1] == strides[k] * shape[k]) {
      sh[r - 1] *= shape[k];
      st[r - 1] = strides[k];
    } else {
      sh[r] = shape[k];
      st[r] = strides[k];
      ++r;
    }
  }
  if (r == 0) {
    d[0] = static_cast<D>(s[0]);
    return;
  }
  const std::int64_t inner = sh[r - 1], is = st[r - 1];
  // Tiles pay only where the next axis out walks the source more finely than the
  // innermost one (a transpose); a step or a broadcast (stride 0) goes row by row.
  // (A broadcast row, stride 0 outside a stride-1 row, was tiled: 2048 x 2048 float64
  // took 3.4 ms where a memcpy a row takes 1.)
  const bool tiled = r >= 2 && st[r - 2] != 0 && std::abs(st[r - 2]) < std::abs(is);
  if (!tiled) {
    for_each_outer(r - 1, sh, st, [&](std::int64_t base) {
      const S* row = s + base;
      if constexpr (std::is_same_v<D, S>) {
        if (is == 1) {
          std::memcpy(d, row, static_cast<std::size_t>(inner) * sizeof(D));
          d += inner;
          return;
        }
      }
      if (is == 0)
        std::fill(d, d + inner, static_cast<D>(row[0]));
      else
        for (std::int64_t j = 0; j < inner; ++j) d[j] = static_cast<D>(row[j * is]);
      d += inner;
    });
    return;
  }
  constexpr std::int64_t kTile = 32;
  const std::int64_t rows = sh[r - 2], rs = st[r - 2];
  for_each_outer(r - 2, sh, st, [&](std::int64_t base) {
    for (std::int64_t i0 = 0; i0 < rows; i0 += kTile) {
      const std::int64_t i1 = std::min(rows, i0 + kTile);
      for (std::int64_t j0 = 0; j0 < inner; j0 += kTile) {
        const std::int64_t j1 = std::min(inner, j0 + kTile);
        // Through a buffer: the tile's source lines are read one after another
        // (along the finer stride), then its target rows written. Reading a source
        // column per target row touched 32 lines a power-of-two stride apart in one
        // L1 set (2048 x 2048 transpose) and missed on nearly every element.
        S buf[kTile][kTile];
        for (std::int64_t j = j0; j < j1; ++j) {
          const S* col = s + base + j * is;
          for (std::int64_t i = i0; i < i1; ++i) buf[j - j0][i - i0] = col[i * rs];
        }
        for (std::int64_t i = i0; i < i1; ++i) {
          D* out = d + i * inner;
          for (std::int64_t j = j0; j < j1; ++j) out[j] = static_cast<D>(buf[j - j0][i - i0]);
        }
      }
    }
    d += rows * inner;
  });
}

template <class D, class S>
void copy_typed(TensorImpl& dst, const TensorImpl& src) {
  D* d = static_cast<D*>(dst.data());
  const S* s = static_cast<const S*>(src.data());
  if constexpr (std::is_same_v<D, S>) {
    if (dst.contiguous && src.contiguous) {
      std::memcpy(d, s, static_cast<std::size_t>(src.numel) * sizeof(D));
      return;
    }
  }
  if (dst.contiguous) {
    copy_to_dense(d, s, src.shape, src.strides);
    return;
  }
  const Tensor sc = Tensor(alias_impl(src)).contiguous();  // rare: strided destination
  const S* sp = static_cast<const S*>(sc.data_ptr());
  std::int64_t i = 0;
  for_each_offset(dst.shape, dst.strides, [&](std::int64_t off) { d[off] = static_cast<D>(sp[i++]); });
}

template <class D>
void copy_from(TensorImpl& dst, const TensorImpl& src) {
  switch (src.dtype) {
    case DType::Float32: copy_typed<D, float>(dst, src); break;
    case DType::Float64: copy_typed<D, double>(dst, src); break;
    case DType::Int64: copy_typed<D, std::int64_t>(dst, src); break;
    case DType::Bool: copy_typed<D, bool>(dst, src); break;
  }
}
}  // namespace

void copy_elements(TensorImpl& dst, const TensorImpl& src) {
  switch (dst.dtype) {
    case DType::Float32: copy_from<float>(dst, src); break;
    case DType::Float64: copy_from<double>(dst, src); break;
    case DType::Int64: copy_from<std::int64_t>(dst, src); break;
    case DType::Bool: copy_from<bool>(dst, src); break;
  }
}

// ---- autograd state ---------------------------------------------------------------

bool Tensor::requires_grad() const { return impl_ && (impl_->requires_grad || impl_->grad_fn); }

Tensor& Tensor::requires_grad_(bool flag) {
  check_defined("requires_grad_");
  OPFORGE_CHECK(!impl_->grad_fn, AutogradError, "Tensor::requires_grad_: the tensor is the output of '",
                impl_->grad_fn->name(),
                "' (not a leaf); requires_grad can only be set on leaves. Use detach() to make a leaf.");
  OPFORGE_CHECK(!flag || is_floating(impl_->dtype), DTypeError,
                "Tensor::requires_grad_: only float32 and float64 tensors can require grad, got ",
                dtype_name(impl_->dtype));
  impl_->requires_grad = flag;
  return *this;
}

bool Tensor::is_leaf() const { check_defined("is_leaf"); return !impl_->grad_fn; }
namespace {
// Where a tensor's .grad lives: its own member, or, for a non-leaf after
// retain_grad(), the slot backward writes to (read and written under its lock:
// another thread's backward may be accumulating into it).
template <class F>
auto with_grad_slot(TensorImpl& impl, F f) {
  if (!impl.retained) return f(impl.grad);
  SpinLock lock(impl.retained->lock);
  return f(impl.retained->grad);
}
}  // namespace

Tensor Tensor::grad() const {
  check_defined("grad");
  return with_grad_slot(*impl_, [](const Tensor& g) { return g; });
}
void Tensor::set_grad(const Tensor& g) const {
  check_defined("set_grad");
  if (g.defined()) {
    OPFORGE_CHECK(g.shape() == impl_->shape && g.dtype() == impl_->dtype, ShapeError,
                  "Tensor::set_grad: argument 'grad': expected ", describe(), ", got ", g.describe());
    OPFORGE_CHECK(g.unsafe_impl() != impl_.get(), ValueError,
                  "Tensor::set_grad: argument 'grad': a tensor cannot be its own gradient (it would hold itself); "
                  "pass a copy, clone()");
  }
  // .grad holds data, never history: a gradient that requires grad (an op's
  // output, or another leaf) is stored detached, so it keeps no graph alive and
  // .grad never requires grad.
  Tensor stored = g.defined() && g.requires_grad() ? g.detach() : g;
  with_grad_slot(*impl_, [&](Tensor& slot) { std::swap(slot, stored); });  // the old one dies unlocked
}
void Tensor::zero_grad() const {
  check_defined("zero_grad");
  Tensor old;  // released after the lock
  with_grad_slot(*impl_, [&](Tensor& slot) { old = std::move(slot); slot = Tensor(); });
}
Node* Tensor::grad_fn() const { check_defined("grad_fn"); return impl_->grad_fn.get(); }
std::uint32_t Tensor::output_nr() const { check_defined("output_nr"); return impl_->output_nr; }
Tensor Tensor::detach() const { check_defined("detach"); return Tensor(alias_impl(*impl_)); }

namespace {
// Printing, as PyTorch prints: nested brackets, one row of the last axis a line,
// every element up to kPrintAll of them, else the first and last kEdgeItems
// along each axis with "..." between. Elements are read where they lie: printing
// a huge (or expanded) tensor copies nothing.
constexpr std::int64_t kPrintAll = 1000;
constexpr std::int64_t kEdgeItems = 3;

struct TensorPrinter {
  const TensorImpl& impl;
  bool summarize;
  std::vector<std::string> cells;  // the shown elements' text, in the order printed
  std::size_t width = 0, next = 0;

  // The logical indices shown along an axis of `n` (-1 marks the "...").
  std::vector<std::int64_t> shown(std::int64_t n) const {
    std::vector<std::int64_t> v;
    if (!summarize || n <= 2 * kEdgeItems) {
      for (std::int64_t i = 0; i < n; ++i) v.push_back(i);
    } else {
      for (std::int64_t i = 0; i < kEdgeItems; ++i) v.push_back(i);
      v.push_back(-1);
      for (std::int64_t i = n - kEdgeItems; i < n; ++i) v.push_back(i);
    }
    return v;
  }
  // Calls f(flat index) for every shown element, in order.
  template <class F>
  void each(std::size_t axis, std::int64_t flat, const F& f) const {
    if (axis == impl.shape.size()) return f(flat);
    for (std::int64_t i : shown(impl.shape[axis]))
      if (i >= 0) each(axis + 1, flat * impl.shape[axis] + i, f);  // -1: the "...", no element
  }

  void format() {
    std::vector<double> values;
    each(0, 0, [&](std::int64_t i) { values.push_back(load_as_double(impl, i)); });
    // Floats: one format for all: x.0 when every finite value is a whole number below 1e8,
    // 4 decimals when they lie in [1e-4, 1e8), else scientific.
    bool whole = true, fixed = true;
    for (double v : values) {
      if (!std::isfinite(v)) continue;
      const double a = std::abs(v);
      whole = whole && v == std::trunc(v) && a < 1e8;
      fixed = fixed && (a == 0 || (a >= 1e-4 && a < 1e8));
    }
    std::int64_t k = 0;
    each(0, 0, [&](std::int64_t i) {
      char buf[48];
      const double v = values[static_cast<std::size_t>(k++)];
      if (impl.dtype == DType::Int64) {  // exactly: through double, 9007199254740993 printed as 9.0072e+15
        std::snprintf(buf, sizeof buf, "%lld",
                      static_cast<long long>(static_cast<const std::int64_t*>(impl.data())[element_offset(impl, i)]));
      } else if (impl.dtype == DType::Bool) {
        std::snprintf(buf, sizeof buf, "%s", v != 0 ? "true" : "false");
      } else if (!std::isfinite(v)) {
        std::snprintf(buf, sizeof buf, "%s", std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
      } else {
        std::snprintf(buf, sizeof buf, whole ? "%.1f" : fixed ? "%.4f" : "%.4e", v);
      }
      cells.emplace_back(buf);
      width = std::max(width, cells.back().size());
    });
  }

  // The elements of axis `axis` onwards at `flat`, each line indented by `indent`.
  void print(std::ostream& os, std::size_t axis, std::int64_t flat, std::size_t indent) {
    const std::size_t rank = impl.shape.size();
    if (rank == 0) {
      os << cells[next++];
      return;
    }
    os << '[';
    bool first = true;
    for (std::int64_t i : shown(impl.shape[axis])) {
      if (!first) {
        os << ',';
        if (axis + 1 == rank) {
          os << ' ';
        } else {
          os << std::string(rank - axis - 1, '\n') << std::string(indent + axis + 1, ' ');
        }
      }
      first = false;
      if (i < 0) {
        os << "...";
        continue;
      }
      if (axis + 1 == rank) {
        const std::string& c = cells[next++];
        os << std::string(width - c.size(), ' ') << c;
      } else {
        print(os, axis + 1, flat * impl.shape[axis] + i, indent);
      }
    }
    os << ']';
  }
};
}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "Tensor(undefined)";
  const TensorImpl& impl = *t.unsafe_impl();
  const std::string head = "Tensor(" + t.describe() + ", ";
  TensorPrinter p{impl, impl.numel > kPrintAll, {}};
  p.format();
  os << head;
  p.print(os, 0, 0, head.size());
  if (impl.grad_fn) os << ", grad_fn=" << impl.grad_fn->name();
  else if (impl.requires_grad) os << ", requires_grad";
  return os << ')';
}

// ---- grad mode ----------------------------------------------------------------------

namespace {
OPFORGE_TLS bool t_grad_enabled = true;
}
bool grad_enabled() noexcept { return t_grad_enabled; }
void set_grad_enabled(bool enabled) noexcept { t_grad_enabled = enabled; }
NoGradGuard::NoGradGuard() noexcept : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

// ---- values a dtype cannot hold ------------------------------------------------------
// (At the end of the file, out of the way of the functions every op call runs:
// placed before them, they moved those, and `opforge bench overhead` fwd_bwd
// ran ~7% slower.)

namespace {
// Whether int64 holds v once truncated: false for NaN, infinities and values
// outside [-2^63, 2^63), whose conversion is undefined (it gave INT64_MIN).
bool int64_can_hold(double v) { return v >= -0x1p63 && v < 0x1p63; }
constexpr const char* kInt64Range = "int64 holds whole numbers in [-2^63, 2^63); a fraction is truncated";
}  // namespace

__attribute__((noinline)) void check_storable(DType dtype, double value, const char* what) {
  OPFORGE_CHECK(dtype != DType::Int64 || int64_can_hold(value), ValueError, what, ": argument 'value': ",
                detail::Exact{value},
                " cannot be stored in an int64 tensor (", kInt64Range, "); pass a finite value in that range");
}

void check_storable(const std::vector<double>& values, const char* what) {
  for (std::size_t i = 0; i < values.size(); ++i)
    OPFORGE_CHECK(int64_can_hold(values[i]), ValueError, what, ": argument 'values': element ", i, " (",
                  detail::Exact{values[i]},
                  ") cannot be stored in an int64 tensor (", kInt64Range, "); pass finite values in that range");
}

void check_convertible(DType dtype, const TensorImpl& src, const char* what) {
  if (dtype != DType::Int64 || !is_floating(src.dtype)) return;
  std::int64_t i = 0, bad = -1;
  double bad_value = 0;
  auto scan = [&](const auto* p) {
    for_each_offset(src.shape, src.strides, [&](std::int64_t off) {
      if (bad < 0 && !int64_can_hold(static_cast<double>(p[off]))) {
        bad = i;
        bad_value = static_cast<double>(p[off]);
      }
      ++i;
    });
  };
  if (src.dtype == DType::Float32) scan(static_cast<const float*>(src.data()));
  else scan(static_cast<const double*>(src.data()));
  OPFORGE_CHECK(bad < 0, ValueError, what, ": element ", bad, " (row-major) of the ", dtype_name(src.dtype),
                src.shape, " source is ", detail::Exact{bad_value}, ", which int64 cannot hold (", kInt64Range,
                "); replace such values first (elementwise.where, or clamp to that range)");
}

}  // namespace opforge
