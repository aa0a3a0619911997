// Shape checks shared by the CPU and CUDA handlers: an operand is a buffer of
// examples with known trailing dimensions behind the batch axes of the call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "batch.h"
#include "xla/ffi/api/ffi.h"

namespace jax_gmm {

template <typename T>
struct Operand {
  T* data;
  int64_t example_size;          // elements in one example
  std::vector<int64_t> strides;  // in examples, 0 along broadcast batch axes

  T* at(const BatchLayout& layout, int64_t b) const {
    return data + layout.example(b, strides) * example_size;
  }
};

inline std::string shape_string(xla::ffi::Span<const int64_t> dims) {
  std::string s = "(";
  for (size_t k = 0; k < dims.size(); ++k) s += (k ? ", " : "") + std::to_string(dims[k]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// Checks that `buffer` is (batch..., *example) and returns it as an Operand.
template <typename T, typename Buffer>
xla::ffi::ErrorOr<Operand<T>> operand(const BatchLayout& layout, Buffer& buffer,
                                      const std::vector<int64_t>& example, const char* name) {
  const auto dims = buffer.dimensions();
  const int rank = static_cast<int>(example.size());
  bool ok = static_cast<int>(dims.size()) == layout.rank() + rank;
  for (int k = 0; ok && k < rank; ++k) ok = dims[dims.size() - rank + k] == example[k];
  if (!ok) {
    return xla::ffi::Unexpected(xla::ffi::Error::InvalidArgument(
        std::string(name) + " has shape " + shape_string(dims) + ", expected batch axes then " +
        shape_string(xla::ffi::Span<const int64_t>(example))));
  }
  auto strides = layout.strides(dims, rank, name);
  if (strides.has_error()) return xla::ffi::Unexpected(strides.error());
  int64_t size = 1;
  for (int64_t d : example) size *= d;
  return Operand<T>{reinterpret_cast<T*>(buffer.untyped_data()), size, std::move(*strides)};
}

// The index lists of the binning are 32-bit.
inline xla::ffi::Error check_count(int64_t count, const char* what) {
  if (count >= (int64_t{1} << 32)) {
    return xla::ffi::Error::InvalidArgument(std::string(what) + " must be fewer than 2^32");
  }
  return xla::ffi::Error::Success();
}

}  // namespace jax_gmm
