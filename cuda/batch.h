// Leading batch axes of an FFI call made under vmap(..., vmap_method="expand_dims").
//
// Every operand carries the same number of leading batch axes as the outputs;
// an operand that was not batched along an axis has size 1 there and is
// broadcast, never copied. Host-only: the CPU and CUDA handlers share it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace jax_gmm {

class BatchLayout {
 public:
  BatchLayout() = default;
  // `out_dims` are the dimensions of an output whose trailing `example_rank`
  // axes belong to one example; the axes before them are the batch axes.
  BatchLayout(xla::ffi::Span<const int64_t> out_dims, int example_rank)
      : dims_(out_dims.begin(), out_dims.end() - example_rank) {
    count_ = 1;
    for (int64_t d : dims_) count_ *= d;
  }

  int64_t count() const { return count_; }
  int rank() const { return static_cast<int>(dims_.size()); }

  // Checks an operand's batch axes against the outputs' and returns its
  // strides in examples (0 along broadcast axes).
  xla::ffi::ErrorOr<std::vector<int64_t>> strides(xla::ffi::Span<const int64_t> operand_dims,
                                                  int example_rank, const char* name) const {
    const int rank = static_cast<int>(operand_dims.size()) - example_rank;
    if (rank != this->rank()) {
      return xla::ffi::Unexpected(xla::ffi::Error::InvalidArgument(std::string(name) + " has " + std::to_string(rank) +
                                              " batch axes, expected " +
                                              std::to_string(this->rank())));
    }
    std::vector<int64_t> strides(rank);
    int64_t stride = 1;
    for (int k = rank - 1; k >= 0; --k) {
      const int64_t d = operand_dims[k];
      if (d != dims_[k] && d != 1) {
        return xla::ffi::Unexpected(xla::ffi::Error::InvalidArgument(std::string(name) + " batch axis " +
                                                std::to_string(k) + " has size " +
                                                std::to_string(d) + ", expected 1 or " +
                                                std::to_string(dims_[k])));
      }
      strides[k] = d == 1 ? 0 : stride;
      stride *= d;
    }
    return strides;
  }

  // Index of the operand's example that batch element `b` reads.
  int64_t example(int64_t b, const std::vector<int64_t>& strides) const {
    int64_t index = 0;
    for (int k = rank() - 1; k >= 0; --k) {
      index += (b % dims_[k]) * strides[k];
      b /= dims_[k];
    }
    return index;
  }

 private:
  std::vector<int64_t> dims_;
  int64_t count_ = 0;
};

}  // namespace jax_gmm
