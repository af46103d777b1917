"""CPython baseline: the seed program's shared counter. N processes each take a
lock and decrement d['count'] (as the seed does). Prints one figure: wall seconds
from the first start to the last join (the manager already running).
Usage: manager_counter.py N
"""
import sys
import time
from multiprocessing import Lock, Manager, Process


def worker(d, key, value, lock):
    with lock:
        d[key] -= value


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    lock = Lock()
    with Manager() as manager:
        d = manager.dict({"count": n})
        t = time.perf_counter()
        procs = [Process(target=worker, args=(d, "count", 1, lock)) for _ in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        dt = time.perf_counter() - t
        assert d["count"] == 0, d
    print(dt)
