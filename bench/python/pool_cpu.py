"""CPU-bound tasks on all cores (s), CPython baseline for benches/pool.rs.

usage: pool_cpu.py TASKS ITERS WORKERS
Each task runs ITERS rounds of integer arithmetic (a 64-bit LCG). Prints one
figure: seconds for all tasks through Pool.map. (Python's per-round cost is far
higher than Rust's, so this figure is shown for reference, not as the same work.)
"""
import sys
import time
from multiprocessing import Pool

MASK = (1 << 64) - 1


def spin(args):
    x, iters = args
    for _ in range(iters):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK
    return x


def main():
    tasks, iters, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    with Pool(workers) as p:
        p.map(spin, [(i, 1) for i in range(workers * 4)])
        t = time.perf_counter()
        p.map(spin, [(i, iters) for i in range(tasks)])
        print(time.perf_counter() - t)


if __name__ == "__main__":
    main()
