// exp, log, sin, cos, tanh and pow (and log1p, expm1 from glibc 2.35 on), in
// loops: glibc's vector math library.
//
// Declared `simd` here, these libm functions let GCC vectorise a loop that
// calls them, with libmvec's vector versions (_ZGVeN8v_exp: eight doubles at a
// time on AVX-512, _ZGVdN4v_exp on AVX2, _ZGVbN2v_exp on SSE), where each call
// was a scalar libm call:
// elementwise.exp of 10^5 doubles, one thread, 2-core Zen 4 VM, 0.41 -> 0.097
// ms (NumPy 0.072 ms). glibc's own math.h declares them so only under
// -ffast-math, which this plugin does not use (it would also change NaN and
// signed-zero handling everywhere). The vector versions are within 4 ulp of
// the exact result (measured: exp 3, log 2, sin 3 ulp from the scalar ones
// over 10^6 values; log1p 2, expm1 3 over 2 * 10^5 values of magnitude 1e-8
// to 1e3), not the scalar functions' correctly rounded or 1-ulp results, and
// their SSE, AVX2 and AVX-512 versions can differ in the last bits (from each
// other, and from the scalar call a loop's tail makes). The elementwise maps
// run such a function over every element through one vector loop (uniform(),
// elementwise_ops.hpp; loss.bce_with_logits's UniformMap likewise): an
// element's bits then do not depend on where a thread's range was cut, and an
// op's results are the same from run to run and for any thread count on one
// machine, but not bit for bit across CPUs of different vector width.
// Included after <cmath> by the sources whose loops call these functions (the
// elementwise, reduce and loss plugins, which link libmvec).
#pragma once

#include <cmath>

// OPFORGE_HAVE_LIBMVEC: set by ops/CMakeLists.txt where it found the library
// to link (without it the loops keep their scalar calls).
#if defined(OPFORGE_HAVE_LIBMVEC) && defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && \
    !defined(__clang__)
extern "C" {
double exp(double) noexcept __attribute__((simd("notinbranch")));
float expf(float) noexcept __attribute__((simd("notinbranch")));
double log(double) noexcept __attribute__((simd("notinbranch")));
float logf(float) noexcept __attribute__((simd("notinbranch")));
double sin(double) noexcept __attribute__((simd("notinbranch")));
float sinf(float) noexcept __attribute__((simd("notinbranch")));
double cos(double) noexcept __attribute__((simd("notinbranch")));
float cosf(float) noexcept __attribute__((simd("notinbranch")));
double tanh(double) noexcept __attribute__((simd("notinbranch")));
float tanhf(float) noexcept __attribute__((simd("notinbranch")));
double pow(double, double) noexcept __attribute__((simd("notinbranch")));
float powf(float, float) noexcept __attribute__((simd("notinbranch")));
// libmvec has log1p and expm1 from glibc 2.35 on. With an older glibc they are
// not declared `simd` (a plugin would not link: no vector versions to call),
// and loops calling them keep their scalar calls.
#if __GLIBC_PREREQ(2, 35)
double log1p(double) noexcept __attribute__((simd("notinbranch")));
float log1pf(float) noexcept __attribute__((simd("notinbranch")));
double expm1(double) noexcept __attribute__((simd("notinbranch")));
float expm1f(float) noexcept __attribute__((simd("notinbranch")));
#endif
}
#define OPFORGE_ELEMENTWISE_LIBMVEC 1
#endif
