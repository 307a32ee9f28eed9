// SF_HD marks functions shared by CUDA kernels and their host twins: __host__ __device__ under nvcc, plain inline
// for the host compiler.
#pragma once

#if defined(__CUDACC__)
#define SF_HD __host__ __device__ __forceinline__
#else
#define SF_HD inline
#endif
