"""The CUDA engine (runtime/_cuda*.py): what needs no GPU runs everywhere, the rest skips without one.

Everywhere: a real compiled plan re-based from host mailboxes to device ones (pure arithmetic, for
every collective), GPU buffers recognized through ``__cuda_array_interface__`` and turned into
placeholders that fault when written, a GPU buffer routed through the communicator's host
preparation (selection, plan compilation, binding) to the engine without a byte of it being
read, ``cuda_available``'s reasons, and the NVRTC build of the average kernel.

With a CUDA device (skipped with ``cuda_available()``'s reason otherwise): every collective on 2
ranks (real processes sharing one GPU) against numpy, a dead rank raising CommError within the
timeout, and the torch backend on CUDA tensors.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import synccl
from synccl.collectives import Buffer, library
from synccl.exceptions import CommError
from synccl.runtime._buffers import as_array, is_cuda_array
from synccl.runtime._cuda import cuda_available
from synccl.runtime._cuda_arrays import describe, device_address, on_device, placeholder_array, placeholder_of
from synccl.runtime._cuda_plan import CHANNEL_ADDRESSES, Region, device_tables, rebase, table_bytes, touched_buffers
from synccl.runtime._kernel_abi import BufferId, Channel, Launch, Step, StepFlag
from synccl.runtime._native import encode
from synccl.runtime._plan import ShareLayout, compile_plan, tile_count
from synccl.runtime._shm import Mailbox, MailboxLayout, Segment, ShmReceiver, ShmSender

NO_GPU = cuda_available()
needs_gpu = pytest.mark.skipif(NO_GPU is not None, reason=f"no usable CUDA device: {NO_GPU}")


class DeviceBuffer:
    """A GPU buffer as CuPy and Numba describe one; nothing reads its (made-up) memory here."""

    def __init__(self, pointer: int, count: int, typestr: str = "<f4", *, readonly: bool = False, strides: tuple[int, ...] | None = None) -> None:
        self.__cuda_array_interface__ = {"shape": (count,), "typestr": typestr, "data": (pointer, readonly), "version": 3, "strides": strides}


# -- GPU buffers on the host side ----------------------------------------------------------------


def test_gpu_buffers_are_recognized_by_their_interface():
    import torch

    assert is_cuda_array(DeviceBuffer(0x7F00_0000_0000, 8))
    assert not is_cuda_array(np.zeros(8)) and not is_cuda_array(torch.zeros(8))
    buffer = describe(DeviceBuffer(0x7F00_0000_0000, 8, "<i8", readonly=True), name="buf", op="allreduce")
    assert (buffer.pointer, buffer.nbytes, buffer.dtype, buffer.readonly) == (0x7F00_0000_0000, 64, np.dtype(np.int64), True)


def test_a_bfloat16_cupy_array_is_read_by_its_dtype_not_its_void_typestr():
    import ml_dtypes

    buf = DeviceBuffer(0x7F00_0000_0000, 8, "<V2")  # what CuPy exports for an ml_dtypes.bfloat16 array
    buf.dtype = np.dtype(ml_dtypes.bfloat16)
    assert describe(buf, name="buf", op="allreduce").dtype == np.dtype(ml_dtypes.bfloat16)


def test_a_placeholder_has_the_buffer_s_shape_and_maps_back_to_its_device_addresses():
    buf = DeviceBuffer(0x7F00_0000_0000, 1000)
    array = as_array(buf, name="sendbuf", op="allreduce", writable=True)
    assert array.shape == (1000,) and array.dtype == np.float32 and on_device({Buffer.INPUT: array})
    assert device_address(array[250:]) == 0x7F00_0000_0000 + 1000
    strided = np.lib.stride_tricks.as_strided(array[8:], shape=(4, 10), strides=(400, 4))
    assert device_address(strided) == 0x7F00_0000_0000 + 32
    # The same device buffer gets the same host addresses: prepared calls and in-place calls are found.
    assert as_array(buf, name="recvbuf", op="allreduce", writable=True).__array_interface__["data"][0] == array.__array_interface__["data"][0]
    assert placeholder_of(np.zeros(3)) is None and device_address(np.zeros(3)) is None


def test_gpu_buffers_are_checked_like_host_ones():
    with pytest.raises(CommError, match="must be contiguous"):
        as_array(DeviceBuffer(0x7F00_0000_0000, 10, strides=(8,)), name="buf", op="allreduce", writable=True)
    with pytest.raises(CommError, match="read-only but the collective writes it"):
        as_array(DeviceBuffer(0x7F00_0000_0000, 10, readonly=True), name="buf", op="allreduce", writable=True)
    with pytest.raises(CommError, match="dtype complex64"):
        as_array(DeviceBuffer(0x7F00_0000_0000, 10, "<c8"), name="buf", op="allreduce", writable=False)
    with pytest.raises(CommError, match="send: buf is in GPU memory"):
        as_array(DeviceBuffer(0x7F00_0000_0000, 10), name="buf", op="send", writable=False, device_ok=False)


def test_writing_a_placeholder_faults_instead_of_losing_gpu_results():
    code = (
        "from synccl.runtime._cuda_arrays import placeholder_array\n"
        "class B:\n"
        "    __cuda_array_interface__ = {'shape': (4,), 'typestr': '<f4', 'data': (1 << 40, False), 'version': 3}\n"
        "a = placeholder_array(B(), name='buf', op='allreduce')\n"
        "print('made', flush=True)\n"
        "a[0] = 1.0\n"
        "print('wrote', flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout == "made\n" and proc.returncode < 0, (proc.returncode, proc.stdout, proc.stderr[-500:])


@pytest.mark.skipif(NO_GPU is None, reason="a CUDA device is usable here: the made-up device buffer would reach it")
def test_a_gpu_buffer_goes_through_host_preparation_untouched_to_the_engine():
    """Selection, plan compilation and binding only read addresses: the call gets as far as CUDA."""
    with synccl.init() as comm:
        with pytest.raises(CommError, match="GPU buffers need a CUDA device through CuPy"):
            comm.allreduce(DeviceBuffer(0x7F00_0000_0000, 4096), DeviceBuffer(0x7F00_0001_0000, 4096))
        assert comm.allreduce(np.arange(3.0)).tolist() == [0.0, 1.0, 2.0]  # refused, not broken
        comm.synchronize()


def test_cuda_available_gives_a_reason_without_a_device_or_without_cupy():
    hide_devices = subprocess.run(
        [sys.executable, "-c", "from synccl.runtime._cuda import cuda_available; print(cuda_available())"],
        capture_output=True, text=True, timeout=120, check=True, env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert hide_devices.stdout.strip() not in ("", "None"), hide_devices.stdout
    no_cupy = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['cupy'] = None\nfrom synccl.runtime._cuda import cuda_available; print(cuda_available())"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert no_cupy.stdout.startswith("CuPy is not installed"), no_cupy.stdout


def test_the_average_kernel_compiles_without_spills():
    from synccl.runtime._cuda_kernels import AVERAGE_KERNEL, compiled_average
    from synccl.runtime._nvrtc import NvrtcNotFoundError

    try:
        kernel = compiled_average("sm_90")
    except NvrtcNotFoundError as err:
        pytest.skip(str(err))
    assert kernel.kernels == (AVERAGE_KERNEL,) and not kernel.spills


# -- plan translation: host mailboxes -> device mailboxes ----------------------------------------

HOST_RANKS = 2
DEVICE_IN, DEVICE_OUT, DEVICE_SCRATCH = 0x7E00_0000_0000, 0x7E10_0000_0000, 0x7E20_0000_0000
DEVICE_MAILBOX = (0x7D00_0000_0000, 0x7D10_0000_0000)  # rank 0's own allocation, rank 1's as opened through IPC
DEVICE_TABLES, DEVICE_ABORT = 0x7C00_0000_0000, 0x7B00_0000_0000


@pytest.fixture(scope="module")
def mailboxes():
    """Both ranks' host mailboxes, as rank 0 maps them (real shared-memory segments)."""
    layout = MailboxLayout(HOST_RANKS, 8, 4, 64 << 10)
    segments = [Segment.create(layout.size) for _ in range(HOST_RANKS)]
    yield [Mailbox(seg, layout) for seg in segments]
    for seg in segments:
        seg.unlink()


