//! The raw limits, written with plain syscalls (libc): what the hardware and the
//! kernel allow with no library in between. Each function does the whole
//! workload once and returns its figure in the unit its name ends with.
//!
//! # Safety
//! Children are made with `fork` from a process that may have other threads, so
//! a child only calls async-signal-safe functions (`read`, `write`, `close`,
//! futex `syscall`, `_exit`) on memory allocated before the fork: no allocation,
//! no locks, no panics. Shared memory is a `MAP_SHARED | MAP_ANONYMOUS` mapping
//! made before the fork, accessed only through atomics by both sides.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Panics with the OS error when a syscall returned -1 (parent side only).
fn check(ret: libc::c_int, what: &str) -> libc::c_int {
    if ret == -1 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    ret
}

/// Forks a child that runs `child` and exits with its code; returns the pid.
/// `child` must be async-signal-safe (see the module's Safety header).
fn fork_child(child: impl FnOnce() -> libc::c_int) -> libc::pid_t {
    // SAFETY: the child runs only `child`, which by this function's contract uses
    // async-signal-safe calls on pre-allocated memory, then `_exit`s without
    // running destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = child();
        // SAFETY: `_exit` is async-signal-safe and never returns.
        unsafe { libc::_exit(code) }
    }
    check(pid, "fork")
}

/// Waits for `pid`; panics unless it exited with status 0.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            check(r, "waitpid");
        }
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "raw child failed: status {status}"
    );
}

/// Writes all of `buf` to `fd`; false on error. Async-signal-safe.
fn write_all(fd: libc::c_int, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n == -1 && errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// Fills all of `buf` from `fd`; false on error or end of file. Async-signal-safe.
fn read_full(fd: libc::c_int, buf: &mut [u8]) -> bool {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: `buf[at..]` is valid for writes of `buf.len() - at` bytes.
        let n = unsafe { libc::read(fd, buf[at..].as_mut_ptr().cast(), buf.len() - at) };
        if n <= 0 {
            if n == -1 && errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        at += n as usize;
    }
    true
}

fn errno() -> libc::c_int {
    // SAFETY: `__errno_location` returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

fn close(fd: libc::c_int) {
    // SAFETY: `fd` is a descriptor this side owns and closes once.
    unsafe { libc::close(fd) };
}

fn socketpair() -> [libc::c_int; 2] {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    check(
        unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        },
        "socketpair",
    );
    fds
}

/// fork + `_exit(0)` + waitpid, `n` times: milliseconds per process.
pub fn fork_waitpid_ms(n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        reap(fork_child(|| 0));
    }
    t.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64
}

