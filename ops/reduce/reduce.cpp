// reduce: reductions over all or some axes (sum, mean, max, min, norm, logsumexp);
// softmax and log_softmax along one axis live in softmax.cpp, in the same plugin.
//
// Every reduction takes two attributes, in this order:
//   axes: Ints = []        axes to reduce, negative ones counting from the end;
//                          [] reduces every axis (a 0-d result)
//   keepdims: Bool = false keep each reduced axis as an axis of size 1
// R is the set of elements that make one output (|R| of them); g is the incoming
// gradient, of the output's shape, and "g" in a gradient below means g broadcast
// back over R (g[o] for every element of output o's set).
//
//   sum(x)       = Σ_R x                          dx = g
//   mean(x)      = Σ_R x / |R|                    dx = g / |R|
//   max(x)       -> (values = max_R x, indices)   dx = g at the arg-max element, 0 elsewhere
//   min(x)       -> (values = min_R x, indices)   dx = g at the arg-min element, 0 elsewhere
//   norm(x)      = (Σ_R |x|^p)^(1/p)              dx = g sign(x) |x|^(p-1) / norm^(p-1)
//                  (third attribute p: Float = 2;    p = 2: dx = g x / norm;  p = 1: dx = g sign(x);
//                   any p > 0)                       dx = 0 where x = 0 (and where norm = 0)
//                  p = inf: max_R |x|; -inf: min_R |x|   dx = g sign(x) / c where |x| = norm (c such
//                                                        elements: ties share it), 0 elsewhere
//                  p = 0: the count of nonzero x    dx = 0 (NumPy's and PyTorch's orders)
//   logsumexp(x) = m + log Σ_R exp(x - m),        dx = g exp((x - m) - log Σ_R exp(x - m))
//                  m = max_R x (so no exp overflows; the value does not depend on m;
//                  all -inf gives -inf, with a NaN gradient; no elements give -inf)
//
// max and min take at most one axis. A 0-D x takes axes [], [0] or [-1] alike. Their second output, indices (int64, not
// differentiable), is the position of the extreme element along that axis, or with
// axes = [] its flat row-major index in x. Ties go to the first position; a NaN
// beats every number (the first NaN is the max and the min). max and min accept
// float32, float64, int64 and bool; sum too (int64 and bool to int64, wrapping on
// overflow as NumPy: a bool mask's sum counts it); the others float32 and float64.
// float32 sums (sum, mean, norm, logsumexp) are accumulated in double.
//
// Determinism. After dropping size-1 axes and merging neighbouring axes of the
// same kind (reduced or kept), x is a short list of alternating blocks. Each output's
// elements are visited in row-major order, cut into chunks whose boundaries depend
// on the shape only (kChunk elements when the last block is reduced, kRowChunk
// reduced positions when it is kept); chunks run in parallel and their partial
// results are combined in chunk order. The same input gives the same bits with
// 1 thread or 64. With no attributes, sum is what it always was: chunks of kChunk
// elements, each summed with eight interleaved double accumulators, added in order.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "../vector_math.hpp"
#include <opforge/sdk.hpp>

namespace opforge_ops::reduce {
// softmax.cpp: adds reduce.softmax and reduce.log_softmax.
void register_softmax(opforge::PluginRegistrar& registrar);
}  // namespace opforge_ops::reduce

namespace {

using opforge::Context;
using opforge::Dims;
using opforge::DType;
using opforge::Tensor;
using opforge::TensorList;
using opforge::TensorSpan;
namespace sdk = opforge::sdk;

// Elements per partial result when the innermost block is reduced. Fixed, never
// derived from the thread count: it sets the order of the additions, hence the rounding.
constexpr std::int64_t kChunk = 4096;
// Reduced positions per partial result when the innermost block is kept.
constexpr std::int64_t kRowChunk = 1024;
// Outputs per task along a kept innermost block (the accumulators of one task).
constexpr std::int64_t kColumnBlock = 8192;
// Blocks after merging: at most one per axis, plus one placeholder.
constexpr int kMaxBlocks = opforge::kMaxDims + 1;

// ---- axes -------------------------------------------------------------------------------

// Bit mask of the axes a reduction runs over, from the 'axes' attribute ([] = all).
std::uint32_t axes_mask(const Context& ctx, const Dims& shape, const Dims& axes) {
  const auto rank = static_cast<std::int64_t>(shape.size());
  if (axes.empty()) return rank == 0 ? 0u : (1u << rank) - 1u;
  std::uint32_t mask = 0;
  if (rank == 0) {
    // As NumPy and PyTorch: a 0-D tensor takes axis 0 (or -1), once, meaning its one element.
    OPFORGE_CHECK(axes.size() == 1 && (axes[0] == 0 || axes[0] == -1), IndexError, ctx.op_name(),
                  ": attribute 'axes': ", axes, " is out of range for a 0-D tensor (it takes [], [0] or [-1], "
                  "each meaning its one element)");
    return 0;
  }
  for (std::int64_t a : axes) {
    const std::int64_t k = sdk::normalize_axis(ctx, "axes", a, rank, shape);
    OPFORGE_CHECK(!((mask >> k) & 1u), ValueError, ctx.op_name(), ": attribute 'axes': ", axes, " names axis ", k,
                  " twice (each axis may be given once)");
    mask |= 1u << k;
  }
  return mask;
}

// The output shape: reduced axes dropped, or kept with size 1.
Dims reduced_shape(const Dims& shape, std::uint32_t mask, bool keepdims) {
  Dims out;
  for (std::size_t a = 0; a < shape.size(); ++a) {
    if (!((mask >> a) & 1u))
      out.push_back(shape[a]);
    else if (keepdims)
      out.push_back(1);
  }
  return out;
}

// What forward reads from the attributes (axes, keepdims), checked.
struct Plan {
  std::uint32_t mask = 0;
  Dims out_shape;
};

Plan plan_of(const Context& ctx, const Tensor& x) {
  Plan p;
  p.mask = axes_mask(ctx, x.shape(), ctx.attr_ints(0));
  p.out_shape = reduced_shape(x.shape(), p.mask, ctx.attr_bool(1));
  return p;
}

// In backward, the reduced axes of forward's plan: from x's shape as the core
// recorded it (ctx.input_shape(0)) and the axes attribute, which the core keeps.
// Nothing is saved for them, and sum and mean, which read nothing else, can be
// backpropagated twice.
std::uint32_t recorded_mask(const Context& ctx) {
  return axes_mask(ctx, ctx.input_shape(0), ctx.attr_ints(0));
}

// ---- geometry -----------------------------------------------------------------------------

// x (contiguous) seen as alternating blocks of kept and reduced axes: size-1 axes
// dropped, neighbours of one kind merged. Outputs are numbered row-major over the
// kept blocks, which is the order of the output's memory with or without keepdims.
struct Geometry {
  int nd = 0;
  std::int64_t size[kMaxBlocks] = {};
  std::int64_t stride[kMaxBlocks] = {};   // in x, elements
  std::int64_t ostride[kMaxBlocks] = {};  // in the output, elements (0 for reduced blocks)
  bool reduced[kMaxBlocks] = {};
  std::int64_t out_numel = 1;  // outputs
  std::int64_t red_numel = 1;  // elements per output, |R|
  std::int64_t numel = 1;
};

Geometry make_geometry(const Dims& shape, std::uint32_t mask) {
  Geometry g;
  const Dims st = opforge::contiguous_strides(shape);
  bool any_reduced = false;
  for (std::size_t a = 0; a < shape.size(); ++a) {
    const bool r = (mask >> a) & 1u;
    g.numel *= shape[a];
    (r ? g.red_numel : g.out_numel) *= shape[a];
    if (shape[a] == 1) continue;
    any_reduced = any_reduced || r;
    if (g.nd > 0 && g.reduced[g.nd - 1] == r) {
      g.size[g.nd - 1] *= shape[a];
      g.stride[g.nd - 1] = st[a];
    } else {
      g.size[g.nd] = shape[a];
      g.stride[g.nd] = st[a];
      g.reduced[g.nd] = r;
      ++g.nd;
    }
  }
  if (!any_reduced) {  // every reduced axis has size 1 (or there is none): a reduced block of one
    g.size[g.nd] = 1;
    g.stride[g.nd] = 1;
    g.reduced[g.nd] = true;
    ++g.nd;
  }
  std::int64_t acc = 1;
  for (int d = g.nd; d-- > 0;) {
    g.ostride[d] = g.reduced[d] ? 0 : acc;
    if (!g.reduced[d]) acc *= g.size[d];
  }
  return g;
}

// Offset in x of output o's first element.
std::int64_t kept_offset(const Geometry& g, std::int64_t o) {
  std::int64_t off = 0;
  for (int d = g.nd; d-- > 0;) {
    if (g.reduced[d]) continue;
    off += (o % g.size[d]) * g.stride[d];
    o /= g.size[d];
  }
  return off;
}

// Offset in x of reduced position r, numbered row-major over the reduced blocks before `end`.
std::int64_t reduced_offset(const Geometry& g, std::int64_t r, int end) {
  std::int64_t off = 0;
  for (int d = end; d-- > 0;) {
    if (!g.reduced[d]) continue;
    off += (r % g.size[d]) * g.stride[d];
    r /= g.size[d];
  }
  return off;
}

// ---- accumulators ---------------------------------------------------------------------------
// An accumulator folds the elements of one output, visited in order:
//   State init()                                  the empty fold
//   run(State&, const T* p, n, r0, o)             n contiguous elements, the first at reduced position r0
//   rows(State* st, const T* const* p, count, n, r, o0)
//                                                 rows p[0..count) (count <= kRowsAtOnce), at reduced positions
//                                                 r, r + 1, ...: p[k][j] into st[j] (output o0 + j), in order
//   merge(State& a, const State& b)               b's elements come after a's

// The kernels below are compiled for baseline x86-64, AVX2 and AVX-512
// (sdk::run_vectorized; OPFORGE_VECTOR_ISA caps the choice, and the tests run every
// copy): float32 data is summed in double, four lanes to a baseline register, and the
// exp of logsumexp and softmax comes from libmvec at the copy's width. The copies fix
// their order of additions alike and the plugin is built with -ffp-contract=off, so
// they give the same bits but for libmvec's exp, log and pow (vector_math.hpp).
// Runs shorter than kVectorRun elements stay inline: the call costs more than it saves.
constexpr std::int64_t kVectorRun = 32;

// K::run(a...) over a run of n elements: through the vector copies, or inline when short.
template <class K, class... A>
decltype(auto) run_kernel(std::int64_t n, A&&... a) {
  if (n >= kVectorRun) return sdk::run_vectorized<K>(std::forward<A>(a)...);
  return K::run(std::forward<A>(a)...);
}

// Σ f(p[i], o) for i < n in double: eight accumulators, lane l taking i = l mod 8, in
// order, then added as a tree. f goes into a buffer first, one vector loop per kBuf
// elements (so that an exp in f runs vectorised), which changes no addition.
struct SumRun {
  template <class T, class F>
  OPFORGE_KERNEL_BODY static double run(const T* p, std::int64_t n, std::int64_t o, const F& f) {
    constexpr std::int64_t kBuf = 256;
    double acc[8] = {};
    const std::int64_t n8 = n - n % 8;
    std::int64_t i = 0;
    while (i < n8) {
      const std::int64_t nb = std::min(kBuf, n8 - i);
      double buf[kBuf];
#pragma omp simd
      for (std::int64_t k = 0; k < nb; ++k) buf[k] = f(p[i + k], o);
      for (std::int64_t k = 0; k < nb; k += 8)
        for (int l = 0; l < 8; ++l) acc[l] += buf[k + l];
      i += nb;
    }
    double t = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; ++i) t += f(p[i], o);
    return t;
  }
};

