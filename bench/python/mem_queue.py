"""Queue 1 producer -> 1 consumer with peak RSS: prints `maxrss_kib <parent> <worker>`
(see rss.py), then items per second.

Usage: python3 mem_queue.py N SIZE MAXSIZE
The parent puts N items of SIZE bytes into a Queue(maxsize=MAXSIZE); one worker
process (forkserver, the default start method of Python 3.14 on Linux) gets them
all and sends back its own peak RSS. Timed from the worker's start to its join.
"""
import multiprocessing as mp
import sys
import time

import rss


def consume(q, results, n):
    for _ in range(n):
        q.get()
    results.put(rss.peak_kib())


def main():
    n, size, maxsize = (int(a) for a in sys.argv[1:4])
    ctx = mp.get_context("forkserver")
    q = ctx.Queue(maxsize)
    results = ctx.Queue()
    item = bytes(size)
    t = time.perf_counter()
    p = ctx.Process(target=consume, args=(q, results, n))
    p.start()
    for _ in range(n):
        q.put(item)
    worker_kib = results.get()
    p.join()
    secs = time.perf_counter() - t
    if p.exitcode != 0:
        sys.exit(f"worker exited with {p.exitcode}")
    rss.report(worker_kib)
    print(n / secs)


if __name__ == "__main__":
    main()
