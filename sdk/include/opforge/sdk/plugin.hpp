// Declaring a plugin: OPFORGE_PLUGIN generates the two exported entry points
// (the plain-C descriptor and the registration function) and opens the body of
// the registration function, where ops are added:
//
//   OPFORGE_PLUGIN("myops", "1.0.0") {
//     registrar.add<MyScale>(opforge::OpSchema("myops.scale").input_names({"x"}).describe("2 x"));
//   }
//
// Registration runs only when the host calls it, never from a static initialiser.
// Any exception thrown in the body is caught inside the plugin and reported to the
// host as text: no exception crosses the boundary.
#pragma once

#include <cstdio>
#include <exception>

#include "opforge/op.hpp"
#include "opforge/plugin_abi.h"
#include "opforge/version.hpp"

#define OPFORGE_PLUGIN_EXPORT extern "C" __attribute__((visibility("default"), used))

namespace opforge::sdk::detail {

inline int run_registration(void* registrar, char* error, std::size_t error_size,
                            void (*body)(::opforge::PluginRegistrar&)) noexcept {
  auto report = [&](const char* what) {
    if (error && error_size > 0) std::snprintf(error, error_size, "%s", what);
  };
  try {
    body(*static_cast<::opforge::PluginRegistrar*>(registrar));
    return 0;
  } catch (const std::exception& e) {
    report(e.what());
    return 1;
  } catch (...) {
    report("the registration body threw an exception not derived from std::exception");
    return 2;
  }
}

}  // namespace opforge::sdk::detail

#define OPFORGE_PLUGIN(NAME, VERSION)                                                                  \
  static void opforge_plugin_body(::opforge::PluginRegistrar& registrar);                              \
  OPFORGE_PLUGIN_EXPORT const OpforgePluginDescriptor* opforge_plugin_descriptor(void) {               \
    static const OpforgePluginDescriptor descriptor = {                                                \
        sizeof(OpforgePluginDescriptor), OPFORGE_PLUGIN_ABI_MAJOR, OPFORGE_PLUGIN_ABI_MINOR, NAME,      \
        VERSION, OPFORGE_VERSION_STRING, OPFORGE_COMPILER_ID, OPFORGE_STDLIB_ID,                       \
        OPFORGE_CXX_ABI_VERSION, OPFORGE_CXX11_STRING_ABI};                                            \
    return &descriptor;                                                                                \
  }                                                                                                    \
  OPFORGE_PLUGIN_EXPORT int opforge_plugin_register(void* registrar, char* error, size_t error_size) { \
    return ::opforge::sdk::detail::run_registration(registrar, error, error_size, &opforge_plugin_body); \
  }                                                                                                    \
  static void opforge_plugin_body([[maybe_unused]] ::opforge::PluginRegistrar& registrar)
