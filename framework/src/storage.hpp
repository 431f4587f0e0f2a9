// Storage: one reference-counted block of tensor memory, shared by views.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "opforge/tensor.hpp"  // StoragePtr

namespace opforge {

class Storage {
 public:
  using Deleter = void (*)(void* data, void* context);

  /// One 64-byte-aligned block holding this header and `nbytes` of data. Blocks
  /// of kHugeBlockBytes or more are mapped on their own, 2 MiB-aligned, and
  /// offered to the kernel for transparent huge pages (see storage.cpp).
  static StoragePtr allocate(std::size_t nbytes);
  static constexpr std::size_t kHugeBlockBytes = std::size_t{4} << 20;
  /// Wraps memory owned elsewhere; `deleter(data, context)` runs once, when the
  /// last view is gone.
  /// While the storage lives, the plugin holding the deleter's code stays loaded.
  static StoragePtr adopt(void* data, std::size_t nbytes, Deleter deleter, void* context,
                        const void* deleter_code = nullptr);

  void* data() const noexcept { return data_; }
  std::size_t nbytes() const noexcept { return nbytes_; }
  std::uint32_t use_count() const noexcept { return refcount_.load(std::memory_order_acquire); }
  /// Whether the data is opforge's own (allocate), not memory adopted from a caller.
  bool owns_data() const noexcept { return owned_; }

  std::atomic<std::uint32_t> version{0};

 private:
  friend void intrusive_ptr_add_ref(Storage* s) noexcept;
  friend void intrusive_ptr_release(Storage* s) noexcept;
  Storage() = default;
  void destroy() noexcept;

  std::atomic<std::uint32_t> refcount_{0};
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Deleter deleter_ = nullptr;  // for adopted memory; null when borrowed or owned
  void* deleter_context_ = nullptr;
  bool owned_ = false;         // data lives in this block (counted in live_bytes)
  std::size_t mapped_ = 0;     // length of this block's own mapping; 0: from the heap
  void* heap_ = nullptr;       // what the heap returned for this block, when it came from there
  bool cached_ = false;        // heap_ is a block of the small-block cache
  std::shared_ptr<void> keep_alive_;  // the plugin whose code the deleter is, if any
};

}  // namespace opforge
