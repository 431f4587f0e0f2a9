// BlockCache: a per-thread stack of freed heap blocks of one size, for the
// objects every op call makes and drops (graph nodes, tensor impls, the storage
// of tiny tensors).
//
// A recorded call on a one-element tensor makes and frees seven such blocks;
// through malloc/free each costs ~130 instructions, a fifth of the call's. Here a
// block is pushed on and popped off a thread-local list: a few instructions and
// no locked ones. A block freed on another thread than the one that made it
// goes to that thread's list; blocks are plain heap memory either way. Each list
// holds at most Depth blocks (the rest go back to the heap), and a thread's list
// is handed back to the heap when the thread ends; a block freed on the thread
// after that (by another thread_local's destructor) goes straight to the heap.
//
// Under AddressSanitizer the cache is off, so that a use after free of these
// objects is still reported.
#pragma once

#include <cstddef>
#include <new>

#include "tls.hpp"

namespace opforge {

template <std::size_t Size, std::size_t Depth>
class BlockCache {
  static_assert(Size >= sizeof(void*), "a free block holds the next pointer");

 public:
  static constexpr std::size_t kBlockSize = Size;

  static void* get() {
    List& l = t_list;
    if (Block* b = l.head) {
      l.head = b->next;
      --l.count;
      return b;
    }
    return ::operator new(Size);
  }

  static void put(void* p) noexcept {
    List& l = t_list;
#if defined(__SANITIZE_ADDRESS__)
    const bool keep = false;
#else
    if (l.state == kUnset) arm(l);
    const bool keep = l.state == kLive && l.count < Depth;
#endif
    if (!keep) {
      ::operator delete(p);
      return;
    }
    auto* b = static_cast<Block*>(p);
    b->next = l.head;
    l.head = b;
    ++l.count;
  }

 private:
  struct Block {
    Block* next;
  };
  enum State : unsigned char { kUnset, kLive, kEnded };
  // Plain data, so that it stays readable after the thread's destructors ran.
  struct List {
    Block* head;
    std::size_t count;
    State state;
  };
  // Runs at thread exit: the list's blocks go back to the heap.
  struct Drain {
    ~Drain() {
      List& l = t_list;
      l.state = kEnded;
      while (Block* b = l.head) {
        l.head = b->next;
        ::operator delete(b);
      }
      l.count = 0;
    }
  };
  static void arm(List& l) noexcept {
    // Constructing a thread_local with a destructor registers it for this
    // thread's exit. If that fails the list stays unused.
    try {
      static thread_local Drain drain;
      (void)drain;
      l.state = kLive;
    } catch (...) {
      l.state = kEnded;
    }
  }

  static OPFORGE_TLS inline List t_list{};
};

/// Blocks of 256 bytes: tensor impls and the storage of tiny tensors share them.
using SmallBlockCache = BlockCache<256, 128>;
/// Blocks of 1 KiB: graph nodes.
using NodeBlockCache = BlockCache<1024, 32>;

/// Base of a class whose objects take their memory from `Cache` (objects
/// larger than its blocks, if a derived class made any, come from the heap).
template <class Cache>
struct CacheAllocated {
  static void* operator new(std::size_t n) { return n <= Cache::kBlockSize ? Cache::get() : ::operator new(n); }
  static void operator delete(void* p, std::size_t n) noexcept {
    if (n <= Cache::kBlockSize) Cache::put(p);
    else ::operator delete(p);
  }
};

}  // namespace opforge
