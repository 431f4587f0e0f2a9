// Which kernels OpenBLAS runs on this CPU, and what opforge changed in that.
#pragma once

#include <string>
#include <string_view>

#include "opforge/export.hpp"

namespace opforge {

/// OpenBLAS's name for the kernel set it runs ("Haswell", "SkylakeX", "Zen",
/// "Cooperlake", "Prescott", ...).
///
/// OpenBLAS (Debian's build has every kernel set and picks one when it loads)
/// knows the CPU models of its release. On a newer one it may fall back to its
/// oldest x86-64 kernels: Debian 12's 0.3.21 runs an Intel Xeon of 2023
/// (family 6, model 207) on "Prescott", SSE3 kernels that make float32 gemv
/// twice as slow and gemm several times slower than the CPU allows. So when
/// the core library loads, if OpenBLAS picked kernels without AVX2 on a CPU
/// that has AVX2 and FMA, opforge selects the kernels of the CPU's instruction
/// set instead: "SkylakeX" where it has AVX-512 (F, DQ, BW, VL), else
/// "Haswell". It does not where OPENBLAS_CORETYPE is set: the user's choice
/// stands. blas_core_note() says what it did.
OPFORGE_API std::string blas_core();

/// One sentence saying which kernels opforge selected in place of OpenBLAS's
/// choice and why, or "" when it kept OpenBLAS's choice.
OPFORGE_API std::string blas_core_note();

namespace detail {

/// The kernel set to run instead of `picked` (OpenBLAS's choice) on a CPU with
/// the given features, or "" to keep `picked`. Only kernel sets without AVX2
/// are replaced, and only on a CPU with AVX2 and FMA.
OPFORGE_API std::string better_blas_core(std::string_view picked, bool avx2_fma, bool avx512);

/// Makes OpenBLAS run the kernel set `core` (one of its names, any case) from
/// its next call on. Returns false, leaving OpenBLAS's choice as it was, where
/// OpenBLAS was built for one CPU only, or where it does not know `core`. Not
/// safe while another thread is inside BLAS: the core calls it once, as it
/// loads; tests call it to check the switch.
OPFORGE_API bool select_blas_core(const std::string& core);

/// What the core does as it loads (opforge/blas.hpp, blas_core()): where
/// OPENBLAS_CORETYPE is unset and OpenBLAS runs kernels without AVX2 on a CPU
/// with AVX2 and FMA, selects the CPU's kernels and sets blas_core_note().
/// Tests call it again after selecting old kernels themselves.
OPFORGE_API void select_better_blas_core();

}  // namespace detail
}  // namespace opforge
