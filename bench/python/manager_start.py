"""CPython baseline: start a Manager and shut it down. Prints one figure: seconds
per start+shutdown. Usage: manager_start.py N
"""
import sys
import time
from multiprocessing import Manager

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    t = time.perf_counter()
    for _ in range(n):
        m = Manager()
        m.shutdown()
    print((time.perf_counter() - t) / n)
