"""NVRTC compiles kernels held in memory into cubins, reports registers and spills, and caches builds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synccl.runtime._kernel_source import GPU_ENTRY, KERNEL_DIR
from synccl.runtime._nvrtc import (
    ArchitectureError,
    KernelBuildError,
    NvrtcNotFoundError,
    compile_cached,
    compile_kernel,
    compiled_executor,
    nvrtc_version,
    parse_ptxas_log,
)

ARCHS = ["sm_80", "sm_90"]
ELF_MAGIC = b"\x7fELF"

# A templated kernel whose width comes from a header given in memory.
SCALE_SOURCE = """#include "width.h"
template <int W>
__device__ void scale(float* x, float by) {
  for (int i = 0; i < W; ++i) x[threadIdx.x * W + i] *= by;
}
extern "C" __global__ void scale_kernel(float* x, float by) { scale<WIDTH>(x, by); }
"""
SCALE_HEADERS = {"width.h": "#pragma once\n#define WIDTH 4\n"}

# Holds 32 doubles per thread and multiplies every pair: more than 24 registers can hold.
PRESSURE_SOURCE = """extern "C" __global__ void pressure(double* x) {
  double a[32];
  for (int j = 0; j < 32; ++j) a[j] = x[j * threadIdx.x];
  double s = 0;
  for (int j = 0; j < 32; ++j)
    for (int k = 0; k < 32; ++k) s += a[j] * a[k] * x[j + k];
  x[0] = s;
}
"""


@pytest.fixture
def nvrtc():
    """Skips when libnvrtc cannot be found (pip install nvidia-cuda-nvrtc-cu12)."""
    try:
        return nvrtc_version()
    except NvrtcNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    """An empty kernel cache for this test."""
    monkeypatch.setenv("SYNCCL_KERNEL_CACHE", str(tmp_path / "kernels"))
    return tmp_path / "kernels"


@pytest.fixture
def session_kernel_cache(tmp_path_factory, monkeypatch):
    """One kernel cache for the whole session (the executor is compiled once per architecture)."""
    folder = tmp_path_factory.getbasetemp() / "synccl-kernels"
    monkeypatch.setenv("SYNCCL_KERNEL_CACHE", str(folder))
    return folder


def test_version(nvrtc):
    assert nvrtc >= (11, 2)


@pytest.mark.parametrize("arch", ARCHS)
def test_compiles_a_templated_kernel_with_an_in_memory_header(nvrtc, arch):
    kernel = compile_kernel(SCALE_SOURCE, name="scale.cu", headers=SCALE_HEADERS, arch=arch)
    assert kernel.arch == arch and kernel.kernels == ("scale_kernel",)
    assert kernel.cubin[:4] == ELF_MAGIC and kernel.registers > 0
    assert (kernel.spill_store_bytes, kernel.spill_load_bytes, kernel.spills) == (0, 0, False)
    assert f"for '{arch}'" in kernel.log and not kernel.cached


def test_headers_come_only_from_memory(nvrtc):
    with pytest.raises(KernelBuildError, match=r'cannot open source file "width.h"'):
        compile_kernel(SCALE_SOURCE, name="scale.cu", headers={}, arch="sm_80")


def test_a_syntax_error_raises_with_the_compilers_message(nvrtc):
    with pytest.raises(KernelBuildError, match=r"'bad.cu' for sm_80 failed .*bad.cu\(1\): error: expected a \";\"") as info:
        compile_kernel('extern "C" __global__ void f(int* x) { x[0] = 1 }\n', name="bad.cu", headers={}, arch="sm_80")
    assert "\n" not in str(info.value) and "1 error detected" in info.value.log


def test_a_source_without_kernel_raises(nvrtc):
    with pytest.raises(KernelBuildError, match="no kernel compiled"):
        compile_kernel("__device__ int one() { return 1; }\n", name="none.cu", headers={}, arch="sm_80")


def test_spills_are_reported(nvrtc):
    kernel = compile_kernel(PRESSURE_SOURCE, name="pressure.cu", headers={}, arch="sm_80", options=["--maxrregcount=24"])
    assert kernel.registers <= 24 and kernel.spill_store_bytes > 0 and kernel.spill_load_bytes > 0 and kernel.spills


@pytest.mark.parametrize("arch", ["compute_80", "sm80", "80", "sm_80/../x", ""])
def test_an_architecture_must_be_a_real_one(arch):
    with pytest.raises(ArchitectureError, match="such as 'sm_80'"):
        compile_kernel(SCALE_SOURCE, name="scale.cu", headers=SCALE_HEADERS, arch=arch)


def test_the_second_build_is_read_from_the_cache(nvrtc, kernel_cache):
    first = compile_cached(SCALE_SOURCE, name="scale.cu", headers=SCALE_HEADERS, arch="sm_90")
    (cubin,) = kernel_cache.glob("scale-sm_90-*.cubin")
    assert cubin.read_bytes() == first.cubin and cubin.with_suffix(".json").is_file() and not first.cached
    second = compile_cached(SCALE_SOURCE, name="scale.cu", headers=SCALE_HEADERS, arch="sm_90")
    assert second.cached and second == first
    assert sorted(p.name for p in kernel_cache.iterdir()) == sorted([cubin.name, cubin.with_suffix(".json").name, "nvrtc-build.lock"])


def test_every_input_names_its_own_build(nvrtc, kernel_cache):
    compile_cached(SCALE_SOURCE, name="scale.cu", headers=SCALE_HEADERS, arch="sm_80")
    compile_cached(SCALE_SOURCE, name="scale.cu", headers={"width.h": "#define WIDTH 8\n"}, arch="sm_80")
    compile_cached(SCALE_SOURCE, name="scale.cu", headers=SCALE_HEADERS, arch="sm_80", options=["-DUNUSED=1"])
    assert len(list(kernel_cache.glob("scale-sm_80-*.cubin"))) == 3


def test_a_damaged_cache_entry_is_compiled_again(nvrtc, kernel_cache):
    first = compile_cached(SCALE_SOURCE, name="scale.cu", headers=SCALE_HEADERS, arch="sm_80")
    (cubin,) = kernel_cache.glob("*.cubin")
    cubin.write_bytes(first.cubin[:100])
    again = compile_cached(SCALE_SOURCE, name="scale.cu", headers=SCALE_HEADERS, arch="sm_80")
    assert not again.cached and again == first and cubin.read_bytes() == first.cubin


def test_ranks_starting_together_compile_once(nvrtc, kernel_cache):
    code = (
        "import hashlib, sys\n"
        "from synccl.runtime._nvrtc import compile_cached\n"
        f"k = compile_cached({SCALE_SOURCE!r}, name='scale.cu', headers={SCALE_HEADERS!r}, arch='sm_80')\n"
        "print(k.cached, hashlib.sha256(k.cubin).hexdigest())\n"
    )
    env = {**os.environ, "SYNCCL_KERNEL_CACHE": str(kernel_cache)}
    ranks = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    outputs = [rank.communicate(timeout=120)[0].split() for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks)
    assert sorted(cached for cached, _ in outputs) == ["False", "True", "True"] and len({digest for _, digest in outputs}) == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_the_executor_compiles_without_spills(nvrtc, session_kernel_cache, arch):
    if not (KERNEL_DIR / GPU_ENTRY).exists():
        pytest.skip(f"the executor kernel is not written yet: no {KERNEL_DIR / GPU_ENTRY}")
    kernel = compiled_executor(arch)
    assert kernel.cubin[:4] == ELF_MAGIC and kernel.kernels and 0 < kernel.registers <= 255
    assert (kernel.spill_store_bytes, kernel.spill_load_bytes) == (0, 0), kernel.log
    assert compiled_executor(arch).cached


COMPILE_WITH = """
import sys
import synccl.runtime._nvrtc as nvrtc
nvrtc._candidates = lambda: [sys.argv[1]]
kernel = nvrtc.compiled_executor("sm_90")
print(*nvrtc.nvrtc_version(), kernel.registers, kernel.spill_store_bytes + kernel.spill_load_bytes)
"""


def test_every_nvrtc_wheel_found_compiles_the_executor(nvrtc, tmp_path):
    """CUDA 12's and CUDA 13's wheels (the test extra installs both); each in its own process."""
    from synccl.runtime._nvrtc import _candidates

    wheels = [path for path in _candidates() if "/nvidia/" in path]
    majors = set()
    for path in wheels:
        env = {**os.environ, "SYNCCL_KERNEL_CACHE": str(tmp_path / Path(path).name)}
        done = subprocess.run([sys.executable, "-c", COMPILE_WITH, path], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert done.returncode == 0, (path, done.stderr[-2000:])
        major, _, registers, spilled = map(int, done.stdout.split())
        assert 0 < registers <= 255 and spilled == 0, (path, done.stdout)
        majors.add(major)
    assert majors >= {12, 13}, f"want NVRTC 12 and 13 (the test extra installs nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvrtc), found {wheels}"


# -- reading ptxas's report (no NVRTC needed) ---------------------------------------------------

CUDA11_LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k' for 'sm_80'
ptxas info    : Function properties for k
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 14 registers, 360 bytes cmem[0]
"""

