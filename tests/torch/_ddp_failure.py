"""A rank dies in the middle of DDP training; the survivor must get a Python error, not a crash."""

from __future__ import annotations

import os
import signal
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import synccl.torch  # noqa: F401 - registers the backend


def main() -> int:
    dist.init_process_group("synccl")
    rank = dist.get_rank()
    model = DistributedDataParallel(torch.nn.Linear(64, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    try:
        for step in range(50):
            if rank == 1 and step == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            loss = model(torch.randn(16, 64)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    except Exception as err:  # noqa: BLE001 - the test reads what reached Python
        print(f"{type(err).__name__}: {err}", flush=True)
        os._exit(3)  # the dead peer cannot join a clean shutdown
    print("finished without noticing", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
