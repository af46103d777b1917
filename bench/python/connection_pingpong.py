"""8-byte ping-pong round trips over multiprocessing.Pipe between two processes.

Prints one figure: microseconds per round trip (median of the loop's single run).
Pin the caller to one CPU (taskset) before running; the child inherits it.
Usage: python3 connection_pingpong.py N
"""
import sys
import time
from multiprocessing import Pipe, Process


def echo(conn, other):
    other.close()  # or EOF never comes
    while True:
        try:
            m = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(m)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    a, b = Pipe()
    p = Process(target=echo, args=(b, a))
    p.start()
    b.close()
    msg = b"12345678"
    for _ in range(100):  # warm up
        a.send_bytes(msg)
        a.recv_bytes()
    t = time.perf_counter()
    for _ in range(n):
        a.send_bytes(msg)
        a.recv_bytes()
    dt = time.perf_counter() - t
    a.close()
    p.join()
    print(dt / n * 1e6)


if __name__ == "__main__":
    main()
