#!/usr/bin/env bash
# The one entry point of opforge's quick start: installs the Debian 12 packages
# opforge needs (only those missing), configures and builds the project, then
# runs the benchmark or the test suite.
#
#   ./build.sh bench [args...]   build, then `opforge bench lstsq [args...]`
#   ./build.sh test              build, then run the whole test suite (ctest)
#   ./build.sh build             build only
#   ./build.sh --help            this help
#
# Environment:
#   OPFORGE_BUILD_DIR    build directory (default: build/ in the repository)
#   OPFORGE_BUILD_TYPE   CMake build type (default: Release)
set -euo pipefail

# Debian 12 packages needed to build and test (Boost.DLL is header-only, in
# libboost-dev). python3-numpy / python3-torch are for the optional peer
# benchmarks only and are never installed here.
readonly PACKAGES=(
  cmake g++ make pkg-config
  libboost-dev libboost-program-options-dev libboost-filesystem-dev
  libxtensor-dev libxtensor-blas-dev libxsimd-dev xtl-dev
  libopenblas-pthread-dev liblapack-dev libtbb-dev
  catch2 libdlpack-dev libfftw3-dev
)

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  cat <<'EOF'
Usage: ./build.sh <mode> [args...]

Modes (each first installs missing Debian packages and builds the project):
  bench [args...]   run `opforge bench lstsq [args...]` (sizes, dtypes etc. default
                    to the program's own; see `./build.sh bench --help`)
  test              run the whole test suite: ctest --output-on-failure
  build             only install dependencies and build
  sanitize          build the engine, autograd-contract, plugin-loading, lifetime, harness and lstsq-kernel tests with
                    AddressSanitizer + UndefinedBehaviorSanitizer (in <build dir>-asan)
                    and run them; any report fails the run
  tsan              build the thread and engine tests with ThreadSanitizer (in
                    <build dir>-tsan) and run them with one kernel thread
                    (docs/autograd.md says why); any race report fails the run
  --help, -h        show this help

Environment:
  OPFORGE_BUILD_DIR    build directory (default: <repo>/build)
  OPFORGE_BUILD_TYPE   CMake build type (default: Release)

Dependencies are Debian 12 packages; missing ones are installed with apt-get
(as root, or through sudo). Without root or sudo, the script lists them and stops.
EOF
}

ncpu() {
  nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1
}

# ---- dependencies ----------------------------------------------------------------

missing_packages() {
  local pkg status
  for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || printf '%s\n' "$pkg"
  done
}

ensure_dependencies() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    say "dpkg-query not found (not a Debian system?): not checking packages; the build needs"
    say "  ${PACKAGES[*]}"
    say "or their equivalents"
    return 0
  fi
  local missing
  mapfile -t missing < <(missing_packages)
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  say "missing packages: ${missing[*]}"

  local -a sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      say "error: not root and sudo is not available; install them as root with:"
      say "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
      exit 1
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages: ${missing[*]}"

  say "installing with apt-get${sudo:+ (through sudo)}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update \
    || die "apt-get update failed"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
    || die "apt-get install failed for: ${missing[*]}"

  mapfile -t missing < <(missing_packages)
  ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
}

# ---- build -------------------------------------------------------------------------

cached_build_type() {
  sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null | head -n 1
}

ensure_built() {
  local type="${OPFORGE_BUILD_TYPE:-Release}"
  local configure=0
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    configure=1
  elif [[ ! -f "$BUILD_DIR/Makefile" && ! -f "$BUILD_DIR/build.ninja" ]]; then
    configure=1  # an earlier configure failed part-way
  elif [[ -n "${OPFORGE_BUILD_TYPE:-}" && "$(cached_build_type)" != "$OPFORGE_BUILD_TYPE" ]]; then
    say "build type changes from '$(cached_build_type)' to '$OPFORGE_BUILD_TYPE'"
    configure=1
  fi
  if ((configure)); then
    say "configuring ($type) in $BUILD_DIR"
    # Build logs go to stderr: stdout is the results' (`./build.sh bench --json > rows.jsonl`).
    cmake -S "$REPO_ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$type" >&2 \
      || die "cmake configure failed (see above)"
  fi
  say "building in $BUILD_DIR with $(ncpu) jobs"
  cmake --build "$BUILD_DIR" -j"$(ncpu)" >&2 || die "build failed (see above)"
}

