"""CUDA C++ compiled in memory by NVRTC (through ctypes) into cubins, and the executor kernel, cached.

:func:`compile_kernel` compiles a source string, with its headers given as text, for one GPU
architecture and reports what ptxas says of the result: registers per thread and bytes spilled to
local memory. :func:`compile_cached` keeps the cubin and those numbers in
:func:`synccl.cache.kernels_dir`, named by a hash of everything compiled (NVRTC version, sources,
architecture, options); :func:`compiled_executor` does so for the executor kernel of
``runtime/kernels/``. No GPU or CUDA driver is needed: NVRTC compiles on any machine.

libnvrtc is looked for, in this order, in the ``nvidia-cuda-nvrtc-cu12`` wheel
(``nvidia/cuda_nvrtc/lib/libnvrtc.so.12``), in any other wheel of the ``nvidia`` namespace
(``nvidia/*/lib/libnvrtc.so*``: CUDA 13's ``nvidia/cu13/lib``), in ``$CUDA_HOME/lib64``, then
where the dynamic loader finds ``libnvrtc``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from synccl.cache import kernels_dir
from synccl.exceptions import KernelBuildError, SyncclError
from synccl.runtime._kernel_source import GPU_ENTRY, KERNEL_DIR, sources

__all__ = [
    "BASE_OPTIONS",
    "ArchitectureError",
    "CompiledKernel",
    "KernelBuildError",
    "NvrtcNotFoundError",
    "PtxasUsage",
    "check_arch",
    "compile_cached",
    "compile_kernel",
    "compiled_executor",
    "nvrtc_version",
    "parse_ptxas_log",
]

logger = logging.getLogger(__name__)

#: Options every compilation gets: C++17, and ptxas's resource report (parsed into registers and spills).
BASE_OPTIONS = ("--std=c++17", "--ptxas-options=--verbose")
_INSTALL_HINT = "pip install nvidia-cuda-nvrtc-cu12, or nvidia-cuda-nvrtc for CUDA 13"
_ARCH = re.compile(r"sm_\d+[a-z]?")
_NVRTC_SUCCESS = 0


class NvrtcNotFoundError(KernelBuildError):
    """libnvrtc is not installed where synccl looks for it."""


class ArchitectureError(SyncclError, ValueError):
    """A GPU architecture is not spelled as a real one (``sm_80``, ``sm_90a``)."""


@dataclass(frozen=True, slots=True)
class PtxasUsage:
    """What ptxas reports for a compiled module.

    ``registers`` is the most any kernel uses per thread; the spill bytes are summed over every
    function (a non-inlined callee spills on its own account).
    """

    kernels: tuple[str, ...]
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int


@dataclass(frozen=True, slots=True)
class CompiledKernel:
    """A cubin for one architecture with its resource usage.

    ``registers`` is per thread (the most over the module's kernels); ``spill_store_bytes`` and
    ``spill_load_bytes`` are summed over its functions (zero when nothing spills); ``log`` is NVRTC's
    log (ptxas's report, with its compile times, and any warnings). ``log`` and ``cached`` (read
    from the kernel cache) take no part in comparisons: two builds of one source are equal.

    Examples
    --------
    >>> kernel = CompiledKernel("sm_80", b"\x7fELF...", ("f",), 40, 0, 0, log="")
    >>> kernel, kernel.spills
    (CompiledKernel(arch='sm_80', kernels=('f',), registers=40, spill_store_bytes=0, spill_load_bytes=0, cached=False), False)
    """

    arch: str
    cubin: bytes = field(repr=False)
    kernels: tuple[str, ...]
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    log: str = field(repr=False, compare=False)
    cached: bool = field(default=False, compare=False)

    @property
    def spills(self) -> bool:
        """Whether any function spills registers to local memory."""
        return self.spill_store_bytes > 0 or self.spill_load_bytes > 0


# -- the library --------------------------------------------------------------------------------


def _candidates() -> list[str]:
    """Where libnvrtc may be, in the order tried (existing files, then the loader's name)."""
    try:
        spec = importlib.util.find_spec("nvidia")  # the namespace package of NVIDIA's wheels; imports nothing
    except (ImportError, ValueError):
        spec = None
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    paths = [root / "cuda_nvrtc" / "lib" / "libnvrtc.so.12" for root in roots]
    paths += sorted((p for root in roots for p in root.glob("*/lib/libnvrtc.so*")), reverse=True)
    cuda_home = os.environ.get("CUDA_HOME")
    if cuda_home:
        paths += sorted(Path(cuda_home, "lib64").glob("libnvrtc.so*"), reverse=True)
    found = list(dict.fromkeys(str(p) for p in paths if p.is_file()))
    by_loader = ctypes.util.find_library("nvrtc")
    return found + ([by_loader] if by_loader else [])


def _load(candidate: str) -> ctypes.CDLL:
    """Load libnvrtc at ``candidate``, with the libnvrtc-builtins beside it loaded first.

    libnvrtc opens libnvrtc-builtins when it compiles; the CUDA 12 wheel's finds it through its
    RUNPATH ($ORIGIN), the CUDA 13 wheel's has none ("failed to open libnvrtc-builtins.so.13.0"),
    so the one beside it is loaded globally first (the ``.alt`` variant is for the ``.alt`` libnvrtc).
    """
    folder = Path(candidate).parent
    if folder.is_absolute():
        for builtins in sorted(folder.glob("libnvrtc-builtins.so*")):
            ctypes.CDLL(str(builtins), mode=os.RTLD_GLOBAL)
    return ctypes.CDLL(candidate)


@cache
def _library() -> ctypes.CDLL:
    """libnvrtc, loaded once, with the signatures of the calls used here."""
    failures = []
    for candidate in _candidates():
        try:
            lib = _load(candidate)
            break
        except OSError as err:
            failures.append(f"{candidate}: {err}")
    else:
        tried = f" ({'; '.join(failures)})" if failures else ""
        raise NvrtcNotFoundError(f"NVRTC: libnvrtc not found{tried}; install it ({_INSTALL_HINT}) or set CUDA_HOME")
    p_int, p_size, p_prog = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_void_p)
    p_str = ctypes.POINTER(ctypes.c_char_p)
    signatures = {
        "nvrtcVersion": [p_int, p_int],
        "nvrtcCreateProgram": [p_prog, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, p_str, p_str],
        "nvrtcCompileProgram": [ctypes.c_void_p, ctypes.c_int, p_str],
        "nvrtcGetProgramLogSize": [ctypes.c_void_p, p_size],
        "nvrtcGetProgramLog": [ctypes.c_void_p, ctypes.c_char_p],
        "nvrtcGetCUBINSize": [ctypes.c_void_p, p_size],
        "nvrtcGetCUBIN": [ctypes.c_void_p, ctypes.c_char_p],
        "nvrtcDestroyProgram": [p_prog],
    }
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, ctypes.c_int
    lib.nvrtcGetErrorString.argtypes, lib.nvrtcGetErrorString.restype = [ctypes.c_int], ctypes.c_char_p
    return lib


def _check(lib: ctypes.CDLL, status: int, call: str) -> None:
    if status != _NVRTC_SUCCESS:
        raise KernelBuildError(f"NVRTC: {call} failed: {lib.nvrtcGetErrorString(status).decode()}")


def nvrtc_version() -> tuple[int, int]:
    """The (major, minor) version of the libnvrtc found.

    Raises
    ------
    NvrtcNotFoundError
        libnvrtc is not installed (``pip install nvidia-cuda-nvrtc-cu12``).

    Examples
    --------
    >>> nvrtc_version() >= (12, 0)  # doctest: +SKIP
    True
    """
    lib = _library()
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


# -- compiling ----------------------------------------------------------------------------------


def compile_kernel(source: str, *, name: str, headers: Mapping[str, str], arch: str, options: Sequence[str] = ()) -> CompiledKernel:
    """Compile CUDA C++ ``source`` for GPU architecture ``arch`` into a cubin.

    Parameters
    ----------
    source : str
        The translation unit; its kernels are declared ``__global__`` (``extern "C"`` keeps
        their names unmangled for the driver).
    name : str
        The file name the compiler gives the source in its messages, e.g. ``"executor.cu"``.
    headers : mapping of str to str
        Header text by the name ``#include`` uses; nothing is read from disk.
    arch : str
        A real architecture, e.g. ``"sm_80"`` or ``"sm_90a"`` (``--gpu-architecture``).
    options : sequence of str
        NVRTC options added to :data:`BASE_OPTIONS` (e.g. ``"-DN=4"``, ``"--maxrregcount=64"``).

    Returns
    -------
    CompiledKernel
        The cubin (an ELF file), registers per thread and spill bytes, parsed from ptxas's report.

    Raises
    ------
    ArchitectureError
        ``arch`` is not a real architecture.
    NvrtcNotFoundError
        libnvrtc is not installed (``pip install nvidia-cuda-nvrtc-cu12``).
    KernelBuildError
        The source does not compile (the message quotes the first errors; ``log`` has all), or
        ptxas's report cannot be read.

    Examples
    --------
    >>> k = compile_kernel('#include "n.h"\\nextern "C" __global__ void f(int* x) { x[0] = N; }',
    ...                    name="f.cu", headers={"n.h": "#define N 4"}, arch="sm_80")  # doctest: +SKIP
    >>> k.kernels, k.cubin[:4], k.spills  # doctest: +SKIP
    (('f',), b'\\x7fELF', False)
    """
    check_arch(arch)
    lib = _library()
    names = list(headers)
    texts = (ctypes.c_char_p * len(names))(*(headers[n].encode() for n in names))
    includes = (ctypes.c_char_p * len(names))(*(n.encode() for n in names))
    program = ctypes.c_void_p()
    _check(
        lib,
        lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), len(names), texts, includes),
        "nvrtcCreateProgram",
    )
    try:
        flags = [f"--gpu-architecture={arch}", *BASE_OPTIONS, *options]
        status = lib.nvrtcCompileProgram(program, len(flags), (ctypes.c_char_p * len(flags))(*(f.encode() for f in flags)))
        log = _program_log(lib, program)
        if status != _NVRTC_SUCCESS:
            what = lib.nvrtcGetErrorString(status).decode()
            raise KernelBuildError(f"compile_kernel: {name!r} for {arch} failed ({what}): {_first_errors(log) or 'no log'}", log=log)
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetCUBINSize(program, ctypes.byref(size)), "nvrtcGetCUBINSize")
        cubin = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))
    usage = parse_ptxas_log(log)
    return CompiledKernel(arch, cubin.raw, usage.kernels, usage.registers, usage.spill_store_bytes, usage.spill_load_bytes, log)


