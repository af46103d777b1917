"""CPython baseline: multiprocessing.Queue, 1 producer process -> 1 consumer (the parent).
Usage: queue_1p1c.py N [simple] [steady]. Prints items/s: over the whole run, from
before the producer starts; with "steady", from the first item the parent gets to
the last (the producer's start left out, as the Rust side of that scenario does)."""
import multiprocessing as mp
import sys
import time


def produce(q, n):
    for i in range(n):
        q.put(i)


if __name__ == "__main__":
    n = int(sys.argv[1])
    simple = "simple" in sys.argv[2:]
    steady = "steady" in sys.argv[2:]
    q = mp.SimpleQueue() if simple else mp.Queue()
    t = time.perf_counter()
    p = mp.Process(target=produce, args=(q, n))
    p.start()
    q.get()
    if steady:
        t = time.perf_counter()
    for _ in range(n - 1):
        q.get()
    dt = time.perf_counter() - t
    p.join()
    print((n - 1 if steady else n) / dt)
