//! Shared pieces of the load generators: latency recording, process CPU
//! accounting and a minimal webhook receiver. Benchmarks are measurements,
//! never tests.

pub mod latency;
pub mod proc_cpu;
pub mod receiver;