// SumRun over each of n rows of R elements (row j at p + j * R, output o0 + j),
// into out[j]: the same additions in the same order, vectorised across the rows
// rather than along one, for rows too short to fill a vector (a [10^6, 10] sum
// along axis 1: 14.9 -> 3 ms, one thread).
struct SumShortRows {
  template <class T, class F>
  OPFORGE_KERNEL_BODY static void run(double* out, const T* p, std::int64_t R, std::int64_t n, std::int64_t o0,
                                      const F& f) {
    const std::int64_t n8 = R - R % 8;
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) {
      const T* q = p + j * R;
      const std::int64_t o = o0 + j;
      double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
      for (std::int64_t k = 0; k < n8; k += 8) {
        a0 += f(q[k], o);
        a1 += f(q[k + 1], o);
        a2 += f(q[k + 2], o);
        a3 += f(q[k + 3], o);
        a4 += f(q[k + 4], o);
        a5 += f(q[k + 5], o);
        a6 += f(q[k + 6], o);
        a7 += f(q[k + 7], o);
      }
      double t = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
      for (std::int64_t i = n8; i < R; ++i) t += f(q[i], o);
      out[j] = t;
    }
  }
};

// Up to kRowsAtOnce reduced positions (rows p[0..count)) of n neighbouring outputs,
// folded in one pass over the outputs: each state is loaded and stored once for
// them all, and each output still takes its rows one after another, in order.
constexpr int kRowsAtOnce = 4;
template <class Step, class S, class T>
OPFORGE_KERNEL_BODY void fold_rows(S* st, const T* const* p, int count, std::int64_t n, const Step& step) {
  const T* p0 = p[0];
  const T* p1 = p[count > 1 ? 1 : 0];
  const T* p2 = p[count > 2 ? 2 : 0];
  const T* p3 = p[count > 3 ? 3 : 0];
  switch (count) {
    case 4:
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) st[j] = step(step(step(step(st[j], p0[j], j, 0), p1[j], j, 1), p2[j], j, 2), p3[j], j, 3);
      break;
    case 3:
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) st[j] = step(step(step(st[j], p0[j], j, 0), p1[j], j, 1), p2[j], j, 2);
      break;
    case 2:
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) st[j] = step(step(st[j], p0[j], j, 0), p1[j], j, 1);
      break;
    default:
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) st[j] = step(st[j], p0[j], j, 0);
  }
}

// st[j] += f(p_k[j], o0 + j) for each row k, j < n.
struct SumRows {
  template <class T, class F>
  OPFORGE_KERNEL_BODY static void run(double* st, const T* const* p, int count, std::int64_t n, std::int64_t o0,
                                      const F& f) {
    fold_rows(st, p, count, n, [&](double s, T v, std::int64_t j, int) { return s + f(v, o0 + j); });
  }
};

// Σ f(x, o) in double.
// kShortRows: short rows go through SumShortRows (for an f as cheap as a load: its
// loop across rows keeps a libmvec exp from vectorising, and logsumexp got slower).
template <class T, class F, bool kShort>
struct SumAcc {
  using State = double;
  F f;
  State init() const { return 0.0; }
  void run(State& s, const T* p, std::int64_t n, std::int64_t, std::int64_t o) const {
    s += run_kernel<SumRun>(n, p, n, o, f);
  }
  void rows(State* st, const T* const* p, int count, std::int64_t n, std::int64_t, std::int64_t o0) const {
    run_kernel<SumRows>(n, st, p, count, n, o0, f);
  }
  void merge(State& a, const State& b) const { a += b; }
  static constexpr bool kShortRows = kShort;
  void short_rows(State* out, const T* p, std::int64_t R, std::int64_t n, std::int64_t o0) const {
    sdk::run_vectorized<SumShortRows>(out, p, R, n, o0, f);
  }
};
template <class T, bool kShort = false, class F>
SumAcc<T, F, kShort> sum_of(F f) {
  return SumAcc<T, F, kShort>{f};
}