# ---- main ---------------------------------------------------------------------------

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD_DIR="${OPFORGE_BUILD_DIR:-$REPO_ROOT/build}"
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$PWD/$BUILD_DIR"
readonly REPO_ROOT BUILD_DIR

mode="${1:-}"
case "$mode" in
  -h | --help | help)
    usage
    exit 0
    ;;
  bench | test | build | sanitize | tsan)
    shift
    ;;
  "")
    usage >&2
    exit 2
    ;;
  *)
    say "error: unknown mode '$mode'"
    usage >&2
    exit 2
    ;;
esac

if [[ "$mode" != bench && $# -gt 0 ]]; then
  say "error: '$mode' takes no arguments, got: $*"
  exit 2
fi

cd "$REPO_ROOT"
ensure_dependencies

if [[ "$mode" == sanitize ]]; then
  san_dir="${BUILD_DIR}-asan"
  if [[ ! -f "$san_dir/Makefile" ]]; then
    say "configuring (RelWithDebInfo, ASan + UBSan) in $san_dir"
    cmake -S "$REPO_ROOT" -B "$san_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOPFORGE_SANITIZE=ON \
      || die "cmake configure failed (see above)"
  fi
  san_tests=(test_engine test_autograd_contract test_plugin_loading test_plugin_lifetime test_harness test_lstsq_kernel
             test_ops_bad_inputs test_io)
  say "building ${san_tests[*]} with sanitizers in $san_dir"
  cmake --build "$san_dir" -j"$(ncpu)" --target "${san_tests[@]}" || die "sanitizer build failed (see above)"
  say "running them under ASan + UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$san_dir" --output-on-failure --timeout 900 -j"$(ncpu)" \
    -R '^(engine|contract|lifetime|harness|plugin|lstsq kernel|bad inputs|io:)|plugin' -E 'NOT_BUILT'
  exit $?
fi

if [[ "$mode" == tsan ]]; then
  tsan_dir="${BUILD_DIR}-tsan"
  if [[ ! -f "$tsan_dir/Makefile" ]]; then
    say "configuring (RelWithDebInfo, ThreadSanitizer) in $tsan_dir"
    cmake -S "$REPO_ROOT" -B "$tsan_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOPFORGE_TSAN=ON \
      || die "cmake configure failed (see above)"
  fi
  tsan_tests=(test_threads test_engine)
  say "building ${tsan_tests[*]} with ThreadSanitizer in $tsan_dir"
  cmake --build "$tsan_dir" -j"$(ncpu)" --target "${tsan_tests[@]}" || die "ThreadSanitizer build failed (see above)"
  say "running them under ThreadSanitizer with OPFORGE_NUM_THREADS=1"
  rc=0
  for t in "${tsan_tests[@]}"; do
    # A race report makes the program exit with 66 even when every test passed.
    (cd "$tsan_dir/tests" && OPFORGE_NUM_THREADS=1 TSAN_OPTIONS=second_deadlock_stack=1 "$tsan_dir/bin/$t") \
      || { say "$t: failed or ThreadSanitizer reported (exit status $?)"; rc=1; }
  done
  exit $rc
fi

ensure_built

case "$mode" in
  build)
    say "built: $BUILD_DIR"
    ;;
  bench)
    exe="$BUILD_DIR/bin/opforge"
    [[ -x "$exe" ]] || die "$exe was not built"
    say "running: $exe bench lstsq $*"
    exec "$exe" bench lstsq "$@"
    ;;
  test)
    say "running the test suite: ctest in $BUILD_DIR"
    exec ctest --test-dir "$BUILD_DIR" --output-on-failure --no-tests=error --timeout 600 -j"$(ncpu)"
    ;;
esac
