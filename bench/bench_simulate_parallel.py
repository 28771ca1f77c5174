"""Full TEAHUPOO stamps per second on all cores: one simulator process per core, one thread each.

Each process draws ``--n`` stamps (galaxy + neighbours + shot noise + synthetic PAUCam
background + model-profile channel) from its own seed after a warm-up batch; the rate is the
total number of stamps over the wall time of the slowest process.

Usage::

    .venv/bin/python bench/bench_simulate_parallel.py [--processes 2] [--n 3000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time


def _worker(args):
    seed, n, barrier = args
    import torch

    torch.set_num_threads(1)
    from lumos.simulate import Simulator

    sim = Simulator(seed=seed)
    sim.sample(256)  # warm-up: tables, caches
    barrier.wait()
    t0 = time.perf_counter()
    batch = sim.sample(n)
    return len(batch), t0, time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--n", type=int, default=3000, help="stamps per process")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(args.processes)
        with ctx.Pool(args.processes) as pool:
            results = pool.map(_worker, [(1000 + k, args.n, barrier)
                                         for k in range(args.processes)])  # fmt: skip
    total = sum(r[0] for r in results)
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    print(f"{args.processes} processes x 1 thread: {total} full stamps in {wall:.1f} s "
          f"= {total / wall:.0f} stamps/s")  # fmt: skip


if __name__ == "__main__":
    main()
