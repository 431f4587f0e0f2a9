// Tensor: a reference-counted handle to a strided view of shared storage,
// with the autograd state of PyTorch's Variable (requires_grad, grad, grad_fn).
//
// Copying a Tensor copies the handle (one atomic increment), never the data.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include <boost/smart_ptr/intrusive_ptr.hpp>

#include "opforge/dims.hpp"
#include "opforge/dtype.hpp"
#include "opforge/error.hpp"
#include "opforge/export.hpp"

namespace opforge {

class Node;
class Storage;
struct TensorImpl;
class Tensor;

namespace detail {
// Tensor::arange's arguments: any arithmetic type but bool.
template <class T>
inline constexpr bool is_range_number_v = std::is_arithmetic_v<T> && !std::is_same_v<T, bool>;
// arange's default dtype: int64 when every argument is an integer, else float64.
template <class... T>
inline constexpr DType range_dtype_v = (std::is_integral_v<T> && ...) ? DType::Int64 : DType::Float64;
// Whether an integer keeps its value as int64 (an unsigned one past 2^63 - 1
// does not: the operators and arange pass it on as a double).
template <class I>
constexpr bool fits_int64(I v) {
  if constexpr (std::is_unsigned_v<I>) return v <= static_cast<std::uint64_t>(INT64_MAX);
  else return true;
}
}  // namespace detail

/// What Tensor::register_hook returns: remove() takes that hook off (it does not
/// run from then on, and what it holds is released). Idempotent; a no-op for a
/// default-constructed handle and once the hook's tensor and graph are gone.
/// A plain value (copy it freely): it refers to the hook by number, never holds it.
class OPFORGE_API HookHandle {
 public:
  HookHandle() noexcept = default;
  /// A pass running the hook on another thread at that moment finishes that call.
  void remove() const;
  /// False for a default-constructed handle.
  bool valid() const noexcept { return id_ != 0; }

 private:
  friend class Tensor;
  explicit HookHandle(std::uint64_t id) noexcept : id_(id) {}
  std::uint64_t id_ = 0;
};

OPFORGE_API void intrusive_ptr_add_ref(Storage* s) noexcept;
OPFORGE_API void intrusive_ptr_release(Storage* s) noexcept;
OPFORGE_API void intrusive_ptr_add_ref(TensorImpl* t) noexcept;
OPFORGE_API void intrusive_ptr_release(TensorImpl* t) noexcept;
OPFORGE_API void intrusive_ptr_add_ref(Node* n) noexcept;
OPFORGE_API void intrusive_ptr_release(Node* n) noexcept;

using StoragePtr = boost::intrusive_ptr<Storage>;
using NodePtr = boost::intrusive_ptr<Node>;

/// Bytes of tensor memory allocated by opforge and not yet freed, and the peak
/// since start (or since reset_peak_bytes()).
OPFORGE_API std::int64_t live_bytes() noexcept;
OPFORGE_API std::int64_t peak_bytes() noexcept;
OPFORGE_API void reset_peak_bytes() noexcept;
/// Tensors of 128 KiB and more have blocks of their own (from 4 MiB on, 2 MiB-
/// aligned and offered huge pages; below that, rounded up to an eighth of their
/// power of two). When one dies its block is kept for the next tensor of the
/// same block size, if it is 34 MiB or less (a tensor of 32 MiB of data, with
/// its header, in 2 MiB pages) and the kept blocks stay within 68 MiB in all
/// (oldest dropped first); bigger
/// ones go back to the system at once. cached_memory_bytes() is what is kept
/// (not counted in live_bytes()); release_cached_memory() returns it all to the
/// system and says how many bytes that was.
OPFORGE_API std::int64_t cached_memory_bytes() noexcept;
OPFORGE_API std::int64_t release_cached_memory() noexcept;

class OPFORGE_API Tensor {
 public:
  Tensor() noexcept = default;
  explicit Tensor(boost::intrusive_ptr<TensorImpl> impl) noexcept : impl_(std::move(impl)) {}

