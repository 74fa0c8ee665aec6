#ifndef ARBITER_CPREFETCH_H
#define ARBITER_CPREFETCH_H

/// Asks the core to start loading the cache line at `address` for reading (x86 PREFETCHT0; a no-op where the
/// compiler has no prefetch). Swift has no prefetch of its own; lookups that know their next addresses early
/// (embedding rows) issue these so that their cache misses overlap.
static inline void arbiter_prefetch(const void *address) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(address, 0, 3);
#else
    (void)address;
#endif
}

#endif
