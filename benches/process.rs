//! Process start + join, per start method, side by side with the raw limit
//! (fork+waitpid, re-exec of this binary), procspawn and CPython's
//! `multiprocessing.Process` (bench/python/process_start.py).
//!
//! Every contender starts a child that does nothing and waits for it, `n`
//! times, and reports milliseconds per start+join (lower is better). Each side
//! starts (and joins) one child before timing, so that a fork server is
//! already up, as it is in a program that has started one process before.
//!
//! Run through `bench/run`, or alone: `cargo bench --bench process`.
//!
//! # Safety
//! The raw re-exec baseline forks and calls only `execve`/`_exit` in the child,
//! on pointers prepared before the fork.
#![allow(unsafe_code)]

mod common;

use common::{n, python, raw, scenario, time, Contender};
use multiproc::{Process, StartMethod};
use std::ffi::CString;

/// Set in the environment of the raw re-exec child: `main` exits at once.
const RAW_EXEC_MARKER: &str = "MULTIPROC_BENCH_RAW_EXEC";

/// The raw re-exec baseline: fork, execve(/proc/self/exe) with the marker set,
/// waitpid; `n` times. Milliseconds per start+join.
fn raw_reexec_ms(n: usize) -> f64 {
    let path = CString::new("/proc/self/exe").expect("no NUL");
    let arg0 = CString::new("process-bench-raw-exec").expect("no NUL");
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{RAW_EXEC_MARKER}=1")).expect("no NUL"));
    let argv = [arg0.as_ptr(), std::ptr::null()];
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let once = || {
        // SAFETY: the child only calls execve and _exit (async-signal-safe) on
        // pointers prepared before the fork, which stay valid in its copy.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: path, argv and envp are NUL-terminated and null-terminated.
            unsafe {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127)
            }
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer and `pid` our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "re-exec child failed"
        );
    };
    once();
    time(|| (0..n).for_each(|_| once())) * 1e3 / n as f64
}

/// multiproc's Process start + join with `method`, `n` times. Milliseconds each.
fn multiproc_ms(method: StartMethod, n: usize) -> f64 {
    fn nothing(_: ()) {}
    let once = || {
        let p = Process::builder()
            .start_method(method)
            .spawn((), nothing)
            .expect("spawn failed");
        p.join().expect("join failed");
    };
    once();
    time(|| (0..n).for_each(|_| once())) * 1e3 / n as f64
}

/// procspawn's spawn + join, `n` times. Milliseconds per start+join.
fn procspawn_ms(n: usize) -> f64 {
    fn nothing(_: ()) {}
    procspawn::spawn((), nothing)
        .join()
        .expect("procspawn child failed");
    time(|| {
        for _ in 0..n {
            procspawn::spawn((), nothing)
                .join()
                .expect("procspawn child failed");
        }
    }) * 1e3
        / n as f64
}

/// CPython's Process start + join under `method`, `n` times. Milliseconds each.
fn python_ms(method: &str, n: usize) -> f64 {
    python("process_start.py", &[method, &n.to_string()])
}

fn main() {
    if std::env::var_os(RAW_EXEC_MARKER).is_some() {
        std::process::exit(0);
    }
    procspawn::init();

    let reps = 5;
    let fork_n = n(100, 10);
    let exec_n = n(30, 4);

    scenario(
        "process start+join, fork",
        "ms",
        false,
        reps,
        vec![
            Contender::new("multiproc Fork", || multiproc_ms(StartMethod::Fork, fork_n)),
            Contender::new("raw fork+waitpid", || raw::fork_waitpid_ms(fork_n)),
            Contender::new("CPython fork", || python_ms("fork", fork_n)),
        ],
    );
    scenario(
        "process start+join, forkserver",
        "ms",
        false,
        reps,
        vec![
            Contender::new("multiproc ForkServer", || {
                multiproc_ms(StartMethod::ForkServer, fork_n)
            }),
            Contender::new("raw fork+waitpid", || raw::fork_waitpid_ms(fork_n)),
            Contender::new("CPython forkserver", || python_ms("forkserver", fork_n)),
        ],
    );
    scenario(
        "process start+join, spawn",
        "ms",
        false,
        reps,
        vec![
            Contender::new("multiproc Spawn", || multiproc_ms(StartMethod::Spawn, exec_n)),
            Contender::new("raw re-exec", || raw_reexec_ms(exec_n)),
            Contender::new("procspawn", || procspawn_ms(exec_n)),
            Contender::new("CPython spawn", || python_ms("spawn", exec_n)),
        ],
    );
}