  // ---- factories ------------------------------------------------------------
  /// Uninitialised memory (64-byte aligned).
  static Tensor empty(const Dims& shape, DType dtype = DType::Float64);
  static Tensor zeros(const Dims& shape, DType dtype = DType::Float64);
  static Tensor ones(const Dims& shape, DType dtype = DType::Float64);
  static Tensor full(const Dims& shape, double value, DType dtype = DType::Float64);
  /// A 0-d tensor holding one value.
  static Tensor scalar(double value, DType dtype = DType::Float64);
  /// Copies `values` (row-major) into a new tensor of `shape`; sizes must agree.
  static Tensor from_values(const std::vector<double>& values, const Dims& shape,
                            DType dtype = DType::Float64);
  /// 1-D tensor from values.
  static Tensor from_values(const std::vector<double>& values, DType dtype = DType::Float64);
  /// Standard normal samples from a seeded generator: same seed, same tensor,
  /// on every machine (the generator is opforge's own, not std::normal_distribution).
  static Tensor randn(const Dims& shape, DType dtype, std::uint64_t seed);
  /// Standard normal samples with the next seed of the process's stream: each
  /// call gives other values (two weight matrices initialised without seeds are
  /// not the same numbers); opforge::manual_seed(s) restarts the stream, so a
  /// program that sets it once is reproducible.
  static Tensor randn(const Dims& shape, DType dtype = DType::Float64);
  /// Uniform samples in [0, 1) from a seeded generator, as randn(shape, dtype,
  /// seed) is: same seed, same tensor, on every machine; element i depends on
  /// (seed, i) only. float64 elements have 53 random bits; float32 elements are
  /// the float64 ones cut to 24 bits (never rounded up to 1). rand and randn
  /// draw different streams from the same seed. float32 and float64 only.
  static Tensor rand(const Dims& shape, DType dtype, std::uint64_t seed);

  /// 1-D tensor of start, start + step, ... up to but excluding end, as
  /// torch.arange: ceil((end - start) / step) elements. If start, end and step
  /// are all integers (any C++ integer type but bool), the values are computed
  /// exactly in int64 (then converted, for another dtype) and the default dtype
  /// is int64: arange(5) is int64 [0, 1, 2, 3, 4]. If any is floating, the
  /// count and the values (start + i * step) are computed in double and the
  /// default dtype is float64: arange(0, 2.5) is float64 [0, 1, 2]; as in
  /// PyTorch and NumPy, a step that double cannot hold exactly can give one
  /// element more than decimal arithmetic suggests (arange(1.0, 1.3, 0.1) has
  /// 4; use linspace). `dtype` may be float32, float64 or int64; for int64,
  /// floating arguments must be whole numbers (2.0, not 2.5). Refused: a step
  /// of 0, a step whose sign cannot lead from start to end, NaN or infinite
  /// arguments, and a count whose bytes reach 2^63.
  template <class E, std::enable_if_t<detail::is_range_number_v<E>, int> = 0>
  static Tensor arange(E end, DType dtype = detail::range_dtype_v<E>) {
    return arange(E(0), end, E(1), dtype);
  }
  template <class S, class E, class St = std::int64_t,
            std::enable_if_t<detail::is_range_number_v<S> && detail::is_range_number_v<E> &&
                                 detail::is_range_number_v<St>,
                             int> = 0>
  static Tensor arange(S start, E end, St step = 1, DType dtype = detail::range_dtype_v<S, E, St>) {
    if constexpr (std::is_integral_v<S> && std::is_integral_v<E> && std::is_integral_v<St>) {
      if (detail::fits_int64(start) && detail::fits_int64(end) && detail::fits_int64(step))
        return arange_exact(static_cast<std::int64_t>(start), static_cast<std::int64_t>(end),
                            static_cast<std::int64_t>(step), dtype);
    }
    return arange_double(static_cast<double>(start), static_cast<double>(end), static_cast<double>(step), dtype);
  }
  /// 1-D tensor of `steps` evenly spaced values from start to end, both
  /// included, as torch.linspace: with step = (end - start) / (steps - 1),
  /// element i is start + i * step in the first half and end - (steps - 1 - i) *
  /// step in the second, computed in the result's dtype (double for int64,
  /// then truncated toward zero), so the last element is exactly `end` (when
  /// end - start overflows, on halved ends, doubled back). steps 0 gives [],
  /// steps 1 gives [start]. float32, float64 or int64; start and end must be
  /// finite and within the dtype's range.
  static Tensor linspace(double start, double end, std::int64_t steps, DType dtype = DType::Float64);
  /// n x n (or n x m) with ones on the diagonal, zeros elsewhere; any dtype.
  static Tensor eye(std::int64_t n, DType dtype = DType::Float64);
  static Tensor eye(std::int64_t n, std::int64_t m, DType dtype = DType::Float64);
  /// New contiguous tensors of t's shape and dtype (whatever t's strides), not
  /// requiring grad. randn_like and rand_like need a float32 or float64 t.
  static Tensor empty_like(const Tensor& t);
  static Tensor zeros_like(const Tensor& t);
  static Tensor ones_like(const Tensor& t);
  static Tensor full_like(const Tensor& t, double value);
  static Tensor randn_like(const Tensor& t, std::uint64_t seed);
  static Tensor rand_like(const Tensor& t, std::uint64_t seed);

