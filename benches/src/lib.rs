//! Shared pieces of the load generators: latency recording, process CPU
//! accounting, a minimal webhook receiver, paced RTP streams and a SIP
//! agent that places and answers calls through a switch. Benchmarks are measurements,
//! never tests.

pub mod latency;
pub mod proc_cpu;
pub mod receiver;
pub mod rtp_stream;
pub mod sip_agent;
pub mod udp_batch;
