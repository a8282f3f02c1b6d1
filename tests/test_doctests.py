"""Every docstring example in the package runs (imported under its real synccl.* name)."""

import doctest
import importlib
import pkgutil

import pytest

import synccl


def _modules():
    names = ["synccl"]
    for info in pkgutil.walk_packages(synccl.__path__, "synccl."):
        names.append(info.name)
    for sub in ("topologies", "collectives", "synth", "sim", "runtime", "bench"):
        pkg = importlib.import_module(f"synccl.{sub}")
        names.append(pkg.__name__)
        names.extend(info.name for info in pkgutil.walk_packages(pkg.__path__, f"synccl.{sub}."))
    return sorted(set(n for n in names if not n.endswith("__main__")))


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
