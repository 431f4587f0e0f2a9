// OPFORGE_TLS: the thread_local variables the per-call path reads.
//
// In a shared library, the default TLS model makes every access a call to
// __tls_get_addr (~11 instructions, several per recorded op call). The
// initial-exec model reads them at a fixed offset from the thread pointer. It
// takes its few bytes from the static TLS block, which glibc sizes with room to
// spare for libraries loaded later with dlopen, so libopforge can still be
// loaded that way.
#pragma once

#if defined(__GNUC__) && defined(__ELF__)
#define OPFORGE_TLS thread_local __attribute__((tls_model("initial-exec")))
#else
#define OPFORGE_TLS thread_local
#endif
