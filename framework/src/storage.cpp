#include "storage.hpp"

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>

#include "opforge/tensor.hpp"
#include "block_cache.hpp"
#include "plugin_keepalive.hpp"
#include "refcount.hpp"

namespace opforge {
namespace {

constexpr std::size_t kAlign = 64;
constexpr std::size_t kHeader = (sizeof(Storage) + kAlign - 1) / kAlign * kAlign;

std::atomic<std::int64_t> g_live{0};
std::atomic<std::int64_t> g_peak{0};

void count_alloc(std::int64_t n) noexcept {
  std::int64_t now = g_live.fetch_add(n, std::memory_order_relaxed) + n;
  std::int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

// Large tensors are streamed through by memory-bound kernels. With 4 KiB pages a
// pass over a 320 MB matrix takes ~80,000 TLB misses; with 2 MiB pages, 160.
// Linux gives huge pages to anonymous memory only where asked (the default
// "madvise" mode), so big blocks get a 2 MiB-aligned mapping of their own and
// MADV_HUGEPAGE. Where huge pages are off ("never") the advice is ignored and
// the block is an ordinary mapping; freeing it returns it to the system at once.
constexpr std::size_t kHugePage = std::size_t{2} << 20;

void* map_huge(std::size_t len) {
  const std::size_t over = len + kHugePage;
  void* raw = ::mmap(nullptr, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const auto base = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (base + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned > base) ::munmap(raw, aligned - base);
  const std::uintptr_t end = aligned + len, raw_end = base + over;
  if (raw_end > end) ::munmap(reinterpret_cast<void*>(end), raw_end - end);
#ifdef MADV_HUGEPAGE
  ::madvise(reinterpret_cast<void*>(aligned), len, MADV_HUGEPAGE);
#endif
  return reinterpret_cast<void*>(aligned);
}

}  // namespace

std::int64_t live_bytes() noexcept { return g_live.load(std::memory_order_relaxed); }
std::int64_t peak_bytes() noexcept { return g_peak.load(std::memory_order_relaxed); }
void reset_peak_bytes() noexcept { g_peak.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed); }

namespace {

// Blocks below kHugeBlockBytes come from the heap, over-allocated by the
// alignment and aligned here rather than by aligned operator new: glibc's
// memalign path carves and frees the slack on every call (a third of the time
// of a recorded call plus backward on a one-element tensor), where plain
// operator new of a small block is a thread-cache hit. Up to 48 bytes are
// spent a block.
constexpr std::size_t kHeapSlack = kAlign - __STDCPP_DEFAULT_NEW_ALIGNMENT__;

// Storages of tiny tensors (up to 80 bytes of data: scalars, losses, small
// vectors) take their block from the per-thread cache TensorImpl uses.
void* heap_block(std::size_t bytes, bool& cached) {
  cached = bytes <= SmallBlockCache::kBlockSize;
  return cached ? SmallBlockCache::get() : ::operator new(bytes);
}

void* align_up(void* p) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  return reinterpret_cast<void*>((a + kAlign - 1) & ~std::uintptr_t{kAlign - 1});
}

}  // namespace

StoragePtr Storage::allocate(std::size_t nbytes) {
  if (nbytes > SIZE_MAX - kHeader - kHugePage) throw std::bad_alloc();
  std::size_t mapped = 0;
  void* block = nullptr;
  void* heap = nullptr;
  bool cached = false;
  if (kHeader + nbytes >= kHugeBlockBytes) {
    mapped = (kHeader + nbytes + kHugePage - 1) & ~(kHugePage - 1);
    block = map_huge(mapped);
  } else {
    heap = heap_block(kHeader + nbytes + kHeapSlack, cached);
    block = align_up(heap);
  }
  auto* s = new (block) Storage();
  s->mapped_ = mapped;
  s->heap_ = heap;
  s->cached_ = cached;
  s->data_ = static_cast<char*>(block) + kHeader;
  s->nbytes_ = nbytes;
  s->owned_ = true;
  count_alloc(static_cast<std::int64_t>(nbytes));
  s->refcount_.store(1, std::memory_order_relaxed);  // held by the pointer returned
  return StoragePtr(s, /*add_ref=*/false);
}

StoragePtr Storage::adopt(void* data, std::size_t nbytes, Deleter deleter, void* context, const void* deleter_code) {
  bool cached = false;
  void* heap = heap_block(kHeader + kHeapSlack, cached);
  auto* s = new (align_up(heap)) Storage();
  s->heap_ = heap;
  s->cached_ = cached;
  s->data_ = data;
  s->nbytes_ = nbytes;
  s->deleter_ = deleter;
  s->deleter_context_ = context;
  if (deleter) s->keep_alive_ = keep_plugin_loaded(deleter_code ? deleter_code : reinterpret_cast<const void*>(deleter));
  s->refcount_.store(1, std::memory_order_relaxed);  // held by the pointer returned
  return StoragePtr(s, /*add_ref=*/false);
}

void Storage::destroy() noexcept {
  if (owned_) {
    g_live.fetch_sub(static_cast<std::int64_t>(nbytes_), std::memory_order_relaxed);
  } else if (deleter_) {
    deleter_(data_, deleter_context_);
  }
  keep_alive_.reset();  // only now may the deleter's plugin go
  const std::size_t mapped = mapped_;
  void* const heap = heap_;
  const bool cached = cached_;
  this->~Storage();
  if (mapped) ::munmap(static_cast<void*>(this), mapped);
  else if (cached) SmallBlockCache::put(heap);
  else ::operator delete(heap);
}

void intrusive_ptr_add_ref(Storage* s) noexcept { s->refcount_.fetch_add(1, std::memory_order_relaxed); }
void intrusive_ptr_release(Storage* s) noexcept {
  if (release_is_last(s->refcount_)) s->destroy();
}

}  // namespace opforge
