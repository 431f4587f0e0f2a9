// Element types of a tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "opforge/export.hpp"

namespace opforge {

enum class DType : std::uint8_t { Float32 = 0, Float64 = 1, Int64 = 2, Bool = 3 };

inline constexpr int kNumDTypes = 4;

constexpr std::size_t itemsize(DType t) noexcept {
  switch (t) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::Int64: return 8;
    case DType::Bool: return 1;
  }
  return 0;
}

constexpr const char* dtype_name(DType t) noexcept {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
    case DType::Bool: return "bool";
  }
  return "?";
}

constexpr bool is_floating(DType t) noexcept { return t == DType::Float32 || t == DType::Float64; }

/// Parses "float32", "float64", "int64", "bool" (and the aliases f32, f64, double, float).
OPFORGE_API DType parse_dtype(const std::string& name);

/// A set of dtypes as a bit mask, used by op schemas.
class DTypeSet {
 public:
  constexpr DTypeSet() = default;
  constexpr DTypeSet(std::initializer_list<DType> ts) {
    for (DType t : ts) bits_ |= bit(t);
  }
  static constexpr DTypeSet floating() { return DTypeSet{DType::Float32, DType::Float64}; }
  static constexpr DTypeSet all() { return DTypeSet{DType::Float32, DType::Float64, DType::Int64, DType::Bool}; }
  constexpr bool contains(DType t) const { return (bits_ & bit(t)) != 0; }
  constexpr bool empty() const { return bits_ == 0; }
  constexpr std::uint32_t bits() const { return bits_; }
  /// "float32, float64"
  OPFORGE_API std::string to_string() const;

 private:
  static constexpr std::uint32_t bit(DType t) { return 1u << static_cast<unsigned>(t); }
  std::uint32_t bits_ = 0;
};

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };
template <> struct dtype_of<std::int64_t> { static constexpr DType value = DType::Int64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };
template <class T> inline constexpr DType dtype_v = dtype_of<T>::value;

}  // namespace opforge
