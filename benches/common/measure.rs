//! Taking a measurement (wall time, process CPU, allocations) and summarizing samples.

use std::time::{Duration, Instant};

use super::alloc::{Allocated, allocated};
use super::cpu::process_cpu;

/// What the process spent between [`Probe::start`] and [`Probe::stop`].
#[derive(Clone, Copy, Debug)]
pub struct Spent {
    pub wall: Duration,
    pub cpu: Duration,
    pub allocated: Allocated,
}

impl Spent {
    /// CPU time per unit of work.
    pub fn cpu_per(&self, n: u64) -> Duration {
        self.cpu / u32::try_from(n).expect("fewer than 2^32 units")
    }

    /// Allocations per unit of work.
    pub fn allocs_per(&self, n: u64) -> f64 {
        self.allocated.count as f64 / n as f64
    }

    /// Bytes allocated per unit of work.
    pub fn bytes_per(&self, n: u64) -> f64 {
        self.allocated.bytes as f64 / n as f64
    }
}

pub struct Probe {
    wall: Instant,
    cpu: Duration,
    allocated: Allocated,
}

impl Probe {
    pub fn start() -> Self {
        Probe {
            wall: Instant::now(),
            cpu: process_cpu(),
            allocated: allocated(),
        }
    }

    pub fn stop(&self) -> Spent {
        Spent {
            wall: self.wall.elapsed(),
            cpu: process_cpu() - self.cpu,
            allocated: allocated() - self.allocated,
        }
    }
}

/// The `p`-th percentile (0–100, nearest rank) of `samples`.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of a few figures (one per round).
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("comparable figures"));
    sorted[sorted.len() / 2]
}

/// The smallest and largest of a few figures.
pub fn range<T: Copy + PartialOrd>(values: &[T]) -> (T, T) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("comparable figures"));
    (sorted[0], sorted[sorted.len() - 1])
}

/// Microseconds with one decimal.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// `b - a` in microseconds, signed.
pub fn delta_us(b: Duration, a: Duration) -> f64 {
    (b.as_secs_f64() - a.as_secs_f64()) * 1e6
}

/// The system's 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// A `usize` from the environment, else `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
