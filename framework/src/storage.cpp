#include "storage.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <new>
#include <vector>

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

// A mid-size block (kMidBlockBytes up to kHugeBlockBytes) gets a plain mapping
// of its own: from the C library's heap it came back as fresh pages on most
// calls (glibc trims the heap top, or maps such blocks itself, and returns them
// on free), so an op that makes a few such tensors a call (svd of a 256 x 256
// matrix: its copy of A, U, Vᵀ, LAPACK's workspace) spent a fifth of its time
// faulting and zeroing pages. Its length is rounded up to an eighth of its
// power of two (at most 12.5% more), so that tensors of nearby sizes share
// kept blocks.
constexpr std::size_t kPage = 4096;
constexpr std::size_t kMidBlockBytes = std::size_t{128} << 10;

std::size_t mid_block_length(std::size_t len) noexcept {
  std::size_t pow2 = kMidBlockBytes;
  while (pow2 * 2 <= len) pow2 *= 2;
  const std::size_t step = std::max(kPage, pow2 / 8);
  return (len + step - 1) / step * step;
}

void* map_plain(std::size_t len) {
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return p;
}

// Freed mapped blocks (mid-size and large) are kept for reuse, the most recent first, up to
// kKeptBytes in all and only blocks of kKeptBlockMax or less: a loop that makes
// a tensor of the same size on every pass (an elementwise op's output) then
// finds its block mapped and its pages present, where a fresh mapping costs a
// page fault and the zeroing of each 2 MiB page, and unmapping costs a TLB
// shootdown. Measured on the 2-core VM, elementwise.sqrt of 10^6 doubles (an
// 8 MB output, 2 threads, before its loop was vectorised): 1.74 -> 1.16 ms a
// call (NumPy 1.18 ms: its allocator keeps such blocks too, up to 32 MiB).
// Bigger blocks go back to the system at once; release_cached_memory() returns
// the rest. One lock per large allocation or free, beside a kernel's pass over
// megabytes. A kept block holds old data: only Tensor::empty leaves it as is.
// A 32 MiB tensor (2048 x 2048 float64, 4096 x 4096 float32) maps 34 MiB with its
// header: the limits count that mapping, so that such a tensor is kept (with 32 MiB
// it was not, and every call paid the fault and zeroing of its 17 huge pages:
// [2048, 2048] float64 clone 2.5 ms, of which 1.2 ms in the kernel's clear_page).
constexpr std::size_t kKeptBlockMax = (std::size_t{32} << 20) + kHugePage;
constexpr std::size_t kKeptBytes = 2 * kKeptBlockMax;

class KeptBlocks {
 public:
  /// A kept block of exactly `len` mapped bytes, or null.
  void* take(std::size_t len) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (std::size_t i = blocks_.size(); i-- > 0;) {
      if (blocks_[i].len != len) continue;
      void* p = blocks_[i].p;
      blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(i));
      bytes_ -= len;
      return p;
    }
    return nullptr;
  }
  /// Keeps the block, unmapping the oldest ones past the budget; false (the
  /// caller unmaps it) for a block too big to keep.
  bool keep(void* p, std::size_t len) noexcept {
    if (len > kKeptBlockMax) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    try {
      blocks_.push_back({p, len});
    } catch (...) {
      return false;
    }
    bytes_ += len;
    std::size_t n = 0;
    for (; bytes_ > kKeptBytes; ++n) {
      bytes_ -= blocks_[n].len;
      ::munmap(blocks_[n].p, blocks_[n].len);
    }
    blocks_.erase(blocks_.begin(), blocks_.begin() + static_cast<std::ptrdiff_t>(n));
    return true;
  }
  std::int64_t release() noexcept {
    std::vector<Block> all;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      all.swap(blocks_);
      bytes_ = 0;
    }
    std::int64_t n = 0;
    for (const Block& b : all) {
      ::munmap(b.p, b.len);
      n += static_cast<std::int64_t>(b.len);
    }
    return n;
  }
  std::int64_t bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<std::int64_t>(bytes_);
  }

 private:
  struct Block {
    void* p;
    std::size_t len;
  };
  std::mutex mutex_;
  std::vector<Block> blocks_;
  std::size_t bytes_ = 0;
};

// Never destroyed: tensors may be freed during static destruction.
KeptBlocks& kept_blocks() {
  static KeptBlocks* const k = new KeptBlocks();
  return *k;
}

