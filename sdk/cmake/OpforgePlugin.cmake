# opforge_add_plugin(<target> SOURCES <src>... [OUTPUT_NAME <name>]
#                    [OUTPUT_DIRECTORY <dir>] [LINK_LIBRARIES <lib>...])
#
# Builds an op plugin: a MODULE library linked against libopforge, compiled with
# hidden visibility, whose only exported symbols are the two entry points that
# OPFORGE_PLUGIN generates (a linker version script hides everything else), and
# linked with --no-undefined so a missing symbol fails the build, not the load.
# Without a CMAKE_BUILD_TYPE (single-configuration generators) it is compiled
# with -O2, not unoptimised.
#
# The same file serves opforge's own tree (the standard plugins) and an outside
# project, where find_package(opforge CONFIG REQUIRED) includes it from
# <prefix>/lib/cmake/opforge: in both, the plugin links the target opforge::opforge.
include_guard(GLOBAL)

function(opforge_add_plugin target)
  cmake_parse_arguments(ARG "" "OUTPUT_NAME;OUTPUT_DIRECTORY" "SOURCES;LINK_LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "opforge_add_plugin(${target}): SOURCES is required")
  endif()
  if(NOT TARGET opforge::opforge)
    message(FATAL_ERROR "opforge_add_plugin(${target}): there is no target opforge::opforge; "
                        "call find_package(opforge CONFIG REQUIRED) first")
  endif()
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE opforge::opforge ${ARG_LINK_LIBRARIES})
  target_compile_features(${target} PRIVATE cxx_std_17)
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(ARG_OUTPUT_NAME)
    set_target_properties(${target} PROPERTIES OUTPUT_NAME ${ARG_OUTPUT_NAME})
  endif()
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  endif()
  # A project configured without a build type compiles with no optimisation at
  # all (CMake adds no -O): a plugin's kernels would run several times slower
  # than the same code in Release. Optimise unless the project chose a type.
  get_property(multi_config GLOBAL PROPERTY GENERATOR_IS_MULTI_CONFIG)
  if(NOT multi_config AND NOT CMAKE_BUILD_TYPE AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -O2)
  endif()
  set(script ${CMAKE_CURRENT_BINARY_DIR}/${target}.exports.map)
  file(WRITE ${script} "{\n  global: opforge_plugin_descriptor; opforge_plugin_register;\n  local: *;\n};\n")
  target_link_options(${target} PRIVATE "LINKER:--version-script=${script}" "LINKER:--no-undefined")
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${script})
endfunction()