// Σ x of int64 or bool in int64, wrapping on overflow as NumPy does (unsigned
// arithmetic): exact, so the order of the additions changes nothing.
template <class T>
struct IntSumAcc {
  using State = std::uint64_t;
  State init() const { return 0; }
  void run(State& s, const T* p, std::int64_t n, std::int64_t, std::int64_t) const {
    std::uint64_t t = 0;
#pragma omp simd reduction(+ : t)
    for (std::int64_t i = 0; i < n; ++i) t += static_cast<std::uint64_t>(p[i]);
    s += t;
  }
  void rows(State* st, const T* const* p, int count, std::int64_t n, std::int64_t, std::int64_t) const {
    for (int k = 0; k < count; ++k)
      for (std::int64_t j = 0; j < n; ++j) st[j] += static_cast<std::uint64_t>(p[k][j]);
  }
  void merge(State& a, const State& b) const { a += b; }
};

// The largest element, NaN ignored (logsumexp's shift; a NaN still reaches its sum).
// A max does not depend on the order it is taken in: the vector reductions are exact.
struct MaxRun {
  template <class T>
  OPFORGE_KERNEL_BODY static T run(T m, const T* p, std::int64_t n) {
#pragma omp simd reduction(max : m)
    for (std::int64_t i = 0; i < n; ++i) m = p[i] > m ? p[i] : m;
    return m;
  }
};
struct MaxRows {
  template <class T>
  OPFORGE_KERNEL_BODY static void run(T* st, const T* const* p, int count, std::int64_t n) {
    fold_rows(st, p, count, n, [](T m, T v, std::int64_t, int) { return v > m ? v : m; });
  }
};
template <class T>
struct MaxAcc {
  using State = T;
  State init() const { return -std::numeric_limits<T>::infinity(); }
  void run(State& s, const T* p, std::int64_t n, std::int64_t, std::int64_t) const {
    s = run_kernel<MaxRun>(n, s, p, n);
  }
  void rows(State* st, const T* const* p, int count, std::int64_t n, std::int64_t, std::int64_t) const {
    run_kernel<MaxRows>(n, st, p, count, n);
  }
  void merge(State& a, const State& b) const { a = b > a ? b : a; }
};

// Position of the first NaN of p[0, n) (n > 0) if it holds one, else of the first
// element equal to its max (kMax) or min. The body is compiled into three copies.
template <class T, bool kMax>
struct FirstExtreme {
  OPFORGE_KERNEL_BODY static std::int64_t run(const T* p, std::int64_t n) {
    T m = p[0];
    int any = 0;  // a NaN seen (floating types only)
    if constexpr (kMax) {
#pragma omp simd reduction(max : m) reduction(| : any)
      for (std::int64_t i = 0; i < n; ++i) {
        m = p[i] > m ? p[i] : m;
        if constexpr (std::is_floating_point_v<T>) any |= p[i] != p[i];
      }
    } else {
#pragma omp simd reduction(min : m) reduction(| : any)
      for (std::int64_t i = 0; i < n; ++i) {
        m = p[i] < m ? p[i] : m;
        if constexpr (std::is_floating_point_v<T>) any |= p[i] != p[i];
      }
    }
    std::int64_t k = 0;
    if (any != 0) {  // the first NaN (the max above may have kept p[0] even when it is one)
      while (p[k] == p[k]) ++k;
      return k;
    }
    for (; k + 16 <= n; k += 16) {
      int hit = 0;
#pragma omp simd reduction(| : hit)
      for (int l = 0; l < 16; ++l) hit |= p[k + l] == m;
      if (hit) break;
    }
    while (p[k] != m) ++k;
    return k;
  }
};

// The extreme element and its reduced position: first of equals, NaN first of all.
template <class T, bool kMax>
struct ArgAcc {
  struct State {
    T v;
    std::int64_t i;  // -1: no element yet
  };
  static bool better(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      if (a != a) return b == b;  // NaN beats every number, not another NaN
    }
    if constexpr (kMax)
      return a > b;
    else
      return a < b;
  }
  State init() const { return {T(), -1}; }
  // Loops without branches on the data, in vector code (`omp simd` reductions are
  // exact here: a max or min does not depend on the order it is taken in): the
  // run's extreme value (NaN aside) and whether it holds a NaN; then the first
  // position of the NaN or of that value, found 16 elements at a time (every
  // vector copy makes the same comparisons, so finds the same element).
  void run(State& s, const T* p, std::int64_t n, std::int64_t r0, std::int64_t) const {
    if (n <= 0) return;
    const std::int64_t k = run_kernel<FirstExtreme<T, kMax>>(n, p, n);
    elem(s, p[k], r0 + k, 0);
  }
  void elem(State& s, T v, std::int64_t r, std::int64_t) const {
    if (s.i < 0 || better(v, s.v)) s = {v, r};
  }
  // (Extreme runs a kept innermost block through extreme_kept instead.)
  void rows(State* st, const T* const* p, int count, std::int64_t n, std::int64_t r, std::int64_t) const {
    for (int k = 0; k < count; ++k)
      for (std::int64_t j = 0; j < n; ++j) elem(st[j], p[k][j], r + k, 0);
  }
  void merge(State& a, const State& b) const {
    if (b.i >= 0 && (a.i < 0 || better(b.v, a.v))) a = b;
  }
};

// ---- the reduction loop -----------------------------------------------------------------------

// Reduced position r (row-major over the reduced blocks before the last, kept one)
// and its offset in x, stepped one position at a time.
struct ReducedCursor {
  const Geometry& g;
  std::int64_t r, off = 0;
  std::int64_t idx[kMaxBlocks] = {};
  ReducedCursor(const Geometry& geometry, std::int64_t r0) : g(geometry), r(r0) {
    for (std::int64_t q = r0, d = g.nd - 1; d-- > 0;) {
      if (!g.reduced[d]) continue;
      idx[d] = q % g.size[d];
      off += idx[d] * g.stride[d];
      q /= g.size[d];
    }
  }
  void next() {
    ++r;
    for (int d = g.nd - 1; d-- > 0;) {
      if (!g.reduced[d]) continue;
      off += g.stride[d];
      if (++idx[d] < g.size[d]) break;
      off -= g.stride[d] * g.size[d];
      idx[d] = 0;
    }
  }
};

// Rows shorter than kShortRow go through Acc::short_rows, kShortBlock at a time,
// when the accumulator has it (kShortRows).
constexpr std::int64_t kShortRow = 128;
constexpr std::int64_t kShortBlock = 256;
template <class Acc, class = void>
struct has_short_rows : std::false_type {};
template <class Acc>
struct has_short_rows<Acc, std::void_t<decltype(Acc::kShortRows)>> : std::bool_constant<Acc::kShortRows> {};

