// Ops: a schema plus a Function, found by qualified name ("family.name") and
// called through a handle that was resolved once.
//
//   static const opforge::OpHandle mv = opforge::op("linalg.mv");  // one lookup
//   opforge::Tensor y = mv({A, x});                                // no lookup, no lock
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <boost/smart_ptr/intrusive_ptr.hpp>

#include "opforge/dtype.hpp"
#include "opforge/export.hpp"
#include "opforge/function.hpp"
#include "opforge/tensor_list.hpp"

namespace opforge {

struct OpEntry;
OPFORGE_API void intrusive_ptr_add_ref(OpEntry* e) noexcept;
OPFORGE_API void intrusive_ptr_release(OpEntry* e) noexcept;

/// An op's sample-input function (OpSchema::samples): makes the inputs the test
/// harness (`opforge check`, sdk::check_op) runs the op on, one tensor per input,
/// of `dtype` where the input is floating, the same tensors for the same seed.
///
/// Its code lives in the plugin. Once the op is registered, every copy of it (a
/// copy of the op's schema included) holds a reference to the op, as an OpHandle
/// does: the plugin stays loaded while any copy can still be called, and
/// unload_plugin counts such copies among the op's users. A call that throws is
/// reported as an opforge::Error naming the op; the plugin's exception object
/// never leaves the call.
class OPFORGE_API SampleInputs {
 public:
  using Fn = TensorList (*)(DType dtype, std::uint64_t seed);

  SampleInputs() noexcept = default;
  SampleInputs(std::nullptr_t) noexcept {}    // NOLINT(google-explicit-constructor): `samples(nullptr)`
  SampleInputs(Fn f) noexcept : fn_(f) {}     // NOLINT(google-explicit-constructor): `samples(&make_inputs)`
  /// A lambda without captures: `samples([](DType d, std::uint64_t s) { ... })`.
  template <class F, std::enable_if_t<std::is_convertible_v<F, Fn> && !std::is_same_v<std::decay_t<F>, SampleInputs> &&
                                          !std::is_pointer_v<std::decay_t<F>>, int> = 0>
  SampleInputs(F f) noexcept : fn_(static_cast<Fn>(f)) {}  // NOLINT(google-explicit-constructor)
  /// Anything else callable (a lambda with captures, a std::function) is refused
  /// at compile time: what it holds could outlive the plugin's code.
  template <class F, std::enable_if_t<!std::is_convertible_v<F, Fn> && !std::is_same_v<std::decay_t<F>, SampleInputs> &&
                                          std::is_invocable_v<F&, DType, std::uint64_t>, int> = 0>
  SampleInputs(F) {  // NOLINT(google-explicit-constructor)
    static_assert(sizeof(F) == 0,
                  "OpSchema::samples takes a plain function or a lambda without captures, "
                  "TensorList(DType, std::uint64_t): what a capture or a std::function holds could outlive the plugin");
  }
  SampleInputs(const SampleInputs& other) noexcept;
  SampleInputs(SampleInputs&& other) noexcept;
  SampleInputs& operator=(const SampleInputs& other) noexcept;
  SampleInputs& operator=(SampleInputs&& other) noexcept;
  ~SampleInputs();

  explicit operator bool() const noexcept { return fn_ != nullptr; }
  friend bool operator==(const SampleInputs& s, std::nullptr_t) noexcept { return s.fn_ == nullptr; }
  friend bool operator!=(const SampleInputs& s, std::nullptr_t) noexcept { return s.fn_ != nullptr; }
  friend bool operator==(std::nullptr_t, const SampleInputs& s) noexcept { return s.fn_ == nullptr; }
  friend bool operator!=(std::nullptr_t, const SampleInputs& s) noexcept { return s.fn_ != nullptr; }
  /// Calls the function. Throws opforge::Error ("<op>: its sample_inputs(float64,
  /// seed 1) threw: <what>") when it throws; ValueError when there is none.
  TensorList operator()(DType dtype, std::uint64_t seed) const;
  /// The plain function pointer (valid only while the op's plugin is loaded).
  Fn function() const noexcept { return fn_; }

 private:
  friend struct SampleInputsBinding;  // the core binds the registered op's own copy
  void release() noexcept;
  Fn fn_ = nullptr;
  OpEntry* op_ = nullptr;  // the registered op this belongs to (null before registration)
  bool holds_op_ = false;  // false only in the op's own schema, which the op owns
};

/// The most inputs one call takes (a variadic op's repeated inputs included):
/// the core keeps one bit per input for which of them need a gradient.
inline constexpr std::size_t kMaxOpInputs = 64;

/// What an op takes and gives. The core checks calls against it before the
/// op's code runs: input count, dtypes accepted, all inputs of one dtype.
struct OPFORGE_API OpSchema {
  std::string name;                 ///< qualified: "family.name"
  std::vector<std::string> inputs;  ///< input names, in order ("A", "x", "y")
  int num_outputs = 1;
  DTypeSet dtypes = DTypeSet::floating();  ///< dtypes every input may have
  bool same_dtype = true;           ///< all inputs must share one dtype
  bool strided_inputs = false;      ///< the kernels take strided views (else the core passes contiguous copies)
  std::string doc;                  ///< one line
  std::vector<AttrSpec> attrs;      ///< non-tensor arguments, in order
  bool variadic = false;            ///< the last input may repeat (up to kMaxOpInputs inputs in all)

