"""Reading user files (synccl/_files.py): bounded whatever the file is, one-line refusals naming file and limit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from synccl._files import read_limited
from synccl.exceptions import ProgramError, SyncclError


def test_regular_file_within_and_over_the_limit(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"x" * 100)
    assert read_limited(path, limit=100, what="text") == b"x" * 100
    with pytest.raises(ProgramError, match=rf"^{path} is larger than the 99B limit of text files$"):
        read_limited(path, limit=99, what="text", error=ProgramError)


def test_a_device_is_read_only_up_to_the_limit():
    with pytest.raises(SyncclError, match=r"^/dev/zero is larger than the 4MiB limit of MSCCL XML files$"):
        read_limited("/dev/zero", limit=4 << 20, what="MSCCL XML")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SyncclError, match=r"nope.xml: cannot read MSCCL XML file: No such file or directory$"):
        read_limited(tmp_path / "nope.xml", limit=10, what="MSCCL XML")
    with pytest.raises(SyncclError, match=r": cannot read DSL file: it is a directory$"):
        read_limited(tmp_path, limit=10, what="DSL")


def test_a_pipe_is_read_to_its_end():
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, b"<algo/>"), os.close(write_end)))
    writer.start()
    try:
        assert read_limited(f"/proc/self/fd/{read_end}", limit=100, what="MSCCL XML") == b"<algo/>"
    finally:
        writer.join()
        os.close(read_end)


def test_a_fifo_without_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = f"from synccl._files import read_limited; print(read_limited({str(fifo)!r}, limit=10, what='x'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "b''", done.stderr
