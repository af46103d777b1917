"""Uncontended multiprocessing.Lock acquire+release; prints ns per pair."""
import sys
import time
from multiprocessing import Lock

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
lock = Lock()
acquire, release = lock.acquire, lock.release
t = time.perf_counter()
for _ in range(n):
    acquire()
    release()
dt = time.perf_counter() - t
print(dt / n * 1e9)
