"""1 MiB send_bytes/recv_bytes one way over multiprocessing.Pipe.

Prints one figure: MB/s received (10^6 bytes per second).
Usage: python3 connection_stream.py N
"""
import sys
import time
from multiprocessing import Pipe, Process

SIZE = 1 << 20


def sender(conn, other, n):
    other.close()
    payload = b"x" * SIZE
    conn.recv_bytes()  # go
    for _ in range(n):
        conn.send_bytes(payload)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    a, b = Pipe()
    p = Process(target=sender, args=(b, a, n))
    p.start()
    b.close()
    t = time.perf_counter()
    a.send_bytes(b"go")
    total = 0
    for _ in range(n):
        total += len(a.recv_bytes())
    dt = time.perf_counter() - t
    p.join()
    print(total / dt / 1e6)


if __name__ == "__main__":
    main()
