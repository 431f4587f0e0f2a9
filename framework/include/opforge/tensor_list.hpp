// TensorList (owning, inline storage for 4) and TensorSpan (non-owning view):
// how tensors are passed to and returned from ops without heap traffic.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "opforge/tensor.hpp"

namespace opforge {

using TensorList = boost::container::small_vector<Tensor, 4>;

namespace detail {
/// Throws IndexError for TensorSpan::operator[]. Defined here, not in libopforge,
/// so that a plugin built with this header needs no core symbol an older core
/// lacks (the plugin ABI's minor version stays); kept out of line (noinline,
/// cold), so the check inlines to a compare.
[[noreturn]] __attribute__((noinline, cold)) inline void throw_span_index(std::size_t i, std::size_t n) {
  throw IndexError(concat("TensorSpan: index ", i, " is out of range for ", n, n == 1 ? " tensor" : " tensors",
                          " (an op's forward gets one tensor per input its schema declares, in the order of "
                          "input_names; its backward one gradient per output)"));
}
}  // namespace detail

/// A read-only view of consecutive tensors; cheap to pass by value.
class TensorSpan {
 public:
  TensorSpan() = default;
  TensorSpan(const Tensor* p, std::size_t n) : p_(p), n_(n) {}
  TensorSpan(const TensorList& l) : p_(l.data()), n_(l.size()) {}            // NOLINT
  TensorSpan(const std::vector<Tensor>& v) : p_(v.data()), n_(v.size()) {}   // NOLINT
  // For calls such as mv({A, x}): the list lives until the end of the full
  // expression, as long as the call. Do not keep such a span in a variable.
#if defined(__GNUC__) && !defined(__clang__)  // a GCC warning; Clang does not know the group
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winit-list-lifetime"
#endif
  TensorSpan(std::initializer_list<Tensor> l) : p_(l.begin()), n_(l.size()) {}  // NOLINT
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  TensorSpan(const Tensor& t) : p_(&t), n_(1) {}                              // NOLINT

  std::size_t size() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }
  /// The tensor at i; IndexError when i >= size(): a forward that reads an input
  /// its schema does not declare, or a backward a gradient past its op's outputs.
  const Tensor& operator[](std::size_t i) const {
    if (__builtin_expect(i >= n_, 0)) detail::throw_span_index(i, n_);
    return p_[i];
  }
  const Tensor* begin() const noexcept { return p_; }
  const Tensor* end() const noexcept { return p_ + n_; }

 private:
  const Tensor* p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace opforge
