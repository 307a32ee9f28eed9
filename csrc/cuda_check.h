// Turn CUDA runtime errors into C++ exceptions (pybind11 raises them as Python RuntimeError).
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace sparkle_fast {

inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(status) + " (" +
                             cudaGetErrorString(status) + ")");
  }
}

}  // namespace sparkle_fast
