//! Side-by-side benchmark runner shared by every `benches/*.rs` target.
//!
//! Each scenario runs every contender in alternation (A B C A B C ...), `reps`
//! times, and reports per contender the median, min and max, and the median
//! ratio against the first contender (multiproc). Set `MULTIPROC_BENCH_QUICK=1`
//! for one short repetition (CI), and `MULTIPROC_BENCH_OUT=path` to append one
//! JSON line per contender (read by `benches/report.rs`, which `bench/run` calls).
//!
//! Memory: a contender's `run` may call [`report_rss`] (the parent's and a
//! worker's peak RSS); [`scenario`] resets the parent's peak before every run
//! ([`reset_peak_rss`]) and adds the figures to the contender's row. Python
//! scripts report theirs by printing `maxrss_kib <parent> <worker>` (see
//! `bench/python/rss.py`), which [`python`] picks up.
//!
//! `raw` holds the raw limits written with plain syscalls.
//!
//! # Safety
//! Benches are outside the crate's unsafe policy; the only unsafe here is a
//! `getrusage` call into a zeroed, owned `rusage` (and `raw`, see its header).
#![allow(dead_code)]
#![allow(unsafe_code)]

pub mod raw;

use std::io::Write;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// One way of running a scenario. `run` does the workload once and returns the
/// figure (in the scenario's unit).
pub struct Contender<'a> {
    pub name: String,
    pub run: Box<dyn FnMut() -> f64 + 'a>,
}

