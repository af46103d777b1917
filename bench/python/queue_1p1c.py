"""CPython baseline: multiprocessing.Queue, 1 producer process -> 1 consumer (the parent).
Usage: queue_1p1c.py N [simple]. Prints items/s."""
import multiprocessing as mp
import sys
import time


def produce(q, n):
    for i in range(n):
        q.put(i)


if __name__ == "__main__":
    n = int(sys.argv[1])
    simple = len(sys.argv) > 2 and sys.argv[2] == "simple"
    q = mp.SimpleQueue() if simple else mp.Queue()
    t = time.perf_counter()
    p = mp.Process(target=produce, args=(q, n))
    p.start()
    for _ in range(n):
        q.get()
    p.join()
    print(n / (time.perf_counter() - t))
