//! What the benchmarks share (see BENCHMARKS.md for how they are run and read).
//!
//! - [`alloc`]: the counting global allocator; [`cpu`]: process CPU time;
//!   [`measure`]: probes and summaries.
//! - [`servers`]: the fake servers of `tests/support`, in a child process.
//! - [`calls`]: the four setups of the same call; [`report`]: the `--report` pass.
// Each bench binary uses its own part of this module.
#![allow(dead_code)]

pub mod alloc;
pub mod calls;
pub mod cpu;
pub mod measure;
pub mod report;
pub mod servers;
