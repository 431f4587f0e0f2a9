// Function and Context: the contract every operator implements.
//
// As in PyTorch's custom Function: forward(ctx, inputs) computes the outputs
// (the core runs it with grad mode off) and saves what backward needs on the
// Context; backward(ctx, grad_outputs) returns one gradient per input
// (undefined where the input needs none). The engine, not the author, checks
// what backward returns: the count, and each gradient's shape and dtype.
//
// A Function object is stateless and shared by every call of its op, possibly
// from many threads at once: per-call state belongs on the Context.
#pragma once

#include <cstdint>
#include <string>

#include <boost/container/small_vector.hpp>

#include "opforge/attr.hpp"
#include "opforge/dtype.hpp"
#include "opforge/error.hpp"
#include "opforge/export.hpp"
#include "opforge/tensor.hpp"
#include "opforge/tensor_list.hpp"

namespace opforge {

struct OpSchema;

class OPFORGE_API Context {
 public:
  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  /// Keeps tensors for backward. Save only what backward reads: saved tensors
  /// stay alive until backward has run. Their version counters are recorded: a
  /// saved tensor modified in place before backward is an error, not a wrong
  /// gradient.
  void save_for_backward(TensorSpan tensors);
  /// What forward saved, in order. Throws AutogradError once the graph was freed,
  /// or when a saved tensor was modified in place since it was saved.
  const TensorList& saved_tensors() const;

  /// Non-tensor values forward wants backward to see (a scale, an axis...).
  void save_value(double v) { values_.push_back(v); }
  double saved_value(std::size_t i) const;
  void save_int(std::int64_t v) { ints_.push_back(v); }
  std::int64_t saved_int(std::size_t i) const;

  /// Output `index` carries no gradient (an index, a mask): it gets no grad_fn
  /// and backward receives no gradient for it (a zero tensor is passed).
  /// An index past the op's outputs is refused (AutogradError; an op has at most 64).
  void mark_non_differentiable(std::size_t output_index) {
    if (output_index >= 64)
      throw AutogradError(detail::concat(op_name_, ": forward marked output ", output_index,
                                         " non-differentiable (ctx.mark_non_differentiable), but an op has at most 64 "
                                         "outputs; mark the index of one of its outputs"));
    non_differentiable_mask_ |= std::uint64_t{1} << output_index;
  }

  /// Whether backward must compute the gradient of input i.
  bool needs_input_grad(std::size_t i) const noexcept { return i < 64 && ((needs_grad_mask_ >> i) & 1u); }
  /// Whether any input needs a gradient (false under no-grad: forward may skip
  /// the work that only backward would use).
  bool any_input_needs_grad() const noexcept { return needs_grad_mask_ != 0; }
  std::size_t num_inputs() const noexcept { return num_inputs_; }
  /// In backward: the shape and dtype input i had when forward ran. The core
  /// records them for every recorded call, so backward needs no save_int of a
  /// shape (which would also take the Context past its inline room). Throws
  /// AutogradError when called outside this Context's backward.
  const Dims& input_shape(std::size_t i) const;
  DType input_dtype(std::size_t i) const;

  /// The qualified name of the op being run, for error messages ("loss.lstsq").
  const char* op_name() const noexcept { return op_name_; }

  /// The call's attributes, in the order the schema declares them, defaults
  /// filled in. By index (no lookup) or by name.
  const Attr& attr(std::size_t i) const;
  const Attr& attr(std::string_view name) const;
  std::int64_t attr_int(std::size_t i) const { return attr(i).as_int(attr_label(i)); }
  double attr_float(std::size_t i) const { return attr(i).as_float(attr_label(i)); }
  bool attr_bool(std::size_t i) const { return attr(i).as_bool(attr_label(i)); }
  const Dims& attr_ints(std::size_t i) const { return attr(i).as_ints(attr_label(i)); }
  std::size_t num_attrs() const noexcept { return attrs_.size(); }

 private:
  void check_not_released() const;
  const char* attr_label(std::size_t i) const noexcept;
  friend class Engine;
  friend struct ContextAccess;
  TensorList saved_;
  boost::container::small_vector<std::uint32_t, 4> saved_versions_;
  boost::container::small_vector<double, 4> values_;
  boost::container::small_vector<std::int64_t, 2> ints_;
  std::uint64_t needs_grad_mask_ = 0;
  std::uint64_t non_differentiable_mask_ = 0;
  boost::container::small_vector<Attr, 2> attrs_;
  const struct OpSchema* schema_ = nullptr;
  const char* op_name_ = "";
  std::uint32_t num_inputs_ = 0;
  bool released_ = false;
};

class OPFORGE_API Function {
 public:
  virtual ~Function();
  virtual TensorList forward(Context& ctx, TensorSpan inputs) const = 0;
  virtual TensorList backward(Context& ctx, TensorSpan grad_outputs) const = 0;
};

}  // namespace opforge
