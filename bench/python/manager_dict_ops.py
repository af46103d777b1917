"""CPython baseline: manager dict proxy get and set round trips from one process.

Prints one figure: operations per second (each get and each set is one op).
Usage: manager_dict_ops.py N
"""
import sys
import time
from multiprocessing import Manager

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    with Manager() as m:
        d = m.dict()
        d["k"] = 0
        t = time.perf_counter()
        for i in range(n // 2):
            d["k"] = i
            d["k"]
        dt = time.perf_counter() - t
    print(n / dt)
