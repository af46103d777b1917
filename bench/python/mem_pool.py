"""Pool map with peak RSS: prints `maxrss_kib <parent> <worker>` (see rss.py), then
tasks per second.

Usage: python3 mem_pool.py WORKERS N
Pool(WORKERS) (forkserver, the default start method of Python 3.14 on Linux) maps a
trivial function over range(N) with the default chunk size (timed); then each
worker reports its own peak RSS (untimed) and the largest is the worker figure.
"""
import multiprocessing as mp
import sys
import time

import rss


def square(x):
    return x * x


def peak(_):
    return rss.peak_kib()


def main():
    workers, n = int(sys.argv[1]), int(sys.argv[2])
    ctx = mp.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        t = time.perf_counter()
        out = pool.map(square, range(n))
        secs = time.perf_counter() - t
        assert out[-1] == (n - 1) ** 2
        worker_kib = max(pool.map(peak, range(4 * workers), chunksize=1))
        pool.close()
        pool.join()
    rss.report(worker_kib)
    print(n / secs)


if __name__ == "__main__":
    main()
