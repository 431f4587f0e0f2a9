// Keeping a plugin loaded while something outside its op entries holds its
// code: a deleter passed to Tensor::from_blob or carried by a DLPack tensor, a
// gradient hook, a Function handed to make_op. Internal to the core.
#pragma once

#include <memory>

namespace opforge {

/// A reference that keeps loaded the plugin whose mapped image contains
/// `address` (a function, a vtable, any code or data of it); null when the
/// address belongs to no loaded plugin (the core, the program, another library).
std::shared_ptr<void> keep_plugin_loaded(const void* address);

}  // namespace opforge
