// The backward engine: dependency counting over the nodes reachable from the
// roots, then a walk in dependency order with an explicit work list. Nothing
// here recurses, so graph depth is bounded by memory only; node destruction is
// iterative too (intrusive_ptr_release below).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "boundary.hpp"
#include "node.hpp"
#include "opforge/autograd.hpp"
#include "plugin_keepalive.hpp"
#include "refcount.hpp"
#include "tls.hpp"

namespace opforge {

// ---- iterative node destruction --------------------------------------------------
// Destroying a node releases its edges, which may destroy the next node, and so on
// down a chain of any length. Nodes whose count reaches zero while another is being
// destroyed on this thread are queued on an intrusive list instead of recursing.

namespace {
OPFORGE_TLS Node* t_pending = nullptr;
OPFORGE_TLS bool t_draining = false;
}  // namespace

void intrusive_ptr_add_ref(Node* n) noexcept { n->refcount_.fetch_add(1, std::memory_order_relaxed); }

void intrusive_ptr_release(Node* n) noexcept {
  if (release_is_last(n->refcount_)) delete_without_recursion<Node, &Node::next_pending_>(n, t_pending, t_draining);
}

// ---- gradient arithmetic the engine needs ---------------------------------------------

namespace {

template <class T>
void add_to(T* dst, const T* src, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

template <class T>
void add_new(T* out, const T* a, const T* b, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

Tensor contiguous_copy_if_needed(const Tensor& t) { return t.is_contiguous() ? t : t.detach().clone(); }

// Whether backward may write into t: no other handle, no other view, opforge's own
// memory (a from_blob or DLPack tensor, as a hook's result or set_grad's, is the
// caller's: adding into it wrote into their buffer, or faulted on read-only memory).
bool uniquely_owned(const Tensor& t) {
  const TensorImpl* impl = t.unsafe_impl();
  return impl->use_count() == 1 && impl->storage->use_count() == 1 && impl->storage->owns_data() &&
         impl->contiguous && !impl->grad_fn;
}

// acc <- acc + g. Reuses acc's memory when nobody else can see it; otherwise
// makes a new tensor (a gradient may alias a grad_output or another gradient).
void accumulate(Tensor& acc, const Tensor& g) {
  if (!acc.defined()) {
    acc = g;
    return;
  }
  const Tensor gc = contiguous_copy_if_needed(g);
  const std::int64_t n = acc.numel();
  if (uniquely_owned(acc)) {
    if (acc.dtype() == DType::Float32) add_to(acc.data<float>(), gc.data<float>(), n);
    else add_to(acc.data<double>(), gc.data<double>(), n);
    return;
  }
  const Tensor ac = contiguous_copy_if_needed(acc);
  Tensor out = Tensor::empty(acc.shape(), acc.dtype());
  if (acc.dtype() == DType::Float32) add_new(out.data<float>(), ac.data<float>(), gc.data<float>(), n);
  else add_new(out.data<double>(), ac.data<double>(), gc.data<double>(), n);
  acc = std::move(out);
}

// Runs a gradient hook and checks what it returned.
Tensor run_hook(const Tensor::GradHook& hook, const Tensor& g, const char* where) {
  Tensor r = hook(g);
  if (!r.defined()) return g;
  OPFORGE_CHECK(r.shape() == g.shape() && r.dtype() == g.dtype(), AutogradError, "a gradient hook on ", where,
                " returned ", r.describe(), ", expected ", g.describe(), " (the gradient's dtype and shape)");
  return r;
}

// retain_grad()'s entry in a node's output_hooks: not run as a hook; after the
// output's hooks have run, backward() (not grad()) accumulates the gradient into
// the slot the tensor shares.
struct RetainEntry {
  std::shared_ptr<RetainedGrad> slot;
  Tensor operator()(const Tensor&) const { return Tensor(); }
};

// What backward computes goes either into leaves' .grad (backward) or into the
// caller's result list (grad): `Capture` says where.
struct Capture {
  TensorSpan inputs;
  TensorList* results = nullptr;
  bool active() const { return results != nullptr; }
};

// grad(): whether `leaf` is one of the inputs asked for, and whether node `n`
// made one of them (a non-leaf input's gradient is taken from its node's buffer).
bool captures_leaf(const Capture& cap, const TensorImpl* leaf) {
  for (const Tensor& in : cap.inputs)
    if (in.unsafe_impl() == leaf) return true;
  return false;
}
bool captures_output_of(const Capture& cap, const Node* n) {
  for (const Tensor& in : cap.inputs)
    if (in.unsafe_impl()->grad_fn.get() == n) return true;
  return false;
}

// grad += g for a .grad (a leaf's, or a retained non-leaf's), under its lock.
void accumulate_grad(std::atomic_flag& lock, Tensor& grad, Tensor g) {
  SpinLock hold(lock);
  if (!grad.defined()) {
    // A .grad must not share memory with anything backward still uses.
    grad = uniquely_owned(g) ? std::move(g) : g.detach().clone();
    return;
  }
  accumulate(grad, g);
}

// Hands a leaf's gradient (its hooks already run) to its destination.
void deliver_to_leaf(TensorImpl& leaf, Tensor g, const Capture& cap) {
  if (cap.active()) {
    for (std::size_t i = 0; i < cap.inputs.size(); ++i)
      if (cap.inputs[i].unsafe_impl() == &leaf) accumulate((*cap.results)[i], g);
    return;  // grad() never touches .grad
  }
  // Turned off (requires_grad_(false)) since the graph was recorded: no .grad.
  if (!leaf.requires_grad) return;
  accumulate_grad(leaf.grad_lock, leaf.grad, std::move(g));
}

// Scratch lists reused across backward calls on a thread (no heap traffic once
// warm); a stack of them so that a backward may run inside another.
// A leaf with hooks: its gradient is summed over the pass, and the hooks run
// once on the sum, when the last edge into the leaf has delivered.
struct HookedLeaf {
  TensorImpl* leaf;
  std::uint32_t pending;
  Tensor sum;
};

struct Scratch {
  std::vector<Tensor> roots;  // the outputs, held for the pass: a hook may drop the caller's handles
  std::vector<Node*> visited;
  std::vector<Node*> stack;
  std::vector<Node*> ready;
  std::vector<HookedLeaf> hooked;
  // Where each leaf sits in `hooked`, once there are more than a few (a search
  // per edge made a pass over many hooked leaves quadratic: 40,000 took 0.44 s).
  std::unordered_map<const TensorImpl*, std::size_t> hooked_at;
  std::uint64_t epoch = 0;  // of the pass that holds this scratch

  static constexpr std::size_t kSearchedHooked = 16;
  HookedLeaf* find_hooked(const TensorImpl* leaf) {
    if (hooked.size() <= kSearchedHooked) {
      for (HookedLeaf& h : hooked)
        if (h.leaf == leaf) return &h;
      return nullptr;
    }
    const auto it = hooked_at.find(leaf);
    return it == hooked_at.end() ? nullptr : &hooked[it->second];
  }
  void add_hooked(TensorImpl* leaf) {
    hooked.push_back({leaf, 1, Tensor()});
    if (hooked.size() <= kSearchedHooked) return;
    if (hooked_at.empty())
      for (std::size_t i = 0; i + 1 < hooked.size(); ++i) hooked_at.emplace(hooked[i].leaf, i);
    hooked_at.emplace(leaf, hooked.size() - 1);
  }
};
OPFORGE_TLS std::vector<std::unique_ptr<Scratch>> t_scratch;
OPFORGE_TLS std::size_t t_depth = 0;

// The node whose backward runs on this thread (Context::input_shape reads it).
OPFORGE_TLS const Node* t_backward_node = nullptr;

class BackwardScope {
 public:
  explicit BackwardScope(const Node* n) noexcept : prev_(t_backward_node) { t_backward_node = n; }
  ~BackwardScope() { t_backward_node = prev_; }
  BackwardScope(const BackwardScope&) = delete;
  BackwardScope& operator=(const BackwardScope&) = delete;

 private:
  const Node* prev_;
};

const TensorMeta& recorded_input(const Context& c, std::size_t i, const char* what) {
  const Node* n = t_backward_node;
  OPFORGE_CHECK(n && &n->ctx == &c, AutogradError, c.op_name(), ": Context::", what, "(", i,
                ") is known in backward only; in forward, read the input tensor itself");
  OPFORGE_CHECK(i < n->edges.size(), IndexError, c.op_name(), ": Context::", what, "(", i, "): the op has ",
                n->edges.size(), " input", n->edges.size() == 1 ? "" : "s");
  return n->input_meta(i);
}

// Hands back the nodes a pass claimed when it stops early (an error): no
// gradient left in their buffers, and no claim a later pass would take for an
// outer pass's.
void release_claims(Scratch& s) noexcept {
  for (Node* n : s.visited) {
    if (n->epoch.load(std::memory_order_relaxed) != s.epoch) continue;  // run already, or never claimed
    n->grad_buffer.clear();
    n->epoch.store(0, std::memory_order_release);
  }
}

// A pass started inside another on this thread (from a hook or an op's
// backward) must not reach a node the outer pass has still to run: it would
// reset that node's dependency count and gradient buffer under the outer pass.
// Refused, after handing back what this pass had claimed. A node's epoch is 0
// once its pass has run it.
// `fn`: "backward" or "grad", the function that started this pass.
void refuse_outer_node(const char* fn, const Node& n, std::size_t depth, Scratch& s) {
  for (std::size_t d = 0; d + 1 < depth; ++d) {
    if (t_scratch[d]->epoch != n.epoch.load(std::memory_order_relaxed)) continue;
    release_claims(s);
    throw AutogradError(std::string(fn) + ": this pass reaches the node of '" + n.name() +
                        "', which the backward or grad() running around it on this thread (this pass was started "
                        "from a hook or an op's backward) has not backpropagated yet; a pass inside another cannot "
                        "go through the outer pass's graph. Backpropagate from detach()ed tensors, or after the "
                        "outer pass returns");
  }
}

class ScratchLease {
 public:
  ScratchLease() {
    if (t_scratch.size() <= t_depth) t_scratch.push_back(std::make_unique<Scratch>());
    s_ = t_scratch[t_depth++].get();
  }
  ~ScratchLease() {
    s_->roots.clear();
    s_->visited.clear();
    s_->stack.clear();
    s_->ready.clear();
    s_->hooked.clear();
    s_->hooked_at.clear();
    --t_depth;
  }
  Scratch& operator*() const { return *s_; }

 private:
  Scratch* s_;
};

std::atomic<std::uint64_t> g_epoch{0};

constexpr std::int8_t kNeedUnknown = -2, kNeedExpanded = -1;

// grad(): marks each node of the pass (s.visited, needed = kNeedUnknown) with
// whether its backward leads to an input asked for: an edge to such a leaf, or
// to a node that is needed or made such an input. Depth first, each node
// expanded once and decided after its producers (the graph is acyclic, so a
// producer is never below its consumer on the stack while undecided).
void mark_needed(Scratch& s, const Capture& cap) {
  for (Node* root : s.visited) {
    if (root->needed != kNeedUnknown) continue;
    s.stack.push_back(root);
    while (!s.stack.empty()) {
      Node* n = s.stack.back();
      if (n->needed == kNeedUnknown) {
        n->needed = kNeedExpanded;
        for (Edge& e : n->edges)
          if (e.fn && e.fn->needed == kNeedUnknown) s.stack.push_back(e.fn.get());
        continue;
      }
      s.stack.pop_back();
      if (n->needed != kNeedExpanded) continue;  // decided already (pushed by two consumers)
      bool need = false;
      for (const Edge& e : n->edges) {
        if (e.leaf) need = need || captures_leaf(cap, e.leaf.get());
        if (e.fn) need = need || e.fn->needed == 1 || captures_output_of(cap, e.fn.get());
      }
      n->needed = need ? 1 : 0;
    }
  }
}

std::string input_label(const Node& n, std::size_t i) {
  const auto& names = n.op->schema.inputs;
  std::string s = "input " + std::to_string(i);
  if (i < names.size()) s += " '" + names[i] + "'";
  return s;
}

// The engine checks what backward returned against the node's inputs.
void check_grads(const Node& n, const TensorList& grads) {
  // Each message names the plugin whose backward broke the contract (none for make_op).
  OPFORGE_CHECK(grads.size() == n.edges.size(), AutogradError, "in backward of '", n.name(), "': backward returned ",
                grads.size(), " gradient(s), expected ", n.edges.size(), " (one per input; return an undefined "
                "Tensor for an input that needs none)", plugin_origin(*n.op));
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const Tensor& g = grads[i];
    if (!g.defined() || !n.edges[i].needed()) continue;
    const TensorMeta& m = n.input_meta(i);
    OPFORGE_CHECK(g.shape() == m.shape, AutogradError, "in backward of '", n.name(), "': the gradient for ",
                  input_label(n, i), " has shape ", g.shape(), ", expected ", m.shape, " (the input's shape)",
                  plugin_origin(*n.op), "; return a gradient of the input's shape (opforge::sum_to reduces a "
                  "broadcast one)");
    OPFORGE_CHECK(g.dtype() == m.dtype, AutogradError, "in backward of '", n.name(), "': the gradient for ",
                  input_label(n, i), " has dtype ", dtype_name(g.dtype()), ", expected ", dtype_name(m.dtype),
                  " (the input's dtype)", plugin_origin(*n.op), "; return the gradient in the input's dtype "
                  "(convert it with .to(ctx.input_dtype(i)))");
  }
}

}  // namespace

// The engine is a class only so that Context can befriend it.
class Engine {
 public:
  static void run(TensorSpan outputs, TensorSpan grads, bool retain_graph, const Capture& capture);
};

void Engine::run(TensorSpan outputs, TensorSpan grads, bool retain_graph, const Capture& cap) {
  // The entry point and its gradients' argument, as the caller wrote them.
  const char* fn = cap.active() ? "grad" : "backward";
  const char* garg = cap.active() ? "grad_outputs" : "grads";
  // One gradient of them: Tensor::backward(grad) and backward(outputs, grads) call it 'grad'.
  const char* arg = cap.active() ? "grad_outputs" : "grad";
  OPFORGE_CHECK(grads.empty() || grads.size() == outputs.size(), ValueError, fn, ": argument '", garg, "': expected ",
                outputs.size(), " gradients (one per output) or none, got ", grads.size());
  // Root gradients, checked before anything runs.
  TensorList root_grads;
  for (std::size_t r = 0; r < outputs.size(); ++r) {
    const Tensor& out = outputs[r];
    OPFORGE_CHECK(out.defined(), ValueError, fn, ": output ", r, " is undefined");
    if (!out.requires_grad()) {
      // The likeliest reason first: a dtype that never carries a gradient, then
      // a leaf that was not asked to, then how an op's output ends up without one.
      const char* why =
          !is_floating(out.dtype())
              ? ": only float32 and float64 tensors carry gradients (a comparison's result, an index, a mask "
                "never does); backpropagate from a floating output"
              : ": it is a leaf that was not marked (call requires_grad_(true) on it to differentiate with respect "
                "to it), or the output of ops none of whose inputs required grad, of a call made under a "
                "NoGradGuard, or of an output its op marked non-differentiable. (A gradient from backward() or "
                "grad() has no history: opforge computes first derivatives only, so a gradient penalty or a "
                "Hessian-vector product cannot be backpropagated)";
      throw AutogradError(detail::concat(fn, ": output ", r, " (", out.describe(),
                                         ") does not require grad and has no grad_fn", why));
    }
    Tensor g = grads.empty() ? Tensor() : grads[r];
    if (!g.defined()) {
      OPFORGE_CHECK(out.numel() == 1, AutogradError, fn, ": output ", r, " has shape ", out.shape(),
                    "; a gradient can be implied only for a one-element output: pass ", arg, " with that shape");
      g = Tensor::ones(out.shape(), out.dtype());
    } else {
      OPFORGE_CHECK(g.shape() == out.shape(), ShapeError, fn, ": argument '", arg, "' ", r, ": expected ",
                    out.describe(), " (the output's dtype and shape), got ", g.describe());
      OPFORGE_CHECK(g.dtype() == out.dtype(), DTypeError, fn, ": argument '", arg, "' ", r, ": expected ",
                    out.describe(), " (the output's dtype and shape), got ", g.describe(),
                    "; convert it with .to() first");
    }
    root_grads.push_back(std::move(g));
  }

  ScratchLease lease;
  Scratch& s = *lease;
  const std::uint64_t epoch = g_epoch.fetch_add(1, std::memory_order_relaxed) + 1;
  s.epoch = epoch;
  const std::size_t depth = t_depth;

  // 1. Count, for every node reachable from the roots, how many edges lead to it.
  bool hooks_seen = false;  // user code runs during the pass only in hooks
  auto visit = [&](Node* n) {
    std::uint64_t held = n->epoch.load(std::memory_order_acquire);
    if (held == epoch) return false;
    if (held != 0 && depth > 1) refuse_outer_node(fn, *n, depth, s);
    // Claimed: unclaimed (0) -> this pass. Another thread's pass holding it is refused.
    if (held != 0 || !n->epoch.compare_exchange_strong(held, epoch, std::memory_order_acquire)) {
      release_claims(s);
      throw AutogradError(std::string(fn) + ": the node of '" + n->name() +
                          "' is being backpropagated by a pass on another thread; one graph (and any non-leaf "
                          "that two graphs share) is backpropagated by one thread at a time. Wait for the other "
                          "pass, or give each thread its own graph (leaves, such as parameters, may be shared)");
    }
    hooks_seen = hooks_seen || n->output_hooks;
    n->dependencies = 0;
    n->needed = kNeedUnknown;
    n->grad_buffer.clear();
    n->grad_buffer.resize(n->num_outputs());
    s.visited.push_back(n);
    return true;
  };
  auto count_hooked_leaf = [&](TensorImpl* leaf) {
    if (!leaf->hooks) return;
    hooks_seen = true;
    if (HookedLeaf* h = s.find_hooked(leaf))
      ++h->pending;
    else
      s.add_hooked(leaf);
  };
  for (const Tensor& out : outputs) {
    Node* n = out.unsafe_impl()->grad_fn.get();
    if (!n) count_hooked_leaf(out.unsafe_impl());
    if (n && visit(n)) s.stack.push_back(n);
  }
  while (!s.stack.empty()) {
    Node* n = s.stack.back();
    s.stack.pop_back();
    for (Edge& e : n->edges) {
      if (e.leaf) count_hooked_leaf(e.leaf.get());
      if (!e.fn) continue;
      if (visit(e.fn.get())) s.stack.push_back(e.fn.get());
      ++e.fn->dependencies;
    }
  }
  // grad() runs only what leads to its inputs: the rest of the graph keeps its
  // saved tensors, and its hooks do not run (as in PyTorch).
  if (cap.active()) mark_needed(s, cap);
  // Where hooks will run, the roots are held until the pass ends: a hook that
  // drops the caller's last handle on one (y = Tensor() in a hook, with y the
  // tensor backward() was called on) would free its node under the pass.
  // (Nothing else the pass runs can reach the caller's handles; holding them
  // always cost ~5% of a one-op forward + backward.)
  if (hooks_seen) s.roots.assign(outputs.begin(), outputs.end());
  const TensorSpan roots = hooks_seen ? TensorSpan(s.roots) : outputs;

  // A gradient (possibly undefined: nothing came) arriving at a leaf along one edge.
  auto arrive_at_leaf = [&](TensorImpl& leaf, Tensor g) {
    if (cap.active() && !captures_leaf(cap, &leaf)) return;  // grad() leaves other leaves and their hooks alone
    if (leaf.hooks) {
      if (HookedLeaf* h = s.find_hooked(&leaf)) {
        if (g.defined()) accumulate(h->sum, g);
        if (--h->pending == 0 && h->sum.defined()) {
          Tensor total = std::move(h->sum);
          const auto& hooks = *leaf.hooks;
          for (std::size_t i = 0, count = hooks.size(); i < count; ++i) total = run_hook(hooks[i], total, "a leaf");
          deliver_to_leaf(leaf, std::move(total), cap);
        }
        return;
      }
      // Not counted: its first hook was registered during this pass (by another
      // hook), so it takes effect from the next pass.
    }
    if (g.defined()) deliver_to_leaf(leaf, std::move(g), cap);
  };

  try {
    // 2. Seed the roots.
    for (std::size_t r = 0; r < roots.size(); ++r) {
      TensorImpl* impl = roots[r].unsafe_impl();
      if (!impl->grad_fn) {
        arrive_at_leaf(*impl, std::move(root_grads[r]));
        continue;
      }
      Node* n = impl->grad_fn.get();
      accumulate(n->grad_buffer[impl->output_nr], root_grads[r]);
    }
    // A root's node with no edge into it is ready; kQueued keeps a node that
    // several roots share from being queued twice (no edge will count it down:
    // none leads to it). A search of `ready` made this quadratic in the roots.
    constexpr std::uint32_t kQueued = ~std::uint32_t(0);
    for (const Tensor& out : roots) {
      Node* n = out.unsafe_impl()->grad_fn.get();
      if (n && n->dependencies == 0) {
        s.ready.push_back(n);
        n->dependencies = kQueued;
      }
    }

    // 3. Run each node once all the nodes that feed it gradients have run.
    while (!s.ready.empty()) {
      Node* n = s.ready.back();
      s.ready.pop_back();
      // grad(): a node that leads to no input asked for is passed over (no hooks,
      // no backward, its Context kept), unless it made one of them.
      const bool runs = !cap.active() || n->needed == 1;
      if (n->output_hooks && (runs || captures_output_of(cap, n))) {
        // Read by index up to the count at the start: a hook may register another
        // (the deque keeps the running one in place), which runs from the next pass.
        auto& hooks = *n->output_hooks;
        const std::size_t count = hooks.size();
        bool retains = false;
        for (std::size_t i = 0; i < count; ++i) {
          auto& [k, hook] = hooks[i];
          if (hook.target<RetainEntry>()) retains = true;
          else if (n->grad_buffer[k].defined()) n->grad_buffer[k] = run_hook(hook, n->grad_buffer[k], "an op's output");
        }
        // Retained gradients are taken after every hook, as in PyTorch.
        for (std::size_t i = 0; retains && runs && !cap.active() && i < count; ++i) {
          const auto& [k, hook] = hooks[i];
          const auto* entry = hook.target<RetainEntry>();
          if (entry && n->grad_buffer[k].defined())
            accumulate_grad(entry->slot->lock, entry->slot->grad, n->grad_buffer[k]);
        }
      }
      if (cap.active()) {
        for (std::size_t i = 0; i < cap.inputs.size(); ++i) {
          const TensorImpl* in = cap.inputs[i].unsafe_impl();
          if (in->grad_fn.get() == n && n->grad_buffer[in->output_nr].defined())
            accumulate((*cap.results)[i], n->grad_buffer[in->output_nr]);
        }
      }
      // A node that no consumer sent a gradient to contributes nothing: skip its
      // backward (its inputs' dependency counts still drop below).
      bool any_grad = false;
      if (runs)
        for (const Tensor& g : n->grad_buffer) any_grad = any_grad || g.defined();
      TensorList grads_in;
      if (any_grad) {
        for (std::size_t k = 0; k < n->grad_buffer.size(); ++k) {
          if (!n->grad_buffer[k].defined())
            n->grad_buffer[k] = Tensor::zeros(n->output_meta(k).shape, n->output_meta(k).dtype);
        }
        {
          NoGradGuard no_grad;
          BackwardScope scope(n);
          try {
            // A backward that reads saved tensors freed by an earlier pass gets the
            // Context's "already freed ... retain_graph" error from saved_tensors().
            grads_in = n->op->fn->backward(n->ctx, n->grad_buffer);
          } catch (...) {
            rethrow_as_core_error(*n->op, Phase::Backward);
          }
        }
        check_grads(*n, grads_in);
      } else {
        grads_in.resize(n->edges.size());
      }
      n->grad_buffer.clear();
      if (!retain_graph && runs) ContextAccess::release(n->ctx);
      // Done: a pass nested in this one, or one on another thread, may go through it (after
      // this store this pass touches only the node's edges, which never change).
      n->epoch.store(0, std::memory_order_release);

      for (std::size_t i = 0; i < n->edges.size(); ++i) {
        Edge& e = n->edges[i];
        if (!e.needed()) continue;
        Tensor& g = grads_in[i];
        if (e.leaf) {
          // Moved: when nothing else holds it, the leaf adopts it without a copy.
          arrive_at_leaf(*e.leaf, std::move(g));
          continue;
        }
        Node* m = e.fn.get();
        if (g.defined()) accumulate(m->grad_buffer[e.input_nr], g);
        if (--m->dependencies == 0) s.ready.push_back(m);
      }
    }
  } catch (...) {
    release_claims(s);
    throw;
  }
}

void backward(TensorSpan outputs, TensorSpan grads, bool retain_graph) {
  Engine::run(outputs, grads, retain_graph, Capture{});
}

TensorList grad(TensorSpan outputs, TensorSpan inputs, TensorSpan grad_outputs, bool retain_graph, bool allow_unused) {
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    OPFORGE_CHECK(inputs[i].defined(), ValueError, "grad: input ", i, " is undefined");
    OPFORGE_CHECK(inputs[i].requires_grad(), AutogradError, "grad: input ", i, " (", inputs[i].describe(),
                  ") does not require grad, so no gradient can be computed for it");
  }
  TensorList results(inputs.size());
  // The inputs are held for the pass, as the outputs are: a hook may drop the caller's handles.
  const TensorList held(inputs.begin(), inputs.end());
  Engine::run(outputs, grad_outputs, retain_graph, Capture{held, &results});
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    OPFORGE_CHECK(results[i].defined() || allow_unused, AutogradError, "grad: input ", i, " (",
                  inputs[i].describe(),
                  ") was not used to compute the outputs; pass allow_unused=true to get an undefined gradient");
    // Results must not share memory with buffers the engine reused.
    if (results[i].defined() && !uniquely_owned(results[i])) results[i] = results[i].detach().clone();
  }
  return results;
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  check_defined("backward");
  Engine::run(TensorSpan(*this), grad.defined() ? TensorSpan(grad) : TensorSpan(), retain_graph, Capture{});
}

