//! Side-by-side benchmark runner shared by every `benches/*.rs` target.
//!
//! Each scenario runs every contender in alternation (A B C A B C ...), `reps`
//! times, and reports per contender the median, min and max, and the median
//! ratio against the first contender (multiproc). Set `MULTIPROC_BENCH_QUICK=1`
//! for one short repetition (CI), and `MULTIPROC_BENCH_OUT=path` to append one
//! JSON line per contender (read by `bench/report`).
#![allow(dead_code)]

use std::io::Write;
use std::process::Command;
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
    for _ in 0..reps {
        for (i, c) in contenders.iter_mut().enumerate() {
            figures[i].push((c.run)());
        }
    }
    let meds: Vec<f64> = figures.iter_mut().map(|f| median(f)).collect();
    println!(
        "\n## {name} ({unit}, {}; {reps} runs, alternated)",
        if higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        }
    );
    println!(
        "{:<28} {:>14} {:>14} {:>14} {:>10}",
        "contender", "median", "min", "max", "ratio"
    );
    let out = std::env::var_os("MULTIPROC_BENCH_OUT");
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
        println!(
            "{:<28} {:>14.4} {:>14.4} {:>14.4} {:>9.2}x",
            c.name, meds[i], min, max, ratio
        );
        if let Some(path) = &out {
            if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(
                    file,
                    "{{\"scenario\":{:?},\"unit\":{:?},\"higher_is_better\":{},\"contender\":{:?},\"median\":{},\"min\":{},\"max\":{},\"runs\":{},\"ratio\":{}}}",
                    name, unit, higher_is_better, c.name, meds[i], min, max, reps, ratio
                );
            }
        }
    }
}

/// Runs `python3 bench/python/<script> <args>` and returns the last number it
/// printed (scripts print exactly one figure, in the scenario's unit).
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
    text.split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .last()
        .unwrap_or_else(|| panic!("python baseline {script} printed no figure: {text}"))
}