// The large-block paths, out of line: allocate() and destroy() stay as short as
// they were for the small tensors of every op call (inlined, the lock and the
// vector cost those ~3%).
[[gnu::noinline]] void* take_or_map(std::size_t mapped) {
  void* block = kept_blocks().take(mapped);
  return block ? block : mapped >= Storage::kHugeBlockBytes ? map_huge(mapped) : map_plain(mapped);
}
[[gnu::noinline]] void keep_or_unmap(void* block, std::size_t mapped) noexcept {
  if (!kept_blocks().keep(block, mapped)) ::munmap(block, mapped);
}

}  // namespace

std::int64_t release_cached_memory() noexcept { return kept_blocks().release(); }
std::int64_t cached_memory_bytes() noexcept { return kept_blocks().bytes(); }

std::int64_t live_bytes() noexcept { return g_live.load(std::memory_order_relaxed); }
std::int64_t peak_bytes() noexcept { return g_peak.load(std::memory_order_relaxed); }
void reset_peak_bytes() noexcept { g_peak.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed); }

namespace {

// Blocks below kMidBlockBytes come from the heap, over-allocated by the
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
    block = take_or_map(mapped);
  } else if (kHeader + nbytes >= kMidBlockBytes) {
    mapped = mid_block_length(kHeader + nbytes);
    block = take_or_map(mapped);
  } else {
    heap = heap_block(kHeader + nbytes + kHeapSlack, cached);
    block = align_up(heap);
  }
  auto* s = new (block) Storage;  // default-initialised: no zeroing of the header first (new_tensor_impl())
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
  auto* s = new (align_up(heap)) Storage;
  s->heap_ = heap;
  s->cached_ = cached;
  s->data_ = data;
  s->nbytes_ = nbytes;
  s->deleter_ = deleter;
  s->deleter_context_ = context;
  // Plugin code that frees the memory, or (no deleter) memory inside a plugin's
  // own image (its static data) keeps that plugin loaded while the storage
  // lives. Memory of the heap or the program costs two atomic loads, inline.
  // Then the memory itself, then the context the deleter gets: a DLPack tensor
  // with no deleter of its own over a plugin's static table has both there.
  if (deleter) s->keep_alive_ = keep_plugin_loaded(deleter_code ? deleter_code : reinterpret_cast<const void*>(deleter));
  if (!s->keep_alive_ && may_be_in_plugin(data)) s->keep_alive_ = keep_plugin_loaded(data);
  if (!s->keep_alive_ && context && may_be_in_plugin(context)) s->keep_alive_ = keep_plugin_loaded(context);
  s->refcount_.store(1, std::memory_order_relaxed);  // held by the pointer returned
  return StoragePtr(s, /*add_ref=*/false);
}

// A deleter must not throw (it runs where a tensor's last reference goes, often
// in a destructor): the exception stops here, and stderr says so, since nothing
// else can.
static void report_throwing_deleter(const char* what) noexcept {
  std::fprintf(stderr,
               "opforge: the deleter of a tensor's memory (given to Tensor::from_blob or from_dlpack) threw%s%s%s; "
               "the memory it was to free may have leaked. A deleter must not throw: fix it.\n",
               what ? " (" : " an exception of an unknown type", what ? what : "", what ? ")" : "");
}

void Storage::destroy() noexcept {
  if (owned_) {
    g_live.fetch_sub(static_cast<std::int64_t>(nbytes_), std::memory_order_relaxed);
  } else if (deleter_) {
    try {
      deleter_(data_, deleter_context_);
    } catch (const std::exception& e) {  // read while the deleter's plugin is still loaded
      report_throwing_deleter(e.what());
    } catch (...) {
      report_throwing_deleter(nullptr);
    }
  }
  keep_alive_.reset();  // only now may the deleter's plugin go
  const std::size_t mapped = mapped_;
  void* const heap = heap_;
  const bool cached = cached_;
  this->~Storage();
  if (mapped) keep_or_unmap(static_cast<void*>(this), mapped);
  else if (cached) SmallBlockCache::put(heap);
  else ::operator delete(heap);
}

void intrusive_ptr_add_ref(Storage* s) noexcept { s->refcount_.fetch_add(1, std::memory_order_relaxed); }
void intrusive_ptr_release(Storage* s) noexcept {
  if (release_is_last(s->refcount_)) s->destroy();
}

}  // namespace opforge