impl<'a> Contender<'a> {
    pub fn new(name: impl Into<String>, run: impl FnMut() -> f64 + 'a) -> Self {
        Contender {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// True in quick mode (CI): small N, one repetition.
pub fn quick() -> bool {
    std::env::var_os("MULTIPROC_BENCH_QUICK").is_some()
}

/// `full` normally, `small` in quick mode.
pub fn n(full: usize, small: usize) -> usize {
    if quick() {
        small
    } else {
        full
    }
}

/// Seconds taken by `f`.
pub fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Peak resident set size of this process, in KiB, since it started or since the
/// last [`reset_peak_rss`]: the high-water mark `VmHWM` of /proc/self/status, which
/// is what `getrusage(RUSAGE_SELF).ru_maxrss` reports for one address space
/// (`ru_maxrss` itself cannot be reset, and after a vfork+exec it starts from the
/// parent's peak). Falls back to `ru_maxrss` where /proc is missing.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| rusage_maxrss_kib(libc::RUSAGE_SELF))
}

/// The largest peak RSS, in KiB, among the children this process has waited for
/// (`getrusage(RUSAGE_CHILDREN).ru_maxrss`). Children of a fork server are not
/// this process's children: let a worker report its own [`peak_rss_kib`] instead.
pub fn children_peak_rss_kib() -> u64 {
    rusage_maxrss_kib(libc::RUSAGE_CHILDREN)
}

fn rusage_maxrss_kib(who: libc::c_int) -> u64 {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for getrusage to fill.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_maxrss.max(0) as u64
}

/// Resets this process's peak RSS to its current RSS (writes `5` to
/// /proc/self/clear_refs), so that [`peak_rss_kib`] measures what follows.
/// Returns false where the kernel refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

static RSS: Mutex<Option<(u64, u64)>> = Mutex::new(None);

/// Records the memory figures of the run in progress: the parent's peak RSS and
/// one worker's peak RSS, in KiB. [`scenario`] shows their medians in the
/// contender's row (columns "parent RSS" and "worker RSS").
pub fn report_rss(parent_kib: u64, worker_kib: u64) {
    *RSS.lock().unwrap_or_else(|e| e.into_inner()) = Some((parent_kib, worker_kib));
}

fn take_rss() -> Option<(u64, u64)> {
    RSS.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// A JSON number, or null for NaN and infinities.
fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".to_string()
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs a scenario and prints (and records) its table.
/// `unit` names the figure (e.g. "items/s", "us/op"); `higher_is_better` says
/// which way the ratio reads. Ratios are multiproc's figure over the other's
/// for higher-is-better units, the other's over multiproc's otherwise, so a
/// ratio above 1 always means multiproc is better.
pub fn scenario(
    name: &str,
    unit: &str,
    higher_is_better: bool,
    reps: usize,
    mut contenders: Vec<Contender<'_>>,
) {
    let reps = if quick() { 1 } else { reps.max(1) };
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut mems: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); contenders.len()];
    for _ in 0..reps {
        for (i, c) in contenders.iter_mut().enumerate() {
            take_rss();
            reset_peak_rss();
            figures[i].push((c.run)());
            if let Some((parent, worker)) = take_rss() {
                mems[i].0.push(parent as f64);
                mems[i].1.push(worker as f64);
            }
        }
    }
    let meds: Vec<f64> = figures.iter_mut().map(|f| median(f)).collect();
    let mem_meds: Vec<Option<(f64, f64)>> = mems
        .iter_mut()
        .map(|(p, w)| {
            if p.is_empty() {
                None
            } else {
                Some((median(p), median(w)))
            }
        })
        .collect();
    let with_mem = mem_meds.iter().any(Option::is_some);
    println!(
        "\n## {name} ({unit}, {}; {reps} runs, alternated)",
        if higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        }
    );
    print!(
        "{:<28} {:>14} {:>14} {:>14} {:>10}",
        "contender", "median", "min", "max", "ratio"
    );
    if with_mem {
        print!(" {:>12} {:>12}", "parent RSS", "worker RSS");
    }
    println!();
    let out = std::env::var_os("MULTIPROC_BENCH_OUT");
    let target = std::env::var("MULTIPROC_BENCH_TARGET").unwrap_or_default();
    for (i, c) in contenders.iter().enumerate() {
        let f = &figures[i];
        let (min, max) = (f[0], f[f.len() - 1]);
        let ratio = if i == 0 {
            1.0
        } else if higher_is_better {
            meds[0] / meds[i]
        } else {
            meds[i] / meds[0]
        };
        print!(
            "{:<28} {:>14.4} {:>14.4} {:>14.4} {:>9.2}x",
            c.name, meds[i], min, max, ratio
        );
        if let Some((p, w)) = mem_meds[i] {
            print!(" {:>9.0} KiB {:>8.0} KiB", p, w);
        }
        println!();
        if let Some(path) = &out {
            if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let mem = match mem_meds[i] {
                    Some((p, w)) => format!(
                        ",\"parent_rss_kib\":{},\"worker_rss_kib\":{}",
                        json_num(p),
                        json_num(w)
                    ),
                    None => String::new(),
                };
                let _ = writeln!(
                    file,
                    "{{\"target\":{},\"scenario\":{},\"unit\":{},\"higher_is_better\":{},\"contender\":{},\"median\":{},\"min\":{},\"max\":{},\"runs\":{},\"ratio\":{}{}}}",
                    json_str(&target),
                    json_str(name),
                    json_str(unit),
                    higher_is_better,
                    json_str(&c.name),
                    json_num(meds[i]),
                    json_num(min),
                    json_num(max),
                    reps,
                    json_num(ratio),
                    mem
                );
            }
        }
    }
}

/// Runs `python3 bench/python/<script> <args>` and returns the last number it
/// printed (scripts print exactly one figure, in the scenario's unit). A line
/// `maxrss_kib <parent> <worker>` printed before it is passed to [`report_rss`].
pub fn python(script: &str, args: &[&str]) -> f64 {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/bench/python/{script}"))
        .args(args)
        .output()
        .expect("python3 must be installed for the baselines");
    assert!(
        out.status.success(),
        "python baseline {script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rss_lines = text.lines().filter_map(|l| l.strip_prefix("maxrss_kib "));
    if let Some(line) = rss_lines.next_back() {
        let kib: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        if let [parent, worker] = kib[..] {
            report_rss(parent, worker);
        }
    }
    text.lines()
        .filter(|l| !l.starts_with("maxrss_kib "))
        .flat_map(str::split_whitespace)
        .filter_map(|w| w.parse::<f64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("python baseline {script} printed no figure: {text}"))
}