// Folds every output's elements with `acc` and calls finish(o, state) once per output
// (from several threads at once, each o once). See "Determinism" above.
template <class T, class Acc, class Finish>
void reduce_kernel(const Geometry& g, const T* x, const Acc& acc, Finish&& finish) {
  using State = typename Acc::State;
  const std::int64_t O = g.out_numel, R = g.red_numel;
  if (O == 0) return;
  if (R == 0) {  // nothing to fold: every output is the empty fold
    for (std::int64_t o = 0; o < O; ++o) finish(o, acc.init());
    return;
  }
  const int last = g.nd - 1;

  if (g.reduced[last]) {
    // The innermost block is reduced: each output's elements come in contiguous runs
    // of L. Chunks of kChunk of its elements (in row-major order) are folded apart.
    const std::int64_t L = g.size[last];
    const std::int64_t nchunks = (R + kChunk - 1) / kChunk;
    auto fold = [&](State& s, std::int64_t o, std::int64_t base, std::int64_t b, std::int64_t e) {
      while (b < e) {
        const std::int64_t l = b % L;
        const std::int64_t n = std::min(L - l, e - b);
        acc.run(s, x + base + reduced_offset(g, b / L, last) + l, n, b, o);
        b += n;
      }
    };
    const std::int64_t grain = std::max<std::int64_t>(1, sdk::kElementwiseGrain / std::min(R, kChunk));
    if constexpr (has_short_rows<Acc>::value) {
      if (g.nd == 2 && L == R && R < kShortRow) {  // x is O rows of R, one after another
        sdk::parallel_for(0, O, grain, [&](std::int64_t lo, std::int64_t hi) {
          State buf[kShortBlock];
          for (std::int64_t o = lo; o < hi; o += kShortBlock) {
            const std::int64_t n = std::min(kShortBlock, hi - o);
            acc.short_rows(buf, x + o * R, R, n, o);
            for (std::int64_t j = 0; j < n; ++j) finish(o + j, buf[j]);
          }
        });
        return;
      }
    }
    if (nchunks == 1) {
      sdk::parallel_for(0, O, grain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t o = lo; o < hi; ++o) {
          State s = acc.init();
          fold(s, o, kept_offset(g, o), 0, R);
          finish(o, s);
        }
      });
      return;
    }
    // One slot per (output, chunk), inline up to 64: no heap for a full reduction of 256 K elements.
    boost::container::small_vector<State, 64> partial(static_cast<std::size_t>(O * nchunks), acc.init());
    sdk::parallel_for(0, O * nchunks, grain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const std::int64_t o = t / nchunks, c = t % nchunks;
        State s = acc.init();
        fold(s, o, kept_offset(g, o), c * kChunk, std::min(R, (c + 1) * kChunk));
        partial[static_cast<std::size_t>(t)] = s;
      }
    });
    sdk::parallel_for(0, O, std::max<std::int64_t>(1, sdk::kElementwiseGrain / nchunks),
                      [&](std::int64_t lo, std::int64_t hi) {
                        for (std::int64_t o = lo; o < hi; ++o) {
                          State s = acc.init();  // in chunk order: independent of which thread ran which chunk
                          for (std::int64_t c = 0; c < nchunks; ++c)
                            acc.merge(s, partial[static_cast<std::size_t>(o * nchunks + c)]);
                          finish(o, s);
                        }
                      });
    return;
  }

  // The innermost block (K outputs) is kept and contiguous: a task folds a block of
  // up to kColumnBlock neighbouring outputs together, one reduced position at a
  // time, so the inner loop runs over contiguous x and contiguous accumulators.
  const std::int64_t K = g.size[last];
  const std::int64_t rows = O / K;
  const std::int64_t jb = std::min(K, kColumnBlock);
  const std::int64_t nj = (K + jb - 1) / jb;
  const std::int64_t nchunks = (R + kRowChunk - 1) / kRowChunk;
  // Folds reduced positions [r0, r1) into st[0, jn) for outputs o0 .. o0 + jn - 1.
  auto fold = [&](State* st, std::int64_t o0, std::int64_t jn, std::int64_t r0, std::int64_t r1) {
    const T* base = x + kept_offset(g, o0);
    for (ReducedCursor c(g, r0); c.r < r1;) {
      const T* rows[kRowsAtOnce];
      const std::int64_t first = c.r;
      int count = 0;
      for (; count < kRowsAtOnce && c.r < r1; ++count, c.next()) rows[count] = base + c.off;
      acc.rows(st, rows, count, jn, first, o0);
    }
  };
  const std::int64_t grain =
      std::max<std::int64_t>(1, sdk::kElementwiseGrain / (std::min(R, kRowChunk) * jb));
  if (nchunks == 1) {
    sdk::parallel_for(0, rows * nj, grain, [&](std::int64_t lo, std::int64_t hi) {
      State st[kColumnBlock];
      for (std::int64_t t = lo; t < hi; ++t) {
        const std::int64_t o0 = (t / nj) * K + (t % nj) * jb;
        const std::int64_t jn = std::min(jb, K - (t % nj) * jb);
        for (std::int64_t j = 0; j < jn; ++j) st[j] = acc.init();
        fold(st, o0, jn, 0, R);
        for (std::int64_t j = 0; j < jn; ++j) finish(o0 + j, st[j]);
      }
    });
    return;
  }
  // Partial folds laid out [chunk][output]: a task's accumulators are contiguous.
  std::vector<State> partial(static_cast<std::size_t>(nchunks * O), acc.init());
  sdk::parallel_for(0, rows * nj * nchunks, grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const std::int64_t c = t % nchunks, block = t / nchunks;
      const std::int64_t o0 = (block / nj) * K + (block % nj) * jb;
      const std::int64_t jn = std::min(jb, K - (block % nj) * jb);
      fold(partial.data() + c * O + o0, o0, jn, c * kRowChunk, std::min(R, (c + 1) * kRowChunk));
    }
  });
  sdk::parallel_for(0, O, std::max<std::int64_t>(1, sdk::kElementwiseGrain / nchunks),
                    [&](std::int64_t lo, std::int64_t hi) {
                      for (std::int64_t o = lo; o < hi; ++o) {
                        State s = acc.init();
                        for (std::int64_t c = 0; c < nchunks; ++c)
                          acc.merge(s, partial[static_cast<std::size_t>(c * O + o)]);
                        finish(o, s);
                      }
                    });
}

// ---- the broadcast-back loop (backward) -----------------------------------------------------

// Calls body(i, n, o, step) for runs that cover x in order: elements [i, i + n) of x
// belong to outputs o, o + step, ... where step is std::integral_constant 0 (the
// innermost block is reduced: one output) or 1 (kept: consecutive outputs), so the
// body's loop compiles to plain vector code. Runs are at most kElementwiseGrain long,
// spread over the thread pool.
template <class Body>
void for_each_run(const Geometry& g, Body&& body) {
  if (g.numel == 0) return;
  const int last = g.nd - 1;
  const std::int64_t len = g.size[last];
  const std::int64_t rows = g.numel / len;
  const std::int64_t seg = std::min(len, sdk::kElementwiseGrain);
  const std::int64_t nseg = (len + seg - 1) / seg;
  const bool kept_inner = !g.reduced[last];
  sdk::parallel_for(0, rows * nseg, std::max<std::int64_t>(1, sdk::kElementwiseGrain / seg),
                    [&](std::int64_t lo, std::int64_t hi) {
                      std::int64_t row = lo / nseg;
                      std::int64_t idx[kMaxBlocks] = {};
                      std::int64_t orow = 0;
                      for (std::int64_t r = row, d = last; d-- > 0;) {
                        idx[d] = r % g.size[d];
                        orow += idx[d] * g.ostride[d];
                        r /= g.size[d];
                      }
                      for (std::int64_t t = lo; t < hi; ++t) {
                        if (t / nseg != row) {  // the next row: advance the index of the leading blocks
                          ++row;
                          for (int d = last; d-- > 0;) {
                            orow += g.ostride[d];
                            if (++idx[d] < g.size[d]) break;
                            orow -= g.ostride[d] * g.size[d];
                            idx[d] = 0;
                          }
                        }
                        const std::int64_t b = (t % nseg) * seg;
                        const std::int64_t n = std::min(seg, len - b);
                        if (kept_inner)
                          body(row * len + b, n, orow + b, std::integral_constant<int, 1>{});
                        else
                          body(row * len + b, n, orow, std::integral_constant<int, 0>{});
                      }
                    });
}

// ---- sum, mean -------------------------------------------------------------------------------

// A NaN result as the one quiet NaN: which NaN an addition of two NaNs keeps (its
// sign bit: inf + -inf makes a negative one on x86) depends on the operand order
// the compiler picked, which differs between the vector copies.
template <class T>
T canonical_nan(T v) {
  return v != v ? std::numeric_limits<T>::quiet_NaN() : v;
}

