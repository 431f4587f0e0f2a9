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
/// and nodes of a call), skips the locked decrement (~3 ns on the 2-core Zen 5
/// VM, more on the Xeon measured; a recorded call used several). The acquire
/// load orders the destruction after every other thread's earlier release.
inline bool release_is_last(std::atomic<std::uint32_t>& count) noexcept {
  return count.load(std::memory_order_acquire) == 1 || count.fetch_sub(1, std::memory_order_acq_rel) == 1;
}

}  // namespace opforge
