// Node: one recorded op call in the dynamic graph. Internal to the core.
//
// A node owns its op (and through it the plugin that holds the op's code), its
// Context, and one edge per input pointing at where that input's gradient goes:
// the node that produced the input, or the leaf tensor that accumulates it.
// Output tensors point at their node; nodes never point at their outputs, so
// the graph has no cycles.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "block_cache.hpp"
#include "op_entry.hpp"
#include "opforge/function.hpp"
#include "tensor_impl.hpp"

namespace opforge {

struct Edge {
  NodePtr fn;           // producer of the input, or null
  TensorImplPtr leaf;   // the leaf that accumulates, or null
  std::uint32_t input_nr = 0;  // which output of `fn` the input was
  bool needed() const noexcept { return fn || leaf; }
};

struct TensorMeta {
  Dims shape;
  DType dtype = DType::Float64;
};

// One node per recorded call: blocks come from a per-thread cache.
class Node : public CacheAllocated<NodeBlockCache> {
 public:
  // Declared first so it is destroyed last: the plugin that owns the
  // Function's code (and any code the Context's contents need) outlives them.
  boost::intrusive_ptr<OpEntry> op;
  Context ctx;
  boost::container::small_vector<Edge, 4> edges;       // one per input
  boost::container::small_vector<TensorMeta, 4> meta;  // one per input, then one per output
  // (output, hook), rare. A deque: a hook may register another while it runs.
  std::unique_ptr<std::deque<std::pair<std::uint32_t, Tensor::GradHook>>> output_hooks;

  // Engine scratch: valid during one backward pass (a graph is backpropagated
  // by one thread at a time; independent graphs run in parallel freely).
  // The pass that has claimed this node and not yet run it, 0 when none. Atomic: a
  // pass on another thread that reaches a claimed node is refused instead of
  // resetting the fields below under the pass that owns them.
  std::atomic<std::uint64_t> epoch{0};
  std::uint32_t dependencies = 0;
  // grad() only: whether this node's backward leads to an input asked for
  // (kNeedUnknown before the pass has looked, kNeedExpanded while it looks).
  std::int8_t needed = 0;
  TensorList grad_buffer;

  const std::string& name() const noexcept { return op->schema.name; }
  /// A new node held by the pointer returned (count 1 by a plain store).
  static boost::intrusive_ptr<Node> make() {
    auto* n = new Node;  // not `new Node()`: every member has its initialiser; see new_tensor_impl()
    n->refcount_.store(1, std::memory_order_relaxed);
    return boost::intrusive_ptr<Node>(n, /*add_ref=*/false);
  }
  // `edges` is sized to the inputs before any output's meta is added.
  const TensorMeta& input_meta(std::size_t i) const noexcept { return meta[i]; }
  const TensorMeta& output_meta(std::size_t k) const noexcept { return meta[edges.size() + k]; }
  std::size_t num_outputs() const noexcept { return meta.size() - edges.size(); }

 private:
  friend void intrusive_ptr_add_ref(Node* n) noexcept;
  friend void intrusive_ptr_release(Node* n) noexcept;
  std::atomic<std::uint32_t> refcount_{0};
  Node* next_pending_ = nullptr;  // intrusive list for iterative destruction
};

static_assert(sizeof(Node) <= NodeBlockCache::kBlockSize, "Node outgrew its block cache's size");

/// Gives the engine access to Context internals.
struct ContextAccess {
  static TensorList& saved(Context& c) { return c.saved_; }
  static void init(Context& c, std::uint64_t mask, std::uint32_t n_inputs, const OpSchema& schema);
  static auto& attrs(Context& c) { return c.attrs_; }
  static void release(Context& c) {
    c.saved_.clear();
    c.saved_versions_.clear();
    c.values_.clear();
    c.ints_.clear();
    c.released_ = true;
  }
  static std::uint64_t non_differentiable(const Context& c) { return c.non_differentiable_mask_; }
  static bool released(const Context& c) { return c.released_; }
};

}  // namespace opforge