// sum and mean: the same fold; mean divides by |R|. dx = g (· 1/|R|), broadcast back over R.
template <bool kMean>
class SumMean final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    const Plan p = plan_of(ctx, x);
    if (x.is_contiguous()) return {dense(ctx, x, p)};
    return {strided(ctx, x, p)};
  }

 private:
  // x strided (the schema takes strided inputs). An expanded axis (stride 0) is
  // reduced as its size times one element, or, kept, expanded back after the
  // reduction; a layout that is then a permutation of a dense one is reduced in
  // memory order. A [1, 10^5] row expanded to [200, 10^5] and summed along axis 0
  // made a 160 MB copy first (27 ms, NumPy 2.7 ms), and [1, 10^6] expanded to
  // [10^5, 10^6] needed 745 GiB; a transposed [1000, 1000] summed along axis 1
  // took 3-5x the contiguous time. Any other layout: a contiguous copy.
  static Tensor strided(const Context& ctx, const Tensor& x, const Plan& p) {
    const std::size_t r = x.shape().size();
    for (std::int64_t n : x.shape())
      if (n == 0) return dense(ctx, x.contiguous(), p);
    Tensor base = x;
    std::uint64_t repeat = 1;  // elements each reduced one stands for
    bool expand_back = false;
    for (std::size_t a = 0; a < r; ++a) {
      if (x.strides()[a] != 0 || x.shape()[a] == 1) continue;
      if ((p.mask >> a) & 1u)
        repeat *= static_cast<std::uint64_t>(x.shape()[a]);
      else
        expand_back = true;
      base = base.slice(static_cast<std::int64_t>(a), 0, 1);
    }
    // base's axes in memory order (largest stride first); dense if they step as a contiguous tensor's.
    std::vector<std::int64_t> order(r);
    for (std::size_t a = 0; a < r; ++a) order[a] = static_cast<std::int64_t>(a);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
      return base.strides()[std::size_t(a)] > base.strides()[std::size_t(b)];
    });
    std::int64_t step = 1;
    bool dense_layout = true;
    for (std::size_t k = r; k-- > 0;) {
      const auto a = static_cast<std::size_t>(order[k]);
      if (base.shape()[a] == 1) continue;
      dense_layout = dense_layout && base.strides()[a] == step;
      step *= base.shape()[a];
    }
    if (!dense_layout) return dense(ctx, x.contiguous(), p);
    const Tensor xp = base.permute(Dims(order.data(), order.size())).contiguous();  // dense: a view, no copy
    Plan in_order;  // xp's reduced axes, kept as 1
    for (std::size_t k = 0; k < r; ++k) {
      const bool reduced = (p.mask >> order[k]) & 1u;
      if (reduced) in_order.mask |= 1u << k;
      in_order.out_shape.push_back(reduced ? 1 : xp.shape()[k]);
    }
    Dims inverse;
    inverse.resize(r);
    for (std::size_t k = 0; k < r; ++k) inverse[std::size_t(order[k])] = static_cast<std::int64_t>(k);
    Tensor out = dense(ctx, xp, in_order).permute(inverse);  // x's axes, reduced ones (and expanded kept ones) 1
    if (expand_back) {
      Dims full = x.shape();
      for (std::size_t a = 0; a < r; ++a)
        if ((p.mask >> a) & 1u) full[a] = 1;
      out = out.expand(full);
    }
    out = out.contiguous().reshape(p.out_shape);
    if (!kMean && repeat != 1) scale_by(ctx, out, repeat);  // (a mean of repeated elements is the mean of one)
    return out;
  }

  // out *= k, in place (a fresh tensor of this op's own).
  static void scale_by(const Context& ctx, Tensor& out, std::uint64_t k) {
    if (out.dtype() == DType::Int64) {
      auto* po = out.data<std::int64_t>();
      for (std::int64_t i = 0; i < out.numel(); ++i)
        po[i] = static_cast<std::int64_t>(static_cast<std::uint64_t>(po[i]) * k);  // wraps, as the sum does
      return;
    }
    sdk::dispatch_floating(out.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      T* po = out.data<T>();
      for (std::int64_t i = 0; i < out.numel(); ++i) po[i] = canonical_nan(static_cast<T>(po[i] * static_cast<double>(k)));
      return 0;
    });
  }

  static Tensor dense(const Context& ctx, const Tensor& x, const Plan& p) {
    const Geometry g = make_geometry(x.shape(), p.mask);
    if (!kMean && (x.dtype() == DType::Int64 || x.dtype() == DType::Bool)) {  // sum: int64 out (a mask's count)
      Tensor out = Tensor::empty(p.out_shape, DType::Int64);
      std::int64_t* po = out.data<std::int64_t>();
      auto run = [&](auto tag) {
        using T = decltype(tag);
        reduce_kernel<T>(g, x.data<T>(), IntSumAcc<T>{},
                         [&](std::int64_t o, std::uint64_t s) { po[o] = static_cast<std::int64_t>(s); });
      };
      if (x.dtype() == DType::Int64)
        run(std::int64_t{});
      else
        run(bool{});
      return out;
    }
    return sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      Tensor out = Tensor::empty(p.out_shape, x.dtype());
      T* po = out.data<T>();
      const double count = static_cast<double>(g.red_numel);  // mean of nothing: 0 / 0 = NaN
      auto value = [](T v, std::int64_t) { return static_cast<double>(v); };
      reduce_kernel<T>(g, x.data<T>(), sum_of<T, true>(value), [&](std::int64_t o, double s) {
        po[o] = canonical_nan(static_cast<T>(kMean ? s / count : s));
      });
      return out;
    });
  }

 public:
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Dims& shape = ctx.input_shape(0);
    const Geometry g = make_geometry(shape, recorded_mask(ctx));
    const Tensor gout = grads[0].contiguous();
    return {sdk::dispatch_floating(gout.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      Tensor dx = Tensor::empty(shape, gout.dtype());
      T* pd = dx.data<T>();
      const T* pg = gout.data<T>();
      const T scale = static_cast<T>(kMean ? 1.0 / static_cast<double>(g.red_numel) : 1.0);
      for_each_run(g, [&](std::int64_t i, std::int64_t n, std::int64_t o, auto step) {
        for (std::int64_t j = 0; j < n; ++j) pd[i + j] = kMean ? pg[o + j * step] * scale : pg[o + j * step];
      });
      return dx;
    })};
  }
};

// ---- max, min ----------------------------------------------------------------------------------

// One reduced position of n neighbouring outputs: where p[j] beats v[j] (ArgAcc::better),
// it and r replace v[j] and i[j]. In vector code, values and positions in two arrays.
// The NaN test is written so that GCC forms `up` in one masked compare and stores the
// positions through the mask (the old `a != a ? b == b : up` gave three compares, an
// or of masks and a blend with a full store): max along axis 0, one thread, normal
// data, 2048 x 2048 float64 1.9 -> 1.2 ms, 64 x 65536 2.6 -> 2.0 ms (a sum of either
// 0.5-0.6 ms). Skipping the stores where no lane is beaten (a branch) pays once the
// maxima settle (2048 rows: 0.9 ms) and costs where they do not (64 rows: 2.7 ms).
template <class T, bool kMax>
struct ExtremeRow {
  OPFORGE_KERNEL_BODY static void run(T* __restrict v, std::int64_t* __restrict i, const T* __restrict p, std::int64_t n,
                                      std::int64_t r) {
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) {
      const T a = p[j], b = v[j];
      bool up;
      if constexpr (std::is_floating_point_v<T>)
        up = (kMax ? !(a <= b) : !(a >= b)) & (b == b);  // a NaN beats a number, never another NaN
      else
        up = kMax ? a > b : a < b;
      v[j] = up ? a : b;
      i[j] = up ? r : i[j];  // a masked store
    }
  }
};

