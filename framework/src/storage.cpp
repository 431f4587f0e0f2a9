#include "storage.hpp"

#include <new>

#include "opforge/tensor.hpp"
#include "plugin_keepalive.hpp"

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

}  // namespace

std::int64_t live_bytes() noexcept { return g_live.load(std::memory_order_relaxed); }
std::int64_t peak_bytes() noexcept { return g_peak.load(std::memory_order_relaxed); }
void reset_peak_bytes() noexcept { g_peak.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed); }

Storage* Storage::allocate(std::size_t nbytes) {
  void* block = ::operator new(kHeader + nbytes, std::align_val_t(kAlign));
  auto* s = new (block) Storage();
  s->data_ = static_cast<char*>(block) + kHeader;
  s->nbytes_ = nbytes;
  s->owned_ = true;
  count_alloc(static_cast<std::int64_t>(nbytes));
  return s;
}

Storage* Storage::adopt(void* data, std::size_t nbytes, Deleter deleter, void* context, const void* deleter_code) {
  void* block = ::operator new(kHeader, std::align_val_t(kAlign));
  auto* s = new (block) Storage();
  s->data_ = data;
  s->nbytes_ = nbytes;
  s->deleter_ = deleter;
  s->deleter_context_ = context;
  if (deleter) s->keep_alive_ = keep_plugin_loaded(deleter_code ? deleter_code : reinterpret_cast<const void*>(deleter));
  return s;
}

void Storage::destroy() noexcept {
  if (owned_) {
    g_live.fetch_sub(static_cast<std::int64_t>(nbytes_), std::memory_order_relaxed);
  } else if (deleter_) {
    deleter_(data_, deleter_context_);
  }
  keep_alive_.reset();  // only now may the deleter's plugin go
  this->~Storage();
  ::operator delete(static_cast<void*>(this), std::align_val_t(kAlign));
}

void intrusive_ptr_add_ref(Storage* s) noexcept { s->refcount_.fetch_add(1, std::memory_order_relaxed); }
void intrusive_ptr_release(Storage* s) noexcept {
  if (s->refcount_.fetch_sub(1, std::memory_order_acq_rel) == 1) s->destroy();
}

}  // namespace opforge
