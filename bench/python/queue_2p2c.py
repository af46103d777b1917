"""CPython baseline: multiprocessing.Queue, 2 producer processes -> 2 consumer processes.
Usage: queue_2p2c.py N (total items). Prints items/s."""
import multiprocessing as mp
import sys
import time


def produce(q, n):
    for i in range(n):
        q.put(i)


def consume(q, n):
    for _ in range(n):
        q.get()


if __name__ == "__main__":
    n = int(sys.argv[1]) // 2 * 2
    q = mp.Queue()
    t = time.perf_counter()
    ps = [mp.Process(target=produce, args=(q, n // 2)) for _ in range(2)]
    ps += [mp.Process(target=consume, args=(q, n // 2)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    print(n / (time.perf_counter() - t))
