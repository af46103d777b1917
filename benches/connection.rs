//! Connection benchmarks, side by side (issue 3):
//!
//! 1. 8-byte ping-pong round trip between two processes, both pinned to CPU 0
//!    (`taskset`): multiproc `send_bytes`/`recv_bytes` and typed `send`/`recv`,
//!    a raw Unix stream socket driven with plain `read`/`write`, ipc-channel, and
//!    CPython's `multiprocessing.Pipe`. Wall time per round trip, then the CPU
//!    time both processes spent per round trip (user + system, from
//!    `CLOCK_PROCESS_CPUTIME_ID`; the child reports its own): on a machine shared
//!    with other work the CPU that the two processes share is also given to
//!    others, which the wall time counts and the CPU time does not.
//! 2. 1 MiB messages one way (not pinned): multiproc `send_bytes`/`recv_bytes`
//!    and `recv_bytes_into`, the raw Unix stream with a length prefix read into a
//!    reused buffer, ipc-channel's typed `Vec<u8>` channel, CPython.
//!
//! Run: `cargo bench --bench connection [-- pingpong|stream]` (`MULTIPROC_BENCH_QUICK=1`
//! for a tiny run).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{n, python, scenario, Contender};
use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use multiproc::{Connection, Pipe, Process};
use serde::{Deserialize, Serialize};

const MIB: usize = 1 << 20;
const JOIN: Duration = Duration::from_secs(60);

/// Pins every thread of `pid` to `cpus` (a `taskset` list).
fn pin(pid: u32, cpus: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "taskset failed for pid {pid}");
}

fn all_cpus() -> String {
    format!("0-{}", multiproc::cpu_count().max(1) - 1)
}

