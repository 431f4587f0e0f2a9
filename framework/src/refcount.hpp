// The release half of the core's intrusive reference counts.
#pragma once

#include <atomic>
#include <cstdint>

namespace opforge {

/// Drops the caller's reference; true when it was the last one.
///
/// A count of 1 read by the holder of that one reference cannot change under
/// it: another thread would need a reference of its own to add one. So the
/// common case, an object that dies with its only owner (most tensors, storages
/// and nodes of a call), skips the locked decrement, which costs ~20 cycles on
/// the Intel cores we measured (several per recorded op call). The acquire load
/// orders the destruction after every other thread's earlier release.
inline bool release_is_last(std::atomic<std::uint32_t>& count) noexcept {
  return count.load(std::memory_order_acquire) == 1 || count.fetch_sub(1, std::memory_order_acq_rel) == 1;
}

}  // namespace opforge
