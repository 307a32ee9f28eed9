// sparkle_fast._C: the one pybind11 module over csrc/.
//
// Built with or without CUDA (SPARKLE_FAST_WITH_CUDA). Without it, only build_info() exists and the Python
// dispatcher reports that the "cuda" backend is not in this build. Kernel entry points take raw device pointers and
// a stream handle as integers and release the GIL while they enqueue work.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "ransac_host.h"
#include "vote_pack_host.h"

#ifdef SPARKLE_FAST_WITH_CUDA
#include "device_info.h"
#include "ransac.h"
#include "vote_pack.h"
#endif

namespace py = pybind11;

namespace {

#define SPARKLE_FAST_STR2(x) #x
#define SPARKLE_FAST_STR(x) SPARKLE_FAST_STR2(x)

std::string compiler_name() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " SPARKLE_FAST_STR(__GNUC__) "." SPARKLE_FAST_STR(__GNUC_MINOR__) "." SPARKLE_FAST_STR(__GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

py::dict build_info() {
  py::dict info;
  info["version"] = SPARKLE_FAST_VERSION;
  info["compiler"] = compiler_name();
  info["pybind11"] = std::to_string(PYBIND11_VERSION_MAJOR) + "." + std::to_string(PYBIND11_VERSION_MINOR) + "." +
                     std::to_string(PYBIND11_VERSION_PATCH);
#ifdef SPARKLE_FAST_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = SPARKLE_FAST_CUDA_VERSION;
  std::vector<std::string> archs;
  std::string all = SPARKLE_FAST_CUDA_ARCHS;
  for (size_t start = 0; start <= all.size();) {
    const size_t end = all.find(';', start);
    archs.push_back("sm_" + all.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  archs.push_back("compute_" + archs.back().substr(3) + " (PTX)");
  info["cuda_archs"] = archs;
#else
  info["cuda"] = false;
  info["cuda_version"] = py::none();
  info["cuda_archs"] = py::list();
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sparkle-fast compiled kernels (CUDA when built with nvcc).";
  m.def("build_info", &build_info, "How this module was built: version, compiler, CUDA or not, architectures.");

  // Host twins of the CUDA kernels (always built): the GPU kernels' per-thread code run in a host loop.
  m.def("vote_u8_host", &sparkle_fast::vote_u8_host, py::call_guard<py::gil_scoped_release>(), py::arg("passes"),
        py::arg("n_passes"), py::arg("n_pixels"), py::arg("min_votes"), py::arg("out"), py::arg("pack_out"),
        py::arg("threads") = 1,
        "Host twin of vote_u8: host addresses of uint8 passes [n_passes][n_pixels] and of the output; threads: the "
        "emulated grid size (each runs the kernel's grid-stride loop).");
  m.def("vote_packed_host", &sparkle_fast::vote_packed_host, py::call_guard<py::gil_scoped_release>(),
        py::arg("passes"), py::arg("n_passes"), py::arg("n_pixels"), py::arg("min_votes"), py::arg("out"),
        py::arg("pack_out"), py::arg("threads") = 1,
        "Host twin of vote_packed: host addresses of packed passes and of the output; threads as for vote_u8_host.");
  m.def("ransac_score_host", &sparkle_fast::ransac_score_host, py::call_guard<py::gil_scoped_release>(),
        py::arg("src"), py::arg("dst"), py::arg("n_valid"), py::arg("keys"), py::arg("n_pairs"), py::arg("n_points"),
        py::arg("n_hyp"), py::arg("seed"), py::arg("thr2"), py::arg("scores"), py::arg("models"),
        "Host twin of ransac_score: host addresses of float32 src/dst [n_pairs][n_points][2], int32 n_valid, "
        "uint32 keys [n_pairs], "
        "int32 scores [n_pairs][n_hyp] and float64 models [n_pairs][n_hyp][9].");

#ifdef SPARKLE_FAST_WITH_CUDA
  using namespace sparkle_fast;
  m.def("cuda_runtime_version", &cuda_runtime_version, "CUDA runtime version linked into this module (e.g. 13000).");
  m.def("cuda_driver_version", &cuda_driver_version, "CUDA driver version, 0 when no driver is installed.");
  m.def("cuda_device_count", &cuda_device_count, "Number of usable CUDA devices (0 without a GPU or driver).");
  m.def(
      "cuda_device_info",
      [](int device) {
        const CudaDeviceInfo d = cuda_device_info(device);
        py::dict info;
        info["name"] = d.name;
        info["compute_capability"] = std::to_string(d.major) + "." + std::to_string(d.minor);
        info["sm_count"] = d.sm_count;
        info["total_memory_bytes"] = d.total_memory_bytes;
        info["memory_clock_khz"] = d.memory_clock_khz;
        info["memory_bus_width_bits"] = d.memory_bus_width_bits;
        info["peak_memory_bandwidth_gbps"] = d.peak_memory_bandwidth_gbps();
        return info;
      },
      py::arg("device"), "Name, SM count, memory size and peak memory bandwidth (GB/s) of one device.");

  m.def("vote_u8", &vote_u8_cuda, py::call_guard<py::gil_scoped_release>(), py::arg("passes"),
        py::arg("n_passes"), py::arg("n_pixels"), py::arg("min_votes"), py::arg("out"), py::arg("pack_out"),
        py::arg("stream"),
        "Vote over uint8 passes [n_passes][n_pixels] (device pointer); out: packed bits or uint8 0/1 per pixel.");
  m.def("vote_packed", &vote_packed_cuda, py::call_guard<py::gil_scoped_release>(), py::arg("passes"),
        py::arg("n_passes"), py::arg("n_pixels"), py::arg("min_votes"), py::arg("out"), py::arg("pack_out"),
        py::arg("stream"),
        "Vote over packed passes [n_passes][ceil(n_pixels/8)] (device pointer); out as for vote_u8.");
  m.def("ransac_score", &ransac_score_cuda, py::call_guard<py::gil_scoped_release>(), py::arg("src"),
        py::arg("dst"), py::arg("n_valid"), py::arg("keys"), py::arg("n_pairs"), py::arg("n_points"), py::arg("n_hyp"),
        py::arg("seed"), py::arg("thr2"), py::arg("scores"), py::arg("models"), py::arg("stream"),
        "Score n_hyp RANSAC homography hypotheses for every pair in one launch (device pointers; see ransac.h).");
#endif
}