def _plan(mailboxes, collective: str, inplace: bool, me: int = 0):
    """Rank ``me``'s plan of the library's first algorithm, compiled and bound over placeholders."""
    info = next(iter(library.applicable(collective, HOST_RANKS, local_size=HOST_RANKS)))
    program = library.build(info.name, collective, HOST_RANKS)
    share = 40_000  # elements: several tiles of 64 KiB slots
    split = collective in ("reduce_scatter", "all_to_all", "scatter")
    gathered = collective in ("all_gather", "gather", "all_to_all")
    send = placeholder_array(DeviceBuffer(DEVICE_IN, share * (HOST_RANKS if split else 1)), name="sendbuf", op=collective)
    recv = send if inplace else placeholder_array(DeviceBuffer(DEVICE_OUT, share * (HOST_RANKS if gathered else 1)), name="recvbuf", op=collective)
    buffers = {Buffer.INPUT: send, Buffer.OUTPUT: recv}
    layout = ShareLayout(share, program.spec.chunk_factor)
    tiles = tile_count(program, layout.largest_piece, 4, 64 << 10)
    plan = compile_plan(program, me, layout, buffers, tiles=tiles)
    for steps in plan.channels:
        for step in steps:
            receiver = ShmReceiver(mailboxes[me], step.recv_peer, step.lane) if step.recv_peer is not None else None
            sender = ShmSender(mailboxes[step.send_peer], me, step.lane) if step.send_peer is not None else None
            step.bind(receiver, sender, None)
    native = encode(plan, buffers, op="sum", check=True, local_index={0: 0, 1: 1}, slots=4, slot_stride=mailboxes[0].layout.slot_stride)
    return plan, native, buffers


