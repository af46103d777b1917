"""Pool.map throughput of a trivial task (tasks/s), CPython baseline for benches/pool.rs.

usage: pool_map.py N CHUNKSIZE WORKERS [pool|executor]
CHUNKSIZE 0 means the default chunking. Prints one figure: tasks per second.
"""
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import Pool


def inc(x):
    return x + 1


def main():
    n, chunksize, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    kind = sys.argv[4] if len(sys.argv) > 4 else "pool"
    if kind == "pool":
        with Pool(workers) as p:
            p.map(inc, range(workers * 4))  # warm up: workers started
            t = time.perf_counter()
            if chunksize:
                out = p.map(inc, range(n), chunksize)
            else:
                out = p.map(inc, range(n))
            dt = time.perf_counter() - t
    else:
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(inc, range(workers * 4)))
            t = time.perf_counter()
            out = list(ex.map(inc, range(n), chunksize=max(chunksize, 1)))
            dt = time.perf_counter() - t
    assert out[-1] == n
    print(n / dt)


if __name__ == "__main__":
    main()