fn temp_sock(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("mp-bench-conn-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// What a ping-pong run reports.
#[derive(Clone, Copy)]
enum Measure {
    /// Wall time per round trip.
    Wall,
    /// CPU time of both processes per round trip.
    Cpu,
}

/// This process's CPU time (user + system) in microseconds.
fn cpu_us() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

/// The echo children answer this request (an empty message, `u64::MAX`, eight
/// 0xff bytes) with their CPU time in microseconds (an `f64`, little-endian).
const CPU_REQUEST: [u8; 8] = [0xff; 8];

fn cpu_reply() -> [u8; 8] {
    cpu_us().to_le_bytes()
}

// ---- multiproc ----

fn echo_bytes(c: Connection) {
    while let Ok(m) = c.recv_bytes() {
        let sent = if m.is_empty() {
            c.send_bytes(&cpu_reply())
        } else {
            c.send_bytes(&m)
        };
        if sent.is_err() {
            return;
        }
    }
}

fn echo_typed(c: Connection) {
    while let Ok(m) = c.recv::<u64>() {
        let sent = if m == u64::MAX {
            c.send(&u64::from_le_bytes(cpu_reply()))
        } else {
            c.send(&m)
        };
        if sent.is_err() {
            return;
        }
    }
}

fn mp_pingpong(rounds: usize, typed: bool, measure: Measure) -> f64 {
    let (a, b) = Pipe::new().unwrap();
    let p = if typed {
        Process::spawn(b, echo_typed)
    } else {
        Process::spawn(b, echo_bytes)
    }
    .unwrap();
    pin(p.pid(), "0");
    let msg = *b"12345678";
    let once = || {
        if typed {
            a.send(&0x1234_5678u64).unwrap();
            assert_eq!(a.recv::<u64>().unwrap(), 0x1234_5678);
        } else {
            a.send_bytes(&msg).unwrap();
            assert_eq!(a.recv_bytes().unwrap().len(), 8);
        }
    };
    let child_cpu = || {
        if typed {
            a.send(&u64::MAX).unwrap();
            f64::from_le_bytes(a.recv::<u64>().unwrap().to_le_bytes())
        } else {
            a.send_bytes(b"").unwrap();
            f64::from_le_bytes(a.recv_bytes().unwrap().try_into().unwrap())
        }
    };
    let us = round_trip_us(rounds, measure, once, child_cpu);
    drop(a);
    p.join_timeout(JOIN).unwrap();
    us
}

fn mp_stream_sender((c, n): (Connection, usize)) {
    let payload = vec![7u8; MIB];
    let _: u8 = c.recv().unwrap();
    for _ in 0..n {
        c.send_bytes(&payload).unwrap();
    }
}

fn mp_stream(msgs: usize, into: bool) -> f64 {
    let (a, b) = Pipe::new().unwrap();
    let p = Process::spawn((b, msgs), mp_stream_sender).unwrap();
    let mut buf = vec![0u8; MIB];
    let t = Instant::now();
    a.send(&1u8).unwrap();
    let mut total = 0;
    for _ in 0..msgs {
        total += if into {
            a.recv_bytes_into(&mut buf).unwrap()
        } else {
            a.recv_bytes().unwrap().len()
        };
    }
    let mbs = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    p.join_timeout(JOIN).unwrap();
    mbs
}

// ---- raw Unix stream socket, plain read/write ----

fn raw_echo(path: String) {
    let mut s = UnixStream::connect(path).unwrap();
    let mut m = [0u8; 8];
    while s.read_exact(&mut m).is_ok() {
        let reply = if m == CPU_REQUEST { cpu_reply() } else { m };
        if s.write_all(&reply).is_err() {
            return;
        }
    }
}

fn raw_pingpong(rounds: usize, measure: Measure) -> f64 {
    let path = temp_sock("pp");
    let l = UnixListener::bind(&path).unwrap();
    let p = Process::spawn(path.to_string_lossy().into_owned(), raw_echo).unwrap();
    pin(p.pid(), "0");
    let (s, _) = l.accept().unwrap();
    let s = std::cell::RefCell::new(s);
    let once = || {
        let mut s = s.borrow_mut();
        let mut m = *b"12345678";
        s.write_all(&m).unwrap();
        s.read_exact(&mut m).unwrap();
    };
    let child_cpu = || {
        let mut s = s.borrow_mut();
        let mut m = CPU_REQUEST;
        s.write_all(&m).unwrap();
        s.read_exact(&mut m).unwrap();
        f64::from_le_bytes(m)
    };
    let us = round_trip_us(rounds, measure, once, child_cpu);
    drop(s);
    p.join_timeout(JOIN).unwrap();
    let _ = std::fs::remove_file(&path);
    us
}

fn raw_stream_sender((path, n): (String, usize)) {
    let mut s = UnixStream::connect(path).unwrap();
    let mut framed = (MIB as u64).to_le_bytes().to_vec();
    framed.extend_from_slice(&vec![7u8; MIB]);
    let mut go = [0u8; 1];
    s.read_exact(&mut go).unwrap();
    for _ in 0..n {
        s.write_all(&framed).unwrap();
    }
}

fn raw_stream(msgs: usize) -> f64 {
    let path = temp_sock("st");
    let l = UnixListener::bind(&path).unwrap();
    let p = Process::spawn((path.to_string_lossy().into_owned(), msgs), raw_stream_sender).unwrap();
    let (mut s, _) = l.accept().unwrap();
    let mut buf = vec![0u8; MIB];
    let t = Instant::now();
    s.write_all(&[1]).unwrap();
    let mut total = 0;
    for _ in 0..msgs {
        let mut len = [0u8; 8];
        s.read_exact(&mut len).unwrap();
        let len = u64::from_le_bytes(len) as usize;
        s.read_exact(&mut buf[..len]).unwrap();
        total += len;
    }
    let mbs = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    p.join_timeout(JOIN).unwrap();
    let _ = std::fs::remove_file(&path);
    mbs
}

// ---- ipc-channel (typed channels) ----

#[derive(Serialize, Deserialize)]
enum Msg {
    Hello(IpcSender<Msg>),
    Data(Vec<u8>),
    /// Asks the echo child for its CPU time (answered with `Data`).
    Cpu,
}

/// Connects back to the parent's one-shot server; returns (to parent, from parent).
fn ipc_child_setup(name: String) -> (IpcSender<Msg>, IpcReceiver<Msg>) {
    let (tx, rx) = ipc::channel::<Msg>().unwrap();
    let to_parent = IpcSender::<Msg>::connect(name).unwrap();
    to_parent.send(Msg::Hello(tx)).unwrap();
    (to_parent, rx)
}

fn ipc_parent_setup(server: IpcOneShotServer<Msg>) -> (IpcSender<Msg>, IpcReceiver<Msg>) {
    let (rx, hello) = server.accept().unwrap();
    match hello {
        Msg::Hello(tx) => (tx, rx),
        _ => panic!("expected hello"),
    }
}

fn ipc_echo(name: String) {
    let (tx, rx) = ipc_child_setup(name);
    loop {
        let reply = match rx.recv() {
            Ok(Msg::Data(m)) if !m.is_empty() => m,
            Ok(Msg::Cpu) => cpu_reply().to_vec(),
            _ => return,
        };
        if tx.send(Msg::Data(reply)).is_err() {
            return;
        }
    }
}

fn ipc_pingpong(rounds: usize, measure: Measure) -> f64 {
    let (server, name) = IpcOneShotServer::<Msg>::new().unwrap();
    let p = Process::spawn(name, ipc_echo).unwrap();
    pin(p.pid(), "0");
    let (tx, rx) = ipc_parent_setup(server);
    let once = || {
        tx.send(Msg::Data(b"12345678".to_vec())).unwrap();
        match rx.recv().unwrap() {
            Msg::Data(m) => assert_eq!(m.len(), 8),
            _ => panic!(),
        }
    };
    let child_cpu = || {
        tx.send(Msg::Cpu).unwrap();
        match rx.recv().unwrap() {
            Msg::Data(m) => f64::from_le_bytes(m.try_into().unwrap()),
            _ => panic!(),
        }
    };
    let us = round_trip_us(rounds, measure, once, child_cpu);
    tx.send(Msg::Data(Vec::new())).unwrap();
    p.join_timeout(JOIN).unwrap();
    us
}

fn ipc_stream_sender((name, n): (String, usize)) {
    let (tx, rx) = ipc_child_setup(name);
    let payload = vec![7u8; MIB];
    let _ = rx.recv().unwrap(); // go
    for _ in 0..n {
        tx.send(Msg::Data(payload.clone())).unwrap();
    }
}

fn ipc_stream(msgs: usize) -> f64 {
    let (server, name) = IpcOneShotServer::<Msg>::new().unwrap();
    let p = Process::spawn((name, msgs), ipc_stream_sender).unwrap();
    let (tx, rx) = ipc_parent_setup(server);
    let t = Instant::now();
    tx.send(Msg::Data(vec![1])).unwrap();
    let mut total = 0;
    for _ in 0..msgs {
        match rx.recv().unwrap() {
            Msg::Data(m) => total += m.len(),
            _ => panic!(),
        }
    }
    let mbs = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    p.join_timeout(JOIN).unwrap();
    mbs
}

fn main() {
    // `cargo bench --bench connection -- pingpong` (or `stream`) runs one scenario.
    let args: Vec<String> = std::env::args().collect();
    let only =
        |s: &str| !args.iter().any(|a| a == "pingpong" || a == "stream") || args.iter().any(|a| a == s);
    let me = std::process::id();
    // Ping-pong: shorter runs, more of them, so that the medians hold on a machine
    // whose shared CPU is busy with other work part of the time.
    let rounds = n(15_000, 300);
    let rounds_s = rounds.to_string();
    let reps = 7;
    let pp_reps = 11;

    // Ping-pong, every process on CPU 0 (children are pinned after they start;
    // Python's inherit this process's affinity).
    if only("pingpong") {
        pin(me, "0");
        // Wall time against every peer, then the CPU time of both processes (which
        // other work on the shared CPU does not inflate; not measured for CPython).
        for (title, unit, m) in [
            (
                "8-byte ping-pong round trip, 2 processes pinned to CPU 0",
                "us/round trip",
                Measure::Wall,
            ),
            (
                "8-byte ping-pong, CPU time of both processes per round trip, pinned to CPU 0",
                "us CPU/round trip",
                Measure::Cpu,
            ),
        ] {
            let mut contenders = vec![
                Contender::new("multiproc send_bytes", move || mp_pingpong(rounds, false, m)),
                Contender::new("multiproc send::<u64>", move || mp_pingpong(rounds, true, m)),
                Contender::new("raw unix socket read/write", move || raw_pingpong(rounds, m)),
                Contender::new("ipc-channel Vec<u8>", move || ipc_pingpong(rounds, m)),
            ];
            if let Measure::Wall = m {
                let rounds_s = rounds_s.clone();
                contenders.push(Contender::new("CPython Pipe send_bytes", move || {
                    python("connection_pingpong.py", &[&rounds_s])
                }));
            }
            scenario(title, unit, false, pp_reps, contenders);
        }
        pin(me, &all_cpus());
    }

    if !only("stream") {
        return;
    }
    let msgs = n(400, 20);
    let py_msgs = n(200, 20).to_string();
    scenario(
        "1 MiB messages one way",
        "MB/s",
        true,
        reps,
        vec![
            Contender::new("multiproc recv_bytes", || mp_stream(msgs, false)),
            Contender::new("multiproc recv_bytes_into", || mp_stream(msgs, true)),
            Contender::new("raw unix socket, length prefix", || raw_stream(msgs)),
            Contender::new("ipc-channel Vec<u8>", || ipc_stream(msgs / 4)),
            Contender::new("CPython Pipe send_bytes", || {
                python("connection_stream.py", &[&py_msgs])
            }),
        ],
    );
}

/// Microseconds per call of `once` after 100 untimed warm-up calls: wall time, or
/// the CPU time of this process and of the child (`child_cpu` asks it for its own).
fn round_trip_us(
    rounds: usize,
    measure: Measure,
    mut once: impl FnMut(),
    mut child_cpu: impl FnMut() -> f64,
) -> f64 {
    for _ in 0..100 {
        once();
    }
    let child_start = match measure {
        Measure::Wall => 0.0,
        Measure::Cpu => child_cpu(),
    };
    let (t, cpu) = (Instant::now(), cpu_us());
    for _ in 0..rounds {
        once();
    }
    let (wall, cpu) = (t.elapsed().as_secs_f64() * 1e6, cpu_us() - cpu);
    match measure {
        Measure::Wall => wall / rounds as f64,
        Measure::Cpu => (cpu + child_cpu() - child_start) / rounds as f64,
    }
}
