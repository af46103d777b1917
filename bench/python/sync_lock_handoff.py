"""Two processes hand a multiprocessing.Lock back and forth: each waits for its
turn (a RawValue read under the lock) and passes it on, or releases the
lock and yields the CPU when it is not its turn ("polite", the default), or
re-takes the lock at once ("busy"). Usage:
sync_lock_handoff.py [N] [polite|busy] [CPU0 CPU1] (player i pins itself to CPUi).
Prints microseconds per handoff, from the first player's start to the last
one's end (each stamps time.monotonic_ns() itself)."""
import os
import sys
import time
from multiprocessing import Array, Barrier, Lock, Process, RawValue


def player(me, n, lock, turn, start, polite, stamps, cpus):
    if cpus:
        os.sched_setaffinity(0, {cpus[me]})
    start.wait()
    t0 = time.monotonic_ns()
    done = 0
    while done < n:
        with lock:
            mine = turn.value == me
            if mine:
                turn.value = 1 - me
                done += 1
        if not mine and polite:
            os.sched_yield()
    stamps[2 * me], stamps[2 * me + 1] = t0, time.monotonic_ns()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    polite = (sys.argv[2] if len(sys.argv) > 2 else "polite") == "polite"
    cpus = [int(c) for c in sys.argv[3:5]] if len(sys.argv) > 4 else None
    lock, turn, start = Lock(), RawValue("i", 0), Barrier(3)
    stamps = Array("q", 4, lock=False)
    ps = [
        Process(target=player, args=(me, n, lock, turn, start, polite, stamps, cpus))
        for me in (0, 1)
    ]
    for p in ps:
        p.start()
    start.wait()
    for p in ps:
        p.join()
    span = max(stamps[1::2]) - min(stamps[0::2])
    print(span / (2 * n) / 1e3)
