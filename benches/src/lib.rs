//! Shared pieces of the load generators: latency recording and process CPU
//! accounting. Benchmarks are measurements, never tests.

pub mod latency;
pub mod proc_cpu;
