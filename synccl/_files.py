"""Reading the files users name (MSCCL XML, topology JSON, DSL scripts): the one place that opens them.

A file is read up to a limit and no further, whatever it is: a regular file larger than the
limit is refused before any byte is read, and a device or pipe (``/dev/zero``, ``<(cmd)``) is
read until the limit is passed, then refused, so nothing can make a reader hang on an empty
FIFO or fill memory.
"""

from __future__ import annotations

import os
import stat

from synccl.exceptions import SyncclError
from synccl.units import format_size

__all__ = ["read_limited"]

#: Bytes asked of the operating system per read of a device or pipe.
_CHUNK = 1 << 20


def read_limited(path: str | os.PathLike[str], *, limit: int, what: str, error: type[SyncclError] = SyncclError) -> bytes:
    """The bytes of the file ``path``, refusing one longer than ``limit`` bytes.

    Parameters
    ----------
    path : str or os.PathLike
        Any file that can be opened for reading: regular, a character device, a pipe.
    limit : int
        The most bytes accepted; at most ``limit + 1`` are ever read.
    what : str
        The kind of file, for the messages (``"MSCCL XML"``: "... limit of MSCCL XML files").
    error : type
        The :class:`~synccl.exceptions.SyncclError` subclass raised.

    Returns
    -------
    bytes
        The whole file.

    Raises
    ------
    SyncclError
        Of class ``error``, one line starting with the path: if the file cannot be opened or read,
        is a directory, or is longer than ``limit``.

    Examples
    --------
    >>> read_limited("/dev/null", limit=10, what="text")
    b''
    >>> read_limited("/dev/zero", limit=1 << 20, what="MSCCL XML")
    Traceback (most recent call last):
    ...
    synccl.exceptions.SyncclError: /dev/zero is larger than the 1MiB limit of MSCCL XML files
    """
    source = os.fspath(path)
    too_large = f"{source} is larger than the {format_size(limit)} limit of {what} files"
    try:
        # Non-blocking open: a FIFO without a writer opens at once (and then reads as empty) instead of hanging.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise error(f"{source}: cannot read {what} file: {err.strerror or err}") from None
    try:
        mode = os.fstat(fd)
        if stat.S_ISDIR(mode.st_mode):
            raise error(f"{source}: cannot read {what} file: it is a directory")
        if stat.S_ISREG(mode.st_mode) and mode.st_size > limit:
            raise error(too_large)
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as err:
        raise error(f"{source}: cannot read {what} file: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if total > limit:
        raise error(too_large)
    return b"".join(chunks)
