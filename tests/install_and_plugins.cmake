# ctest sdk_install_and_example_plugins: opforge as an outside plugin author sees it.
#
#   cmake -DOPFORGE_BUILD_DIR=<build> -DSOURCE_DIR=<repo> -DWORK_DIR=<scratch>
#         [-DLIBDIR=lib] [-DBINDIR=bin] [-DGENERATOR=...] [-DCXX_COMPILER=...]
#         [-DBUILD_TYPE=Release] [-DCXX_FLAGS=...] [-DLINK_FLAGS=...] [-DJOBS=2]
#         -P install_and_plugins.cmake
#
#  1. installs the build into a fresh prefix, <WORK_DIR>/prefix, and checks the
#     tree (headers, library, program, plugins, CMake package and its version rule);
#  2. runs the installed `opforge ops`: the standard plugins load from the prefix;
#  3. configures, builds and tests plugins/smooth_losses and plugins/fft_conv
#     against the prefix only (CMAKE_PREFIX_PATH=<prefix>, package registries off,
#     opforge_DIR checked), then runs `<prefix>/bin/opforge check` on each plugin
#     and `opforge ops <op>` with OPFORGE_PLUGIN_PATH naming it;
#  4. checks that every file of docs/examples/first_plugin appears verbatim in
#     docs/writing-a-plugin.md (the blocks after `<!-- file: NAME -->`), then runs
#     the guide's own commands (the block after `<!-- run -->`) in a copy of that
#     folder, with OPFORGE_PREFIX=<prefix>;
#  4b. builds README.md's example op (its "Writing an op" blocks, marked
#     `<!-- readme-example: ... -->`) against the prefix and runs its commands;
#  4c. builds docs/harness.md's Catch2 example (its `<!-- harness-example: ... -->`
#     blocks, with docs/examples/harness_catch2/src/myops.cpp) against the prefix
#     and runs its test cases;
#  5. with -DBAD_INPUTS_TEST=<tests/test_ops_bad_inputs>, runs it with the three
#     example plugins on OPFORGE_PLUGIN_PATH: their ops too must succeed soundly
#     or refuse bad inputs with an opforge::Error naming the op.
# Everything it writes is under WORK_DIR. Nothing is downloaded.
cmake_minimum_required(VERSION 3.22)

foreach(var OPFORGE_BUILD_DIR SOURCE_DIR WORK_DIR)
  if(NOT ${var})
    message(FATAL_ERROR "install_and_plugins.cmake: pass -D${var}=...")
  endif()
endforeach()
if(NOT LIBDIR)
  set(LIBDIR lib)
endif()
if(NOT BINDIR)
  set(BINDIR bin)
endif()
if(NOT JOBS)
  set(JOBS 2)
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
file(REAL_PATH "${WORK_DIR}" WORK_DIR)
set(PREFIX "${WORK_DIR}/prefix")
set(OPFORGE "${PREFIX}/${BINDIR}/opforge")
set(LOG_DIR "${WORK_DIR}/logs")
file(MAKE_DIRECTORY "${LOG_DIR}")
string(TIMESTAMP t_start "%s")

# Every command runs with this environment: no plugins or libraries from the
# caller's environment, the build's compiler and flags for the examples (so they
# match libopforge's C++ library, and its sanitizers if any).
set(ENV_CMD "${CMAKE_COMMAND}" -E env --unset=OPFORGE_PLUGIN_PATH --unset=LD_LIBRARY_PATH
    OPFORGE_NUM_THREADS=2 CMAKE_BUILD_PARALLEL_LEVEL=${JOBS} "CXXFLAGS=${CXX_FLAGS}" "LDFLAGS=${LINK_FLAGS}")
if(CXX_COMPILER)
  list(APPEND ENV_CMD "CXX=${CXX_COMPILER}")