// max and min where the innermost block is kept (along a leading axis): each task
// folds up to kColumnBlock neighbouring outputs over kRowChunk reduced positions, a
// row at a time; chunks are merged in order. A later position wins only when it is
// strictly better, so each output gets the first of equals (the first NaN), as
// through ArgAcc. (ArgAcc's array of value-position pairs took 2.4-6x longer.)
template <class T, bool kMax>
void extreme_kept(const Geometry& g, const T* x, T* pv, std::int64_t* pi) {
  const std::int64_t O = g.out_numel, R = g.red_numel;  // both > 0
  const std::int64_t K = g.size[g.nd - 1], rows = O / K;
  const std::int64_t jb = std::min(K, kColumnBlock), nj = (K + jb - 1) / jb;
  const std::int64_t nchunks = (R + kRowChunk - 1) / kRowChunk;
  // Chunk c > 0 at [(c - 1) * O + o]; chunk 0 straight into the outputs.
  const auto nparts = static_cast<std::size_t>((nchunks - 1) * O);
  const std::unique_ptr<T[]> vpart(new T[nparts]);  // (not std::vector: T may be bool)
  const std::unique_ptr<std::int64_t[]> ipart(new std::int64_t[nparts]);
  const std::int64_t grain = std::max<std::int64_t>(1, sdk::kElementwiseGrain / (std::min(R, kRowChunk) * jb));
  sdk::parallel_for(0, rows * nj * nchunks, grain, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const std::int64_t c = t % nchunks, block = t / nchunks;
      const std::int64_t o0 = (block / nj) * K + (block % nj) * jb;
      const std::int64_t jn = std::min(jb, K - (block % nj) * jb);
      T* v = (c == 0 ? pv : vpart.get() + (c - 1) * O) + o0;
      std::int64_t* i = (c == 0 ? pi : ipart.get() + (c - 1) * O) + o0;
      const T* base = x + kept_offset(g, o0);
      const std::int64_t r1 = std::min(R, (c + 1) * kRowChunk);
      ReducedCursor cur(g, c * kRowChunk);
      std::copy(base + cur.off, base + cur.off + jn, v);
      std::fill(i, i + jn, cur.r);
      for (cur.next(); cur.r < r1; cur.next()) run_kernel<ExtremeRow<T, kMax>>(jn, v, i, base + cur.off, jn, cur.r);
    }
  });
  if (nchunks == 1) return;
  sdk::parallel_for(0, O, std::max<std::int64_t>(1, sdk::kElementwiseGrain / nchunks),
                    [&](std::int64_t lo, std::int64_t hi) {
                      for (std::int64_t o = lo; o < hi; ++o)
                        for (std::int64_t c = 1; c < nchunks; ++c) {
                          const std::size_t k = static_cast<std::size_t>((c - 1) * O + o);
                          if (ArgAcc<T, kMax>::better(vpart[k], pv[o])) {
                            pv[o] = vpart[k];
                            pi[o] = ipart[k];
                          }
                        }
                    });
}

template <bool kMax>
class Extreme final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    sdk::expect_contiguous(ctx, x, "x");
    const Dims& axes = ctx.attr_ints(0);
    OPFORGE_CHECK(axes.size() <= 1, ValueError, ctx.op_name(), ": attribute 'axes': expected at most one axis ",
                  "(the indices run along one axis, or over the flattened tensor for []), got ", axes);
    const Plan p = plan_of(ctx, x);
    const Geometry g = make_geometry(x.shape(), p.mask);
    OPFORGE_CHECK(g.red_numel > 0 || g.out_numel == 0, ValueError, ctx.op_name(), ": argument 'x': cannot take the ",
                  kMax ? "max" : "min", " of no elements (x is ", x.describe(), ", axes ", axes,
                  "): the reduced axis is empty");
    Tensor values = Tensor::empty(p.out_shape, x.dtype());
    Tensor indices = Tensor::empty(p.out_shape, DType::Int64);
    std::int64_t* pi = indices.data<std::int64_t>();
    sdk::dispatch_all(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* pv = values.data<T>();
      using Acc = ArgAcc<T, kMax>;
      if (!g.reduced[g.nd - 1] && g.red_numel > 0 && g.out_numel > 0) {
        extreme_kept<T, kMax>(g, x.data<T>(), pv, pi);
        return 0;
      }
      reduce_kernel<T>(g, x.data<T>(), Acc{}, [&](std::int64_t o, const typename Acc::State& s) {
        pv[o] = s.v;
        pi[o] = s.i;
      });
      return 0;
    });
    ctx.mark_non_differentiable(1);
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({indices});
    }
    return {values, indices};
  }
  // dx is zero but at each output's arg-extreme element, which gets g.
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Dims& shape = ctx.input_shape(0);
    const Geometry g = make_geometry(shape, recorded_mask(ctx));
    const Tensor& indices = ctx.saved_tensors()[0];
    const Tensor gout = grads[0].contiguous();
    // One reduced block: the axis (or the placeholder of a size-1 axis), or the flattened tensor.
    std::int64_t step = 0;
    for (int d = 0; d < g.nd; ++d)
      if (g.reduced[d]) step = g.stride[d];
    return {sdk::dispatch_floating(gout.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      Tensor dx = Tensor::zeros(shape, gout.dtype());
      T* pd = dx.data<T>();
      const T* pg = gout.data<T>();
      const std::int64_t* pi = indices.data<std::int64_t>();
      sdk::parallel_for(0, g.out_numel, sdk::kElementwiseGrain / 8, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t o = lo; o < hi; ++o) pd[kept_offset(g, o) + pi[o] * step] = pg[o];
      });
      return dx;
    })};
  }
};

// ---- norm --------------------------------------------------------------------------------------

enum class NormKind { L1, L2, Lp, Zero, Max, Min };

NormKind norm_kind(double p) {
  if (p == 1.0) return NormKind::L1;
  if (p == 2.0) return NormKind::L2;
  if (p == 0.0) return NormKind::Zero;
  if (std::isinf(p)) return p > 0 ? NormKind::Max : NormKind::Min;
  return NormKind::Lp;
}

double read_p(const Context& ctx) {
  const double p = ctx.attr_float(2);
  OPFORGE_CHECK(!std::isnan(p) && (p >= 0.0 || std::isinf(p)), ValueError, ctx.op_name(),
                ": attribute 'p': expected a number > 0, 0 (the count of nonzeros), inf (max |x|) or -inf "
                "(min |x|), got ", p);
  return p;
}

// max |x| (kMax) or min |x| over the elements, NaN if any is NaN: the norms of
// order inf and -inf. A max or min does not depend on the order it is taken in.
template <class T, bool kMax>
struct AbsExtremeAcc {
  struct State {
    double v;
    bool nan;
  };
  State init() const { return {kMax ? 0.0 : std::numeric_limits<double>::infinity(), false}; }
  static void fold(State& s, T x) {
    const double a = std::abs(static_cast<double>(x));
    if (a != a) s.nan = true;
    else if (kMax ? a > s.v : a < s.v) s.v = a;
  }
  void run(State& s, const T* p, std::int64_t n, std::int64_t, std::int64_t) const {
    for (std::int64_t i = 0; i < n; ++i) fold(s, p[i]);
  }
  void rows(State* st, const T* const* p, int count, std::int64_t n, std::int64_t, std::int64_t) const {
    for (int k = 0; k < count; ++k)
      for (std::int64_t j = 0; j < n; ++j) fold(st[j], p[k][j]);
  }
  void merge(State& a, const State& b) const {
    a.nan = a.nan || b.nan;
    if (kMax ? b.v > a.v : b.v < a.v) a.v = b.v;
  }
};

