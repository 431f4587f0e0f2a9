// The core's random bits, shared by Tensor::randn (tensor.cpp) and Tensor::rand
// (factories.cpp). Internal to the core.
#pragma once

#include <cstdint>

namespace opforge {

// SplitMix64: a counter-based generator, so element i of randn(seed) is the same
// whatever the order or thread that computes it.
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline double uniform01(std::uint64_t bits) {  // in (0, 1]
  return (static_cast<double>(bits >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

}  // namespace opforge
