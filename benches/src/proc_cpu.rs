//! CPU time a process has used, from `/proc/PID/stat` (utime + stime), so a
//! benchmark can report the server's own CPU beside its throughput; and the
//! machine's load average, to print beside every figure.

/// Clock ticks per second for `/proc` times; 100 on every Linux this runs on
/// (`getconf CLK_TCK`).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of `pid` (threads included), or None if the
/// process is gone or the file is unreadable.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5) are utime and stime; `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// The 1-minute load average (`/proc/loadavg`), as written there; `?` if
/// unreadable.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu() {
        let t = cpu_seconds(std::process::id()).unwrap();
        assert!(t >= 0.0);
    }
}
