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

/// Deletes `p`, whose count has reached zero, without recursion: objects that
/// reach zero while another is being deleted on this thread (the chain that
/// deleting a graph node or a hooked tensor releases) are queued on `pending`
/// through their `Next` member, and the outermost call deletes them one after
/// another. `pending` and `draining` are the caller's thread_local list and flag.
template <class T, T* T::*Next>
void delete_without_recursion(T* p, T*& pending, bool& draining) noexcept {
  p->*Next = pending;
  pending = p;
  if (draining) return;
  draining = true;
  while (T* q = pending) {
    pending = q->*Next;
    delete q;
  }
  draining = false;
}

}  // namespace opforge
