//! Per-CPU busy time from `/proc/stat`: how loaded each core really was during a run.
//!
//! A process's own CPU time (`/proc/PID/stat`) leaves out the softirq work the kernel does for
//! its loopback packets, so it understates how busy a gateway's core is. The core's busy share
//! shows whether the gateway was the bottleneck of a run (near 100%) or the load side was, and
//! a sample before the run shows whether other work on the machine is disturbing it.

use anyhow::{Context as _, bail};

/// Busy and total jiffies of each CPU, indexed by CPU number.
#[derive(Debug, Clone)]
pub(crate) struct CpuSample(Vec<(u64, u64)>);

// === impl CpuSample ===

impl CpuSample {
    /// Reads `/proc/stat` now.
    pub(crate) fn now() -> anyhow::Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Self::parse(&text)
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut cpus = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some(name) = fields.next() else { continue };
            let Some(index) = name
                .strip_prefix("cpu")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal ...; idle and iowait are not busy,
            // and guest time is already counted in user.
            let total: u64 = values.iter().take(8).sum();
            let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
            if cpus.len() <= index {
                cpus.resize(index + 1, (0, 0));
            }
            cpus[index] = (total.saturating_sub(idle), total);
        }
        if cpus.is_empty() {
            bail!("no per-CPU lines in /proc/stat");
        }
        Ok(Self(cpus))
    }

    /// The busy share (0 to 1) of the CPUs in `list` between `earlier` and `self`, or of all
    /// CPUs when `list` is empty.
    pub(crate) fn busy_since(&self, earlier: &CpuSample, list: &[usize]) -> f64 {
        let all: Vec<usize> = (0..self.0.len()).collect();
        let list = if list.is_empty() { &all[..] } else { list };
        let (mut busy, mut total) = (0u64, 0u64);
        for &cpu in list {
            if let (Some(now), Some(then)) = (self.0.get(cpu), earlier.0.get(cpu)) {
                busy += now.0.saturating_sub(then.0);
                total += now.1.saturating_sub(then.1);
            }
        }
        if total == 0 {
            0.0
        } else {
            busy as f64 / total as f64
        }
    }

    /// The number of CPUs listed.
    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }
}

/// Parses a `taskset -c` style list (`0`, `0-1`, `0,2-3`); empty means "all".
pub(crate) fn parse_list(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
                if a > b {
                    bail!("bad CPU range {part}");
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().with_context(|| format!("bad CPU {part}"))?),
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1\n";
    const AFTER: &str = "cpu  90 0 30 180 0 0 0 0 0 0\ncpu0 75 0 15 50 0 0 10 0 0 0\ncpu1 15 0 15 130 0 0 0 0 0 0\nintr 2\n";

    #[test]
    fn busy_share_counts_softirq_and_leaves_out_idle() {
        let before = CpuSample::parse(BEFORE).unwrap();
        let after = CpuSample::parse(AFTER).unwrap();
        assert_eq!(after.count(), 2);
        // cpu0: busy 80+10 of 100 jiffies (softirq counts as busy).
        assert!((after.busy_since(&before, &[0]) - 0.9).abs() < 1e-9);
        // cpu1: busy 20 of 110.
        assert!((after.busy_since(&before, &[1]) - 20.0 / 110.0).abs() < 1e-9);
        assert!((after.busy_since(&before, &[]) - 110.0 / 210.0).abs() < 1e-9);
    }

    #[test]
    fn cpu_lists_accept_ranges_and_commas() {
        assert_eq!(parse_list("0").unwrap(), vec![0]);
        assert_eq!(parse_list("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_list("").unwrap().is_empty());
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("x").is_err());
    }
}
