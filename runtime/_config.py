"""Runtime settings, read from the environment in this one place.

=========================  =======================================================  =========
variable                   meaning                                                  default
=========================  =======================================================  =========
SYNCCL_TIMEOUT             seconds a rank waits for a peer before raising           60
SYNCCL_SLICE_BYTES         bytes per pipelined slice (one FIFO slot)                512 KiB
SYNCCL_SLOTS               slots per connection FIFO (messages in flight)           4
SYNCCL_MAX_LANES           parallel connections per pair of ranks                   8
SYNCCL_LOCAL_SIZE          ranks per node, to declare several nodes on one machine  (hosts)
SYNCCL_ALGORITHM           force algorithms, e.g. ``ring`` or ``all_reduce=ring``   (by size)
SYNCCL_CHECK_CALLS         check that every rank called the same collective         1
SYNCCL_TOPOLOGY            the job's topology: use the algorithms installed for it  (none)
SYNCCL_CACHE_BYTES         unregistered user memory prepared calls may keep alive   256 MiB
SYNCCL_DEBUG               ``INFO``: log settings and each Program chosen (stderr)  (off)
SYNCCL_ENGINE              ``native``: the executor kernel's host build; ``python``: auto
                           the reference executor; ``auto``: native when a C++
                           compiler can build it, else python
=========================  =======================================================  =========

The timeout bounds the time a rank waits *without progress*: a long call whose peers keep
moving never times out; a peer that stops (or never arrives) is reported after that long.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from synccl.exceptions import SyncclError
from synccl.units import parse_size

__all__ = ["DEBUG_LEVELS", "ENGINES", "RuntimeConfig", "from_environment"]

#: ``SYNCCL_DEBUG`` values, as NCCL_DEBUG's: ``WARN`` logs failures, ``INFO`` also settings and choices.
DEBUG_LEVELS = ("WARN", "INFO")
#: ``SYNCCL_ENGINE`` values: who executes a rank's plan.
ENGINES = ("auto", "native", "python")


class ConfigError(SyncclError, ValueError):
    """A runtime setting has a bad value."""


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The runtime's tunables (see the module docstring for the environment variables)."""

    timeout_s: float = 60.0
    slice_bytes: int = 512 << 10
    slots: int = 4
    max_lanes: int = 8
    local_size: int | None = None
    algorithm: str | None = None
    check_calls: bool = True
    topology: str | None = None
    cache_bytes: int = 256 << 20
    debug: str | None = None
    engine: str = "auto"


def from_environment(**overrides: object) -> RuntimeConfig:
    """Settings from ``SYNCCL_*`` variables, with keyword ``overrides`` taking precedence.

    >>> from_environment(slots=2).slots
    2
    """
    env = os.environ
    values: dict[str, object] = {}
    try:
        if "SYNCCL_TIMEOUT" in env:
            values["timeout_s"] = float(env["SYNCCL_TIMEOUT"])
        if "SYNCCL_SLICE_BYTES" in env:
            values["slice_bytes"] = parse_size(env["SYNCCL_SLICE_BYTES"])
        if "SYNCCL_SLOTS" in env:
            values["slots"] = int(env["SYNCCL_SLOTS"])
        if "SYNCCL_MAX_LANES" in env:
            values["max_lanes"] = int(env["SYNCCL_MAX_LANES"])
        if "SYNCCL_CACHE_BYTES" in env:
            values["cache_bytes"] = parse_size(env["SYNCCL_CACHE_BYTES"])
        if env.get("SYNCCL_LOCAL_SIZE"):
            values["local_size"] = int(env["SYNCCL_LOCAL_SIZE"])
    except ValueError as err:
        raise ConfigError(f"runtime settings: {err}") from None
    if env.get("SYNCCL_ALGORITHM"):
        values["algorithm"] = env["SYNCCL_ALGORITHM"]
    if env.get("SYNCCL_TOPOLOGY"):
        values["topology"] = env["SYNCCL_TOPOLOGY"]
    if env.get("SYNCCL_DEBUG"):
        values["debug"] = env["SYNCCL_DEBUG"].upper()
    if env.get("SYNCCL_ENGINE"):
        values["engine"] = env["SYNCCL_ENGINE"].lower()
    if "SYNCCL_CHECK_CALLS" in env:
        values["check_calls"] = env["SYNCCL_CHECK_CALLS"] not in ("0", "false", "no", "")
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = RuntimeConfig(**values)  # type: ignore[arg-type]
    for name, low in (("timeout_s", 0.0), ("slice_bytes", 64), ("slots", 1), ("max_lanes", 1)):
        if not getattr(config, name) > low:
            raise ConfigError(f"runtime settings: {name} must be > {low}, got {getattr(config, name)!r}")
    if config.cache_bytes < 0:
        raise ConfigError(f"runtime settings: cache_bytes must be >= 0, got {config.cache_bytes!r}")
    if config.debug is not None and config.debug not in DEBUG_LEVELS:
        raise ConfigError(f"runtime settings: SYNCCL_DEBUG must be one of {', '.join(DEBUG_LEVELS)}, got {config.debug!r}")
    if config.engine not in ENGINES:
        raise ConfigError(f"runtime settings: SYNCCL_ENGINE must be one of {', '.join(ENGINES)}, got {config.engine!r}")
    if config.local_size is not None and config.local_size < 1:
        raise ConfigError(f"runtime settings: local_size must be >= 1, got {config.local_size!r}")
    return config
