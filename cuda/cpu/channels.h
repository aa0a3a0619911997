// Dispatch on the channel count: C <= 4 (grey, RGB, RGBA, ...) gets a copy of
// the kernel with C known at compile time, so the per-pixel loops over a row
// fuse all channels into one vectorised loop; larger C loops at run time.
#pragma once

#include <cstdint>
#include <type_traits>

namespace jax_gmm {

// Calls body(std::integral_constant<int, K>) with K = C for C in 1..4, else K = 0.
template <typename Body>
void with_channels(int64_t channels, const Body& body) {
  switch (channels) {
    case 1: return body(std::integral_constant<int, 1>{});
    case 2: return body(std::integral_constant<int, 2>{});
    case 3: return body(std::integral_constant<int, 3>{});
    case 4: return body(std::integral_constant<int, 4>{});
    default: return body(std::integral_constant<int, 0>{});
  }
}

}  // namespace jax_gmm