def _translate(mailboxes, native, buffers):
    regions = [Region(mailboxes[r].address, mailboxes[r].layout.size, DEVICE_MAILBOX[r]) for r in range(HOST_RANKS)]
    addresses = {BufferId.INPUT: device_address(buffers[Buffer.INPUT]), BufferId.OUTPUT: device_address(buffers[Buffer.OUTPUT]), BufferId.SCRATCH: DEVICE_SCRATCH}
    return device_tables(native, base=DEVICE_TABLES, buffers=addresses, mailboxes=regions, abort=DEVICE_ABORT, timeout_ns=7_000_000_000)


def _table(tables, word: Launch, rows: int, width: int) -> np.ndarray:
    at = (int(tables.words[word]) - DEVICE_TABLES) // 8
    return tables.words[at : at + rows * width].reshape(rows, width)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("collective", ["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce", "gather", "scatter"])
def test_a_compiled_plan_is_re_based_onto_device_mailboxes_and_buffers(mailboxes, collective, inplace):
    if inplace and collective in ("gather", "scatter"):
        pytest.skip("gather and scatter run out of place")
    plan, native, buffers = _plan(mailboxes, collective, inplace)
    steps, deps, channels, _ = native.tables
    tables = _translate(mailboxes, native, buffers)
    assert tables.words.nbytes == table_bytes(native) and tables.nchannels == len(plan.channels)
    launch = tables.words[: Launch.COUNT]
    # Steps name buffers by id and offset: they move unchanged; so do dependencies.
    assert np.array_equal(_table(tables, Launch.STEPS, *steps.shape), steps)
    assert np.array_equal(_table(tables, Launch.DEPS, *deps.shape), deps)
    # Every connection address moves by its own mailbox's offset: receiving ends in rank 0's own
    # mailbox, sending ends in the peer's.
    device_channels = _table(tables, Launch.CHANNELS, *channels.shape)
    for host_row, device_row in zip(channels, device_channels, strict=True):
        for word in CHANNEL_ADDRESSES:
            owner = 0 if word.name.startswith("RECV") else 1
            want = 0 if host_row[word] == 0 else DEVICE_MAILBOX[owner] + int(host_row[word]) - mailboxes[owner].address
            assert device_row[word] == want, (word.name, hex(int(host_row[word])))
        for word in (Channel.FIRST_STEP, Channel.NSTEPS, Channel.RECV_PEER):
            assert device_row[word] == host_row[word]
    assert any(row[Channel.SEND_SLOTS] or row[Channel.RECV_SLOTS] for row in device_channels)  # a root may only send or only receive
    assert launch[Launch.INPUT] == DEVICE_IN and launch[Launch.OUTPUT] == (DEVICE_IN if inplace else DEVICE_OUT)
    assert launch[Launch.SCRATCH] == DEVICE_SCRATCH and launch[Launch.ABORT] == DEVICE_ABORT and launch[Launch.TIMEOUT_NS] == 7_000_000_000
    assert launch[Launch.STATE] - DEVICE_TABLES == tables.state_offset and tables.state_bytes == native.state.nbytes
    assert (launch[Launch.PEER_REGIONS], launch[Launch.REGION_CAP], launch[Launch.SIGNATURE], launch[Launch.REPORT]) == (0, 0, 0, 0)
    for word in (Launch.NCHANNELS, Launch.DTYPE, Launch.OP, Launch.CHECK, Launch.NSLOTS, Launch.SLOT_STRIDE):
        assert launch[word] == native.launch[word]
    # What a step reads or writes lies inside its device buffer.
    sizes = {BufferId.INPUT: buffers[Buffer.INPUT].nbytes, BufferId.OUTPUT: buffers[Buffer.OUTPUT].nbytes, BufferId.SCRATCH: plan.scratch.nbytes}
    for row in steps:
        for flag, buffer, offset, stride in ((StepFlag.READS_SRC, Step.SRC_BUFFER, Step.SRC_OFFSET, Step.SRC_STRIDE), (StepFlag.WRITES_DST, Step.DST_BUFFER, Step.DST_OFFSET, Step.DST_STRIDE)):
            if row[Step.FLAGS] & flag and row[Step.ROWS] * row[Step.ROW_BYTES]:
                end = row[offset] + (row[Step.ROWS] - 1) * row[stride] + row[Step.ROW_BYTES]
                assert 0 <= row[offset] and end <= sizes[BufferId(int(row[buffer]))]