class Norm final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    sdk::expect_contiguous(ctx, x, "x");
    const double p = read_p(ctx);
    const Plan plan = plan_of(ctx, x);
    const Geometry g = make_geometry(x.shape(), plan.mask);
    OPFORGE_CHECK(!std::isinf(p) || g.red_numel > 0 || g.out_numel == 0, ValueError, ctx.op_name(),
                  ": argument 'x': cannot take the norm of order ", p, " (", p > 0 ? "max" : "min",
                  " |x|) of no elements (x is ", x.describe(), ", axes ", ctx.attr_ints(0),
                  "): the reduced axis is empty, and a ", p > 0 ? "max" : "min", " has no identity");
    Tensor out = sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      Tensor o = Tensor::empty(plan.out_shape, x.dtype());
      T* po = o.data<T>();
      const T* px = x.data<T>();
      // Σ |x|^p out of double's normal range (inf, or below DBL_MIN: 0 for a norm of
      // [1e-200, 2e-200], inf for [1e200, 1e200]) is summed again, scaled by max |x|.
      std::vector<char> rescale;
      std::atomic<bool> any_rescale{false};
      auto flag = [&](std::int64_t k, double s) {
        if (s == s && !(s >= std::numeric_limits<double>::min() && s <= std::numeric_limits<double>::max())) {
          if (!any_rescale.load(std::memory_order_relaxed)) any_rescale.store(true, std::memory_order_relaxed);
          rescale[static_cast<std::size_t>(k)] = 1;
        }
      };
      switch (norm_kind(p)) {
        case NormKind::L1:
          reduce_kernel<T>(g, px, sum_of<T, true>([](T v, std::int64_t) { return static_cast<double>(std::abs(v)); }),
                           [&](std::int64_t k, double s) { po[k] = canonical_nan(static_cast<T>(s)); });
          break;
        case NormKind::L2:
        case NormKind::Lp: {
          rescale.assign(static_cast<std::size_t>(g.out_numel), 0);
          if (norm_kind(p) == NormKind::L2)
            reduce_kernel<T>(g, px, sum_of<T, true>([](T v, std::int64_t) { return static_cast<double>(v) * v; }),
                             [&](std::int64_t k, double s) {
                               flag(k, s);
                               po[k] = canonical_nan(static_cast<T>(std::sqrt(s)));
                             });
          else
            reduce_kernel<T>(g, px,
                             sum_of<T>([p](T v, std::int64_t) { return std::pow(std::abs(static_cast<double>(v)), p); }),
                             [&](std::int64_t k, double s) {
                               flag(k, s);
                               po[k] = canonical_nan(static_cast<T>(std::pow(s, 1.0 / p)));
                             });
          if (!any_rescale.load()) break;
          // m = max |x| of each flagged slice, then m (Σ (|x| / m)^p)^(1/p): every term
          // in [0, 1], one of them 1. Slices not flagged keep their one-pass value.
          std::vector<double> m(static_cast<std::size_t>(g.out_numel));
          reduce_kernel<T>(g, px, AbsExtremeAcc<T, true>{}, [&](std::int64_t k, auto st) {
            m[static_cast<std::size_t>(k)] = st.nan ? std::numeric_limits<double>::quiet_NaN() : st.v;
          });
          // Slices flagged only for being all zeros (their max |x| is 0) keep the 0 they have:
          // no second pass unless some flagged slice has a finite, nonzero max.
          bool any_scaled = false;
          for (std::int64_t k = 0; k < g.out_numel && !any_scaled; ++k) {
            const double mk = m[static_cast<std::size_t>(k)];
            any_scaled = rescale[static_cast<std::size_t>(k)] && mk > 0 && std::isfinite(mk);
          }
          if (!any_scaled) break;
          auto scaled = [&](double s, std::int64_t k) {
            const double mk = m[static_cast<std::size_t>(k)];
            return mk > 0 && std::isfinite(mk) ? mk * (p == 2.0 ? std::sqrt(s) : std::pow(s, 1.0 / p)) : mk;
          };
          reduce_kernel<T>(g, px,
                           sum_of<T>([&](T v, std::int64_t k) {
                             const double mk = m[static_cast<std::size_t>(k)];
                             if (!rescale[static_cast<std::size_t>(k)] || !(mk > 0 && std::isfinite(mk))) return 0.0;
                             const double r = std::abs(static_cast<double>(v)) / mk;
                             return p == 2.0 ? r * r : std::pow(r, p);
                           }),
                           [&](std::int64_t k, double s) {
                             if (rescale[static_cast<std::size_t>(k)]) po[k] = canonical_nan(static_cast<T>(scaled(s, k)));
                           });
          break;
        }
        case NormKind::Zero:  // the count of nonzeros (a NaN is nonzero)
          reduce_kernel<T>(g, px, sum_of<T, true>([](T v, std::int64_t) { return v != T(0) ? 1.0 : 0.0; }),
                           [&](std::int64_t k, double s) { po[k] = static_cast<T>(s); });
          break;
        case NormKind::Max:
        case NormKind::Min: {
          auto store = [&](std::int64_t k, auto st) {
            po[k] = st.nan ? std::numeric_limits<T>::quiet_NaN() : static_cast<T>(st.v);
          };
          if (norm_kind(p) == NormKind::Max)
            reduce_kernel<T>(g, px, AbsExtremeAcc<T, true>{}, store);
          else
            reduce_kernel<T>(g, px, AbsExtremeAcc<T, false>{}, store);
          break;
        }
      }
      return o;
    });
    if (ctx.any_input_needs_grad()) {
      // The 1-norm's gradient reads x only; the 0-"norm" has none; the others read the norm too.
      const NormKind kind = norm_kind(p);
      if (kind != NormKind::Zero) ctx.save_for_backward({x, kind == NormKind::L1 ? Tensor() : out});
    }
    return {out};
  }
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const double p = read_p(ctx);
    // The count of nonzeros is constant where it is defined: nothing saved, zeros.
    if (norm_kind(p) == NormKind::Zero) return {Tensor::zeros(ctx.input_shape(0), grads[0].dtype())};
    const Geometry g = make_geometry(ctx.input_shape(0), recorded_mask(ctx));
    const TensorList& s = ctx.saved_tensors();  // x, norm (undefined for p = 1)
    const Tensor gout = grads[0].contiguous();
    return {sdk::dispatch_floating(gout.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      const Tensor& x = s[0];
      Tensor dx = Tensor::empty(x.shape(), x.dtype());
      const T* px = x.data<T>();
      const T* pg = gout.data<T>();
      T* pd = dx.data<T>();
      const NormKind kind = norm_kind(p);
      if (kind == NormKind::Max || kind == NormKind::Min) {
        // g sign(x) / c at the elements with |x| = norm (c of them: ties share it
        // evenly, as in PyTorch), 0 elsewhere; NaN where the norm is NaN.
        const T* pn = s[1].data<T>();
        std::vector<double> share(static_cast<std::size_t>(g.out_numel));
        reduce_kernel<T>(g, px, sum_of<T>([pn](T v, std::int64_t o) { return std::abs(v) == pn[o] ? 1.0 : 0.0; }),
                         [&](std::int64_t k, double c) { share[static_cast<std::size_t>(k)] = c > 0 ? 1.0 / c : 0.0; });
        for_each_run(g, [&](std::int64_t i, std::int64_t n, std::int64_t o, auto step) {
          for (std::int64_t j = 0; j < n; ++j) {
            const std::int64_t k = o + j * step;
            const T v = px[i + j], nrm = pn[k];
            if (nrm != nrm) {
              pd[i + j] = nrm;
              continue;
            }
            const T sign = static_cast<T>((v > T(0)) - (v < T(0)));
            pd[i + j] = std::abs(v) == nrm ? static_cast<T>(static_cast<double>(pg[k] * sign) * share[std::size_t(k)])
                                            : T(0);
          }
        });
        return dx;
      }
      if (kind == NormKind::L1) {  // g sign(x)
        for_each_run(g, [&](std::int64_t i, std::int64_t n, std::int64_t o, auto step) {
          for (std::int64_t j = 0; j < n; ++j) {
            const T v = px[i + j];  // sign(v); a NaN stays NaN
            pd[i + j] = pg[o + j * step] * (v != v ? v : static_cast<T>((v > T(0)) - (v < T(0))));
          }
        });
        return dx;
      }
      // inv[o] = 1 / norm, NaN where the norm is NaN, 0 where it is 0 (then every x of the slice is 0 and so is
      // dx); dx = g x / norm (p = 2) or g sign(x) (|x| / norm)^(p-1). In double, cast once:
      // |x| / norm <= 1, so no power overflows; float32 once formed g / norm^(p-1) and
      // |x|^(p-1) apart and got inf or NaN for a finite norm (p = 3 at |x| = 2e19, p = 10
      // at 1e4).
      const T* pn = s[1].data<T>();
      std::vector<double> inv(static_cast<std::size_t>(g.out_numel));
      sdk::parallel_for(0, g.out_numel, sdk::kElementwiseGrain, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t o = lo; o < hi; ++o) {
          const double nrm = pn[o];  // a NaN norm gives NaN gradients, not zeros
          inv[static_cast<std::size_t>(o)] = nrm > 0 ? 1.0 / nrm : nrm == 0 ? 0.0 : nrm;
        }
      });
      const double* pi = inv.data();
      if (kind == NormKind::L2) {
        for_each_run(g, [&](std::int64_t i, std::int64_t n, std::int64_t o, auto step) {
          for (std::int64_t j = 0; j < n; ++j) {
            const std::int64_t k = o + j * step;
            pd[i + j] = static_cast<T>(static_cast<double>(pg[k]) * (static_cast<double>(px[i + j]) * pi[k]));
          }
        });
      } else {
        for_each_run(g, [&](std::int64_t i, std::int64_t n, std::int64_t o, auto step) {
          for (std::int64_t j = 0; j < n; ++j) {
            const std::int64_t k = o + j * step;
            const double v = px[i + j];
            const double ratio = std::abs(v) * pi[k];  // in [0, 1]
            pd[i + j] = v == 0 ? T(0)
                               : static_cast<T>(static_cast<double>(pg[k]) * (v > 0 ? 1.0 : -1.0) *
                                                std::pow(ratio, p - 1.0));
          }
        });
      }
      return dx;
    })};
  }
};