def check_arch(arch: str) -> str:
    """``arch`` when it names a real GPU architecture (what a cubin is built for).

    Examples
    --------
    >>> check_arch("sm_90a")
    'sm_90a'
    >>> check_arch("compute_80")
    Traceback (most recent call last):
    ...
    synccl.runtime._nvrtc.ArchitectureError: compile_kernel: architecture must be a real one such as 'sm_80' or 'sm_90a', got 'compute_80'
    """
    if not _ARCH.fullmatch(arch):
        raise ArchitectureError(f"compile_kernel: architecture must be a real one such as 'sm_80' or 'sm_90a', got {arch!r}")
    return arch


def _program_log(lib: ctypes.CDLL, program: ctypes.c_void_p) -> str:
    size = ctypes.c_size_t()
    _check(lib, lib.nvrtcGetProgramLogSize(program, ctypes.byref(size)), "nvrtcGetProgramLogSize")
    text = ctypes.create_string_buffer(size.value)
    _check(lib, lib.nvrtcGetProgramLog(program, text), "nvrtcGetProgramLog")
    return text.value.decode(errors="replace")


def _first_errors(log: str, limit: int = 3) -> str:
    """The first ``limit`` error lines of a compiler log, on one line (with how many more there are)."""
    errors = [line.strip() for line in log.splitlines() if re.search(r"\berror\s*:", line)]
    more = f" (and {len(errors) - limit} more errors)" if len(errors) > limit else ""
    return "; ".join(errors[:limit]) + more


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_REGISTERS = re.compile(r"\bUsed (\d+) registers?\b")
_PROPERTIES = re.compile(r"Function properties for \S+")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> PtxasUsage:
    """Registers and spills from the report ``--ptxas-options=--verbose`` puts in NVRTC's log.

    Every kernel (``Compiling entry function``) must have its ``Used N registers`` line and every
    ``Function properties`` block its spill line (CUDA 11 to 13 print them so); otherwise this
    raises rather than report zeros.

    Raises
    ------
    KernelBuildError
        The log has no kernel, or a kernel or function lacks its line.

    Examples
    --------
    >>> usage = parse_ptxas_log('''ptxas info    : Compiling entry function 'f' for 'sm_80'
    ... ptxas info    : Function properties for f
    ... ptxas         .     0 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads
    ... ptxas info    : Used 40 registers, used 0 barriers, 360 bytes cmem[0]''')
    >>> usage.kernels, usage.registers, usage.spill_store_bytes
    (('f',), 40, 8)
    >>> parse_ptxas_log("ptxas info    : 0 bytes gmem")
    Traceback (most recent call last):
    ...
    synccl.exceptions.KernelBuildError: ptxas report: no kernel compiled (no "Compiling entry function" line: does the source define an extern "C" __global__ function?)
    """
    kernels = tuple(_ENTRY.findall(log))
    registers = [int(n) for n in _REGISTERS.findall(log)]
    functions = len(_PROPERTIES.findall(log))
    spills = [(int(stores), int(loads)) for stores, loads in _SPILLS.findall(log)]
    if not kernels:
        raise KernelBuildError(
            'ptxas report: no kernel compiled (no "Compiling entry function" line: does the source define an extern "C" __global__ function?)',
            log=log,
        )
    if len(registers) < len(kernels) or len(spills) != functions or functions < len(kernels):
        raise KernelBuildError(
            f"ptxas report: unreadable: {len(kernels)} kernels but {len(registers)} 'Used N registers' lines, "
            f"{functions} functions but {len(spills)} spill lines",
            log=log,
        )
    return PtxasUsage(kernels, max(registers), sum(s for s, _ in spills), sum(loads for _, loads in spills))


