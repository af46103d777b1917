"""P processes x N increments of a multiprocessing.Value under its own lock
(`with v.get_lock(): v.value += 1`). Prints nanoseconds per increment, from the
first worker's start to the last one's end (each stamps time.monotonic_ns()
itself: a parent timing from the start barrier may run only after its busy
workers are done)."""
import sys
import time
from multiprocessing import Array, Barrier, Process, Value


def work(i, v, n, start, stamps):
    start.wait()
    t0 = time.monotonic_ns()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    stamps[2 * i], stamps[2 * i + 1] = t0, time.monotonic_ns()


if __name__ == "__main__":
    procs = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    v, start = Value("q", 0), Barrier(procs + 1)
    stamps = Array("q", 2 * procs, lock=False)
    ps = [Process(target=work, args=(i, v, n, start, stamps)) for i in range(procs)]
    for p in ps:
        p.start()
    start.wait()
    for p in ps:
        p.join()
    assert v.value == procs * n, v.value
    span = max(stamps[1::2]) - min(stamps[0::2])
    print(span / (procs * n))
