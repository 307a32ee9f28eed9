// What the CUDA runtime and driver report about this machine, without throwing when there is no GPU or driver.
#pragma once

#include <cstdint>
#include <string>

namespace sparkle_fast {

struct CudaDeviceInfo {
  std::string name;
  int major = 0;
  int minor = 0;
  int sm_count = 0;
  std::int64_t total_memory_bytes = 0;
  int memory_clock_khz = 0;    // peak memory clock
  int memory_bus_width_bits = 0;
  double peak_memory_bandwidth_gbps() const {  // GB/s: two transfers per clock (DDR/HBM)
    return 2.0 * memory_clock_khz * 1e3 * (memory_bus_width_bits / 8.0) / 1e9;
  }
};

int cuda_runtime_version();  // the version this module was built against (static cudart)
int cuda_driver_version();   // 0 when no driver is installed
int cuda_device_count();     // 0 when there is no usable GPU or driver
CudaDeviceInfo cuda_device_info(int device);  // throws std::runtime_error for a bad index

}  // namespace sparkle_fast