namespace {
// A hook registered from plugin code may be plugin code itself (its
// std::function manager surely is): it keeps that plugin loaded, and is
// destroyed before the plugin may go.
struct KeptHook {
  std::shared_ptr<void> keep;
  Tensor::GradHook hook;
  KeptHook(std::shared_ptr<void> k, Tensor::GradHook h) : keep(std::move(k)), hook(std::move(h)) {}
  KeptHook(const KeptHook&) = default;
  KeptHook(KeptHook&&) = default;
  ~KeptHook() { hook = nullptr; }
  Tensor operator()(const Tensor& g) const {
    try {
      return hook(g);
    } catch (...) {
      rethrow_as_hook_error();  // while `keep` still holds the plugin
    }
  }
};
// ---- removable hooks ----
// Each registered hook is held through a RemovableHook: the user's function
// behind a shared pointer that remove() swaps for null (atomically; a call
// running at that moment holds its own reference and finishes). Handles find the
// hook by number in a table of weak references, so a HookHandle is a plain
// number (returned in a register: plugins built when register_hook returned
// void still call it safely) and never keeps anything alive.
struct HookState {
  std::uint64_t id = 0;
  // Null once removed. Set before the hook is shared; after that read and written
  // only with std::atomic_load / atomic_exchange.
  std::shared_ptr<const Tensor::GradHook> fn;
  ~HookState();
};
struct HookTable {
  std::mutex mu;
  std::uint64_t next = 1;
  std::unordered_map<std::uint64_t, std::weak_ptr<HookState>> live;
};
HookTable& hook_table() {
  static HookTable* t = new HookTable();  // never destroyed: hooks may die during static destruction
  return *t;
}
HookState::~HookState() {
  HookTable& t = hook_table();
  std::lock_guard<std::mutex> lock(t.mu);
  t.live.erase(id);
}
struct RemovableHook {
  std::shared_ptr<HookState> state;
  Tensor operator()(const Tensor& g) const {
    const auto fn = std::atomic_load(&state->fn);
    return fn ? (*fn)(g) : Tensor();  // removed: the gradient passes as it is
  }
};
// Whether a list entry is a hook that was removed (every entry but a RetainEntry is a RemovableHook).
bool is_removed(const Tensor::GradHook& h) {
  const auto* r = h.target<RemovableHook>();
  return r && !std::atomic_load(&r->state->fn);
}
}  // namespace

