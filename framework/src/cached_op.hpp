// A standard op's handle, resolved on first use and cached for the process.
// Internal to the core (the front end and differentiable views use it).
#pragma once

#include "opforge/op.hpp"

/// The handle of op `name` (a string literal), resolved once per call site.
#define OPFORGE_CACHED_OP(name)                   \
  []() -> const ::opforge::OpHandle& {            \
    static const ::opforge::OpHandle handle = ::opforge::op(name); \
    return handle;                                \
  }()
