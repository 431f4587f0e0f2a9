// TensorImpl: what a Tensor handle points at. Internal to the core.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include <boost/smart_ptr/intrusive_ptr.hpp>

#include "opforge/tensor.hpp"
#include "block_cache.hpp"
#include "storage.hpp"

namespace opforge {

/// Where undefined tensors come from, for the messages that meet one: "a
/// default-constructed Tensor, or the .grad() of a tensor that has none: ...".
inline constexpr const char* kUndefinedTensorOrigins =
    "a default-constructed Tensor, or the .grad() of a tensor that has none: a non-leaf without retain_grad(), "
    "for instance a parameter reassigned with w = w - lr * w.grad() instead of updated in place under a "
    "NoGradGuard, or a leaf before its first backward or after zero_grad()";

/// Holds a .grad's spin lock (TensorImpl::grad_lock, RetainedGrad::lock) for a scope.
class SpinLock {
 public:
  explicit SpinLock(std::atomic_flag& f) : f_(f) {
    while (f_.test_and_set(std::memory_order_acquire)) {
    }
  }
  ~SpinLock() { f_.clear(std::memory_order_release); }
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

 private:
  std::atomic_flag& f_;
};

struct RetainedGrad {
  std::atomic_flag lock = ATOMIC_FLAG_INIT;  // guards `grad` while backward accumulates
  Tensor grad;
};

// Made and dropped by every op call: blocks come from a per-thread cache.
struct TensorImpl : CacheAllocated<SmallBlockCache> {
  std::atomic<std::uint32_t> refcount{0};
  DType dtype = DType::Float64;
  bool requires_grad = false;   // meaningful on leaves; a non-leaf requires grad through grad_fn
  bool contiguous = true;
  std::atomic_flag grad_lock = ATOMIC_FLAG_INIT;  // guards `grad` while backward accumulates
  std::uint32_t output_nr = 0;
  std::int64_t offset = 0;  // in elements, into storage
  std::int64_t numel = 0;
  Dims shape;
  Dims strides;
  StoragePtr storage;
  NodePtr grad_fn;
  Tensor grad;
  // Leaves only; null until the first hook. A deque: a hook may register another while it runs.
  std::unique_ptr<std::deque<Tensor::GradHook>> hooks;
  // Non-leaves only, after retain_grad(): where backward accumulates this tensor's
  // gradient. Shared with the entry retain_grad() puts on the node, so that neither
  // the tensor nor its node keeps the other alive.
  std::shared_ptr<struct RetainedGrad> retained;
  // While queued for deletion (tensors with hooks only: see intrusive_ptr_release).
  TensorImpl* next_pending = nullptr;

  void* data() const noexcept {
    return static_cast<char*>(storage->data()) + offset * static_cast<std::int64_t>(itemsize(dtype));
  }
  std::uint32_t use_count() const noexcept { return refcount.load(std::memory_order_acquire); }
};

static_assert(sizeof(TensorImpl) <= SmallBlockCache::kBlockSize, "TensorImpl outgrew its block cache's size");
using TensorImplPtr = boost::intrusive_ptr<TensorImpl>;

/// A new, empty impl, held by the pointer returned. Its count starts at 1 with
/// a plain store: no locked instruction for an object no other thread can see.
inline TensorImplPtr new_tensor_impl() {
  // `new TensorImpl`, not `new TensorImpl()`: the members' own initialisers
  // suffice, and value-initialisation would first zero all ~200 bytes (a
  // `rep stos`, ~10% of a recorded op call plus its backward on Zen 4).
  auto* t = new TensorImpl;
  t->refcount.store(1, std::memory_order_relaxed);
  return TensorImplPtr(t, /*add_ref=*/false);
}

/// The product of a shape's sizes (each >= 0) into `out`; false when a partial
/// product overflows int64. A 0 makes the product 0 unless the sizes before it
/// overflowed on their own.
inline bool checked_product(const Dims& shape, std::int64_t& out) noexcept {
  std::int64_t n = 1;
  bool overflow = false;
  for (std::int64_t s : shape) overflow = __builtin_mul_overflow(n, s, &n) || overflow;
  out = n;
  return !overflow;
}

/// The elements a view reaches, from its first to its farthest, in `span`
/// (0 when it has none); false when that count overflows int64. Strides >= 0.
inline bool element_span(const Dims& shape, const Dims& strides, std::int64_t& span) noexcept {
  span = 1;
  bool overflow = false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) {
      span = 0;
      return true;
    }
    std::int64_t step = 0;
    overflow = __builtin_mul_overflow(shape[i] - 1, strides[i], &step) || overflow;
    overflow = __builtin_add_overflow(span, step, &span) || overflow;
  }
  return !overflow;
}

/// A new contiguous tensor on fresh storage (uninitialised).
/// `who` names the public function whose arguments these are, for the error
/// messages ("Tensor::zeros"); null for the core's own tensors.
TensorImplPtr make_contiguous_impl(const Dims& shape, DType dtype, const char* who = nullptr);
/// Tensor::from_blob, with the address of the code that frees the memory (the
/// plugin holding it stays loaded while the memory is in use). With check_bools,
/// bool data must hold 0 or 1 in each byte (from_dlpack checks with its own words).
Tensor adopt_memory(void* data, const Dims& shape, const Dims& strides, DType dtype, Tensor::Deleter deleter,
                    void* context, const void* deleter_code, bool check_bools = true);
/// Throws ValueError (naming `what` and the value) when `dtype` cannot hold
/// `value`: NaN, an infinity or a value outside [-2^63, 2^63) for int64.
void check_storable(DType dtype, double value, const char* what);
/// The same for each of `values` stored as int64, naming the first bad one.
void check_storable(const std::vector<double>& values, const char* what);
/// The same for every element of `src` converted to `dtype` (float to int64
/// only; other conversions always have a value), naming the first bad element.
void check_convertible(DType dtype, const TensorImpl& src, const char* what);
/// A second TensorImpl over the same storage and layout, with no autograd state.
TensorImplPtr alias_impl(const TensorImpl& src);

}  // namespace opforge