  /// Makes inputs the test harness runs the op on (see opforge::SampleInputs).
  using SampleInputs = ::opforge::SampleInputs;
  /// Empty: the harness falls back to randn of shape [3, 4] for every input.
  SampleInputs sample_inputs;
  /// Attributes the harness passes with the sample inputs (by name).
  std::vector<std::pair<std::string, Attr>> sample_attributes;

  OpSchema() = default;
  explicit OpSchema(std::string qualified_name) : name(std::move(qualified_name)) {}
  OpSchema& input_names(std::vector<std::string> names) { inputs = std::move(names); return *this; }
  OpSchema& outputs(int n) { num_outputs = n; return *this; }
  OpSchema& accepts(DTypeSet s) { dtypes = s; return *this; }
  OpSchema& mixed_dtypes() { same_dtype = false; return *this; }
  OpSchema& takes_strided_inputs() { strided_inputs = true; return *this; }
  OpSchema& describe(std::string line) { doc = std::move(line); return *this; }
  OpSchema& samples(SampleInputs f) { sample_inputs = f; return *this; }
  OpSchema& sample_attrs(std::initializer_list<NamedAttr> named) {
    for (const NamedAttr& a : named) sample_attributes.emplace_back(std::string(a.name), a.value);
    return *this;
  }
  /// Declares an attribute; an unset default makes it required.
  OpSchema& attr(std::string attr_name, AttrKind kind, Attr default_value = Attr(), std::string attr_doc = "") {
    attrs.push_back({std::move(attr_name), kind, std::move(default_value), std::move(attr_doc)});
    return *this;
  }
  /// The last input may be given any number of times (concat's tensors).
  OpSchema& variadic_last_input() { variadic = true; return *this; }

  /// Empty when the schema is valid, else what is wrong with it.
  std::string validate() const;
};

/// A resolved op. Copying it is one atomic increment; while any handle (or any
/// graph node made by the op) is alive, the op's plugin stays loaded.
class OPFORGE_API OpHandle {
 public:
  OpHandle() = default;
  explicit OpHandle(boost::intrusive_ptr<OpEntry> e) : entry_(std::move(e)) {}

  /// Runs the op. Records a graph node when grad mode is on and an input requires
  /// grad. Attributes by position (schema order; fewer means defaults for the rest).
  TensorList call(TensorSpan inputs, AttrSpan attrs = {}) const;
  /// The same, attributes by name.
  TensorList call(TensorSpan inputs, std::initializer_list<NamedAttr> attrs) const;
  /// Runs a single-output op and returns its output.
  Tensor operator()(TensorSpan inputs, AttrSpan attrs = {}) const;
  Tensor operator()(TensorSpan inputs, std::initializer_list<NamedAttr> attrs) const;

  /// A handle whose calls use these attributes (by name): the op with its
  /// attributes fixed, for code that calls ops generically (gradcheck, the
  /// harness). Attributes a call gives take precedence, one by one (a named call
  /// overrides the ones it names, the others stay bound), and bind on a bound
  /// handle adds to what it binds. Throws ValueError on a name the schema does
  /// not declare.
  OpHandle bind(std::initializer_list<NamedAttr> attrs) const;
  OpHandle bind(const std::vector<std::pair<std::string, Attr>>& attrs) const;
  /// The attributes bound to this handle (empty for a plain handle).
  std::vector<Attr> bound_attrs() const { return bound_ ? *bound_ : std::vector<Attr>(); }

  bool valid() const noexcept { return static_cast<bool>(entry_); }
  const OpSchema& schema() const;
  const std::string& name() const;
  /// Name of the plugin that provides the op ("" for an op made with make_op).
  const std::string& plugin_name() const;
  /// File of that plugin ("" for an op made with make_op).
  const std::string& plugin_file() const;
  OpEntry* entry() const noexcept { return entry_.get(); }

 private:
  boost::intrusive_ptr<OpEntry> entry_;
  std::shared_ptr<const std::vector<Attr>> bound_;  // positional, schema order
};

/// Resolves a qualified op name. Loads the standard plugins (and those on
/// OPFORGE_PLUGIN_PATH) on first use. Throws PluginError naming the op, with
/// near names, when no loaded plugin provides it.
OPFORGE_API OpHandle op(std::string_view qualified_name);
/// One-off call by name (a lookup per call: resolve a handle for hot loops).
OPFORGE_API TensorList call(std::string_view qualified_name, TensorSpan inputs);
/// An op that lives in the calling program rather than in a plugin (not registered
/// by name). Useful for tests and for a Function defined next to its use.
OPFORGE_API OpHandle make_op(OpSchema schema, std::unique_ptr<Function> fn);

/// Every op currently registered, sorted by name.
OPFORGE_API std::vector<OpHandle> registered_ops();

/// Passed to a plugin's registration entry point. Ops added here are committed to
/// the registry only when the whole registration succeeds.
class OPFORGE_API PluginRegistrar {
 public:
  virtual ~PluginRegistrar();
  /// Adds an op. Throws PluginError on an invalid schema or a duplicate name.
  virtual void add(OpSchema schema, std::unique_ptr<Function> fn) = 0;
  template <class F>
  void add(OpSchema schema) { add(std::move(schema), std::unique_ptr<Function>(new F())); }
  virtual const std::string& plugin_name() const = 0;
};

}  // namespace opforge