  /// Called once with (data, context) when the last view of adopted memory is gone.
  using Deleter = void (*)(void* data, void* context);
  /// Adopts memory owned elsewhere, without a copy: the tensor views `data`
  /// (row-major, or with `strides` in elements) and calls deleter(data, context)
  /// exactly once when no view of it is left. A null deleter borrows the memory:
  /// the caller keeps it alive for as long as any view exists.
  static Tensor from_blob(void* data, const Dims& shape, DType dtype, Deleter deleter = nullptr,
                          void* context = nullptr);
  static Tensor from_blob(void* data, const Dims& shape, const Dims& strides, DType dtype, Deleter deleter = nullptr,
                          void* context = nullptr);

  // ---- metadata ---------------------------------------------------------------
  bool defined() const noexcept { return static_cast<bool>(impl_); }
  explicit operator bool() const noexcept { return defined(); }
  DType dtype() const;
  const Dims& shape() const;
  const Dims& strides() const;
  std::int64_t dim() const { return static_cast<std::int64_t>(shape().size()); }
  /// Size along `axis`; negative axes count from the end.
  std::int64_t size(std::int64_t axis) const;
  std::int64_t numel() const;
  /// numel() x itemsize: the bytes of the elements, counted once each (an
  /// expanded view counts its repeats). Throws ShapeError when that count does
  /// not fit in 64 bits.
  std::size_t nbytes() const;
  bool is_contiguous() const;
  /// "float64[3, 4]"
  std::string describe() const;

  // ---- data -------------------------------------------------------------------
  /// Pointer to the first element of this view.
  void* data_ptr() const;
  /// Typed pointer; throws DTypeError if T does not match the dtype.
  template <class T>
  T* data() const {
    check_dtype(dtype_v<T>, "data<T>()");
    return static_cast<T*>(data_ptr());
  }
  /// The value of a one-element tensor, as double.
  double item() const;
  /// All elements in row-major order, converted to double.
  std::vector<double> to_vector() const;
  /// A new tensor with its own contiguous copy of the data. Recorded when the
  /// tensor requires grad and grad mode is on (the gradient passes unchanged), as
  /// PyTorch's clone(); detach().clone() copies without history.
  Tensor clone() const;
  /// The same data in another dtype (a copy; returns *this when the dtype is the
  /// same). Between float32 and float64 recorded when the tensor requires grad and
  /// grad mode is on (the gradient is converted back); to int64 or bool, no gradient.
  Tensor to(DType dtype) const;
  /// Storage shared by views of the same data.
  Storage* storage() const;
  /// How many times the data has been modified in place (shared by all views).
  std::uint32_t version() const;
  /// Marks an in-place modification (kernels that write into an existing tensor call this).
  void bump_version() const;

