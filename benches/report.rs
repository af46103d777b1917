//! Renders the JSON lines written by the bench targets (benches/common/mod.rs)
//! into BENCHMARKS.md and an SVG chart of the ratios. `bench/run` calls it;
//! alone it needs its inputs in the environment:
//!
//! - `MULTIPROC_BENCH_REPORT_IN`: the JSONL file (required; without it, this
//!   target prints how to use it and does nothing, so `cargo bench` stays green);
//! - `MULTIPROC_BENCH_REPORT_MD` / `MULTIPROC_BENCH_REPORT_SVG`: where to write
//!   (default `BENCHMARKS.md` and `bench/ratios.svg`);
//! - `MULTIPROC_BENCH_REPORT_SVG_LINK`: how the Markdown links the chart
//!   (default `bench/ratios.svg`);
//! - `MULTIPROC_BENCH_REPORT_COMMAND`, `_SECONDS`, `_FAILED`, `_BUILD_SECONDS`,
//!   `_LOAD_START`: the command that was run, its wall time, the targets that
//!   failed, the time spent compiling before, and /proc/loadavg at the start.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;
use std::fmt::Write as _;

/// One contender's figures in one scenario (one line of the JSONL file).
#[derive(Deserialize, Clone)]
struct Row {
    #[serde(default)]
    target: String,
    scenario: String,
    unit: String,
    higher_is_better: bool,
    contender: String,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    runs: u64,
    ratio: Option<f64>,
    parent_rss_kib: Option<f64>,
    worker_rss_kib: Option<f64>,
}

