"""P processes x N increments of a multiprocessing.Value under its own lock
(`with v.get_lock(): v.value += 1`). Prints nanoseconds per increment (wall
time from the start barrier to the last join, over P*N)."""
import sys
import time
from multiprocessing import Barrier, Process, Value


def work(v, n, start):
    start.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


if __name__ == "__main__":
    procs = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    v, start = Value("q", 0), Barrier(procs + 1)
    ps = [Process(target=work, args=(v, n, start)) for _ in range(procs)]
    for p in ps:
        p.start()
    start.wait()
    t = time.perf_counter()
    for p in ps:
        p.join()
    dt = time.perf_counter() - t
    assert v.value == procs * n, v.value
    print(dt / (procs * n) * 1e9)