  // ---- views: new tensors over the same memory, no copy ------------------------
  // Views share storage (and its version counter) with their base. On a tensor
  // that requires grad, with grad mode on, they are recorded in the graph: they
  // run the shape plugin's ops (shape.transpose, ...), which make the same views.
  /// Swaps two axes.
  Tensor transpose(std::int64_t axis0, std::int64_t axis1) const;
  /// Reorders all axes: result axis i is input axis order[i] ([] reverses them).
  Tensor permute(const Dims& order) const;
  /// Elements start, start+step, ... below stop along `axis` (bounds are clamped
  /// as in Python; negative start/stop count from the end; step >= 1).
  Tensor slice(std::int64_t axis, std::int64_t start, std::int64_t stop, std::int64_t step = 1) const;
  /// Index `index` along `axis`, which is removed.
  Tensor select(std::int64_t axis, std::int64_t index) const;
  /// The same elements in another shape (one entry may be -1: inferred). A view
  /// when the strides allow it, otherwise a contiguous copy.
  Tensor reshape(const Dims& shape) const;
  /// Like reshape, but never copies: ShapeError when the strides do not allow a view.
  Tensor view(const Dims& shape) const;
  /// Broadcasts size-1 axes (and new leading axes) to `shape`, with stride 0;
  /// -1 keeps an existing axis's size.
  Tensor expand(const Dims& shape) const;
  /// This tensor when contiguous, else a contiguous copy (recorded when it requires grad).
  Tensor contiguous() const;

  // ---- math front end ---------------------------------------------------------
  // Each runs a standard plugin op through a handle resolved once per process
  // (no name lookup per call), so user code reads like the maths:
  //   auto loss = (y - A.mv(x)).square().sum();  loss.backward();
  // The core knows only the op names; every op stays in its plugin.
  Tensor mv(const Tensor& x) const;       ///< linalg.mv
  Tensor matmul(const Tensor& b) const;   ///< linalg.matmul
  Tensor dot(const Tensor& b) const;      ///< linalg.dot
  Tensor square() const;                  ///< elementwise.square
  Tensor sqrt() const;                    ///< elementwise.sqrt
  Tensor exp() const;                     ///< elementwise.exp
  Tensor log() const;                     ///< elementwise.log
  Tensor abs() const;                     ///< elementwise.abs
  Tensor tanh() const;                    ///< elementwise.tanh
  Tensor sigmoid() const;                 ///< elementwise.sigmoid
  Tensor relu() const;                    ///< elementwise.relu
  Tensor pow(double exponent) const;      ///< elementwise.pow_scalar
  Tensor sum() const;                     ///< reduce.sum over all elements
  Tensor sum(const Dims& axes, bool keepdims = false) const;
  Tensor mean() const;                    ///< reduce.mean over all elements
  Tensor mean(const Dims& axes, bool keepdims = false) const;

  // ---- in place ---------------------------------------------------------------
  // Each bumps the version counter. Refused on a tensor that requires grad while
  // grad mode is on (do parameter updates under a NoGradGuard). In-place writes
  // are not recorded, so copy_ and add_ also refuse a source that requires grad
  // while grad mode is on (its gradient would stop there); pass src.detach().
  Tensor& fill_(double value);
  /// Copies src (same shape; converted when the dtype differs) into this tensor.
  Tensor& copy_(const Tensor& src);
  /// this += alpha * other (same shape and dtype: float32, float64 or int64; for
  /// int64, alpha must be a whole number, and the sum wraps on overflow).
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  /// this *= factor (float32, float64 or int64; for int64, factor must be a whole
  /// number, and the product wraps on overflow).
  Tensor& mul_(double factor);

