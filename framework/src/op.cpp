// Ops: the registry, handles, and the call path (the hot path of the framework).
#include "opforge/op.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "boundary.hpp"
#include "node.hpp"
#include "opforge/plugins.hpp"
#include "plugin_keepalive.hpp"
#include "registry.hpp"
#include "refcount.hpp"

namespace opforge {

void intrusive_ptr_add_ref(OpEntry* e) noexcept { e->refcount.fetch_add(1, std::memory_order_relaxed); }
void intrusive_ptr_release(OpEntry* e) noexcept {
  if (release_is_last(e->refcount)) delete e;
}

// ---- SampleInputs ---------------------------------------------------------------

// Binds a registered op's own schema to its entry. A schema copied from another
// registered op (make_op(h.schema(), ...)) arrives holding that op: the new entry
// keeps it, so the function's plugin stays loaded as long as the new op.
struct SampleInputsBinding {
  static void bind(OpEntry& e) {
    SampleInputs& s = e.schema.sample_inputs;
    if (s.holds_op_ && s.op_ != &e) e.samples_from = boost::intrusive_ptr<OpEntry>(s.op_, /*add_ref=*/false);
    else s.release();
    s.op_ = &e;
    s.holds_op_ = false;
  }
};

SampleInputs::SampleInputs(const SampleInputs& other) noexcept : fn_(other.fn_), op_(other.op_), holds_op_(op_ != nullptr) {
  if (op_) intrusive_ptr_add_ref(op_);
}
SampleInputs::SampleInputs(SampleInputs&& other) noexcept : fn_(other.fn_), op_(other.op_), holds_op_(other.holds_op_) {
  if (holds_op_) {
    other.op_ = nullptr;  // the reference moves
    other.holds_op_ = false;
    other.fn_ = nullptr;
  } else if (op_) {
    holds_op_ = true;  // moved out of an op's own schema: a copy, which holds the op
    intrusive_ptr_add_ref(op_);
  }
}
SampleInputs& SampleInputs::operator=(const SampleInputs& other) noexcept {
  if (this != &other) {
    if (other.op_) intrusive_ptr_add_ref(other.op_);  // before release: other may live in what this holds
    OpEntry* const was = holds_op_ ? op_ : nullptr;
    fn_ = other.fn_;
    op_ = other.op_;
    holds_op_ = op_ != nullptr;
    if (was) intrusive_ptr_release(was);
  }
  return *this;
}
SampleInputs& SampleInputs::operator=(SampleInputs&& other) noexcept {
  if (this != &other) {
    SampleInputs taken(std::move(other));
    std::swap(fn_, taken.fn_);
    std::swap(op_, taken.op_);
    std::swap(holds_op_, taken.holds_op_);
  }  // `taken` releases what this held
  return *this;
}
SampleInputs::~SampleInputs() { release(); }

void SampleInputs::release() noexcept {
  OpEntry* const was = holds_op_ ? op_ : nullptr;
  op_ = nullptr;
  holds_op_ = false;
  if (was) intrusive_ptr_release(was);
}

TensorList SampleInputs::operator()(DType dtype, std::uint64_t seed) const {
  const std::string who = op_ ? op_->schema.name + ": its" : std::string("an op's");
  OPFORGE_CHECK(fn_ != nullptr, ValueError, who, " sample_inputs is empty (the schema sets none with OpSchema::samples)");
  try {
    return fn_(dtype, seed);
  } catch (const std::exception& e) {
    // Read while the plugin is loaded (op_ or the caller's handle keeps it), never rethrown as is.
    throw Error(who + " sample_inputs(" + dtype_name(dtype) + ", seed " + std::to_string(seed) + ") threw: " + e.what());
  } catch (...) {
    throw Error(who + " sample_inputs(" + dtype_name(dtype) + ", seed " + std::to_string(seed) +
                ") threw an exception not derived from std::exception");
  }
}

Function::~Function() = default;
PluginRegistrar::~PluginRegistrar() = default;

// ---- Context ------------------------------------------------------------------

void Context::save_for_backward(TensorSpan tensors) {
  for (const Tensor& t : tensors) {
    saved_.push_back(t);
    saved_versions_.push_back(t.defined() ? t.unsafe_impl()->storage->version.load(std::memory_order_relaxed) : 0);
  }
}

void Context::check_not_released() const {
  OPFORGE_CHECK(!released_, AutogradError, op_name_,
                ": this part of the graph was already backpropagated (by an earlier backward, or by one that "
                "stopped with an error after passing here) and what forward saved was freed; pass "
                "retain_graph=true to the first backward to backpropagate twice or to retry after an error");
}

const TensorList& Context::saved_tensors() const {
  check_not_released();
  for (std::size_t i = 0; i < saved_.size(); ++i) {
    if (!saved_[i].defined()) continue;
    const std::uint32_t now = saved_[i].unsafe_impl()->storage->version.load(std::memory_order_relaxed);
    OPFORGE_CHECK(now == saved_versions_[i], AutogradError, op_name_, ": saved tensor ", i, " (",
                  saved_[i].describe(), ") was modified in place after forward saved it (version ",
                  saved_versions_[i], ", now ", now,
                  "); backward needs its value from forward. Modify a copy instead (detach().clone()), or do the "
                  "in-place change before the op");
  }
  return saved_;
}

std::int64_t Context::saved_int(std::size_t i) const {
  check_not_released();
  OPFORGE_CHECK(i < ints_.size(), IndexError, op_name_, ": saved_int(", i, "): only ", ints_.size(),
                " ints were saved");
  return ints_[i];
}

double Context::saved_value(std::size_t i) const {
  check_not_released();
  OPFORGE_CHECK(i < values_.size(), IndexError, op_name_, ": saved_value(", i, "): only ", values_.size(),
                " values were saved");
  return values_[i];
}

void ContextAccess::init(Context& c, std::uint64_t mask, std::uint32_t n_inputs, const OpSchema& schema) {
  c.needs_grad_mask_ = mask;
  c.num_inputs_ = n_inputs;
  c.op_name_ = schema.name.c_str();
  c.schema_ = &schema;
}

const Attr& Context::attr(std::size_t i) const {
  OPFORGE_CHECK(i < attrs_.size(), IndexError, op_name_, ": attr(", i, "): the op has ", attrs_.size(),
                " attributes");
  return attrs_[i];
}

const Attr& Context::attr(std::string_view name) const {
  if (schema_) {
    for (std::size_t i = 0; i < schema_->attrs.size() && i < attrs_.size(); ++i)
      if (schema_->attrs[i].name == name) return attrs_[i];
  }
  throw ValueError(std::string(op_name_) + ": attr(\"" + std::string(name) + "\"): the op declares no such attribute");
}

const char* Context::attr_label(std::size_t i) const noexcept {
  return schema_ && i < schema_->attrs.size() ? schema_->attrs[i].name.c_str() : "attribute";
}

namespace detail {
std::ostream& operator<<(std::ostream& os, Exact e) {
  char buf[40];
  for (int digits = 6; digits <= 17; ++digits) {  // 17 significant digits always read back
    std::snprintf(buf, sizeof buf, "%.*g", digits, e.value);
    if (std::isnan(e.value) || std::strtod(buf, nullptr) == e.value) break;
  }
  return os << buf;
}
}  // namespace detail

// ---- attributes -------------------------------------------------------------------

const char* attr_kind_name(AttrKind k) noexcept {
  switch (k) {
    case AttrKind::Int: return "int";
    case AttrKind::Float: return "float";
    case AttrKind::Bool: return "bool";
    case AttrKind::Ints: return "int list";
  }
  return "?";
}

namespace {
[[noreturn]] void throw_attr_kind(const char* what, AttrKind want, const Attr& got) {
  throw ValueError(std::string("attribute '") + what + "': expected " + attr_kind_name(want) + ", got " +
                   (got.is_set() ? std::string(attr_kind_name(got.kind())) + " " + got.to_string() : "no value"));
}
}  // namespace

std::int64_t Attr::as_int(const char* what) const {
  if (!set_ || kind_ != AttrKind::Int) throw_attr_kind(what, AttrKind::Int, *this);
  return i_;
}
double Attr::as_float(const char* what) const {
  if (set_ && kind_ == AttrKind::Int) return static_cast<double>(i_);
  if (!set_ || kind_ != AttrKind::Float) throw_attr_kind(what, AttrKind::Float, *this);
  return d_;
}
bool Attr::as_bool(const char* what) const {
  if (!set_ || kind_ != AttrKind::Bool) throw_attr_kind(what, AttrKind::Bool, *this);
  return i_ != 0;
}
const Dims& Attr::as_ints(const char* what) const {
  if (!set_ || kind_ != AttrKind::Ints) throw_attr_kind(what, AttrKind::Ints, *this);
  return ints_;
}
long long Attr::checked_unsigned(unsigned long long v) {
  OPFORGE_CHECK(v <= static_cast<unsigned long long>(std::numeric_limits<long long>::max()), ValueError,
                "Attr: an unsigned attribute value must fit in int64 (at most 9223372036854775807), got ", v);
  return static_cast<long long>(v);
}

std::string Attr::to_string() const {
  if (!set_) return "unset";
  switch (kind_) {
    case AttrKind::Int: return std::to_string(i_);
    case AttrKind::Float: {
      // Exact, written as a float ("1.0", not "1": an int attribute prints as "1").
      std::string text = detail::concat(detail::Exact{d_});
      if (text.find_first_of(".eEn") == std::string::npos) text += ".0";  // n: inf, nan
      return text;
    }
    case AttrKind::Bool: return i_ ? "true" : "false";
    case AttrKind::Ints: return ints_.to_string();
  }
  return "?";
}

// ---- schema -------------------------------------------------------------------

namespace {
// Whether a value fits an attribute declared of `kind` (an int fits a float).
bool fits_kind(AttrKind kind, const Attr& value) {
  return value.kind() == kind || (kind == AttrKind::Float && value.kind() == AttrKind::Int);
}
}  // namespace

namespace {
// A character of a name as a message can show it: 'c', or its byte value when
// it is not printable ASCII (a control character, a byte of UTF-8).
std::string shown_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return "the character '" + std::string(1, c) + "'";
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02x", u);
  return std::string("the byte ") + hex + " (not printable ASCII)";
}
}  // namespace

