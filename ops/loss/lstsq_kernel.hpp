// The fused least-squares pass, shared by loss.lstsq's forward.
#pragma once

#include <cstdint>

namespace opforge_ops::loss {

/// One pass over A (m x n, row-major):
///   r = y - A x           (written to r, length m)
///   g = A^T r             (written to g, length n; skipped when g is null)
/// and returns ||r||^2. Each row block of A is read from memory once: its
/// residuals are formed, then its contribution to A^T r is added while the rows
/// are still in cache. Row blocks run in parallel; per-block partial sums of
/// A^T r are reduced in a fixed order, so the result is bit-identical from run
/// to run and independent of the thread count.
///
/// Two kernels compute it, with the same chunks and the same reduction order;
/// which is faster depends on the CPU (lstsq_kernel.cpp says how each works):
///   pipelined  - each block's update is fused into the next block's dot loop;
///                the better one on Intel (Xeon, 1-16 threads: 0.96-1.39x the read,
///                two_phase 1.11-1.57x)
///   two_phase  - each block's dots, then its update from L1/L2, with the next
///                block prefetched; the better one on AMD Zen (2 threads, d = 2000
///                and 4000: 1.08-1.31x the read where pipelined takes 1.30-1.52x)
/// `automatic` picks two_phase on AMD CPUs and pipelined elsewhere, unless the
/// environment variable OPFORGE_LSTSQ_KERNEL names one (pipelined, two_phase;
/// automatic or unset: the CPU's choice; read at the first call; any other value
/// makes every call throw std::invalid_argument). Results of the
/// two differ in rounding (not in determinism: each is bit-identical from run to
/// run and for any thread count).
enum class LstsqKernel { automatic, pipelined, two_phase };

/// "pipelined" or "two_phase": the variant `kernel` stands for on this CPU (for
/// `automatic` with an invalid OPFORGE_LSTSQ_KERNEL, a text saying so; never throws).
const char* kernel_name(LstsqKernel kernel);

double lstsq_fused(const double* A, const double* x, const double* y, std::int64_t m, std::int64_t n, double* r,
                   double* g, LstsqKernel kernel = LstsqKernel::automatic);
double lstsq_fused(const float* A, const float* x, const float* y, std::int64_t m, std::int64_t n, float* r,
                   float* g, LstsqKernel kernel = LstsqKernel::automatic);

/// The two_phase kernel is compiled three times, at vector widths of 64 bytes
/// (AVX-512), 32 (AVX2 + FMA) and 16 (baseline x86-64, and any other CPU);
/// lstsq_fused runs the widest this CPU has. The widest width, in bytes:
int widest_two_phase_width();

/// How far apart two_phase's prefetches of the next block are, in bytes of a
/// row: 64 (every cache line) where A is at most twice `cache_bytes` (the
/// last-level cache: A partly stays there from call to call, and lines come
/// back fast), 128 (every other line) where it is larger. Measured on a Zen 4
/// core, A from memory, one thread: every other line 0.87-0.96x the time of
/// every line (its neighbour comes in the same 128-byte pair, and half as many
/// prefetches wait on the core's miss buffers); with A in L3 up to 1.13x.
int two_phase_prefetch_bytes(std::int64_t a_bytes, std::int64_t cache_bytes);

/// The most of `rows` consecutive rows, `row_bytes` apart, whose elements at
/// one column fall in one L1 set at some alignment (an L1 way of 4 KiB: 64
/// sets of 64-byte lines, as on Zen 4 and Intel cores since Sandy Bridge).
/// two_phase blocks 16 rows only where this is at most 8, the L1's ways: rows
/// a multiple of 4 KiB long put all 16 in one set, where a block's lines and
/// the next block's prefetches evict each other, mostly in the update phase
/// (1.45-1.61x the read against 1.18-1.28x with 8 rows). Throws
/// std::invalid_argument for a negative argument.
int rows_sharing_l1_set(std::int64_t row_bytes, int rows);

/// Rows in each of two_phase's blocks, for rows of `row_bytes` at an instance's
/// vector width (64, 32 or 16 bytes): 16 with AVX-512 where rows are 4-8 KiB
/// long and rows_sharing_l1_set(row_bytes, 16) is at most 8; otherwise 8, or
/// 4, 2, 1 where 8 rows would exceed 256 KiB. lstsq_kernel.cpp gives the
/// measurements behind each bound. Decided once a call.
int two_phase_block_rows(int vector_bytes, std::int64_t row_bytes);

/// The two_phase kernel at a chosen width, so that tests check every instance a
/// CPU can run, not only the widest, and with a chosen prefetch stride (0: the
/// automatic one, else 64 or 128 bytes; it changes no result bit). Throws
/// std::invalid_argument for a width other than 64, 32 or 16, or wider than
/// widest_two_phase_width(), or another prefetch stride.
double lstsq_two_phase_at(int vector_bytes, const double* A, const double* x, const double* y, std::int64_t m,
                          std::int64_t n, double* r, double* g, int prefetch_bytes = 0);
double lstsq_two_phase_at(int vector_bytes, const float* A, const float* x, const float* y, std::int64_t m,
                          std::int64_t n, float* r, float* g, int prefetch_bytes = 0);

}  // namespace opforge_ops::loss
