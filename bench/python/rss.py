"""Peak RSS for the memory column of the benchmarks.

A script measures its workload, then calls report(worker_kib) before printing
its figure; the Rust runner reads the line `maxrss_kib <parent> <worker>`.
peak_kib() is VmHWM from /proc/self/status: the high-water mark that
resource.getrusage(RUSAGE_SELF).ru_maxrss reports for this address space alone
(ru_maxrss starts from the parent's peak after a vfork+exec); a worker calls it
at the end of its work and sends it back.
"""
import resource


def peak_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def report(worker_kib):
    print(f"maxrss_kib {peak_kib()} {int(worker_kib)}", flush=True)