std::string OpSchema::validate() const {
  const auto dot = name.find('.');
  constexpr const char* kQualified = "expected 'family.name', e.g. 'linalg.mv'";
  if (name.empty()) return std::string("the op name is empty; ") + kQualified;
  if (dot == std::string::npos || dot == 0 || dot + 1 == name.size())
    return "op name '" + name + "' is not qualified: " + kQualified;
  if (name.find('.', dot + 1) != std::string::npos)
    return "op name '" + name + "' has more than one '.': " + kQualified;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'))
      return "op name '" + name + "' has " + shown_char(c) + ": use letters, digits, '_' and one '.'";
  if (inputs.size() > 64) return "op '" + name + "' has " + std::to_string(inputs.size()) + " inputs; at most 64";
  // Input and attribute names appear in messages and in `opforge ops` (and its JSON): plain words.
  auto plain = [](const std::string& word) {
    return std::all_of(word.begin(), word.end(),
                       [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
  };
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].empty())
      return "op '" + name + "': input " + std::to_string(i) +
             " has no name; give every input a name in input_names() (messages name the input)";
    if (!plain(inputs[i]))
      return "op '" + name + "': input " + std::to_string(i) + " is named '" + inputs[i] +
             "'; use letters, digits and '_' in input names";
    for (std::size_t j = 0; j < i; ++j)
      if (inputs[j] == inputs[i])
        return "op '" + name + "': inputs " + std::to_string(j) + " and " + std::to_string(i) + " are both named '" +
               inputs[i] + "'; give each input its own name in input_names() (messages name the input)";
  }
  if (num_outputs < 1) return "op '" + name + "' declares " + std::to_string(num_outputs) + " outputs; at least 1";
  // Context::mark_non_differentiable and the call path keep one bit per output.
  if (num_outputs > 64) return "op '" + name + "' declares " + std::to_string(num_outputs) + " outputs; at most 64";
  if (dtypes.empty()) return "op '" + name + "' accepts no dtype";
  if (variadic && inputs.empty()) return "op '" + name + "' is variadic but declares no input to repeat";
  for (std::size_t i = 0; i < attrs.size(); ++i) {
    const AttrSpec& a = attrs[i];
    if (a.name.empty()) return "op '" + name + "': attribute " + std::to_string(i) + " has no name";
    if (!plain(a.name))
      return "op '" + name + "': attribute " + std::to_string(i) + " is named '" + a.name +
             "'; use letters, digits and '_' in attribute names";
    for (std::size_t j = 0; j < i; ++j)
      if (attrs[j].name == a.name) return "op '" + name + "': attribute '" + a.name + "' is declared twice";
    if (a.default_value.is_set() && !fits_kind(a.kind, a.default_value))
      return "op '" + name + "': attribute '" + a.name + "' is declared " + attr_kind_name(a.kind) +
             " but its default is " + attr_kind_name(a.default_value.kind());
  }
  for (std::size_t i = 0; i < sample_attributes.size(); ++i) {
    const std::string& sample_name = sample_attributes[i].first;
    const Attr& value = sample_attributes[i].second;
    for (std::size_t j = 0; j < i; ++j)
      if (sample_attributes[j].first == sample_name)
        return "op '" + name + "': sample attribute '" + sample_name + "' is given twice in sample_attrs(); give "
               "it once";
    const AttrSpec* spec = nullptr;
    for (const AttrSpec& a : attrs)
      if (a.name == sample_name) spec = &a;
    if (!spec) {
      std::string declared;
      for (const AttrSpec& a : attrs) declared += (declared.empty() ? "" : ", ") + a.name;
      return "op '" + name + "': sample attribute '" + sample_name + "' is not one of its attributes (" +
             (declared.empty() ? std::string("it declares none") : "it declares: " + declared) +
             "); check its spelling in sample_attrs()";
    }
    if (!value.is_set() || !fits_kind(spec->kind, value))
      return "op '" + name + "': sample attribute '" + sample_name + "' is " +
             (value.is_set() ? attr_kind_name(value.kind()) : std::string("unset")) + " but the attribute is declared " +
             attr_kind_name(spec->kind);
  }
  return {};
}

