// Keeping a plugin loaded while something outside its op entries holds its
// code: a deleter passed to Tensor::from_blob or carried by a DLPack tensor, a
// gradient hook, a Function handed to make_op, memory in a plugin's own image
// (its static data) adopted without a deleter. Internal to the core.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace opforge {

/// A reference that keeps loaded the plugin whose mapped image contains
/// `address` (a function, a vtable, any code or data of it); null when the
/// address belongs to no loaded plugin (the core, the program, the heap, another
/// library). The plugin is found by where it is mapped, never by its file (which
/// may be gone), and without dladdr. No lock is taken for an address in no plugin.
std::shared_ptr<void> keep_plugin_loaded(const void* address);

namespace plugin_map {
// Maintained by the plugin loader: the hull of every plugin image ever mapped
// (it only grows), and how many open plugin images it could not track exactly.
extern std::atomic<std::uintptr_t> hull_lo;
extern std::atomic<std::uintptr_t> hull_hi;
extern std::atomic<int> untracked;
}  // namespace plugin_map

/// False when `address` is surely in no plugin: two loads, no call, no lock, for
/// hot paths (Tensor::from_blob of program or heap memory) to skip
/// keep_plugin_loaded. True means "maybe": ask keep_plugin_loaded.
inline bool may_be_in_plugin(const void* address) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  return (a >= plugin_map::hull_lo.load(std::memory_order_acquire) &&
          a < plugin_map::hull_hi.load(std::memory_order_acquire)) ||
         plugin_map::untracked.load(std::memory_order_acquire) != 0;
}

}  // namespace opforge
