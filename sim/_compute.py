"""How long a matmul takes on one GPU: the compute side of the overlap cost model.

:func:`matmul_seconds` times ``C[m, n] = A[m, k] @ B[k, n]`` as a vendor BLAS (cuBLAS,
hipBLASLt) would run it, from the device's datasheet peaks in :data:`DEVICES`::

    time = launch + max(compute, memory)

*memory* moves every operand once through HBM, ``(m*k + k*n + m*n) * itemsize`` bytes at
:data:`MEMORY_EFFICIENCY` of the datasheet bandwidth (what a GEMV-like, memory-bound product
sustains). *compute* follows how a tiled GEMM kernel fills the GPU:

1. **Wave quantization.** The output is cut into ``tile_m x tile_n`` tiles, one per thread
   block; the SMs (CUs on AMD) run them in waves of ``sms`` tiles, and a partial last wave,
   or a tile hanging over the matrix's edge, costs as much as a full one. When the tiles fill
   at most half the SMs, ``k`` is split over the idle ones (split-K, as cuBLAS does for
   skinny products), so a small output still uses the whole GPU.
2. **A saturating curve in k.** Each tile's main loop runs ``k / split`` steps plus a fixed
   :data:`K_OVERHEAD` (pipeline fill and epilogue), so short reductions reach less of the
   peak: the efficiency is ``k / (k + K_OVERHEAD)`` of the wave's, rising to 1 as ``k`` grows.
3. A wave of full tiles at large ``k`` sustains the device's ``efficiency`` of peak: what
   the vendor BLAS reaches on big, well-shaped products (cuBLAS bf16 on an H100 SXM: about
   0.75-0.8 of the dense peak).

Every term only grows with ``m``, ``n`` and ``k``, so the time is monotone (non-decreasing)
in each. A large bf16 product on an H800 lands at about 76% of peak, matching ByteDance
Flux's published GEMM-only times (see :data:`DEVICES`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from synccl.exceptions import TopologyError

__all__ = [
    "DTYPES",
    "DEVICES",
    "K_OVERHEAD",
    "LAUNCH_SECONDS",
    "MEMORY_EFFICIENCY",
    "DeviceSpec",
    "device_spec",
    "dtype_bytes",
    "matmul_efficiency",
    "matmul_seconds",
]

Dtype = Literal["bf16", "fp16", "fp32"]

#: Accepted dtype names and the canonical name each stands for.
DTYPES: Mapping[str, Dtype] = MappingProxyType(
    {
        "bf16": "bf16",
        "bfloat16": "bf16",
        "fp16": "fp16",
        "float16": "fp16",
        "half": "fp16",
        "fp32": "fp32",
        "float32": "fp32",
    }
)
_ITEMSIZE: Mapping[Dtype, int] = MappingProxyType({"bf16": 2, "fp16": 2, "fp32": 4})

#: k-steps' worth of time each tile spends outside its main loop (pipeline fill, epilogue).
K_OVERHEAD = 128
#: Fixed cost of one matmul kernel: launch and ramp-up (seconds).
LAUNCH_SECONDS = 3e-6
#: Fraction of the datasheet HBM bandwidth a memory-bound product sustains.
MEMORY_EFFICIENCY = 0.85


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One GPU's datasheet figures and the tiling its vendor BLAS uses.

    Attributes
    ----------
    name : str
        The device type, as :meth:`synccl.topologies.Topology.device` names it.
    bf16_tflops, fp16_tflops : float or None
        Dense tensor-core (matrix-core) peak in TFLOP/s, without sparsity; ``None`` where the
        device has no such units for the dtype (bf16 on a V100).
    fp32_tflops : float
        IEEE FP32 peak of the SIMT (vector) units: not TF32, not FP32 matrix cores.
    hbm_bandwidth : float
        Memory bandwidth, GB/s (1e9 bytes per second).
    sms : int
        Streaming multiprocessors (NVIDIA) or compute units (AMD): thread blocks per wave.
    tile_m, tile_n : int
        The output tile one thread block computes.
    efficiency : float
        Fraction of peak a full wave of tiles sustains at large ``k``.
    source : str
        Where the figures come from.
    """

    name: str
    bf16_tflops: float | None
    fp16_tflops: float | None
    fp32_tflops: float
    hbm_bandwidth: float
    sms: int
    tile_m: int
    tile_n: int
    efficiency: float
    source: str

    def __post_init__(self) -> None:
        for field in ("bf16_tflops", "fp16_tflops", "fp32_tflops", "hbm_bandwidth"):
            value = getattr(self, field)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
                raise TopologyError(f"DeviceSpec {self.name!r}: {field} must be a number > 0 or None, got {value!r}")
        for field in ("sms", "tile_m", "tile_n"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TopologyError(f"DeviceSpec {self.name!r}: {field} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.efficiency, (int, float)) and 0 < self.efficiency <= 1):
            raise TopologyError(f"DeviceSpec {self.name!r}: efficiency must be in (0, 1], got {self.efficiency!r}")

    def peak_tflops(self, dtype: str) -> float:
        """Dense peak in TFLOP/s for ``dtype`` (any name in :data:`DTYPES`).

        >>> device_spec("H100").peak_tflops("bfloat16")
        989.4
        """
        return _peak(self, dtype, "peak_tflops")


def _spec(
    name: str,
    bf16: float | None,
    fp16: float | None,
    fp32: float,
    hbm: float,
    sms: int,
    tile: tuple[int, int],
    efficiency: float,
    source: str,
) -> DeviceSpec:
    return DeviceSpec(name, bf16, fp16, fp32, hbm, sms, tile[0], tile[1], efficiency, source)


# Hopper: cuBLAS/CUTLASS sm90 kernels favour 128x256 tiles. The efficiency 0.80 is fitted to
# ByteDance Flux's published H800 GEMM-only times for (4096 x 12288) @ (12288 x 6144) bf16:
# torch/cuBLAS 0.846 ms, Flux 0.814 ms (github.com/bytedance/flux README, June-Oct 2024);
# the model gives 0.817 ms. An 8192^3 bf16 torch.matmul measured on an H200 of this project's
# device machines ran at 769-798 TFLOP/s; the model gives 754.
_HOPPER_EFFICIENCY = 0.80
# Ampere: fitted to Flux's A800 (the A100 with NVLink cut to 400 GB/s) torch GEMM time for
# the same product, 2.438 ms; the model gives 2.431 ms with 128x128 tiles.
_AMPERE_EFFICIENCY = 0.87

_TABLE = (
    # NVIDIA V100 SXM2 datasheet: 125 TFLOP/s fp16 tensor, 15.7 fp32, HBM2 900 GB/s, 80 SMs.
    # No bf16. Efficiency assumed (cuBLAS HGEMM on large products: ~100-110 TFLOP/s).
    _spec("V100", None, 125.0, 15.7, 900.0, 80, (128, 128), 0.85, "NVIDIA V100 SXM2 datasheet"),
    # NVIDIA A100 datasheet (SXM4 80GB): 312 TFLOP/s bf16/fp16 dense, 19.5 fp32, HBM2e
    # 2039 GB/s; A100 white paper: 108 SMs.
    _spec("A100", 312.0, 312.0, 19.5, 2039.0, 108, (128, 128), _AMPERE_EFFICIENCY, "NVIDIA A100 datasheet (SXM4 80GB)"),
    # The 40GB SXM4 part: same compute, HBM2 1555 GB/s (A100 datasheet).
    _spec("A100-40GB", 312.0, 312.0, 19.5, 1555.0, 108, (128, 128), _AMPERE_EFFICIENCY, "NVIDIA A100 datasheet (SXM4 40GB)"),
    # NVIDIA H100 datasheet / H100 white paper (SXM5): 989.4 TFLOP/s bf16/fp16 dense (1979
    # with sparsity), 67 fp32, HBM3 3350 GB/s, 132 SMs.
    _spec("H100", 989.4, 989.4, 67.0, 3350.0, 132, (128, 256), _HOPPER_EFFICIENCY, "NVIDIA H100 datasheet (SXM5)"),
    # NVIDIA H200 datasheet (SXM): the H100's compute, HBM3e 4800 GB/s.
    _spec("H200", 989.4, 989.4, 67.0, 4800.0, 132, (128, 256), _HOPPER_EFFICIENCY, "NVIDIA H200 datasheet (SXM)"),
    # H800 SXM5: the H100 SXM5's compute and HBM3 (NVLink cut to 400 GB/s, FP64 cut).
    _spec("H800", 989.4, 989.4, 67.0, 3350.0, 132, (128, 256), _HOPPER_EFFICIENCY, "NVIDIA H800 SXM5 specifications"),
    # AMD Instinct MI250 (OAM) data sheet: 362.1 TFLOP/s bf16/fp16, 45.3 fp32 vector,
    # HBM2e 3276.8 GB/s, 208 CUs per package; one rank of mi250() is one of its two GCDs,
    # so half of each. Efficiency assumed, not calibrated.
    _spec("MI250", 181.05, 181.05, 22.65, 1638.4, 104, (128, 128), 0.60, "AMD Instinct MI250 data sheet (one GCD: half a package)"),
    # AMD Instinct MI300X data sheet: 1307.4 TFLOP/s bf16/fp16 dense (2614.9 with sparsity),
    # 163.4 fp32 vector, HBM3 5300 GB/s, 304 CUs. Efficiency assumed, not calibrated: about
    # half the dense peak for hipBLASLt bf16 on large products (recalibrate from a measurement).
    _spec("MI300X", 1307.4, 1307.4, 163.4, 5300.0, 304, (256, 128), 0.50, "AMD Instinct MI300X data sheet"),
)

#: Every device the model knows, by name (look up with :func:`device_spec`, any case).
DEVICES: Mapping[str, DeviceSpec] = MappingProxyType({spec.name: spec for spec in _TABLE})
_BY_KEY = {name.upper(): spec for name, spec in DEVICES.items()}


def device_spec(device: str | DeviceSpec) -> DeviceSpec:
    """The :class:`DeviceSpec` called ``device`` (case-insensitive); a spec is returned as is.

    Parameters
    ----------
    device : str or DeviceSpec
        A name in :data:`DEVICES`, e.g. ``'H100'`` or ``'mi300x'``.

    Returns
    -------
    DeviceSpec

    Raises
    ------
    TopologyError
        If the name is unknown; the message lists the known ones.

    Examples
    --------
    >>> device_spec("h800").hbm_bandwidth
    3350.0
    >>> device_spec("B200")
    Traceback (most recent call last):
    ...
    synccl.exceptions.TopologyError: device_spec: unknown device 'B200'; known devices: V100, A100, A100-40GB, H100, H200, H800, MI250, MI300X
    """
    if isinstance(device, DeviceSpec):
        return device
    spec = _BY_KEY.get(device.strip().upper()) if isinstance(device, str) else None
    if spec is None:
        raise TopologyError(f"device_spec: unknown device {device!r}; known devices: {', '.join(DEVICES)}")
    return spec


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of ``dtype``: 2 for bf16 and fp16, 4 for fp32.

    Parameters
    ----------
    dtype : str
        ``'bf16'``/``'bfloat16'``, ``'fp16'``/``'float16'``/``'half'`` or ``'fp32'``/``'float32'``.

    Returns
    -------
    int

    Raises
    ------
    TopologyError
        If the dtype is not one of those.

    Examples
    --------
    >>> dtype_bytes("bfloat16"), dtype_bytes("fp32")
    (2, 4)
    """
    return _ITEMSIZE[_dtype(dtype, "dtype_bytes")]


def matmul_seconds(device: str | DeviceSpec, m: int, n: int, k: int, dtype: str = "bf16") -> float:
    """Seconds one GPU takes for ``C[m, n] = A[m, k] @ B[k, n]`` (see the module documentation).

    Parameters
    ----------
    device : str or DeviceSpec
        The GPU, a name in :data:`DEVICES` (as :meth:`Topology.device` gives it) or a spec.
    m, n, k : int
        The product's dimensions, each at least 1.
    dtype : str, optional
        Element type of ``A``, ``B`` and ``C`` (see :data:`DTYPES`); default bf16.

    Returns
    -------
    float
        ``LAUNCH_SECONDS + max(compute, memory)``; non-decreasing in ``m``, ``n`` and ``k``.

    Raises
    ------
    TopologyError
        If the device or dtype is unknown, the device lacks the dtype, or a dimension is not
        a positive integer.

    Examples
    --------
    Flux's TP=8 all-gather + GEMM on an H800, per rank (published: 0.846 ms with cuBLAS):

    >>> round(1e3 * matmul_seconds("H800", 4096, 6144, 12288, "bf16"), 3)
    0.817
    """
    spec = device_spec(device)
    canonical = _dtype(dtype, "matmul_seconds")
    _check_dims(m, n, k)
    peak = _peak(spec, dtype, "matmul_seconds") * 1e12
    return LAUNCH_SECONDS + max(_compute_seconds(spec, peak, m, n, k), _memory_seconds(spec, _ITEMSIZE[canonical], m, n, k))


def matmul_efficiency(device: str | DeviceSpec, m: int, n: int, k: int, dtype: str = "bf16") -> float:
    """Fraction of the dense peak :func:`matmul_seconds` achieves: ``2*m*n*k / (time * peak)``.

    Parameters and errors as for :func:`matmul_seconds`.

    Returns
    -------
    float
        In ``(0, 1)``.

    Examples
    --------
    >>> big, skinny = matmul_efficiency("H100", 8192, 8192, 8192), matmul_efficiency("H100", 16, 8192, 8192)
    >>> 0.7 < big < 0.8, skinny < 0.05
    (True, True)
    """
    spec = device_spec(device)
    seconds = matmul_seconds(spec, m, n, k, dtype)
    return 2.0 * m * n * k / (seconds * _peak(spec, dtype, "matmul_efficiency") * 1e12)


def _compute_seconds(spec: DeviceSpec, peak: float, m: int, n: int, k: int) -> float:
    """Waves of tiles, each a full tile's ``2 * tile_m * tile_n * (k/split + K_OVERHEAD)`` FLOP."""
    tiles = math.ceil(m / spec.tile_m) * math.ceil(n / spec.tile_n)
    split = max(1, spec.sms // tiles)  # split-K over SMs the tiles leave idle (1 once they fill half)
    waves = math.ceil(tiles * split / spec.sms)
    per_sm = peak * spec.efficiency / spec.sms  # FLOP/s one SM sustains in a full wave
    return waves * 2.0 * spec.tile_m * spec.tile_n * (k / split + K_OVERHEAD) / per_sm


def _memory_seconds(spec: DeviceSpec, itemsize: int, m: int, n: int, k: int) -> float:
    """Read ``A`` and ``B`` and write ``C`` once at the sustained HBM bandwidth."""
    return (m * k + k * n + m * n) * itemsize / (spec.hbm_bandwidth * 1e9 * MEMORY_EFFICIENCY)


def _peak(spec: DeviceSpec, dtype: str, op: str) -> float:
    peaks = {"bf16": spec.bf16_tflops, "fp16": spec.fp16_tflops, "fp32": spec.fp32_tflops}
    peak = peaks[_dtype(dtype, op)]
    if peak is None:
        have = ", ".join(name for name, value in peaks.items() if value is not None)
        raise TopologyError(f"{op}: device {spec.name!r} has no {_dtype(dtype, op)} peak; expected one of {have}, got {dtype!r}")
    return peak


def _dtype(dtype: object, op: str) -> Dtype:
    canonical = DTYPES.get(dtype.strip().lower()) if isinstance(dtype, str) else None
    if canonical is None:
        raise TopologyError(f"{op}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return canonical


def _check_dims(m: int, n: int, k: int) -> None:
    for name, value in (("m", m), ("n", n), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TopologyError(f"matmul_seconds: {name} must be an integer >= 1, got {value!r}")