// ---- registry -----------------------------------------------------------------

Registry& Registry::instance() {
  static Registry* r = new Registry();  // never destroyed: handles may outlive static destruction
  return *r;
}

boost::intrusive_ptr<OpEntry> Registry::find(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ops_.find(std::string(name));
  return it == ops_.end() ? nullptr : it->second;
}

void Registry::add_all(const std::vector<boost::intrusive_ptr<OpEntry>>& entries) {
  replace({}, entries, false, nullptr);
}

void Registry::replace(const std::vector<OpEntryPtr>& retire, const std::vector<OpEntryPtr>& entries,
                       bool replace_existing, std::vector<OpEntryPtr>* displaced) {
  std::vector<OpEntryPtr> dropped;  // declared before the lock: released after it
  std::lock_guard<std::mutex> lock(mu_);
  const auto retiring = [&](const OpEntry* e) {
    return std::any_of(retire.begin(), retire.end(), [&](const OpEntryPtr& r) { return r.get() == e; });
  };
  // Check everything first: a refused commit changes nothing.
  if (!replace_existing) {
    for (const auto& e : entries) {
      auto it = ops_.find(e->schema.name);
      if (it != ops_.end() && !retiring(it->second.get())) {
        const OpEntry& old = *it->second;
        throw PluginError("plugin '" + e->plugin_name + "' (" + e->plugin_file + ") registers op '" +
                          e->schema.name + "', which plugin '" + old.plugin_name + "' (" + old.plugin_file +
                          ") already provides; rename one of them, or remove one file from the plugin path");
      }
    }
  }
  ops_.reserve(ops_.size() + entries.size());
  dropped.reserve(entries.size());
  for (const auto& r : retire) {
    auto it = ops_.find(r->schema.name);
    if (it != ops_.end() && it->second == r) ops_.erase(it);
  }
  for (const auto& e : entries) {
    auto [it, inserted] = ops_.try_emplace(e->schema.name, e);
    if (inserted) continue;
    dropped.push_back(std::move(it->second));
    it->second = e;
  }
  if (displaced) displaced->insert(displaced->end(), dropped.begin(), dropped.end());
}