CUDA12_LOG_WITH_CALLEE = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'a' for 'sm_90'
ptxas info    : Function properties for a
ptxas         .     512 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 512 bytes cumulative stack size
ptxas info    : Compile time = 62.589 ms
ptxas info    : Compiling entry function 'b' for 'sm_90'
ptxas info    : Function properties for b
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 24 registers, used 0 barriers
ptxas info    : Function properties for _Z1gPdi
ptxas         .     0 bytes stack frame, 16 bytes spill stores, 24 bytes spill loads
"""


def test_parses_a_cuda_11_report():
    usage = parse_ptxas_log(CUDA11_LOG)
    assert (usage.kernels, usage.registers, usage.spill_store_bytes, usage.spill_load_bytes) == (("k",), 14, 0, 0)


def test_takes_the_most_registers_and_every_functions_spills():
    usage = parse_ptxas_log(CUDA12_LOG_WITH_CALLEE)
    assert (usage.kernels, usage.registers, usage.spill_store_bytes, usage.spill_load_bytes) == (("a", "b"), 32, 16, 24)


@pytest.mark.parametrize(
    "log",
    [
        "",
        CUDA11_LOG.replace("Used 14 registers", "Using 14 regs"),
        CUDA11_LOG.replace("0 bytes spill stores, 0 bytes spill loads", "no spills"),
    ],
    ids=["empty", "registers-line-changed", "spill-line-changed"],
)
def test_an_unreadable_report_raises_instead_of_reporting_zeros(log):
    with pytest.raises(KernelBuildError, match="ptxas report"):
        parse_ptxas_log(log)


def test_the_cuda_12_wheel_is_tried_first(nvrtc):
    import importlib.util

    from synccl.runtime._nvrtc import _candidates

    spec = importlib.util.find_spec("nvidia")
    wheel = [
        path
        for root in (spec.submodule_search_locations if spec else [])
        if (path := Path(root, "cuda_nvrtc", "lib", "libnvrtc.so.12")).is_file()
    ]
    if not wheel:
        pytest.skip("nvidia-cuda-nvrtc-cu12 is not installed")
    assert _candidates()[0] == str(wheel[0])
