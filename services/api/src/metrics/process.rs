//! The standard `process_*` families of Prometheus clients, read from `/proc/self` at
//! scrape time (Linux): resident and virtual memory, CPU seconds, open and maximum file
//! descriptors, start time. Elsewhere, or when a file cannot be read, the family is left
//! out rather than reported wrong.

use super::exposition::{Exposition, Kind};

/// Clock ticks per second of the times in `/proc/<pid>/stat`: `USER_HZ`, which Linux
/// fixes at 100 for user space on every architecture (the Go and Python Prometheus
/// clients assume the same).
const USER_HZ: f64 = 100.0;

/// Writes the process families it can read.
pub(super) fn write(out: &mut Exposition) {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|text| Stat::parse(&text));
    if let Some(stat) = &stat {
        out.single(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            (stat.user_ticks + stat.system_ticks) as f64 / USER_HZ,
        );
        out.single(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
            stat.virtual_bytes as f64,
        );
        if let Some(boot) = boot_time() {
            out.single(
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time of the process since unix epoch in seconds.",
                boot as f64 + stat.start_ticks as f64 / USER_HZ,
            );
        }
    }
    if let Some(resident) = resident_bytes() {
        out.single(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            resident as f64,
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        out.single(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            entries.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        out.single(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    user_ticks: u64,
    system_ticks: u64,
    start_ticks: u64,
    virtual_bytes: u64,
}

impl Stat {
    /// Parses the line. The command name (field 2) is in parentheses and may hold spaces
    /// and parentheses itself, so the fields are counted from the last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let after_name = &text[text.rfind(')')? + 1..];
        // Field 3 (state) is the first after the name; field N is at index N - 3.
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        Some(Stat {
            user_ticks: field(14)?,
            system_ticks: field(15)?,
            start_ticks: field(22)?,
            virtual_bytes: field(23)?,
        })
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit of open files, from `/proc/self/limits`.
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time, seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_from_after_the_command_name() {
        // A command name with spaces and a parenthesis, as a process may name itself.
        let line = "4242 (annals (x) y) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 5000 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                user_ticks: 250,
                system_ticks: 75,
                start_ticks: 123456,
                virtual_bytes: 987654321,
            })
        );
        assert_eq!(Stat::parse("garbage"), None);
    }
}