/// 8-byte round trips over a socketpair between this process and a forked echo
/// child, `rounds` times: microseconds per round trip.
pub fn socketpair_pingpong_us(rounds: usize) -> f64 {
    let [mine, theirs] = socketpair();
    let pid = fork_child(|| {
        close(mine);
        let mut buf = [0u8; 8];
        while read_full(theirs, &mut buf) {
            if !write_all(theirs, &buf) {
                return 1;
            }
        }
        0
    });
    close(theirs);
    let mut buf = [0u8; 8];
    let t = Instant::now();
    for i in 0..rounds as u64 {
        assert!(write_all(mine, &i.to_le_bytes()), "ping write failed");
        assert!(read_full(mine, &mut buf), "pong read failed");
        assert_eq!(u64::from_le_bytes(buf), i);
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / rounds.max(1) as f64;
    close(mine);
    reap(pid);
    us
}

/// `msgs` messages of `size` bytes (each after an 8-byte length) over a
/// socketpair to a forked child that reads them all and then acknowledges with
/// one byte: MB/s (1 MB = 10^6 bytes) of payload.
pub fn socketpair_stream_mb_s(msgs: usize, size: usize) -> f64 {
    let [mine, theirs] = socketpair();
    let payload = vec![0x5au8; size];
    let mut sink = vec![0u8; size];
    let sink = &mut sink;
    let pid = fork_child(|| {
        close(mine);
        let mut len = [0u8; 8];
        for _ in 0..msgs {
            if !read_full(theirs, &mut len) || u64::from_le_bytes(len) as usize != size {
                return 1;
            }
            if !read_full(theirs, sink) {
                return 1;
            }
        }
        if write_all(theirs, &[1]) {
            0
        } else {
            1
        }
    });
    close(theirs);
    let t = Instant::now();
    for _ in 0..msgs {
        assert!(
            write_all(mine, &(size as u64).to_le_bytes()),
            "stream write failed"
        );
        assert!(write_all(mine, &payload), "stream write failed");
    }
    let mut ack = [0u8; 1];
    assert!(read_full(mine, &mut ack), "stream ack missing");
    let secs = t.elapsed().as_secs_f64();
    close(mine);
    reap(pid);
    (msgs * size) as f64 / secs / 1e6
}

/// Slots in the ring (a power of two).
const RING_CAP: u64 = 4096;

/// A single-producer single-consumer ring of u64 in shared memory. `tail` is
/// written by the producer only, `head` by the consumer only; each side sets
/// its `*_sleeping` word to 1 before it waits on it with a futex, and the other
/// side clears it and wakes it after moving its own index.
#[repr(C, align(64))]
struct Ring {
    tail: AtomicU64,
    _pad0: [u64; 7],
    head: AtomicU64,
    _pad1: [u64; 7],
    consumer_sleeping: AtomicU32,
    producer_sleeping: AtomicU32,
    sum: AtomicU64,
    /// CLOCK_MONOTONIC when the consumer first saw items, and when it was done.
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    _pad2: [u64; 4],
    slots: [AtomicU64; RING_CAP as usize],
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a valid, aligned u32 in a mapping both processes share
    // (a shared futex, no FUTEX_PRIVATE_FLAG); a null timeout waits until woken,
    // and the kernel returns at once if the word no longer holds `expected`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; waking has no memory effects.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// Sleeps on `flag` until `ready()` holds (Dekker-style with the other side's
/// `wake_if_sleeping`: both use SeqCst fences, so either this side sees the
/// progress or the other side sees the flag).
fn sleep_until(flag: &AtomicU32, ready: impl Fn() -> bool) {
    while !ready() {
        flag.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if ready() {
            flag.store(0, Ordering::Relaxed);
            return;
        }
        futex_wait(flag, 1);
        flag.store(0, Ordering::Relaxed);
    }
}

fn wake_if_sleeping(flag: &AtomicU32) {
    fence(Ordering::SeqCst);
    if flag.load(Ordering::Relaxed) == 1 {
        flag.store(0, Ordering::Relaxed);
        futex_wake(flag);
    }
}

/// CLOCK_MONOTONIC in ns (async-signal-safe: usable in a forked child).
pub fn mono_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Sends the u64s 1..=`n` through a shared-memory SPSC ring with futex
/// wake-up to a forked consumer that sums them: messages per second, from
/// the moment the consumer first sees items to the moment it has them all
/// (the steady rate, without the fork; the items of the first batch the
/// consumer finds count as if they had taken no time, which favours the ring).
pub fn shm_ring_msgs_s(n: u64) -> f64 {
    let len = std::mem::size_of::<Ring>();
    // SAFETY: a fresh anonymous shared mapping; no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(
        ptr != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the mapping is `len` bytes, page-aligned (so aligned for Ring),
    // zero-filled (all-zero atomics are valid), and lives until the munmap below,
    // after the child has exited.
    let ring: &Ring = unsafe { &*ptr.cast::<Ring>() };
    let pid = fork_child(|| {
        let (mut head, mut sum) = (0u64, 0u64);
        while head < n {
            sleep_until(&ring.consumer_sleeping, || {
                ring.tail.load(Ordering::Acquire) != head
            });
            if head == 0 {
                ring.first_ns.store(mono_ns(), Ordering::Relaxed);
            }
            let tail = ring.tail.load(Ordering::Acquire);
            while head < tail {
                sum = sum.wrapping_add(ring.slots[(head % RING_CAP) as usize].load(Ordering::Relaxed));
                head += 1;
            }
            ring.head.store(head, Ordering::Release);
            wake_if_sleeping(&ring.producer_sleeping);
        }
        ring.last_ns.store(mono_ns(), Ordering::Relaxed);
        ring.sum.store(sum, Ordering::Release);
        0
    });
    let mut tail = 0u64;
    for v in 1..=n {
        if tail - ring.head.load(Ordering::Acquire) == RING_CAP {
            sleep_until(&ring.producer_sleeping, || {
                tail - ring.head.load(Ordering::Acquire) < RING_CAP
            });
        }
        ring.slots[(tail % RING_CAP) as usize].store(v, Ordering::Relaxed);
        tail += 1;
        ring.tail.store(tail, Ordering::Release);
        wake_if_sleeping(&ring.consumer_sleeping);
    }
    reap(pid);
    assert_eq!(
        ring.sum.load(Ordering::Acquire),
        n * (n + 1) / 2,
        "ring lost or duplicated items"
    );
    let ns = ring.last_ns.load(Ordering::Relaxed) - ring.first_ns.load(Ordering::Relaxed);
    // SAFETY: `ptr`/`len` is the mapping made above; the child is gone and
    // `ring` is not used after this.
    unsafe { libc::munmap(ptr, len) };
    n as f64 / (ns.max(1) as f64 / 1e9)
}

/// Copies a `bytes`-byte buffer `reps` times (memcpy): GB/s (10^9 bytes/s).
pub fn memcpy_gb_s(bytes: usize, reps: usize) -> f64 {
    let src = vec![0xa5u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // fault the pages in before timing
    let t = Instant::now();
    for _ in 0..reps {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    (bytes * reps) as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Runs `f` with this thread pinned to CPU `cpu` (children forked meanwhile
/// inherit the pin), then restores the previous CPU set. On this VM a blocking
/// round trip across CPUs mostly measures the wake-up of an idle vCPU; pinned,
/// it measures the IPC. If the pin is refused, `f` runs unpinned.
pub fn pinned<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `old` is a valid, writable cpu_set_t of `size` bytes; 0 = this thread.
    let saved = unsafe { libc::sched_getaffinity(0, size, &mut old) } == 0;
    // SAFETY: as above; CPU_ZERO/CPU_SET only write inside `set`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t; CPU_SET ignores out-of-range CPUs.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    let ok = saved && unsafe { libc::sched_setaffinity(0, size, &set) } == 0;
    let out = f();
    if ok {
        // SAFETY: `old` holds the set read above.
        unsafe { libc::sched_setaffinity(0, size, &old) };
    }
    out
}
