// Plugin loading: finding, loading and describing op plugins.
#pragma once

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

/// Loads one plugin file and registers its ops (after the standard plugins, so
/// that a name clash is always reported against the later file). Throws
/// PluginError whose message names the file, the reason and what to do.
OPFORGE_API PluginInfo load_plugin(const std::string& path);

/// Loads the standard plugins and those on OPFORGE_PLUGIN_PATH once per process
/// (op() calls this on first use). Files that fail are recorded, not thrown.
OPFORGE_API void load_default_plugins();

/// The directories searched by load_default_plugins(), in order.
OPFORGE_API std::vector<std::string> plugin_search_path();

/// Plugins loaded so far.
OPFORGE_API std::vector<PluginInfo> loaded_plugins();
/// Files that failed to load during load_default_plugins(), with reasons.
OPFORGE_API std::vector<PluginLoadFailure> plugin_load_failures();

}  // namespace opforge
