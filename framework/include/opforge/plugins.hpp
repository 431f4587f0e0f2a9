// Plugin loading: finding, loading and describing op plugins.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "opforge/export.hpp"

namespace opforge {

struct PluginInfo {
  std::string name;
  std::string version;
  std::string file;
  std::string sdk_version;  ///< SDK the plugin was built against
  std::string compiler;     ///< compiler the plugin was built with
  std::vector<std::string> ops;
};

struct PluginLoadFailure {
  std::string file;
  std::string reason;  ///< full message: file, what is wrong, what to do
};

/// How load_plugin treats names that are already taken.
struct LoadOptions {
  /// false (the default): a plugin name or an op name that a loaded plugin already
  /// has is refused, and nothing is registered.
  /// true: the new plugin takes them over. A loaded plugin of the same name is
  /// replaced whole (as if unload_plugin ran first, but only once the new one has
  /// registered); an op of another plugin is taken from it (that plugin stays
  /// loaded with the rest of its ops). Handles and graph nodes made from the old
  /// ops keep working, with the old code, and keep it loaded.
  bool replace_existing = false;
  /// true: only a loaded plugin of the same plugin name is replaced (whole, as
  /// with replace_existing); an op name another plugin provides is still
  /// refused. `opforge check FILE` loads so, to check a new build of a plugin
  /// that is also installed on the plugin path.
  bool replace_same_name = false;
};

/// Loads one plugin file and registers its ops (after the standard plugins, so
/// that a name clash is always reported against the later file). Throws
/// PluginError whose message names the file, the reason and what to do.
OPFORGE_API PluginInfo load_plugin(const std::string& path);
OPFORGE_API PluginInfo load_plugin(const std::string& path, const LoadOptions& options);

/// What unload_plugin did.
struct UnloadResult {
  PluginInfo plugin;        ///< the plugin unloaded (`ops`: the ops it still provided)
  /// true: the library was closed before unload_plugin returned. false: some of
  /// its ops, or something else its code made (see other_holders), are still in
  /// use; it is closed when the last of them is released.
  bool unloaded_now = false;
  /// true: opforge closed the library, but the dynamic loader kept it mapped (it
  /// has thread_local objects with destructors, or STB_GNU_UNIQUE symbols), so
  /// its code stays in the process; a changed build of the same file is refused
  /// (load it from another path, or restart).
  bool resident = false;
  /// References to the plugin's ops still held when unload_plugin returned:
  /// OpHandles, graph nodes, copies of either (a snapshot; 0 when unloaded_now).
  std::size_t users_left = 0;
  /// Other things holding the plugin's code or data when unload_plugin returned:
  /// tensors whose memory the plugin's deleter frees or that view the plugin's
  /// static data, gradient hooks registered by plugin code, make_op handles of a
  /// Function the plugin made (a snapshot; 0 when unloaded_now).
  std::size_t other_holders = 0;
};

/// Unloads a plugin by name: its ops leave the registry at once (op() no longer
/// finds them; load_plugin may register the names again) and the loader drops its
/// reference to the library. The library is closed (dlclose) when the last
/// OpHandle, graph node or other holder of one of its ops is gone, on whichever
/// thread releases it. Throws PluginError naming `name` and the loaded plugins
/// when no loaded plugin has that name.
OPFORGE_API UnloadResult unload_plugin(const std::string& name);

/// A plugin that was unloaded (or replaced) and whose library is not closed yet.
struct PendingUnload {
  PluginInfo plugin;
  std::size_t ops_in_use = 0;     ///< how many of its ops are still referenced (handles, graph nodes)
  std::size_t other_holders = 0;  ///< tensors, hooks and make_op handles its code made (see UnloadResult)
};
/// Unloaded or replaced plugins whose code is still loaded because some of
/// their ops, or other things their code made, are in use (a snapshot).
OPFORGE_API std::vector<PendingUnload> pending_unloads();

/// Loads the standard plugins and those on OPFORGE_PLUGIN_PATH once per process
/// (op() calls this on first use). Files that fail are recorded, not thrown.
OPFORGE_API void load_default_plugins();

/// The directories searched by load_default_plugins(), in order.
OPFORGE_API std::vector<std::string> plugin_search_path();

/// Plugins loaded now (an unloaded or replaced plugin is no longer listed).
OPFORGE_API std::vector<PluginInfo> loaded_plugins();
/// Files that failed to load during load_default_plugins(), with reasons.
OPFORGE_API std::vector<PluginLoadFailure> plugin_load_failures();

}  // namespace opforge
