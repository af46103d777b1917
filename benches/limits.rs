//! The raw limits of this machine, written with plain syscalls
//! (benches/common/raw.rs): the ceilings the other targets' figures can be read
//! against. One contender per scenario, so no ratio: the other targets put the
//! same functions beside multiproc where they compare like with like.
//!
//! Run through `bench/run`, or alone: `cargo bench --bench limits`.

mod common;

use common::{n, raw, scenario, Contender};

fn main() {
    let reps = 5;
    let forks = n(300, 10);
    let rounds = n(20_000, 200);
    let (msgs, size) = (n(500, 8), 1 << 20);
    let items = n(20_000_000, 100_000) as u64;
    let (bytes, copies) = (64 << 20, n(20, 2));

    scenario(
        "raw: fork + exit + waitpid",
        "ms",
        false,
        reps,
        vec![Contender::new("fork+waitpid", || raw::fork_waitpid_ms(forks))],
    );
    scenario(
        "raw: 8-byte round trip, socketpair",
        "us",
        false,
        reps,
        vec![Contender::new("socketpair ping-pong", || {
            raw::socketpair_pingpong_us(rounds)
        })],
    );
    scenario(
        "raw: 8-byte round trip, socketpair, both on CPU 0",
        "us",
        false,
        reps,
        vec![Contender::new("socketpair ping-pong", || {
            raw::pinned(0, || raw::socketpair_pingpong_us(rounds))
        })],
    );
    scenario(
        "raw: 1 MiB messages, socketpair stream",
        "MB/s",
        true,
        reps,
        vec![Contender::new("socketpair stream", || {
            raw::socketpair_stream_mb_s(msgs, size)
        })],
    );
    scenario(
        "raw: u64 items, shm SPSC ring + futex",
        "items/s",
        true,
        reps,
        vec![Contender::new("shm ring", || raw::shm_ring_msgs_s(items))],
    );
    scenario(
        "raw: memcpy 64 MiB",
        "GB/s",
        true,
        reps,
        vec![Contender::new("memcpy", || raw::memcpy_gb_s(bytes, copies))],
    );
}