endif()
set(CONFIGURE_ARGS -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(GENERATOR)
  list(APPEND CONFIGURE_ARGS -G "${GENERATOR}")
endif()
if(BUILD_TYPE)
  list(APPEND CONFIGURE_ARGS -DCMAKE_BUILD_TYPE=${BUILD_TYPE})
endif()

# step(<name> [WORKING_DIRECTORY <dir>] [OUTPUT_VARIABLE <var>] COMMAND <cmd>...)
# Runs the command; on a non-zero exit, fails the test with the command and the
# end of its output (the whole output is in <WORK_DIR>/logs/<name>.log).
function(step name)
  cmake_parse_arguments(ARG "" "WORKING_DIRECTORY;OUTPUT_VARIABLE" "COMMAND" ${ARGN})
  if(NOT ARG_WORKING_DIRECTORY)
    set(ARG_WORKING_DIRECTORY "${WORK_DIR}")
  endif()
  string(TIMESTAMP t0 "%s")
  execute_process(COMMAND ${ENV_CMD} ${ARG_COMMAND} WORKING_DIRECTORY "${ARG_WORKING_DIRECTORY}"
                  OUTPUT_VARIABLE out ERROR_VARIABLE out RESULT_VARIABLE rc)
  string(TIMESTAMP t1 "%s")
  math(EXPR secs "${t1} - ${t0}")
  string(MAKE_C_IDENTIFIER "${name}" log)
  file(WRITE "${LOG_DIR}/${log}.log" "${out}")
  if(NOT rc STREQUAL "0")
    string(LENGTH "${out}" len)
    if(len GREATER 6000)
      math(EXPR from "${len} - 6000")
      string(SUBSTRING "${out}" ${from} -1 out)
      set(out "...\n${out}")
    endif()
    list(JOIN ARG_COMMAND " " shown)
    message(FATAL_ERROR "FAILED: ${name} (exit ${rc}, ${secs} s)\n  in ${ARG_WORKING_DIRECTORY}\n  $ ${shown}\n"
                        "${out}\n(full output: ${LOG_DIR}/${log}.log)")
  endif()
  message(STATUS "ok (${secs} s): ${name}")
  if(ARG_OUTPUT_VARIABLE)
    set(${ARG_OUTPUT_VARIABLE} "${out}" PARENT_SCOPE)
  endif()
endfunction()

# expect_in(<what> <text-var> <needle>...): every needle occurs in the text.
function(expect_in what text_var)
  foreach(needle IN LISTS ARGN)
    string(FIND "${${text_var}}" "${needle}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "FAILED: ${what}: expected to find\n  ${needle}\nin:\n${${text_var}}")
    endif()
  endforeach()
endfunction()

function(expect_not_in what text_var needle)
  string(FIND "${${text_var}}" "${needle}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "FAILED: ${what}: did not expect\n  ${needle}\nin:\n${${text_var}}")
  endif()
endfunction()

# The project found opforge in the prefix, nowhere else.
function(expect_opforge_from_prefix build_dir)
  file(STRINGS "${build_dir}/CMakeCache.txt" line REGEX "^opforge_DIR:")
  string(REGEX REPLACE "^opforge_DIR:[A-Z]*=" "" dir "${line}")
  if(NOT dir STREQUAL "${PREFIX}/${LIBDIR}/cmake/opforge")
    message(FATAL_ERROR "FAILED: ${build_dir} found opforge in '${dir}', expected the fresh install "
                        "'${PREFIX}/${LIBDIR}/cmake/opforge'")
  endif()
endfunction()

# ---- 1. install ------------------------------------------------------------------
step("cmake --install into the fresh prefix" COMMAND "${CMAKE_COMMAND}" --install "${OPFORGE_BUILD_DIR}" --prefix "${PREFIX}")
set(expected_files
    include/opforge/opforge.hpp include/opforge/plugin_abi.h include/opforge/sdk.hpp
    include/opforge/sdk/plugin.hpp include/opforge/sdk/harness.hpp
    ${LIBDIR}/libopforge.so ${BINDIR}/opforge
    ${LIBDIR}/cmake/opforge/opforgeConfig.cmake ${LIBDIR}/cmake/opforge/opforgeConfigVersion.cmake
    ${LIBDIR}/cmake/opforge/opforgeTargets.cmake ${LIBDIR}/cmake/opforge/OpforgePlugin.cmake
    ${LIBDIR}/opforge/plugins/elementwise.so ${LIBDIR}/opforge/plugins/loss.so)
foreach(f IN LISTS expected_files)
  if(NOT EXISTS "${PREFIX}/${f}")
    message(FATAL_ERROR "FAILED: the install tree lacks ${f} (prefix ${PREFIX})")
  endif()
endforeach()
# Every public header of the source tree is installed.
foreach(dir framework/include sdk/include)
  file(GLOB_RECURSE headers RELATIVE "${SOURCE_DIR}/${dir}" "${SOURCE_DIR}/${dir}/*.h" "${SOURCE_DIR}/${dir}/*.hpp")
  foreach(h IN LISTS headers)
    if(NOT EXISTS "${PREFIX}/include/${h}")
      message(FATAL_ERROR "FAILED: ${dir}/${h} is not installed as include/${h}")
    endif()
  endforeach()
endforeach()

# SameMinorVersion: this major.minor (any patch) is accepted, the next minor and major are not.
set(PACKAGE_VERSION "")
include("${PREFIX}/${LIBDIR}/cmake/opforge/opforgeConfigVersion.cmake")
set(installed_version "${PACKAGE_VERSION}")
string(REGEX MATCH "^([0-9]+)\\.([0-9]+)" _ "${installed_version}")
set(major "${CMAKE_MATCH_1}")
set(minor "${CMAKE_MATCH_2}")
math(EXPR next_minor "${minor} + 1")
math(EXPR next_major "${major} + 1")
foreach(probe "${major}.${minor}:TRUE" "${major}.${minor}.0:TRUE" "${major}.${next_minor}:FALSE" "${next_major}.${minor}:FALSE")
  string(REPLACE ":" ";" probe "${probe}")
  list(GET probe 0 ask)
  list(GET probe 1 want)
  set(PACKAGE_FIND_VERSION "${ask}")
  string(REPLACE "." ";" parts "${ask}")
  list(LENGTH parts PACKAGE_FIND_VERSION_COUNT)
  list(GET parts 0 PACKAGE_FIND_VERSION_MAJOR)
  list(GET parts 1 PACKAGE_FIND_VERSION_MINOR)
  set(PACKAGE_FIND_VERSION_PATCH 0)
  set(PACKAGE_FIND_VERSION_RANGE "")
  set(PACKAGE_VERSION_COMPATIBLE "")
  include("${PREFIX}/${LIBDIR}/cmake/opforge/opforgeConfigVersion.cmake")
  if(NOT "${PACKAGE_VERSION_COMPATIBLE}" STREQUAL "${want}")
    message(FATAL_ERROR "FAILED: opforge ${installed_version}'s package says compatible=${PACKAGE_VERSION_COMPATIBLE} "
                        "to find_package(opforge ${ask}), expected ${want} (SameMinorVersion)")
  endif()
endforeach()
message(STATUS "ok: install tree of opforge ${installed_version} in ${PREFIX}")

# ---- 2. the installed program loads the installed standard plugins ------------------
file(GLOB std_plugins "${PREFIX}/${LIBDIR}/opforge/plugins/*.so")
step("installed opforge ops" COMMAND "${OPFORGE}" ops OUTPUT_VARIABLE ops_out)
expect_not_in("installed opforge ops" ops_out "failed to load:")
expect_not_in("installed opforge ops (a plugin from the build tree)" ops_out "${OPFORGE_BUILD_DIR}/${LIBDIR}/")
foreach(so IN LISTS std_plugins)
  get_filename_component(stem "${so}" NAME_WE)
  expect_in("installed opforge ops" ops_out "plugin ${stem} " "(${PREFIX}/${LIBDIR}/opforge/plugins/${stem}.so)")
endforeach()

# ---- 3. the example plugins, built against the prefix only -------------------------
# example(<folder under plugins/> <plugin file> <plugin name> <ops>...)
function(example folder so plugin)
  set(src "${SOURCE_DIR}/plugins/${folder}")
  set(bin "${WORK_DIR}/${folder}")
  step("${folder}: configure against the prefix" COMMAND "${CMAKE_COMMAND}" -S "${src}" -B "${bin}" ${CONFIGURE_ARGS}
       "-DCMAKE_PREFIX_PATH=${PREFIX}")
  expect_opforge_from_prefix("${bin}")
  step("${folder}: build" COMMAND "${CMAKE_COMMAND}" --build "${bin}" --parallel ${JOBS})
  step("${folder}: its own tests" COMMAND "${CMAKE_CTEST_COMMAND}" --test-dir "${bin}" --output-on-failure
       --no-tests=error OUTPUT_VARIABLE test_out)
  expect_in("${folder}: its own tests" test_out "100% tests passed")
  step("${folder}: installed opforge check ${so}" COMMAND "${OPFORGE}" check "${bin}/${so}" OUTPUT_VARIABLE check_out)
  expect_in("${folder}: opforge check" check_out "OK: plugin '${plugin}'" " 0 failed")
  foreach(op IN LISTS ARGN)
    expect_in("${folder}: opforge check" check_out "PASS ${op} gradcheck" "PASS ${op} thread_safe")
    step("${folder}: OPFORGE_PLUGIN_PATH=${so} opforge ops ${op}"
         COMMAND "${CMAKE_COMMAND}" -E env "OPFORGE_PLUGIN_PATH=${bin}/${so}" "${OPFORGE}" ops ${op}
         OUTPUT_VARIABLE op_out)
    expect_in("${folder}: opforge ops ${op}" op_out "${op}(" "plugin: ${plugin} (${bin}/${so})")
  endforeach()
endfunction()

example(smooth_losses smooth.so smooth smooth.huber smooth.softplus)
example(fft_conv fftconv.so fftconv fftconv.conv1d)

# ---- 4. the guide: docs/writing-a-plugin.md and docs/examples/first_plugin ----------
set(guide "${SOURCE_DIR}/docs/writing-a-plugin.md")
set(example_src "${SOURCE_DIR}/docs/examples/first_plugin")
file(READ "${guide}" text)

# fenced_block(<text-var> <marker> <out-var>): the body of the fenced block on the
# line after the first <marker> line (through its last newline); the text after
# the block goes back into <text-var>.
function(fenced_block text_var marker out_var)
  set(rest "${${text_var}}")
  string(FIND "${rest}" "${marker}\n" at)
  if(at EQUAL -1)
    set(${out_var} "<none>" PARENT_SCOPE)
    return()
  endif()
  string(LENGTH "${marker}\n" mlen)
  math(EXPR at "${at} + ${mlen}")
  string(SUBSTRING "${rest}" ${at} -1 rest)
  string(FIND "${rest}" "```" fence)
  if(NOT fence EQUAL 0)
    message(FATAL_ERROR "FAILED: ${guide}: '${marker}' must be followed by a fenced code block (```)")
  endif()
  string(FIND "${rest}" "\n" eol)
  math(EXPR eol "${eol} + 1")
  string(SUBSTRING "${rest}" ${eol} -1 rest)
  string(FIND "${rest}" "\n```" close)
  if(close EQUAL -1)
    message(FATAL_ERROR "FAILED: ${guide}: the block after '${marker}' is not closed")
  endif()
  math(EXPR close "${close} + 1")
  string(SUBSTRING "${rest}" 0 ${close} body)
  string(SUBSTRING "${rest}" ${close} -1 rest)
  set(${out_var} "${body}" PARENT_SCOPE)
  set(${text_var} "${rest}" PARENT_SCOPE)
endfunction()

file(GLOB example_files LIST_DIRECTORIES false RELATIVE "${example_src}" "${example_src}/*")
if(NOT example_files)
  message(FATAL_ERROR "FAILED: ${example_src} is empty")
endif()
file(MAKE_DIRECTORY "${WORK_DIR}/guide_blocks")
foreach(f IN LISTS example_files)
  set(t "${text}")
  fenced_block(t "<!-- file: ${f} -->" body)
  if(body STREQUAL "<none>")
    message(FATAL_ERROR "FAILED: ${guide} does not include docs/examples/first_plugin/${f}: "
                        "add it as a fenced block right after a line '<!-- file: ${f} -->'")
  endif()
  string(MAKE_C_IDENTIFIER "${f}" flat)
  file(WRITE "${WORK_DIR}/guide_blocks/${flat}" "${body}")
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${WORK_DIR}/guide_blocks/${flat}" "${example_src}/${f}"
                  RESULT_VARIABLE same)
  if(NOT same EQUAL 0)
    execute_process(COMMAND diff -u "${example_src}/${f}" "${WORK_DIR}/guide_blocks/${flat}" OUTPUT_VARIABLE d ERROR_VARIABLE d)
    message(FATAL_ERROR "FAILED: the block '<!-- file: ${f} -->' of ${guide} differs from "
                        "docs/examples/first_plugin/${f}; copy the file into the guide verbatim:\n${d}")
  endif()
endforeach()
# No block names a file the example lacks.
string(REGEX MATCHALL "<!-- file: [^>]* -->" markers "${text}")
foreach(m IN LISTS markers)
  string(REGEX REPLACE "^<!-- file: (.*) -->$" "\\1" f "${m}")
  if(NOT EXISTS "${example_src}/${f}")
    message(FATAL_ERROR "FAILED: ${guide} has a block for '${f}', which docs/examples/first_plugin lacks")
  endif()
endforeach()
list(LENGTH example_files n_files)
message(STATUS "ok: ${guide} includes all ${n_files} files of docs/examples/first_plugin verbatim")

set(t "${text}")
fenced_block(t "<!-- run -->" commands)
if(commands STREQUAL "<none>")
  message(FATAL_ERROR "FAILED: ${guide} has no '<!-- run -->' block: the commands this test runs")
endif()
set(t2 "${t}")
fenced_block(t2 "<!-- run -->" second)
if(NOT second STREQUAL "<none>")
  message(FATAL_ERROR "FAILED: ${guide} has more than one '<!-- run -->' block")
endif()
foreach(f IN LISTS example_files)  # the files only: not a build folder someone left there
  file(COPY "${example_src}/${f}" DESTINATION "${WORK_DIR}/first_plugin")
endforeach()
file(WRITE "${WORK_DIR}/guide_commands.sh" "${commands}")
find_program(BASH bash REQUIRED)
step("the guide's commands (docs/writing-a-plugin.md), in a copy of docs/examples/first_plugin"
     WORKING_DIRECTORY "${WORK_DIR}/first_plugin"
     COMMAND "${CMAKE_COMMAND}" -E env "OPFORGE_PREFIX=${PREFIX}" "${BASH}" -e -x "${WORK_DIR}/guide_commands.sh"
     OUTPUT_VARIABLE guide_out)
expect_opforge_from_prefix("${WORK_DIR}/first_plugin/build")
expect_in("the guide's commands" guide_out "myops.silu(x)" "plugin: myops (" "OK: plugin 'myops'" "100% tests passed")

# doc_block(<doc file> <marker> <out-var>): the fenced block after the line
# `<!-- <marker> -->` of a page whose examples this test builds; fails the test
# when the page has none.
function(doc_block doc marker out_var)
  set(guide "${doc}")  # named by fenced_block's messages
  file(READ "${doc}" t)
  fenced_block(t "<!-- ${marker} -->" body)
  if(body STREQUAL "<none>")
    message(FATAL_ERROR "FAILED: ${doc} has no fenced block after the line '<!-- ${marker} -->'")
  endif()
  set(${out_var} "${body}" PARENT_SCOPE)
endfunction()

# ---- 4b. the README's op: README.md, "Writing an op" ---------------------------------
# Its blocks after `<!-- readme-example: cube.cpp -->` and `... CMakeLists.txt -->`
# are written to a fresh folder, and the block after `<!-- readme-example: run -->`
# runs there, with OPFORGE_PREFIX=<prefix>, as the README tells a user to.
set(readme_dir "${WORK_DIR}/readme_op")
foreach(f cube.cpp CMakeLists.txt)
  doc_block("${SOURCE_DIR}/README.md" "readme-example: ${f}" body)
  file(WRITE "${readme_dir}/${f}" "${body}")
endforeach()
doc_block("${SOURCE_DIR}/README.md" "readme-example: run" body)
file(WRITE "${WORK_DIR}/readme_commands.sh" "${body}")
step("the README's op (README.md, Writing an op): its commands" WORKING_DIRECTORY "${readme_dir}"
     COMMAND "${CMAKE_COMMAND}" -E env "OPFORGE_PREFIX=${PREFIX}" "${BASH}" -e -x "${WORK_DIR}/readme_commands.sh"
     OUTPUT_VARIABLE readme_out)
expect_opforge_from_prefix("${readme_dir}/build")
expect_in("the README's op" readme_out "PASS myops.cube gradcheck" "PASS myops.cube thread_safe" "OK: plugin 'myops'"
          " 0 failed")
expect_not_in("the README's op (a compiler or CMake warning)" readme_out "warning:")
expect_not_in("the README's op (a CMake warning)" readme_out "CMake Warning")

# ---- 4c. docs/harness.md's Catch2 example ------------------------------------------
# Its CMakeLists.txt and tests/test_myops.cpp blocks (after `<!-- harness-example:
# NAME -->`), with the plugin docs/examples/harness_catch2/src/myops.cpp, built
# against the prefix: the two lines that add opforge as a subdirectory become
# find_package(opforge CONFIG REQUIRED), as harness.md says for an installed opforge.
set(harness_doc "${SOURCE_DIR}/docs/harness.md")
set(harness_dir "${WORK_DIR}/harness_catch2")
file(COPY "${SOURCE_DIR}/docs/examples/harness_catch2/src" DESTINATION "${harness_dir}")
doc_block("${harness_doc}" "harness-example: tests/test_myops.cpp" body)
file(WRITE "${harness_dir}/tests/test_myops.cpp" "${body}")
doc_block("${harness_doc}" "harness-example: CMakeLists.txt" body)
foreach(line "set(OPFORGE_BUILD_TESTS OFF CACHE BOOL \"\" FORCE)\n" "add_subdirectory(external/opforge)")
  string(FIND "${body}" "${line}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "FAILED: ${harness_doc}: the CMakeLists.txt block no longer has the line '${line}' this test replaces")
  endif()
endforeach()
string(REPLACE "set(OPFORGE_BUILD_TESTS OFF CACHE BOOL \"\" FORCE)\n" "" body "${body}")
string(REPLACE "add_subdirectory(external/opforge)" "find_package(opforge CONFIG REQUIRED)" body "${body}")
file(WRITE "${harness_dir}/CMakeLists.txt" "${body}")
step("docs/harness.md's Catch2 example: configure against the prefix" COMMAND "${CMAKE_COMMAND}" -S "${harness_dir}"
     -B "${harness_dir}/build" ${CONFIGURE_ARGS} "-DCMAKE_PREFIX_PATH=${PREFIX}")
expect_opforge_from_prefix("${harness_dir}/build")
step("docs/harness.md's Catch2 example: build" COMMAND "${CMAKE_COMMAND}" --build "${harness_dir}/build" --parallel ${JOBS})
step("docs/harness.md's Catch2 example: its test cases" COMMAND "${CMAKE_CTEST_COMMAND}" --test-dir "${harness_dir}/build"
     --output-on-failure --no-tests=error OUTPUT_VARIABLE harness_out)
expect_in("docs/harness.md's Catch2 example" harness_out "100% tests passed, 0 tests failed out of 2")

# ---- 4d. docs/tensors.md's training loop ----------------------------------------------
# Its train.cpp and CMakeLists.txt blocks, built against the prefix and run: the
# fit converges, and the model saved as .npz reads back with the same bits.
set(tensors_dir "${WORK_DIR}/tensors_train")
foreach(f train.cpp CMakeLists.txt)
  doc_block("${SOURCE_DIR}/docs/tensors.md" "tensors-example: ${f}" body)
  file(WRITE "${tensors_dir}/${f}" "${body}")
endforeach()
step("docs/tensors.md's training loop: configure against the prefix" COMMAND "${CMAKE_COMMAND}" -S "${tensors_dir}"
     -B "${tensors_dir}/build" ${CONFIGURE_ARGS} "-DCMAKE_PREFIX_PATH=${PREFIX}")
expect_opforge_from_prefix("${tensors_dir}/build")
step("docs/tensors.md's training loop: build" COMMAND "${CMAKE_COMMAND}" --build "${tensors_dir}/build" --parallel ${JOBS}
     OUTPUT_VARIABLE tensors_build_out)
expect_not_in("docs/tensors.md's training loop (a compiler warning)" tensors_build_out "warning:")
step("docs/tensors.md's training loop: run" WORKING_DIRECTORY "${tensors_dir}" COMMAND "${tensors_dir}/build/train"
     OUTPUT_VARIABLE tensors_out)
expect_in("docs/tensors.md's training loop" tensors_out "converged and saved" "w = [1.500000, -2.000000, 0.500000]")

# ---- 5. the example plugins' ops, probed with bad inputs ---------------------------
if(BAD_INPUTS_TEST)
  set(examples "${WORK_DIR}/smooth_losses/smooth.so:${WORK_DIR}/fft_conv/fftconv.so:${WORK_DIR}/first_plugin/build/myops.so")
  step("bad inputs on the example plugins (test_ops_bad_inputs)"
       COMMAND "${CMAKE_COMMAND}" -E env "OPFORGE_PLUGIN_PATH=${examples}" "${BAD_INPUTS_TEST}"
       OUTPUT_VARIABLE probe_out)
  expect_in("bad inputs on the example plugins" probe_out " smooth.huber " " smooth.softplus" " fftconv.conv1d "
            " myops.silu")
endif()

string(TIMESTAMP t_end "%s")
math(EXPR total "${t_end} - ${t_start}")
message(STATUS "sdk_install_and_example_plugins: all passed in ${total} s (work dir ${WORK_DIR})")
