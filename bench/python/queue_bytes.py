"""CPython baseline: multiprocessing.Queue of bytes items, 1 producer process -> the parent.
Usage: queue_bytes.py N SIZE [MAXSIZE]. Prints MB/s (10^6 bytes per second)."""
import multiprocessing as mp
import sys
import time


def produce(q, n, size):
    for i in range(n):
        q.put(bytes([i % 251]) * size)


if __name__ == "__main__":
    n, size = int(sys.argv[1]), int(sys.argv[2])
    q = mp.Queue(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    t = time.perf_counter()
    p = mp.Process(target=produce, args=(q, n, size))
    p.start()
    total = 0
    for _ in range(n):
        total += len(q.get())
    p.join()
    print(total / (time.perf_counter() - t) / 1e6)
