"""Installed synthesized algorithms: chosen by simulation, listed, and used by the runtime."""

from pathlib import Path

from synccl.cli import main
from synccl.collectives import Algorithm, CollectiveSpec, Step, Transfer
from synccl.synth import install, installed, synthesize
from synccl.topologies import get_topology

WORKER = Path(__file__).with_name("_installed_worker.py")


def test_install_keeps_only_winners(tmp_path):
    ring = get_topology("ring:4")
    smt = synthesize("all_gather", ring, steps=2, rounds=2, chunks=1).to_program()
    # One chunk, one hop per step: twelve steps where the library's ring needs three.
    crawl = tuple(Step((Transfer(g, (g + h) % 4, (g + h + 1) % 4),)) for g in range(4) for h in range(3))
    slow = Algorithm("crawl", CollectiveSpec("all_gather", 4), crawl).to_program()
    results = install([smt], ring, sizes=[1 << 10, 1 << 20], cache_dir=tmp_path)
    assert results[0].path is not None and results[0].min_bytes == 0
    assert [p.name for p in installed(ring, cache_dir=tmp_path)] == [smt.name]
    direct_on_ring = install([slow], ring, sizes=[1 << 20], cache_dir=tmp_path / "other")
    assert direct_on_ring[0].path is None and "library algorithm is faster" in direct_on_ring[0].reason


def test_synth_install_then_the_runtime_uses_it(tmp_path, monkeypatch, capsys, jobs):
    monkeypatch.setenv("SYNCCL_CACHE_DIR", str(tmp_path))
    assert main(["synth", "all_gather", "--topology", "ring:4", "--steps", "2", "--rounds", "2", "--chunks", "1", "--install"]) == 0
    _, err = capsys.readouterr()
    assert "installed for" in err
    assert main(["algo", "list", "--topology", "ring:4", "--collective", "all_gather", "--json"]) == 0
    assert '"source": "installed"' in capsys.readouterr()[0]
    proc = jobs.mpiexec(4, WORKER, env={"SYNCCL_CACHE_DIR": str(tmp_path), "SYNCCL_TOPOLOGY": "ring:4"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("ok=True") == 4 and "smt-all_gather-ring:4" in proc.stdout
