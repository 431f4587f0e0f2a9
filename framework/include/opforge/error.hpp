// One exception hierarchy for the whole framework.
//
// Every message names the op, the argument, what was expected and what came:
//   "linalg.mv: argument 'x' (input 1): expected shape [4], got [3]"
// Errors thrown by plugin code are re-created as these core types at the plugin
// boundary, while the plugin is still loaded, so no exception object whose code
// lives in a plugin ever escapes it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

#include "opforge/export.hpp"

namespace opforge {

enum class ErrorKind { Generic, Shape, DType, Plugin, Autograd, Value, Index, Memory };

class OPFORGE_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, ErrorKind kind = ErrorKind::Generic)
      : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

/// A tensor has the wrong rank or shape for what was asked of it.
class OPFORGE_API ShapeError : public Error {
 public:
  explicit ShapeError(const std::string& msg) : Error(msg, ErrorKind::Shape) {}
};
/// A tensor has a dtype the op does not accept, or two dtypes do not match.
class OPFORGE_API DTypeError : public Error {
 public:
  explicit DTypeError(const std::string& msg) : Error(msg, ErrorKind::DType) {}
};
/// A plugin could not be loaded, registered, or misbehaved at its boundary.
class OPFORGE_API PluginError : public Error {
 public:
  explicit PluginError(const std::string& msg) : Error(msg, ErrorKind::Plugin) {}
};
/// The graph was misused, or a backward broke its contract.
class OPFORGE_API AutogradError : public Error {
 public:
  explicit AutogradError(const std::string& msg) : Error(msg, ErrorKind::Autograd) {}
};
/// An argument has a value outside what is allowed (a negative size, an empty list...).
class OPFORGE_API ValueError : public Error {
 public:
  explicit ValueError(const std::string& msg) : Error(msg, ErrorKind::Value) {}
};
/// An index or axis is out of range.
class OPFORGE_API IndexError : public Error {
 public:
  explicit IndexError(const std::string& msg) : Error(msg, ErrorKind::Index) {}
};

/// Memory for a tensor could not be had: the message says how much, for what
/// shape and dtype, and how much live tensors already hold.
class OPFORGE_API MemoryError : public Error {
 public:
  explicit MemoryError(const std::string& msg) : Error(msg, ErrorKind::Memory) {}
};

/// Throws a core exception of the given kind with the given message (used to
/// re-create plugin exceptions as core objects).
[[noreturn]] OPFORGE_API void throw_error(ErrorKind kind, const std::string& msg);

namespace detail {
/// A double streamed in the shortest text that reads back as the same value
/// (9223372036854775808, not 9.22337e+18): os << Exact{v}.
struct Exact {
  double value;
};
OPFORGE_API std::ostream& operator<<(std::ostream& os, Exact e);

template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace opforge

/// OPFORGE_CHECK(cond, ShapeError, "linalg.mv: argument 'x': expected ", a, ", got ", b);
/// ErrType may be written bare (ShapeError) or qualified (opforge::ShapeError).
#define OPFORGE_CHECK(cond, ErrType, ...)                                  \
  do {                                                                     \
    if (__builtin_expect(!(cond), 0)) {                                    \
      using namespace ::opforge;                                           \
      throw ErrType(::opforge::detail::concat(__VA_ARGS__));               \
    }                                                                      \
  } while (0)
