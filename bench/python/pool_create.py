"""Pool create + one task + close + join (ms), CPython baseline for benches/pool.rs.

usage: pool_create.py REPS WORKERS [pool|executor]
Prints one figure: the median milliseconds of REPS cycles.
"""
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import Pool


def inc(x):
    return x + 1


def main():
    reps, workers = int(sys.argv[1]), int(sys.argv[2])
    kind = sys.argv[3] if len(sys.argv) > 3 else "pool"
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        if kind == "pool":
            p = Pool(workers)
            assert p.apply(inc, (1,)) == 2
            p.close()
            p.join()
        else:
            ex = ProcessPoolExecutor(workers)
            assert ex.submit(inc, 1).result() == 2
            ex.shutdown(wait=True)
        times.append((time.perf_counter() - t) * 1000)
    print(statistics.median(times))


if __name__ == "__main__":
    main()