  // ---- autograd ---------------------------------------------------------------
  bool requires_grad() const;
  /// Sets requires_grad on a leaf. Refused on a non-leaf (its flag follows its inputs).
  Tensor& requires_grad_(bool flag = true);
  /// A leaf is a tensor the user made (not the output of a recorded op).
  bool is_leaf() const;
  /// The accumulated gradient of a leaf, or of a non-leaf after retain_grad()
  /// (undefined until backward reaches it; always undefined on another non-leaf).
  Tensor grad() const;
  /// Makes backward() accumulate this non-leaf's gradient into grad(), as it does a
  /// leaf's: the gradient that flows on from it, after its hooks (whenever they were
  /// registered). opforge::grad() leaves it alone. A no-op on a leaf that requires
  /// grad; refused (AutogradError) on a tensor that does not require grad.
  void retain_grad() const;
  /// Whether retain_grad() was called on this non-leaf (false on leaves).
  bool retains_grad() const;
  /// Replaces the accumulated gradient (undefined: forgets it). `g` must have this
  /// tensor's shape and dtype and be another tensor; one that requires grad is
  /// stored detached (data, no history).
  void set_grad(const Tensor& g) const;
  /// Forgets the accumulated gradient.
  void zero_grad() const;
  /// The node that produced this tensor, or null for a leaf.
  Node* grad_fn() const;
  /// Which output of grad_fn this tensor is.
  std::uint32_t output_nr() const;
  /// A new tensor sharing the data, outside the graph (a leaf, requires_grad false).
  Tensor detach() const;
  /// Backpropagates from this tensor. Without `grad` this must be a one-element
  /// tensor (the gradient is 1); with `grad` it is the gradient of some scalar
  /// with respect to this tensor and must have its shape and dtype.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  /// Runs `hook(grad)` whenever the gradient with respect to this tensor is
  /// computed, before it is used; the hook may return a replacement of the same
  /// shape and dtype, or an undefined Tensor to keep the gradient as it is.
  /// Returns a handle whose remove() takes the hook off again.
  using GradHook = std::function<Tensor(const Tensor& grad)>;
  HookHandle register_hook(GradHook hook) const;

  TensorImpl* unsafe_impl() const noexcept { return impl_.get(); }
  const boost::intrusive_ptr<TensorImpl>& impl_ptr() const noexcept { return impl_; }
  /// True when both handles refer to the same tensor object.
  bool is_same(const Tensor& other) const noexcept { return impl_ == other.impl_; }

  /// Throws DTypeError naming `what` when the dtype is not `expected`.
  void check_dtype(DType expected, const char* what) const;

