// GradModeScope: grad mode set for a scope on this thread, then restored.
#pragma once

#include "opforge/tensor.hpp"

namespace opforge::sdk {

/// Sets grad mode (per thread) to `enabled` for the scope, then restores the
/// thread's previous mode, also when the scope is left by an exception.
class GradModeScope {
 public:
  explicit GradModeScope(bool enabled) noexcept : prev_(grad_enabled()) {
    if (prev_ != enabled) set_grad_enabled(enabled);
  }
  ~GradModeScope() { set_grad_enabled(prev_); }
  GradModeScope(const GradModeScope&) = delete;
  GradModeScope& operator=(const GradModeScope&) = delete;

 private:
  bool prev_;
};

}  // namespace opforge::sdk