// ---- logsumexp -----------------------------------------------------------------------------------

class LogSumExp final : public opforge::Function {
 public:
  TensorList forward(Context& ctx, TensorSpan in) const override {
    const Tensor& x = in[0];
    sdk::expect_contiguous(ctx, x, "x");
    const Plan plan = plan_of(ctx, x);
    const Geometry g = make_geometry(x.shape(), plan.mask);
    // Row 0: the shift m per output; row 1: log Σ exp(x - m). Backward reads both, so that
    // its softmax exp((x - m) - log Σ) never goes through m + log Σ, which loses log Σ to
    // rounding once |m| is large (1e30 in float64, 1e7 in float32).
    Tensor parts = Tensor::empty(Dims{2, g.out_numel}, x.dtype());
    Tensor out = sdk::dispatch_floating(x.dtype(), ctx, "x", [&](auto tag) {
      using T = decltype(tag);
      Tensor o = Tensor::empty(plan.out_shape, x.dtype());
      T* po = o.data<T>();
      const T* px = x.data<T>();
      T* sh = parts.data<T>();
      T* ls = sh + g.out_numel;
      // Pass 1: the shift m = max x per output (0 where m is infinite: all -inf, or some +inf).
      reduce_kernel<T>(g, px, MaxAcc<T>{}, [&](std::int64_t k, T m) { sh[k] = std::isfinite(m) ? m : T(0); });
      // Pass 2: m + log Σ exp(x - m); every exp is <= 1.
      auto shifted_exp = [sh](T v, std::int64_t k) { return static_cast<double>(std::exp(v - sh[k])); };
      reduce_kernel<T>(g, px, sum_of<T>(shifted_exp), [&](std::int64_t k, double s) {
        const double l = std::log(s);
        ls[k] = static_cast<T>(l);
        po[k] = static_cast<T>(static_cast<double>(sh[k]) + l);
      });
      return o;
    });
    if (ctx.any_input_needs_grad()) {
      ctx.save_for_backward({x, parts});
    }
    return {out};
  }
  // dx = g exp((x - m) - log Σ exp(x - m)): the softmax of x over R, scaled by g.
  TensorList backward(Context& ctx, TensorSpan grads) const override {
    const Geometry g = make_geometry(ctx.input_shape(0), recorded_mask(ctx));
    const TensorList& s = ctx.saved_tensors();  // x, (shift; log Σ exp) per output
    const Tensor gout = grads[0].contiguous();
    return {sdk::dispatch_floating(gout.dtype(), ctx, "grad", [&](auto tag) {
      using T = decltype(tag);
      Tensor dx = Tensor::empty(s[0].shape(), s[0].dtype());
      const T* px = s[0].data<T>();
      const T* sh = s[1].data<T>();
      const T* ls = sh + g.out_numel;
      const T* pg = gout.data<T>();
      T* pd = dx.data<T>();
      for_each_run(g, [&](std::int64_t i, std::int64_t n, std::int64_t o, auto step) {
        for (std::int64_t j = 0; j < n; ++j) {
          const std::int64_t k = o + j * step;
          pd[i + j] = pg[k] * std::exp((px[i + j] - sh[k]) - ls[k]);
        }
      });
      return dx;
    })};
  }
};

}  // namespace

// Sample inputs for the test harness (`opforge check`): x [4, 5], standard normal:
// no ties (max, min) and no zeros (norm) within the finite-difference step.
static TensorList sum_samples(opforge::DType dtype, std::uint64_t seed) { return {Tensor::randn({4, 5}, dtype, seed)}; }

OPFORGE_PLUGIN("reduce", "0.2.0") {
  using opforge::AttrKind;
  using opforge::OpSchema;
  // The two attributes every reduction starts with.
  auto reduction = [](const char* name, const char* doc) {
    return OpSchema(name)
        .input_names({"x"})
        .attr("axes", AttrKind::Ints, Dims{}, "axes to reduce, negative from the end; [] = every axis")
        .attr("keepdims", AttrKind::Bool, false, "keep each reduced axis, with size 1")
        .describe(doc)
        .samples(sum_samples);
  };
  registrar.add<SumMean<false>>(
      reduction("reduce.sum", "sum over the given axes (default: all, to a 0-d tensor); int64 and bool sum to int64")
          .accepts(opforge::DTypeSet::all())
          .takes_strided_inputs());
  registrar.add<SumMean<true>>(
      reduction("reduce.mean", "mean over the given axes (default: all)").takes_strided_inputs());
  // max and min: the same attributes, but 'axes' names at most one axis.
  auto extreme = [&reduction](const char* name, const char* doc) {
    OpSchema s = reduction(name, doc);
    s.attrs[0].doc = "the one axis to reduce (negative from the end), or [] for every axis (a flat index)";
    return s;
  };
  registrar.add<Extreme<true>>(
      extreme("reduce.max", "max over one axis or all, and its int64 index (first of equals); the gradient goes to that "
                              "element alone, as torch.max(x, dim) (torch.amax and x.max() split it among ties)")
          .outputs(2)
          .accepts(opforge::DTypeSet::all()));
  registrar.add<Extreme<false>>(
      extreme("reduce.min", "min over one axis or all, and its int64 index (first of equals); the gradient goes to that "
                              "element alone, as torch.min(x, dim) (torch.amin and x.min() split it among ties)")
          .outputs(2)
          .accepts(opforge::DTypeSet::all()));
  registrar.add<Norm>(reduction("reduce.norm", "p-norm (Σ |x|^p)^(1/p) over the given axes (default: all)")
                          .attr("p", AttrKind::Float, 2.0,
                                "the order: a number > 0, 0 (count of nonzeros), inf (max |x|) or -inf (min |x|)"));
  registrar.add<LogSumExp>(
      reduction("reduce.logsumexp", "log Σ exp(x) over the given axes (default: all), without overflow"));
  opforge_ops::reduce::register_softmax(registrar);
}
