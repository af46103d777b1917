"""apply_async of N trivial tasks, then get all (tasks/s), CPython baseline for benches/pool.rs.

usage: pool_apply.py N WORKERS [pool|executor]
With `executor`, ProcessPoolExecutor.submit + result. Prints one figure: tasks per second.
"""
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import Pool


def inc(x):
    return x + 1


def main():
    n, workers = int(sys.argv[1]), int(sys.argv[2])
    kind = sys.argv[3] if len(sys.argv) > 3 else "pool"
    if kind == "pool":
        with Pool(workers) as p:
            p.map(inc, range(workers * 4))
            t = time.perf_counter()
            rs = [p.apply_async(inc, (i,)) for i in range(n)]
            out = [r.get() for r in rs]
            dt = time.perf_counter() - t
    else:
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(inc, range(workers * 4)))
            t = time.perf_counter()
            fs = [ex.submit(inc, i) for i in range(n)]
            out = [f.result() for f in fs]
            dt = time.perf_counter() - t
    assert out[-1] == n
    print(n / dt)


if __name__ == "__main__":
    main()
