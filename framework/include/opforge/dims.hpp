// Dims: a shape or a stride list, stored inline (no heap), up to kMaxDims entries.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "opforge/error.hpp"
#include "opforge/export.hpp"

namespace opforge {

inline constexpr int kMaxDims = 8;

class Dims {
 public:
  Dims() = default;
  Dims(std::initializer_list<std::int64_t> v) { assign(v.begin(), v.size()); }
  explicit Dims(const std::vector<std::int64_t>& v) { assign(v.data(), v.size()); }
  Dims(const std::int64_t* p, std::size_t n) { assign(p, n); }

  std::size_t size() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }
  std::int64_t operator[](std::size_t i) const noexcept { return v_[i]; }
  std::int64_t& operator[](std::size_t i) noexcept { return v_[i]; }
  const std::int64_t* begin() const noexcept { return v_; }
  const std::int64_t* end() const noexcept { return v_ + n_; }
  std::int64_t* begin() noexcept { return v_; }
  std::int64_t* end() noexcept { return v_ + n_; }
  const std::int64_t* data() const noexcept { return v_; }
  std::int64_t back() const noexcept { return v_[n_ - 1]; }

  void push_back(std::int64_t x) {
    OPFORGE_CHECK(n_ < kMaxDims, ShapeError, "opforge tensors have at most ", kMaxDims,
                  " dimensions; got ", n_ + 1);
    v_[n_++] = x;
  }
  void resize(std::size_t n, std::int64_t fill = 0) {
    OPFORGE_CHECK(n <= static_cast<std::size_t>(kMaxDims), ShapeError, "opforge tensors have at most ",
                  kMaxDims, " dimensions; got ", n);
    for (std::size_t i = n_; i < n; ++i) v_[i] = fill;
    n_ = static_cast<std::uint8_t>(n);
  }

  /// Product of the entries (1 for an empty Dims: a scalar has one element).
  std::int64_t product() const noexcept {
    std::int64_t p = 1;
    for (std::size_t i = 0; i < n_; ++i) p *= v_[i];
    return p;
  }
  std::vector<std::int64_t> to_vector() const { return {begin(), end()}; }
  /// "[3, 4]"
  OPFORGE_API std::string to_string() const;

  friend bool operator==(const Dims& a, const Dims& b) noexcept {
    return a.n_ == b.n_ && std::equal(a.begin(), a.end(), b.begin());
  }
  friend bool operator!=(const Dims& a, const Dims& b) noexcept { return !(a == b); }

 private:
  void assign(const std::int64_t* p, std::size_t n) {
    OPFORGE_CHECK(n <= static_cast<std::size_t>(kMaxDims), ShapeError, "opforge tensors have at most ",
                  kMaxDims, " dimensions; got ", n);
    std::copy(p, p + n, v_);
    n_ = static_cast<std::uint8_t>(n);
  }
  std::int64_t v_[kMaxDims] = {};
  std::uint8_t n_ = 0;
};

OPFORGE_API std::ostream& operator<<(std::ostream& os, const Dims& d);

/// Turns a shape, in place, into its row-major (C order) strides, in elements.
inline void to_contiguous_strides(Dims& d) noexcept {
  std::int64_t acc = 1;
  for (std::size_t i = d.size(); i-- > 0;) {
    const std::int64_t size = d[i];
    d[i] = acc;
    acc *= size;
  }
}

/// Row-major (C order) strides, in elements, for a shape.
inline Dims contiguous_strides(const Dims& shape) {
  Dims s = shape;
  to_contiguous_strides(s);
  return s;
}

}  // namespace opforge
