// Turning whatever an op's code threw into a core exception, while the op's
// plugin is still loaded. Internal to the core.
#pragma once

#include <string>

#include "op_entry.hpp"

namespace opforge {

enum class Phase { Forward, Backward };

/// A C++ type name as written (typeid(e).name() demangled), or the name as given.
std::string demangle(const char* name);

/// " (plugin 'NAME', FILE)" for an op registered by a plugin, "" for one made
/// with make_op: appended to messages about what the op's code did wrong.
std::string plugin_origin(const OpEntry& op);

/// Call from inside a catch (...) block only: rethrows the exception in flight
/// as a core exception that names the op (and, for unknown types, the plugin).
[[noreturn]] void rethrow_as_core_error(const OpEntry& op, Phase phase);

/// Call from inside a catch (...) block only: rethrows what a gradient hook made
/// by a plugin threw as a core exception (same kind for an opforge::Error), so
/// that nothing whose type or text lives in the plugin reaches the caller, who
/// may handle it after the plugin is unloaded.
[[noreturn]] void rethrow_as_hook_error();

}  // namespace opforge
