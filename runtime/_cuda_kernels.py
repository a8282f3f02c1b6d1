"""The GPU kernels besides the executor: ``synccl_average``, which finishes an ``avg`` reduction.

An ``avg`` collective runs as a sum (the executor has no division); the rank that holds a result
then divides it by the rank count in place, as the host runtime does with numpy: floats in their
value type (half and bfloat16 through float, rounded to nearest even, as numpy and ml_dtypes do),
integers rounded toward minus infinity (``numpy.floor_divide``). The element types are the
executor's own (``executor.cuh``), so loads and stores round the same way in both kernels.
"""

from __future__ import annotations

from synccl.runtime._kernel_source import GPU_ENTRY, sources
from synccl.runtime._nvrtc import CompiledKernel, compile_cached

__all__ = ["AVERAGE_KERNEL", "AVERAGE_SOURCE", "compiled_average"]

#: The entry point's name in the cubin.
AVERAGE_KERNEL = "synccl_average"

AVERAGE_SOURCE = r"""
// x[i] = x[i] / n for `count` elements of KernelDtype `dtype` at `data` (a grid-stride loop).
#include "executor.cuh"

template <class E>
__device__ void divide(u8* data, i64 count, i64 n) {
  typedef typename E::Storage S;
  S* x = (S*)data;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < count; i += (i64)gridDim.x * blockDim.x) {
    if constexpr (E::kInteger) {
      const i64 v = (i64)E::load(x[i]);
      x[i] = E::store((typename E::Value)(v / n - (v % n != 0 && v < 0)));  // floor, n > 0
    } else {
      x[i] = E::store(E::load(x[i]) / (typename E::Value)n);
    }
  }
}

extern "C" __global__ void synccl_average(u8* data, i64 count, i64 n, i64 dtype) {
  switch (dtype) {
    case DTYPE_FLOAT16: return divide<synccl::Half>(data, count, n);
    case DTYPE_BFLOAT16: return divide<synccl::BFloat16>(data, count, n);
    case DTYPE_FLOAT32: return divide<synccl::Float32>(data, count, n);
    case DTYPE_FLOAT64: return divide<synccl::Float64>(data, count, n);
    case DTYPE_INT8: return divide<synccl::Int8>(data, count, n);
    case DTYPE_INT32: return divide<synccl::Int32>(data, count, n);
    case DTYPE_INT64: return divide<synccl::Int64>(data, count, n);
    case DTYPE_UINT8: return divide<synccl::UInt8>(data, count, n);
  }
}
"""


def compiled_average(arch: str) -> CompiledKernel:
    """:data:`AVERAGE_SOURCE` compiled for ``arch`` by NVRTC (cached like the executor).

    Raises
    ------
    KernelBuildError
        NVRTC is missing or the source does not compile.

    Examples
    --------
    >>> compiled_average("sm_90").kernels  # doctest: +SKIP
    ('synccl_average',)
    """
    headers = {name: text for name, text in sources().items() if name != GPU_ENTRY}
    return compile_cached(AVERAGE_SOURCE, name="average.cu", headers=headers, arch=arch)
