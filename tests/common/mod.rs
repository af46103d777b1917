//! Helpers shared by the process test files.

/// The children of `parent` (read from `/proc`) whose state letter passes `keep`
/// (`"Z"` for zombies).
pub fn proc_children(parent: u32, keep: impl Fn(&str) -> bool) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[1].parse::<u32>().ok() == Some(parent) && keep(f[0]) {
            found.push(pid);
        }
    }
    found
}
