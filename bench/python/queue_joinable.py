"""CPython baseline: multiprocessing.JoinableQueue, the parent puts N items, one consumer
process takes each and calls task_done, the parent joins. Usage: queue_joinable.py N.
Prints items/s."""
import multiprocessing as mp
import sys
import time


def consume(q, n):
    for _ in range(n):
        q.get()
        q.task_done()


if __name__ == "__main__":
    n = int(sys.argv[1])
    q = mp.JoinableQueue()
    t = time.perf_counter()
    p = mp.Process(target=consume, args=(q, n))
    p.start()
    for i in range(n):
        q.put(i)
    q.join()
    print(n / (time.perf_counter() - t))
    p.join()