std::size_t Registry::remove(const std::vector<OpEntryPtr>& entries) {
  // The caller holds `entries`: erasing them here never releases the last reference.
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t removed = 0;
  for (const auto& e : entries) {
    auto it = ops_.find(e->schema.name);
    if (it != ops_.end() && it->second == e) {
      ops_.erase(it);
      ++removed;
    }
  }
  return removed;
}

std::vector<boost::intrusive_ptr<OpEntry>> Registry::all() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<boost::intrusive_ptr<OpEntry>> v;
  for (const auto& kv : ops_) v.push_back(kv.second);
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a->schema.name < b->schema.name; });
  return v;
}

namespace {
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace

std::vector<std::string> Registry::near_names(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::size_t, std::string>> scored;
  const std::string_view tail = name.substr(name.find('.') == std::string_view::npos ? 0 : name.find('.') + 1);
  for (const auto& kv : ops_) {
    const std::string& n = kv.first;
    std::size_t d = edit_distance(name, n);
    const std::string_view ntail = std::string_view(n).substr(n.find('.') + 1);
    if (d <= 3 || ntail == tail) scored.emplace_back(ntail == tail ? 0 : d, n);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  for (std::size_t i = 0; i < scored.size() && i < 3; ++i) out.push_back(scored[i].second);
  return out;
}

StagingRegistrar::StagingRegistrar(std::string plugin_name, std::string plugin_file, std::shared_ptr<void> library)
    : plugin_name_(std::move(plugin_name)), plugin_file_(std::move(plugin_file)), library_(std::move(library)) {}

void StagingRegistrar::add(OpSchema schema, std::unique_ptr<Function> fn) {
  std::unique_lock<std::mutex> lock(mu_);
  OPFORGE_CHECK(!closed_, PluginError, "plugin '", plugin_name_, "' (", plugin_file_, "): op '", schema.name,
                "' was added through the registrar after the plugin's registration returned; a PluginRegistrar is "
                "valid only during the OPFORGE_PLUGIN body: add every op there (to add ops later, make them with "
                "make_op)");
  const std::string problem = schema.validate();
  OPFORGE_CHECK(problem.empty(), PluginError, "plugin '", plugin_name_, "' (", plugin_file_,
                "): invalid op schema: ", problem);
  OPFORGE_CHECK(fn != nullptr, PluginError, "plugin '", plugin_name_, "' (", plugin_file_, "): op '", schema.name,
                "' was added without a Function");
  for (const auto& e : staged_)
    OPFORGE_CHECK(e->schema.name != schema.name, PluginError, "plugin '", plugin_name_, "' (", plugin_file_,
                  ") adds op '", schema.name, "' twice; give each op its own name");
  boost::intrusive_ptr<OpEntry> e(new OpEntry());
  e->library = library_;
  e->fn = std::move(fn);
  e->schema = std::move(schema);
  SampleInputsBinding::bind(*e);
  e->plugin_name = plugin_name_;
  e->plugin_file = plugin_file_;
  staged_.push_back(std::move(e));
}

void StagingRegistrar::commit() { Registry::instance().add_all(staged_); }

void StagingRegistrar::close() noexcept {
  std::vector<boost::intrusive_ptr<OpEntry>> staged;
  std::shared_ptr<void> library;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    staged.swap(staged_);
    library.swap(library_);
  }
  // Released here, with the lock let go (their destructors run plugin code).
}

void StagingRegistrar::commit(const std::vector<OpEntryPtr>& retire, bool replace_existing,
                              std::vector<OpEntryPtr>* displaced) {
  Registry::instance().replace(retire, staged_, replace_existing, displaced);
}

std::vector<std::string> StagingRegistrar::op_names() const {
  std::vector<std::string> v;
  for (const auto& e : staged_) v.push_back(e->schema.name);
  return v;
}

// ---- lookup -------------------------------------------------------------------

OpHandle op(std::string_view qualified_name) {
  load_default_plugins();
  auto e = Registry::instance().find(qualified_name);
  if (!e) {
    std::string msg = "no op named '" + std::string(qualified_name) + "' is registered";
    auto near = Registry::instance().near_names(qualified_name);
    if (!near.empty()) {
      msg += "; did you mean ";
      for (std::size_t i = 0; i < near.size(); ++i) msg += (i ? ", '" : "'") + near[i] + "'";
      msg += "?";
    }
    msg += " (`opforge ops` lists the loaded plugins and the files that failed to load)";
    throw PluginError(msg);
  }
  return OpHandle(std::move(e));
}

TensorList call(std::string_view qualified_name, TensorSpan inputs) { return op(qualified_name).call(inputs); }

OpHandle make_op(OpSchema schema, std::unique_ptr<Function> fn) {
  const std::string problem = schema.validate();
  OPFORGE_CHECK(problem.empty(), ValueError, "make_op: invalid schema: ", problem);
  OPFORGE_CHECK(fn != nullptr, ValueError, "make_op: op '", schema.name, "': the Function is null");
  boost::intrusive_ptr<OpEntry> e(new OpEntry());
  // A Function made by plugin code (its vtable lives there) keeps that plugin loaded.
  e->library = keep_plugin_loaded(*reinterpret_cast<const void* const*>(fn.get()));
  e->fn = std::move(fn);
  e->schema = std::move(schema);
  SampleInputsBinding::bind(*e);
  // A sample function of plugin code that no op of the plugin brought along (a
  // pointer the program took from the plugin) keeps that plugin loaded too.
  if (!e->samples_from && e->schema.sample_inputs) {
    auto keep = keep_plugin_loaded(reinterpret_cast<const void*>(e->schema.sample_inputs.function()));
    if (keep && keep.get() != e->library.get()) e->samples_library = std::move(keep);
  }
  return OpHandle(std::move(e));
}

std::vector<OpHandle> registered_ops() {
  load_default_plugins();
  std::vector<OpHandle> v;
  for (auto& e : Registry::instance().all()) v.emplace_back(std::move(e));
  return v;
}

namespace {
[[noreturn]] void throw_empty_handle(const char* what) {
  throw ValueError(std::string("OpHandle::") + what +
                   ": the handle is empty (default-constructed); get one from opforge::op(\"family.name\")");
}
}  // namespace

const OpSchema& OpHandle::schema() const {
  if (!entry_) throw_empty_handle("schema");
  return entry_->schema;
}
const std::string& OpHandle::name() const { return schema().name; }
const std::string& OpHandle::plugin_name() const {
  if (!entry_) throw_empty_handle("plugin_name");
  return entry_->plugin_name;
}
const std::string& OpHandle::plugin_file() const {
  if (!entry_) throw_empty_handle("plugin_file");
  return entry_->plugin_file;
}

// ---- the call path ------------------------------------------------------------

namespace {

[[noreturn]] void throw_arity(const OpSchema& s, std::size_t got) {
  std::string names;
  for (std::size_t i = 0; i < s.inputs.size(); ++i) names += (i ? ", " : "") + s.inputs[i];
  if (s.variadic && got > kMaxOpInputs)
    throw ValueError(s.name + ": takes at most " + std::to_string(kMaxOpInputs) + " inputs (" + names +
                     ", ...), got " + std::to_string(got) + "; combine them in groups of at most " +
                     std::to_string(kMaxOpInputs) + ", then combine the groups");
  if (s.variadic)
    throw ValueError(s.name + ": expected at least " + std::to_string(s.inputs.size()) +
                     (s.inputs.size() == 1 ? " input (" : " inputs (") + names + ", ...; at most " +
                     std::to_string(kMaxOpInputs) + "), got " + std::to_string(got));
  throw ValueError(s.name + ": expected " + std::to_string(s.inputs.size()) +
                   (s.inputs.size() == 1 ? " input (" : " inputs (") + names + "), got " + std::to_string(got));
}

std::string input_name(const OpSchema& s, std::size_t i) {
  if (i < s.inputs.size()) return s.inputs[i];
  return s.inputs.back() + "[" + std::to_string(i - s.inputs.size() + 1) + "]";
}

[[noreturn]] void throw_bad_input(const OpSchema& s, std::size_t i, const TensorImpl* t, DType first) {
  const std::string arg = "argument '" + input_name(s, i) + "' (input " + std::to_string(i) + ")";
  if (!t)
    throw ValueError(s.name + ": " + arg +
                     ": expected a tensor, got an undefined one (" + kUndefinedTensorOrigins + ")");
  if (!s.dtypes.contains(t->dtype))
    throw DTypeError(s.name + ": " + arg + ": expected dtype " + s.dtypes.to_string() + ", got " +
                     dtype_name(t->dtype) + "; convert it with .to() first");
  throw DTypeError(s.name + ": " + arg + ": expected dtype " + dtype_name(first) + " (the dtype of '" + input_name(s, 0) +
                   "'; all inputs must share one dtype), got " + dtype_name(t->dtype) +
                   "; convert one of them with .to() first");
}

// Checks an op's outputs: the declared count, all defined. The messages name
// the plugin whose code broke the contract, and what it must return.
void check_outputs(const OpEntry& e, const TensorList& out, const Context& ctx) {
  const OpSchema& s = e.schema;
  OPFORGE_CHECK(out.size() == static_cast<std::size_t>(s.num_outputs), AutogradError, s.name,
                ": forward returned ", out.size(), " outputs, expected ", s.num_outputs, " (as its schema declares)",
                plugin_origin(e), "; return one tensor per output, or declare the count with OpSchema::outputs(n)");
  for (std::size_t k = 0; k < out.size(); ++k)
    OPFORGE_CHECK(out[k].defined(), AutogradError, s.name, ": forward returned an undefined tensor as output ", k,
                  plugin_origin(e), "; return a defined tensor for every output");
  // A mark past the last output is a wrong index, not a harmless no-op: the
  // output it meant still carries a gradient.
  const std::uint64_t marks = ContextAccess::non_differentiable(ctx);
  if (out.size() < 64 && (marks >> out.size()) != 0) {
    std::size_t k = out.size();
    while (!((marks >> k) & 1u)) ++k;
    throw AutogradError(detail::concat(s.name, ": forward marked output ", k,
                                       " non-differentiable (ctx.mark_non_differentiable), but returns ", out.size(),
                                       out.size() == 1 ? " output" : " outputs", plugin_origin(e),
                                       "; mark an index from 0 to ", out.size() - 1));
  }
}

// Fills `out` with the call's attributes in schema order, defaults for the rest.
template <class List>
void resolve_attrs(const OpSchema& s, AttrSpan given, List& out) {
  if (given.size() > s.attrs.size()) {
    throw ValueError(s.name + ": expected at most " + std::to_string(s.attrs.size()) + " attributes, got " +
                     std::to_string(given.size()));
  }
  out.clear();
  for (std::size_t i = 0; i < s.attrs.size(); ++i) {
    const AttrSpec& spec = s.attrs[i];
    const Attr& a = i < given.size() && given[i].is_set() ? given[i] : spec.default_value;
    if (!a.is_set())
      throw ValueError(s.name + ": attribute '" + spec.name + "' is required (" + attr_kind_name(spec.kind) +
                       (spec.doc.empty() ? "" : ": " + spec.doc) + ")");
    const bool ok = a.kind() == spec.kind || (spec.kind == AttrKind::Float && a.kind() == AttrKind::Int);
    if (!ok)
      throw ValueError(s.name + ": attribute '" + spec.name + "': expected " + attr_kind_name(spec.kind) + ", got " +
                       attr_kind_name(a.kind()) + " " + a.to_string());
    out.push_back(a);
  }
}

}  // namespace

namespace {
// Named attributes -> positional, in schema order (unset where not given).
template <class Named, class NameOf, class ValueOf>
std::vector<Attr> positional_attrs(const OpSchema& s, const Named& named, NameOf name_of, ValueOf value_of) {
  std::vector<Attr> positional(s.attrs.size());
  for (const auto& na : named) {
    const std::string_view name = name_of(na);
    std::size_t i = 0;
    while (i < s.attrs.size() && s.attrs[i].name != name) ++i;
    if (i == s.attrs.size()) {
      std::string names;
      for (const auto& a : s.attrs) names += (names.empty() ? "" : ", ") + a.name;
      throw ValueError(s.name + ": no attribute named '" + std::string(name) + "' (it has: " +
                       (names.empty() ? "none" : names) + ")");
    }
    positional[i] = value_of(na);
  }
  return positional;
}
}  // namespace

TensorList OpHandle::call(TensorSpan inputs, std::initializer_list<NamedAttr> named) const {
  if (!entry_) throw_empty_handle("call");
  const std::vector<Attr> positional = positional_attrs(
      entry_->schema, named, [](const NamedAttr& a) { return a.name; }, [](const NamedAttr& a) { return a.value; });
  return call(inputs, AttrSpan(positional.data(), positional.size()));
}

namespace {
// `base` with the attributes `top` sets put over it, position by position (entries
// of `top` past the end of `base` are appended: a call with too many is refused later).
std::vector<Attr> overlay(const std::vector<Attr>& base, AttrSpan top) {
  std::vector<Attr> out = base;
  for (std::size_t i = 0; i < top.size(); ++i) {
    if (i >= out.size()) out.push_back(top[i]);
    else if (top[i].is_set()) out[i] = top[i];
  }
  return out;
}
// A handle's bound attributes: `more` over what `bound` (may be null) binds already.
std::shared_ptr<const std::vector<Attr>> bind_over(const std::shared_ptr<const std::vector<Attr>>& bound,
                                                   std::vector<Attr> more) {
  return std::make_shared<const std::vector<Attr>>(bound ? overlay(*bound, AttrSpan(more.data(), more.size()))
                                                         : std::move(more));
}
}  // namespace

OpHandle OpHandle::bind(std::initializer_list<NamedAttr> named) const {
  if (!entry_) throw_empty_handle("bind");
  OpHandle h(entry_);
  h.bound_ = bind_over(bound_, positional_attrs(
                                   entry_->schema, named, [](const NamedAttr& a) { return a.name; },
                                   [](const NamedAttr& a) { return a.value; }));
  return h;
}

OpHandle OpHandle::bind(const std::vector<std::pair<std::string, Attr>>& named) const {
  if (!entry_) throw_empty_handle("bind");
  OpHandle h(entry_);
  h.bound_ = bind_over(bound_, positional_attrs(
                                   entry_->schema, named, [](const auto& a) { return std::string_view(a.first); },
                                   [](const auto& a) { return a.second; }));
  return h;
}

Tensor OpHandle::operator()(TensorSpan inputs, std::initializer_list<NamedAttr> named) const {
  TensorList out = call(inputs, named);
  OPFORGE_CHECK(out.size() == 1, ValueError, name(), ": has ", out.size(), " outputs; use call() to get all of them");
  return std::move(out[0]);
}

// GCC 12 at -O3 reports that moving `out` (a boost small_vector of 4 Tensors)
// on return copies more than its 32-byte inline buffer: the path it analyses
// is one where a vector that fits inline holds more than 4 elements, which
// cannot happen (GCC's -Wstringop-overflow/-overread false positives on
// inlined small-buffer moves). Silenced for this function only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wstringop-overread"
#endif
TensorList OpHandle::call(TensorSpan inputs, AttrSpan attrs) const {
  if (!entry_) throw_empty_handle("call");
  // Bound attributes, with those the call sets on top (position by position; a named
  // call sets only the ones it names). The merge copies only when both are given.
  std::vector<Attr> merged;
  if (bound_ && attrs.size() == 0) {
    attrs = AttrSpan(bound_->data(), bound_->size());
  } else if (bound_) {
    merged = overlay(*bound_, attrs);
    attrs = AttrSpan(merged.data(), merged.size());
  }
  OpEntry& e = *entry_;
  const OpSchema& s = e.schema;
  const std::size_t n = inputs.size();
  if (s.variadic ? (n < s.inputs.size() || n > kMaxOpInputs) : n != s.inputs.size()) throw_arity(s, n);

  // Validate inputs and find which ones need a gradient.
  const bool recording = grad_enabled();
  std::uint64_t needs = 0;
  bool strided = false;
  DType first = DType::Float64;
  for (std::size_t i = 0; i < n; ++i) {
    const TensorImpl* t = inputs[i].unsafe_impl();
    if (!t || !s.dtypes.contains(t->dtype) || (s.same_dtype && i > 0 && t->dtype != first))
      throw_bad_input(s, i, t, first);
    if (i == 0) first = t->dtype;
    if (recording && (t->requires_grad || t->grad_fn)) needs |= std::uint64_t{1} << i;
    strided = strided || !t->contiguous;
  }
  // Kernels see contiguous inputs unless the op takes strided ones; the graph's
  // edges still point at the caller's tensors.
  TensorList dense;
  TensorSpan fwd_inputs = inputs;
  if (strided && !s.strided_inputs) {
    for (std::size_t i = 0; i < n; ++i) dense.push_back(inputs[i].is_contiguous() ? inputs[i] : inputs[i].detach().clone());  // detached: never recorded
    fwd_inputs = dense;
  }

  if (needs == 0) {
    Context ctx;
    ContextAccess::init(ctx, 0, static_cast<std::uint32_t>(n), s);
    if (!s.attrs.empty() || attrs.size()) resolve_attrs(s, attrs, ContextAccess::attrs(ctx));
    TensorList out;
    {
      NoGradGuard no_grad;
      try {
        out = e.fn->forward(ctx, fwd_inputs);
      } catch (...) {
        rethrow_as_core_error(e, Phase::Forward);
      }
    }
    check_outputs(e, out, ctx);
    // An output that is an input (or carries autograd state) is handed back as a
    // fresh alias: results of a call made without recording never require grad.
    for (Tensor& o : out) {
      const TensorImpl* oi = o.unsafe_impl();
      if (oi->requires_grad || oi->grad_fn) o = Tensor(alias_impl(*oi));
    }
    return out;
  }

  // Recording: the node is made first so that forward saves straight into its Context.
  NodePtr node = Node::make();
  node->op = entry_;
  ContextAccess::init(node->ctx, needs, static_cast<std::uint32_t>(n), s);
  if (!s.attrs.empty() || attrs.size()) resolve_attrs(s, attrs, ContextAccess::attrs(node->ctx));
  TensorList out;
  {
    NoGradGuard no_grad;
    try {
      out = e.fn->forward(node->ctx, fwd_inputs);
    } catch (...) {
      rethrow_as_core_error(e, Phase::Forward);
    }
  }
  check_outputs(e, out, node->ctx);

  node->edges.resize(n);
  node->meta.resize(n + out.size());
  for (std::size_t i = 0; i < n; ++i) {
    TensorImpl* t = inputs[i].unsafe_impl();
    node->meta[i].shape = t->shape;
    node->meta[i].dtype = t->dtype;
    if (!((needs >> i) & 1u)) continue;
    Edge& edge = node->edges[i];
    if (t->grad_fn) {
      edge.fn = t->grad_fn;
      edge.input_nr = t->output_nr;
    } else {
      edge.leaf = TensorImplPtr(t);
    }
  }

  TensorList& saved = ContextAccess::saved(node->ctx);
  for (std::size_t k = 0; k < out.size(); ++k) {
    TensorImpl* o = out[k].unsafe_impl();
    // An output that is also an input, or a tensor someone else already owns the
    // autograd state of, gets its own TensorImpl over the same data.
    bool shared = o->grad_fn || o->requires_grad;
    for (std::size_t i = 0; i < n && !shared; ++i)
      shared = inputs[i].unsafe_impl() == o || fwd_inputs[i].unsafe_impl() == o;
    if (shared) {
      out[k] = Tensor(alias_impl(*o));
      o = out[k].unsafe_impl();
    }
    // A saved output would point back at this node (output -> node -> ctx ->
    // output): keep a data-only alias in the Context instead.
    for (Tensor& sv : saved)
      if (sv.unsafe_impl() == o) sv = Tensor(alias_impl(*o));
    node->meta[n + k].shape = o->shape;
    node->meta[n + k].dtype = o->dtype;
    // Integer and bool outputs (indices, masks) are not differentiable, nor are
    // outputs forward marked so.
    if (!is_floating(o->dtype) || ((ContextAccess::non_differentiable(node->ctx) >> k) & 1u)) continue;
    o->grad_fn = node;
    o->output_nr = static_cast<std::uint32_t>(k);
  }
  return out;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

Tensor OpHandle::operator()(TensorSpan inputs, AttrSpan attrs) const {
  TensorList out = call(inputs, attrs);
  OPFORGE_CHECK(out.size() == 1, ValueError, name(), ": has ", out.size(),
                " outputs; use call() to get all of them");
  return std::move(out[0]);
}

}  // namespace opforge
