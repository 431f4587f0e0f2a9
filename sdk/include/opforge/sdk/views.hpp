// xtensor views of tensor memory, without copies (xt::adapt over the data pointer).
// Build them on contiguous tensors; evaluate expressions into a tensor before
// saving them (a lazy expression that outlives its operands is a bug).
#pragma once

#include <array>
#include <cstddef>
#include <vector>

#include <xtensor/xadapt.hpp>

#include "opforge/error.hpp"
#include "opforge/tensor.hpp"

namespace opforge::sdk {

namespace detail {
inline void require_contiguous(const Tensor& t, const char* what) {
  OPFORGE_CHECK(t.is_contiguous(), ValueError, what, ": expected a contiguous tensor, got a strided view of shape ",
                t.shape(), "; call .clone() first");
}
}  // namespace detail

/// A 1-D view of all elements, in row-major order.
template <class T>
auto flat_view(const Tensor& t) {
  ::opforge::sdk::detail::require_contiguous(t, "sdk::flat_view");
  return xt::adapt(t.data<T>(), static_cast<std::size_t>(t.numel()), xt::no_ownership(),
                   std::array<std::size_t, 1>{static_cast<std::size_t>(t.numel())});
}

/// A 2-D view of a 2-D tensor.
template <class T>
auto matrix_view(const Tensor& t) {
  ::opforge::sdk::detail::require_contiguous(t, "sdk::matrix_view");
  OPFORGE_CHECK(t.dim() == 2, ShapeError, "sdk::matrix_view: expected a 2-D tensor, got shape ", t.shape());
  return xt::adapt(t.data<T>(), static_cast<std::size_t>(t.numel()), xt::no_ownership(),
                   std::array<std::size_t, 2>{static_cast<std::size_t>(t.size(0)), static_cast<std::size_t>(t.size(1))});
}

/// An N-D view with the tensor's shape.
template <class T>
auto view(const Tensor& t) {
  ::opforge::sdk::detail::require_contiguous(t, "sdk::view");
  std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
  return xt::adapt(t.data<T>(), static_cast<std::size_t>(t.numel()), xt::no_ownership(), shape);
}

}  // namespace opforge::sdk
