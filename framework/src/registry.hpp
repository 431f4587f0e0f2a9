// The op registry: qualified name -> OpEntry. Internal to the core.
// Locked only to resolve a name or to register; calls through a handle never lock.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "op_entry.hpp"

namespace opforge {

using OpEntryPtr = boost::intrusive_ptr<OpEntry>;

class Registry {
 public:
  static Registry& instance();

  /// Null when no op has that name.
  boost::intrusive_ptr<OpEntry> find(std::string_view name) const;
  /// Adds all entries or none: throws PluginError naming the op and both files
  /// when a name is taken.
  void add_all(const std::vector<boost::intrusive_ptr<OpEntry>>& entries);
  /// One atomic change, under one lock: removes `retire` (each entry only where it
  /// is still the one registered under its name), then adds `entries`. A name
  /// already taken throws as add_all does and changes nothing, unless
  /// `replace_existing`: then the new entry takes the name and the entry it
  /// displaced is appended to `*displaced`. Removed and displaced entries are
  /// handed back (never released here), so that no plugin is closed under the lock.
  void replace(const std::vector<OpEntryPtr>& retire, const std::vector<OpEntryPtr>& entries, bool replace_existing,
               std::vector<OpEntryPtr>* displaced);
  /// Removes each of `entries` whose name still maps to that very entry; returns
  /// how many were removed.
  std::size_t remove(const std::vector<OpEntryPtr>& entries);
  std::vector<boost::intrusive_ptr<OpEntry>> all() const;
  /// Registered names close to `name`, for "did you mean" messages.
  std::vector<std::string> near_names(std::string_view name) const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, boost::intrusive_ptr<OpEntry>> ops_;
};

/// Collects a plugin's ops; they reach the Registry only through commit().
class StagingRegistrar final : public PluginRegistrar {
 public:
  StagingRegistrar(std::string plugin_name, std::string plugin_file, std::shared_ptr<void> library);
  void add(OpSchema schema, std::unique_ptr<Function> fn) override;
  const std::string& plugin_name() const override { return plugin_name_; }
  void commit();
  /// commit() with Registry::replace's options: `retire` are the entries of a
  /// plugin this one replaces; displaced entries are appended to `*displaced`.
  void commit(const std::vector<OpEntryPtr>& retire, bool replace_existing, std::vector<OpEntryPtr>* displaced);
  std::vector<std::string> op_names() const;
  /// The staged entries (after commit: the registered ones).
  const std::vector<OpEntryPtr>& entries() const { return staged_; }
  /// Ends the registration: add() refuses from now on, and what was staged and
  /// the library reference are dropped (call it with no lock held).
  void close() noexcept;

 private:
  std::string plugin_name_;
  std::string plugin_file_;
  std::shared_ptr<void> library_;
  std::vector<boost::intrusive_ptr<OpEntry>> staged_;
  // add() may run on another thread, in plugin code that kept the registrar.
  std::mutex mu_;
  bool closed_ = false;
};

}  // namespace opforge