 private:
  void check_defined(const char* what) const;
  // Tensor::arange's two paths: integer arguments (exact), any other (double).
  static Tensor arange_exact(std::int64_t start, std::int64_t end, std::int64_t step, DType dtype);
  static Tensor arange_double(double start, double end, double step, DType dtype);
  bool check_view_allowed(const char* what) const;
  void check_inplace_allowed(const char* what) const;
  void check_inplace_source(const Tensor& src, const char* what, const char* arg) const;
  boost::intrusive_ptr<TensorImpl> impl_;
};

/// Prints as PyTorch does: "Tensor(float64[2, 2], [[ 1.0000, -0.5000],\n [...]])", one row of
/// the last axis a line, every element of tensors up to 1000 elements (else the
/// first and last three along each axis), all floats in one format (4 decimals,
/// or scientific when the magnitudes call for it; x.0 when all are whole), int64
/// exactly; then ", requires_grad" for a leaf that requires grad or
/// ", grad_fn=OP" for an op's output. Reads the elements where they lie (no copy).
/// For every digit, print to_vector()'s values.
OPFORGE_API std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Arithmetic through the elementwise plugin, with NumPy broadcasting and NumPy's
// rules for a Python scalar. A scalar operand becomes a 0-d tensor of the other
// operand's dtype when that is floating. With an int64 or bool tensor, a double
// (2.0 as much as 2.5) makes both float64, and an integer (2, 2L) stays integral:
// int64 (which wraps on overflow, as NumPy's does). (A whole double once kept
// int64: x * 1e18 wrapped, x * -0.0 lost its sign.) Division is true division, as
// in NumPy and PyTorch: two int64 (or bool) operands are divided as float64. Two
// tensors of different dtypes are refused (convert one with to()).
OPFORGE_API Tensor operator+(const Tensor& a, const Tensor& b);
OPFORGE_API Tensor operator-(const Tensor& a, const Tensor& b);
OPFORGE_API Tensor operator*(const Tensor& a, const Tensor& b);
OPFORGE_API Tensor operator/(const Tensor& a, const Tensor& b);
OPFORGE_API Tensor operator-(const Tensor& a);
OPFORGE_API Tensor operator+(const Tensor& a, double b);
OPFORGE_API Tensor operator-(const Tensor& a, double b);
OPFORGE_API Tensor operator*(const Tensor& a, double b);
OPFORGE_API Tensor operator/(const Tensor& a, double b);
OPFORGE_API Tensor operator+(double a, const Tensor& b);
OPFORGE_API Tensor operator-(double a, const Tensor& b);
OPFORGE_API Tensor operator*(double a, const Tensor& b);
OPFORGE_API Tensor operator/(double a, const Tensor& b);
OPFORGE_API Tensor operator+(const Tensor& a, std::int64_t b);
OPFORGE_API Tensor operator-(const Tensor& a, std::int64_t b);
OPFORGE_API Tensor operator*(const Tensor& a, std::int64_t b);
OPFORGE_API Tensor operator/(const Tensor& a, std::int64_t b);
OPFORGE_API Tensor operator+(std::int64_t a, const Tensor& b);
OPFORGE_API Tensor operator-(std::int64_t a, const Tensor& b);
OPFORGE_API Tensor operator*(std::int64_t a, const Tensor& b);
OPFORGE_API Tensor operator/(std::int64_t a, const Tensor& b);
namespace detail {
// Any other integer type (int, unsigned, ...) takes the int64 overloads, as an
// exact match (an int literal would otherwise be ambiguous between double and
// int64); an unsigned value past int64's range goes as the double it is.
template <class I>
constexpr bool is_other_integer_v =
    std::is_integral_v<I> && !std::is_same_v<I, bool> && !std::is_same_v<I, std::int64_t>;
}  // namespace detail
#define OPFORGE_INTEGER_SCALAR_OP(OP)                                                                   \
  template <class I, std::enable_if_t<detail::is_other_integer_v<I>, int> = 0>                         \
  Tensor operator OP(const Tensor& a, I b) {                                                            \
    return detail::fits_int64(b) ? a OP static_cast<std::int64_t>(b) : a OP static_cast<double>(b);     \
  }                                                                                                     \
  template <class I, std::enable_if_t<detail::is_other_integer_v<I>, int> = 0>                         \
  Tensor operator OP(I a, const Tensor& b) {                                                            \
    return detail::fits_int64(a) ? static_cast<std::int64_t>(a) OP b : static_cast<double>(a) OP b;     \
  }
OPFORGE_INTEGER_SCALAR_OP(+)
OPFORGE_INTEGER_SCALAR_OP(-)
OPFORGE_INTEGER_SCALAR_OP(*)
OPFORGE_INTEGER_SCALAR_OP(/)
#undef OPFORGE_INTEGER_SCALAR_OP

/// RAII guard: no graph is recorded while it is alive (thread-local).
class OPFORGE_API NoGradGuard {
 public:
  NoGradGuard() noexcept;
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// Whether ops record the graph on this thread (true unless a NoGradGuard is alive).
OPFORGE_API bool grad_enabled() noexcept;
OPFORGE_API void set_grad_enabled(bool enabled) noexcept;

/// Restarts the stream of seeds that Tensor::randn without a seed draws from
/// (thread-safe). At start the stream is manual_seed(0)'s.
OPFORGE_API void manual_seed(std::uint64_t seed);

}  // namespace opforge
