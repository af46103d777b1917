"""Process start + join under one start method: prints milliseconds per start+join.

Usage: python3 process_start.py METHOD N   (METHOD: fork | forkserver | spawn)
The child does nothing. One start+join runs before timing, so a fork server is
already up (as it is for the Rust side).
"""
import multiprocessing as mp
import sys
import time


def nothing():
    pass


def main():
    method, n = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context(method)
    p = ctx.Process(target=nothing)
    p.start()
    p.join()
    t = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=nothing)
        p.start()
        p.join()
        if p.exitcode != 0:
            sys.exit(f"child exited with {p.exitcode}")
    print((time.perf_counter() - t) * 1e3 / n)


if __name__ == "__main__":
    main()