/// A scenario: its rows, first contender (the reference) first.
struct Scenario {
    target: String,
    name: String,
    rows: Vec<Row>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Groups rows by (target, scenario) in the order they were first written. A
/// scenario written again (a contender seen twice) keeps its last run.
fn group(rows: Vec<Row>) -> Vec<Scenario> {
    let mut out: Vec<Scenario> = Vec::new();
    for row in rows {
        match out
            .iter_mut()
            .find(|s| s.target == row.target && s.name == row.scenario)
        {
            Some(s) => {
                if s.rows.iter().any(|r| r.contender == row.contender) {
                    s.rows.clear();
                }
                s.rows.push(row);
            }
            None => out.push(Scenario {
                target: row.target.clone(),
                name: row.scenario.clone(),
                rows: vec![row],
            }),
        }
    }
    out
}

/// A figure with about four significant digits.
fn num(x: Option<f64>) -> String {
    let Some(x) = x else { return "n/a".into() };
    let a = x.abs();
    if a >= 100_000.0 {
        let s = format!("{:.0}", x);
        let (sign, digits) = s.split_at(if x < 0.0 { 1 } else { 0 });
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{sign}{grouped}")
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else if a >= 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

fn kib(x: Option<f64>) -> String {
    match x {
        Some(k) => format!("{:.1} MiB", k / 1024.0),
        None => "".into(),
    }
}

fn ratio(x: Option<f64>) -> String {
    match x {
        Some(r) if r >= 10.0 => format!("{r:.1}x"),
        Some(r) => format!("{r:.2}x"),
        None => "n/a".into(),
    }
}

fn first_line_of(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

fn machine() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown")
        .to_string();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|k| format!("{:.1} GiB", k / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let nproc = first_line_of("nproc", &[]).unwrap_or_else(|| "unknown".into());
    let kernel = first_line_of("uname", &["-srm"]).unwrap_or_else(|| "unknown".into());
    let start = env("MULTIPROC_BENCH_REPORT_LOAD_START").unwrap_or_else(|| "unknown".into());
    let end = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    vec![
        ("CPUs (`nproc`)", nproc),
        ("CPU model", model),
        ("memory", mem),
        ("kernel", kernel),
        (
            "rustc",
            first_line_of("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        ),
        (
            "python3",
            first_line_of("python3", &["--version"]).unwrap_or_else(|| "not found".into()),
        ),
        (
            "load average (1, 5, 15 min) at start / at end",
            format!("{start} / {end}"),
        ),
    ]
}

fn markdown(scenarios: &[Scenario], svg_link: &str) -> String {
    let mut md = String::new();
    let command = env("MULTIPROC_BENCH_REPORT_COMMAND").unwrap_or_else(|| "bench/run".into());
    let date = first_line_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown".into());
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `{command}` on {date}. Regenerate with `bench/run` (see bench/README.md); \
         do not edit by hand.\n"
    );
    if let Some(secs) = env("MULTIPROC_BENCH_REPORT_SECONDS") {
        let build = match env("MULTIPROC_BENCH_REPORT_BUILD_SECONDS").and_then(|b| b.parse::<u64>().ok()) {
            Some(b) if b >= 2 => format!(" (of which {b} s compiling the bench targets)"),
            Some(_) => " (the bench targets were already compiled)".to_string(),
            None => String::new(),
        };
        let _ = writeln!(md, "The whole run took {secs} s{build}.\n");
    }
    let _ = writeln!(md, "| machine | |\n| --- | --- |");
    for (k, v) in machine() {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(
        md,
        "\n**How to read.** Each scenario runs its contenders in alternation (A B C A B C ...) \
         as many times as its `runs` says, and gives per contender the median, min and max of \
         its figure. The ratio compares medians with the scenario's first contender (multiproc \
         wherever it takes part) and reads the same way for every unit: **above 1 means the \
         first contender is better** (faster, or more throughput), below 1 that it is worse. \
         Peak RSS, where a scenario measures it, is the high-water mark (`VmHWM`, what \
         `getrusage` reports as `ru_maxrss`) of the parent process during the run and of one \
         worker at the end of its work, median over the runs. On a 2-vCPU VM expect run-to-run \
         noise of 10-30 %, more when the load average above exceeds the CPU count; min and \
         max show it.\n"
    );
    if let Some(failed) = env("MULTIPROC_BENCH_REPORT_FAILED") {
        let _ = writeln!(
            md,
            "**Bench targets that failed in this run** (their scenarios are missing or \
             partial): {failed}.\n"
        );
    }
    let _ = writeln!(md, "![ratio of medians per scenario and contender]({svg_link})\n");
    let mut last_target = None;
    for s in scenarios {
        if last_target != Some(&s.target) {
            let title = if s.target.is_empty() {
                "(unnamed target)".into()
            } else {
                format!("`benches/{}.rs`", s.target)
            };
            let _ = writeln!(md, "## {title}\n");
            last_target = Some(&s.target);
        }
        let r0 = &s.rows[0];
        let way = if r0.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        let _ = writeln!(md, "### {}\n", s.name);
        let _ = writeln!(
            md,
            "{} ({way}), {} runs; ratio against {}.\n",
            r0.unit, r0.runs, r0.contender
        );
        let with_mem = s.rows.iter().any(|r| r.parent_rss_kib.is_some());
        let with_ratio = s.rows.len() > 1;
        let mut head = String::from("| contender | median | min | max |");
        let mut rule = String::from("| --- | ---: | ---: | ---: |");
        if with_ratio {
            head += " ratio |";
            rule += " ---: |";
        }
        if with_mem {
            head += " parent peak RSS | worker peak RSS |";
            rule += " ---: | ---: |";
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for r in &s.rows {
            let _ = write!(
                md,
                "| {} | {} | {} | {} |",
                r.contender,
                num(r.median),
                num(r.min),
                num(r.max)
            );
            if with_ratio {
                let _ = write!(md, " {} |", ratio(r.ratio));
            }
            if with_mem {
                let _ = write!(md, " {} | {} |", kib(r.parent_rss_kib), kib(r.worker_rss_kib));
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md);
    }
    md
}

/// One bar of the chart: "scenario: vs contender" and its ratio.
struct Bar {
    label: String,
    ratio: f64,
    /// Index of the scenario, for the background bands.
    group: usize,
}

fn bars(scenarios: &[Scenario]) -> Vec<Bar> {
    let mut out = Vec::new();
    for (group, s) in scenarios.iter().enumerate() {
        let reference = &s.rows[0].contender;
        for r in &s.rows[1..] {
            if let Some(x) = r.ratio.filter(|x| x.is_finite() && *x > 0.0) {
                out.push(Bar {
                    label: format!("{}: {} vs {}", s.name, reference, r.contender),
                    ratio: x,
                    group,
                });
            }
        }
    }
    out
}

fn chart(bars: &[Bar], path: &str) -> Result<(), Box<dyn std::error::Error>> {
    const ROW: u32 = 22;
    const CHAR: u32 = 6; // width of a 12px sans-serif character, roughly
    let n = bars.len().max(1);
    let label_w = bars.iter().map(|b| b.label.len() as u32).max().unwrap_or(10) * CHAR + 16;
    let (w, h) = (label_w + 560, n as u32 * ROW + 110);
    let root = SVGBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(label_w);
    let lo = bars.iter().map(|b| b.ratio).fold(1.0f64, f64::min) / 1.6;
    let hi = bars.iter().map(|b| b.ratio).fold(1.0f64, f64::max) * 1.6;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "ratio of medians (> 1: the first contender, multiproc, is better)",
            ("sans-serif", 15),
        )
        .margin_right(70)
        .margin_top(10)
        .x_label_area_size(40)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n as f64)?;
    let green = RGBColor(46, 139, 87);
    let red = RGBColor(200, 70, 60);
    // A light band behind every other scenario, so its bars read as a group.
    let band = RGBColor(238, 240, 245);
    for (i, b) in bars.iter().enumerate() {
        if b.group % 2 == 1 {
            let y = (n - 1 - i) as f64;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(lo, y), (hi, y + 1.0)],
                band.filled(),
            )))?;
            let (_, top) = chart.backend_coord(&(lo, y + 1.0));
            let (_, bottom) = chart.backend_coord(&(lo, y));
            left.draw(&Rectangle::new(
                [(0, top), (label_w as i32, bottom)],
                band.filled(),
            ))?;
        }
    }
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("ratio (log scale)")
        .x_label_formatter(&|x| {
            if *x >= 1.0 {
                format!("{x:.0}x")
            } else {
                format!("{x:.2}x")
            }
        })
        .label_style(("sans-serif", 12))
        .draw()?;
    for (i, b) in bars.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let color = if b.ratio >= 1.0 { green } else { red };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(1.0, y + 0.15), (b.ratio, y + 0.85)],
            color.filled(),
        )))?;
        // The value goes right of the bar's end, or right of the 1x line for
        // bars that grow leftwards (so it never runs into the labels).
        let value = ("sans-serif", 12)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let (px, py) = chart.backend_coord(&(b.ratio.max(1.0), y + 0.5));
        root.draw_text(&ratio(Some(b.ratio)), &value, (px + 4, py))?;
        let label = ("sans-serif", 12)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        left.draw_text(&b.label, &label, (label_w as i32 - 8, py))?;
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, 0.0), (1.0, n as f64)],
        BLACK.stroke_width(1),
    )))?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(input) = env("MULTIPROC_BENCH_REPORT_IN") else {
        println!("report: renders bench results; run `bench/run` (see bench/README.md)");
        return Ok(());
    };
    let md_path = env("MULTIPROC_BENCH_REPORT_MD").unwrap_or_else(|| "BENCHMARKS.md".into());
    let svg_path = env("MULTIPROC_BENCH_REPORT_SVG").unwrap_or_else(|| "bench/ratios.svg".into());
    let svg_link = env("MULTIPROC_BENCH_REPORT_SVG_LINK").unwrap_or_else(|| "bench/ratios.svg".into());
    let text = std::fs::read_to_string(&input).map_err(|e| format!("reading {input}: {e}"))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row: Row = serde_json::from_str(line).map_err(|e| format!("{input}:{}: {e}", i + 1))?;
        rows.push(row);
    }
    let scenarios = group(rows);
    std::fs::write(&md_path, markdown(&scenarios, &svg_link))
        .map_err(|e| format!("writing {md_path}: {e}"))?;
    chart(&bars(&scenarios), &svg_path).map_err(|e| format!("writing {svg_path}: {e}"))?;
    let contenders: usize = scenarios.iter().map(|s| s.rows.len()).sum();
    println!(
        "report: {} scenarios, {contenders} rows -> {md_path}, {svg_path}",
        scenarios.len()
    );
    Ok(())
}