void HookHandle::remove() const {
  if (id_ == 0) return;
  std::shared_ptr<HookState> state;
  {
    HookTable& t = hook_table();
    std::lock_guard<std::mutex> lock(t.mu);
    auto it = t.live.find(id_);
    if (it == t.live.end()) return;
    state = it->second.lock();
  }
  if (!state) return;
  // The old value, returned and dropped right after the exchange, takes the hook and its captures with it.
  std::atomic_exchange(&state->fn, std::shared_ptr<const Tensor::GradHook>());
}

HookHandle Tensor::register_hook(GradHook hook) const {
  check_defined("register_hook");
  OPFORGE_CHECK(static_cast<bool>(hook), ValueError, "Tensor::register_hook: argument 'hook' is empty");
  OPFORGE_CHECK(impl_->grad_fn || impl_->requires_grad, AutogradError, "Tensor::register_hook: the tensor (",
                describe(),
                ") does not require grad, so no gradient will ever reach the hook; call requires_grad_() first");
  if (auto keep = keep_plugin_loaded(__builtin_return_address(0))) hook = KeptHook(std::move(keep), std::move(hook));
  auto state = std::make_shared<HookState>();
  state->fn = std::make_shared<const GradHook>(std::move(hook));
  {
    HookTable& t = hook_table();
    std::lock_guard<std::mutex> lock(t.mu);
    state->id = t.next++;
    t.live.emplace(state->id, state);
  }
  const HookHandle handle(state->id);
  GradHook held = RemovableHook{std::move(state)};
  // Removed hooks leave their list here, where no pass of this thread walks it
  // (a pass walks a list by position; other threads may not touch a tensor's hooks
  // while this one registers): a loop that registers and removes a hook on every
  // step keeps its list short.
  const bool compact = t_depth == 0;
  if (impl_->grad_fn) {
    auto& hooks = impl_->grad_fn->output_hooks;
    if (!hooks) hooks = std::make_unique<std::deque<std::pair<std::uint32_t, Tensor::GradHook>>>();
    if (compact)
      hooks->erase(std::remove_if(hooks->begin(), hooks->end(), [](const auto& h) { return is_removed(h.second); }),
                   hooks->end());
    hooks->emplace_back(impl_->output_nr, std::move(held));
  } else {
    if (!impl_->hooks) impl_->hooks = std::make_unique<std::deque<GradHook>>();
    auto& hooks = *impl_->hooks;
    if (compact) hooks.erase(std::remove_if(hooks.begin(), hooks.end(), is_removed), hooks.end());
    hooks.push_back(std::move(held));
  }
  return handle;
}

void Tensor::retain_grad() const {
  check_defined("retain_grad");
  OPFORGE_CHECK(impl_->grad_fn || impl_->requires_grad, AutogradError, "Tensor::retain_grad: the tensor (", describe(),
                ") does not require grad, so it will never have a gradient to retain");
  if (!impl_->grad_fn || impl_->retained) return;  // a leaf keeps its .grad anyway
  auto slot = std::make_shared<RetainedGrad>();
  auto& hooks = impl_->grad_fn->output_hooks;
  if (!hooks) hooks = std::make_unique<std::deque<std::pair<std::uint32_t, Tensor::GradHook>>>();
  hooks->emplace_back(impl_->output_nr, RetainEntry{slot});
  impl_->retained = std::move(slot);
}
bool Tensor::retains_grad() const {
  check_defined("retains_grad");
  return static_cast<bool>(impl_->retained);
}

const Dims& Context::input_shape(std::size_t i) const { return recorded_input(*this, i, "input_shape").shape; }
DType Context::input_dtype(std::size_t i) const { return recorded_input(*this, i, "input_dtype").dtype; }

}  // namespace opforge
