// Attributes: the non-tensor arguments of an op call (an axis list, a flag, a
// scale). An op's schema declares them, in order, with kinds and defaults; a
// call passes them by position or by name, and forward and backward read them
// from the Context.
//
//   sum = op("reduce.sum");
//   sum({x}, {{"axes", {1}}, {"keepdims", true}});   // by name
//   sum.call({x}, {Attr({1}), Attr(true)});          // by position (no name lookup)
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "opforge/dims.hpp"
#include "opforge/export.hpp"

namespace opforge {

enum class AttrKind : std::uint8_t { Int, Float, Bool, Ints };

OPFORGE_API const char* attr_kind_name(AttrKind k) noexcept;

class OPFORGE_API Attr {
 public:
  /// Unset: "use the default".
  Attr() = default;
  Attr(int v) : kind_(AttrKind::Int), set_(true), i_(v) {}                  // NOLINT
  Attr(long v) : kind_(AttrKind::Int), set_(true), i_(v) {}                 // NOLINT
  Attr(long long v) : kind_(AttrKind::Int), set_(true), i_(v) {}            // NOLINT
  // Unsigned sizes (std::size_t, an index from .size()) are ints too; a value past
  // int64's range would wrap, and is refused (ValueError) instead.
  Attr(unsigned v) : Attr(static_cast<long long>(v)) {}                     // NOLINT
  Attr(unsigned long v) : Attr(checked_unsigned(v)) {}                      // NOLINT
  Attr(unsigned long long v) : Attr(checked_unsigned(v)) {}                 // NOLINT
  Attr(double v) : kind_(AttrKind::Float), set_(true), d_(v) {}             // NOLINT
  Attr(bool v) : kind_(AttrKind::Bool), set_(true), i_(v ? 1 : 0) {}        // NOLINT
  Attr(const Dims& v) : kind_(AttrKind::Ints), set_(true), ints_(v) {}      // NOLINT
  Attr(std::initializer_list<std::int64_t> v) : kind_(AttrKind::Ints), set_(true), ints_(v) {}  // NOLINT

  bool is_set() const noexcept { return set_; }
  AttrKind kind() const noexcept { return kind_; }
  /// Typed reads; each throws ValueError naming `what` when the kind differs
  /// (an Int reads as a float too).
  std::int64_t as_int(const char* what = "attribute") const;
  double as_float(const char* what = "attribute") const;
  bool as_bool(const char* what = "attribute") const;
  const Dims& as_ints(const char* what = "attribute") const;
  /// "3", "0.5", "true", "[0, 1]", "unset"
  std::string to_string() const;

 private:
  static long long checked_unsigned(unsigned long long v);
  AttrKind kind_ = AttrKind::Int;
  bool set_ = false;
  std::int64_t i_ = 0;
  double d_ = 0;
  Dims ints_;
};

/// An attribute passed by name.
struct NamedAttr {
  std::string_view name;
  Attr value;
};

/// A read-only view of positional attributes.
class AttrSpan {
 public:
  AttrSpan() = default;
  AttrSpan(const Attr* p, std::size_t n) : p_(p), n_(n) {}
#if defined(__GNUC__) && !defined(__clang__)  // a GCC warning; Clang does not know the group
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winit-list-lifetime"
#endif
  AttrSpan(std::initializer_list<Attr> l) : p_(l.begin()), n_(l.size()) {}  // NOLINT: for calls only
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  std::size_t size() const noexcept { return n_; }
  const Attr& operator[](std::size_t i) const noexcept { return p_[i]; }
  const Attr* begin() const noexcept { return p_; }
  const Attr* end() const noexcept { return p_ + n_; }

 private:
  const Attr* p_ = nullptr;
  std::size_t n_ = 0;
};

/// What an op's schema says of one attribute.
struct AttrSpec {
  std::string name;
  AttrKind kind = AttrKind::Int;
  Attr default_value;  ///< unset: the attribute is required
  std::string doc;
};

}  // namespace opforge
