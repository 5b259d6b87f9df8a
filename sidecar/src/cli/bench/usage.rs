//! What a benchmark run cost: the process's CPU time and, on Linux, the share of the
//! machine's CPU time the hypervisor took meanwhile (steal).

use std::time::Duration;

/// What the process and the machine had used when a measurement started: read again at its
/// end, they give the run's CPU time and the share of the machine the hypervisor took.
pub(super) struct Usage {
    process: Option<Duration>,
    machine: Option<MachineTicks>,
}

impl Usage {
    pub(super) fn now() -> Self {
        Self {
            process: process_cpu(),
            machine: MachineTicks::read(),
        }
    }

    /// Seconds of CPU this process used since, and the share of the machine's CPU time that
    /// was stolen meanwhile.
    pub(super) fn since(&self) -> (Option<f64>, Option<f64>) {
        let cpu = process_cpu()
            .zip(self.process)
            .map(|(now, start)| now.saturating_sub(start).as_secs_f64());
        let steal = MachineTicks::read()
            .zip(self.machine)
            .and_then(|(now, start)| now.steal_share_since(start));
        (cpu, steal)
    }
}

/// CPU time (user and system) this process has used so far; `None` where
/// `/proc/self/stat` cannot be read (not Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses): the state is field 3, utime field 14 and
    // stime field 15, in USER_HZ ticks, which Linux fixes at 100 per second.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// The machine's CPU time so far, from the `cpu` line of `/proc/stat` (Linux), in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MachineTicks {
    /// Every kind: user, nice, system, idle, iowait, irq, softirq and steal.
    total: u64,
    /// Time this virtual machine was ready to run but the hypervisor ran something else.
    steal: u64,
}

impl MachineTicks {
    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The ticks of `/proc/stat`'s text: `None` without a `cpu` line of at least 8 numbers.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        let ticks = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|field| field.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()?;
        let steal = *ticks.get(7)?;
        Some(Self {
            total: ticks.iter().sum(),
            steal,
        })
    }

    /// The share (0 to 1) of the machine's CPU time since `start` that was stolen; `None`
    /// if no tick passed.
    #[expect(
        clippy::cast_precision_loss,
        reason = "a share, reported to a few digits"
    )]
    fn steal_share_since(self, start: Self) -> Option<f64> {
        let total = self.total.checked_sub(start.total).filter(|&t| t > 0)?;
        let steal = self.steal.saturating_sub(start.steal).min(total);
        Some(steal as f64 / total as f64)
    }
}

/// A run during which the hypervisor took more than this share of the machine's CPU time is
/// flagged in the summary: its figures say more about the neighbours than about Sidestream.
pub(super) const STEAL_WARNING: f64 = 0.05;

#[cfg(test)]
mod tests {
    use super::MachineTicks;

    #[test]
    fn steal_is_read_from_the_cpu_line_of_proc_stat() {
        // As Linux writes it: the machine's line, then one line per processor, then others.
        let before = "cpu  1000 10 200 5000 30 0 5 100 0 0\n\
                      cpu0 500 5 100 2500 15 0 2 50 0 0\n\
                      intr 12345\n";
        let after = "cpu  1300 10 260 5100 30 0 5 400 0 0\n\
                     cpu0 650 5 130 2550 15 0 2 200 0 0\n";
        let start = MachineTicks::parse(before).expect("a cpu line");
        assert_eq!(
            start,
            MachineTicks {
                total: 1000 + 10 + 200 + 5000 + 30 + 5 + 100,
                steal: 100
            }
        );
        let end = MachineTicks::parse(after).expect("a cpu line");
        // 300 of the 760 ticks that passed were stolen.
        let share = end.steal_share_since(start).expect("ticks passed");
        assert!((share - 300.0 / 760.0).abs() < 1e-9, "{share}");
        assert_eq!(start.steal_share_since(start), None);
    }

    #[test]
    fn a_stat_without_a_whole_cpu_line_gives_no_ticks() {
        assert_eq!(MachineTicks::parse(""), None);
        assert_eq!(MachineTicks::parse("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(MachineTicks::parse("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(MachineTicks::parse("cpu  1 2 3 x 5 6 7 8\n"), None);
    }
}
