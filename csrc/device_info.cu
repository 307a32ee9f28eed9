#include "device_info.h"

#include <cuda_runtime.h>

#include "cuda_check.h"

namespace sparkle_fast {

int cuda_runtime_version() {
  int version = 0;
  cudaRuntimeGetVersion(&version);
  return version;
}

int cuda_driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) return 0;
  return version;
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver/no device" error so later calls start clean
    return 0;
  }
  return count;
}

CudaDeviceInfo cuda_device_info(int device) {
  CudaDeviceInfo info;
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  info.name = prop.name;
  info.major = prop.major;
  info.minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.total_memory_bytes = static_cast<std::int64_t>(prop.totalGlobalMem);
  check_cuda(cudaDeviceGetAttribute(&info.memory_clock_khz, cudaDevAttrMemoryClockRate, device),
             "cudaDeviceGetAttribute(MemoryClockRate)");
  check_cuda(cudaDeviceGetAttribute(&info.memory_bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, device),
             "cudaDeviceGetAttribute(GlobalMemoryBusWidth)");
  return info;
}

}  // namespace sparkle_fast
