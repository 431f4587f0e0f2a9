/* The plain-C contract between the opforge core and an op plugin.
 *
 * A plugin exports exactly two symbols:
 *   const OpforgePluginDescriptor* opforge_plugin_descriptor(void);
 *   int opforge_plugin_register(void* registrar, char* error, size_t error_size);
 *
 * The loader calls opforge_plugin_descriptor() first and reads only plain C data
 * from it: if the ABI version, the compiler or the C++ standard-library ABI do
 * not match, it refuses the plugin before any C++ object crosses the boundary.
 * Then it calls opforge_plugin_register() with its registrar (an
 * opforge::PluginRegistrar*); the entry point returns 0 on success, or non-zero
 * with a NUL-terminated reason in `error`. No exception crosses the boundary and
 * no static initialiser registers anything.
 *
 * Plugins write neither function by hand: OPFORGE_PLUGIN(...) in
 * <opforge/sdk/plugin.hpp> generates both.
 */
#ifndef OPFORGE_PLUGIN_ABI_H
#define OPFORGE_PLUGIN_ABI_H

#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
/* A C++ standard header defines the macros that name the standard library and
 * its string ABI (__GLIBCXX__, _GLIBCXX_USE_CXX11_ABI, _LIBCPP_VERSION), which
 * the descriptor records below. <stddef.h> alone does not: a plugin that
 * included this header before any C++ header was refused as built with an
 * "unknown" standard library. */
#include <cstddef>
#endif

/* Major: any change a built plugin cannot survive. Minor: additions a host can
 * detect (a larger struct_size); a host accepts plugins of its major version and
 * any minor version up to its own. */
/* 2.0: OpSchema::sample_inputs became the class opforge::SampleInputs, which keeps
 *      its op (and so its plugin) alive in every copy of a registered op's schema. */
#define OPFORGE_PLUGIN_ABI_MAJOR 2
#define OPFORGE_PLUGIN_ABI_MINOR 0

#define OPFORGE_PLUGIN_DESCRIPTOR_SYMBOL "opforge_plugin_descriptor"
#define OPFORGE_PLUGIN_REGISTER_SYMBOL "opforge_plugin_register"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct OpforgePluginDescriptor {
  uint32_t struct_size;      /* sizeof(OpforgePluginDescriptor) as the plugin was built */
  uint16_t abi_major;        /* OPFORGE_PLUGIN_ABI_MAJOR the plugin was built with */
  uint16_t abi_minor;        /* OPFORGE_PLUGIN_ABI_MINOR the plugin was built with */
  const char* name;          /* plugin name, e.g. "linalg" */
  const char* version;       /* plugin's own version, e.g. "1.0.0" */
  const char* sdk_version;   /* opforge SDK version it was built against, e.g. "0.1.0" */
  const char* compiler;      /* e.g. "GCC 12.2.0" (shown, not compared) */
  const char* stdlib;        /* C++ standard library: "libstdc++" or "libc++" (must match) */
  uint32_t cxx_abi_version;  /* __GXX_ABI_VERSION (shown, not compared: stable since GCC 3.4) */
  uint32_t cxx11_string_abi; /* _GLIBCXX_USE_CXX11_ABI: 1 for the C++11 std::string (must match) */
} OpforgePluginDescriptor;

/* What the current translation unit is built with; the SDK fills the descriptor
 * with these and the core compares them with its own. */
#define OPFORGE_ABI_STR2(x) #x
#define OPFORGE_ABI_STR(x) OPFORGE_ABI_STR2(x)
#if defined(__clang__)
#define OPFORGE_COMPILER_ID \
  "Clang " OPFORGE_ABI_STR(__clang_major__) "." OPFORGE_ABI_STR(__clang_minor__) "." OPFORGE_ABI_STR(__clang_patchlevel__)
#elif defined(__GNUC__)
#define OPFORGE_COMPILER_ID \
  "GCC " OPFORGE_ABI_STR(__GNUC__) "." OPFORGE_ABI_STR(__GNUC_MINOR__) "." OPFORGE_ABI_STR(__GNUC_PATCHLEVEL__)
#else
#define OPFORGE_COMPILER_ID "unknown"
#endif
#if defined(_LIBCPP_VERSION)
#define OPFORGE_STDLIB_ID "libc++"
#elif defined(__GLIBCXX__) && defined(_GLIBCXX_DEBUG)
/* Debug mode changes the layout of std::vector, std::string's neighbours... */
#define OPFORGE_STDLIB_ID "libstdc++ in debug mode (_GLIBCXX_DEBUG)"
#elif defined(__GLIBCXX__)
#define OPFORGE_STDLIB_ID "libstdc++"
#else
#define OPFORGE_STDLIB_ID "unknown"
#endif
#if defined(__GXX_ABI_VERSION)
#define OPFORGE_CXX_ABI_VERSION __GXX_ABI_VERSION
#else
#define OPFORGE_CXX_ABI_VERSION 0
#endif
#if defined(_GLIBCXX_USE_CXX11_ABI)
#define OPFORGE_CXX11_STRING_ABI _GLIBCXX_USE_CXX11_ABI
#else
#define OPFORGE_CXX11_STRING_ABI 0
#endif

typedef const OpforgePluginDescriptor* (*OpforgePluginDescriptorFn)(void);
typedef int (*OpforgePluginRegisterFn)(void* registrar, char* error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif /* OPFORGE_PLUGIN_ABI_H */