def test_a_non_root_gather_leaves_its_output_untouched(mailboxes):
    """So the communicator's host stand-in for the output of a non-root may stay on the host."""
    _, native, _ = _plan(mailboxes, "gather", False, me=1)  # the library's gather has root 0
    assert BufferId.OUTPUT not in touched_buffers(native) and BufferId.INPUT in touched_buffers(native)
    _, native, _ = _plan(mailboxes, "all_reduce", False)
    assert {BufferId.INPUT, BufferId.OUTPUT} <= touched_buffers(native)


def test_an_address_outside_every_mailbox_is_refused():
    with pytest.raises(CommError, match="lies in no mailbox mapped on the device"):
        rebase(0x2000, [Region(0x1000, 0x100, 0x9000)], "channel word SEND_HEAD")


def test_the_gpu_check_needs_no_solver(tmp_path):
    """The GPU machine's Python has no z3 or HiGHS (make gpu-check installs synccl without dependencies)."""
    for solver in ("z3", "highspy"):
        (tmp_path / f"{solver}.py").write_text("raise ImportError('not on the GPU machine')\n")
    script = (
        "import synccl.bench._gpu_worker, synccl.torch\n"
        "from synccl.bench.gpu_check import _kernels\n"
        "phase = _kernels('sm_90')\n"
        "assert phase.ok, phase.failures\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "registers/thread, spills 0 B stored / 0 B loaded" in done.stdout, done.stdout


# -- on a GPU: real processes sharing it ------------------------------------------------------------


@needs_gpu
def test_every_collective_on_two_ranks_sharing_a_gpu(no_leftover_segments):
    from synccl.bench.gpu_check import run_phase

    phase = run_phase("collectives", 2, str(1 << 20))
    assert phase.ok and phase.cases > 60, phase.failures


@needs_gpu
def test_a_dead_rank_raises_comm_error_within_the_timeout():
    from synccl.bench.gpu_check import run_phase

    phase = run_phase("dead", 2, env={"SYNCCL_TIMEOUT": "20"}, limit_s=120)
    survivor = next(line for line in phase.lines if line["rank"] == 0)
    assert survivor["nfailures"] == 0, survivor["failures"]
    assert survivor["raised_after_s"] < 20, survivor


@needs_gpu
def test_the_torch_backend_on_cuda_tensors():
    from synccl.bench.gpu_check import run_phase

    phase = run_phase("torch", 2)
    assert phase.ok and phase.cases > 0, phase.failures