# -- the kernel cache ---------------------------------------------------------------------------


def compile_cached(source: str, *, name: str, headers: Mapping[str, str], arch: str, options: Sequence[str] = ()) -> CompiledKernel:
    """:func:`compile_kernel`, kept in :func:`synccl.cache.kernels_dir` (``$SYNCCL_KERNEL_CACHE``).

    A build is named by a hash of the NVRTC version, ``name``, the source, the headers, ``arch``
    and the options: ``<stem>-<arch>-<hash>.cubin`` beside a ``.json`` of its usage and log. Ranks
    that start together take a file lock (``nvrtc-build.lock``), so one compiles and the others read
    its result; files are written whole then renamed, so no reader sees a partial file. A cache
    entry that does not match its recorded hash is compiled again.

    Parameters and exceptions are :func:`compile_kernel`'s; the result has ``cached=True`` when it
    was read from the cache.

    Examples
    --------
    >>> src = 'extern "C" __global__ void f(int* x) { x[0] = 1; }'
    >>> compile_cached(src, name="f.cu", headers={}, arch="sm_90").cubin[:4]  # doctest: +SKIP
    b'\\x7fELF'
    >>> compile_cached(src, name="f.cu", headers={}, arch="sm_90").cached  # doctest: +SKIP
    True
    """
    check_arch(arch)
    stats_path = kernels_dir() / f"{Path(name).stem}-{arch}-{_build_hash(source, name, headers, arch, options)}.json"
    cubin_path = stats_path.with_suffix(".cubin")
    found = _read_cache(stats_path, cubin_path)
    if found is None:
        stats_path.parent.mkdir(parents=True, exist_ok=True)
        with open(stats_path.parent / "nvrtc-build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one rank compiles; the others wait, then read its files
            found = _read_cache(stats_path, cubin_path)
            if found is None:
                kernel = compile_kernel(source, name=name, headers=headers, arch=arch, options=options)
                stats = {k: v for k, v in asdict(kernel).items() if k not in ("cubin", "cached")}
                _write_atomically(cubin_path, kernel.cubin)  # the cubin first: a stats file names a complete cubin
                _write_atomically(
                    stats_path, json.dumps({**stats, "cubin_sha256": hashlib.sha256(kernel.cubin).hexdigest()}, indent=1).encode()
                )
                logger.info("kernel %s for %s compiled into %s", name, arch, cubin_path)
                return kernel
    logger.info("kernel %s for %s read from %s", name, arch, cubin_path)
    return found


def compiled_executor(arch: str, *, options: Sequence[str] = ()) -> CompiledKernel:
    """The executor kernel (``runtime/kernels/executor.cu`` and its headers) compiled for ``arch``, cached.

    Raises
    ------
    KernelBuildError
        The executor source is missing or does not compile; see :func:`compile_cached` for the rest.

    Examples
    --------
    >>> compiled_executor("sm_90").spills  # doctest: +SKIP
    False
    """
    check_arch(arch)
    headers = sources()
    if GPU_ENTRY not in headers:
        raise KernelBuildError(f"compiled_executor: no {GPU_ENTRY!r} in {str(KERNEL_DIR)!r}")
    entry = headers.pop(GPU_ENTRY)
    return compile_cached(entry, name=GPU_ENTRY, headers=headers, arch=arch, options=options)


def _build_hash(source: str, name: str, headers: Mapping[str, str], arch: str, options: Sequence[str]) -> str:
    major, minor = nvrtc_version()
    digest = hashlib.sha256()
    for part in (
        "nvrtc",
        f"{major}.{minor}",
        arch,
        *BASE_OPTIONS,
        *options,
        "\0files",
        name,
        source,
        *(x for h in sorted(headers) for x in (h, headers[h])),
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _read_cache(stats_path: Path, cubin_path: Path) -> CompiledKernel | None:
    """The cached build, or None when absent or not matching its recorded hash."""
    try:
        stats = json.loads(stats_path.read_text())
        cubin = cubin_path.read_bytes()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("kernel cache: ignoring %s: %s", stats_path, err)
        return None
    if not isinstance(stats, dict) or stats.get("cubin_sha256") != hashlib.sha256(cubin).hexdigest():
        logger.warning("kernel cache: ignoring %s: its cubin does not match the recorded hash", stats_path)
        return None
    try:
        return CompiledKernel(
            stats["arch"],
            cubin,
            tuple(stats["kernels"]),
            int(stats["registers"]),
            int(stats["spill_store_bytes"]),
            int(stats["spill_load_bytes"]),
            str(stats["log"]),
            cached=True,
        )
    except (KeyError, TypeError, ValueError) as err:
        logger.warning("kernel cache: ignoring %s: %r", stats_path, err)
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o644)  # mkstemp makes it private; a shared cache folder serves every user
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
