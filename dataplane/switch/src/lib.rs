//! The CodeB switch: SIP B2BUA, registrar and inbound routing on the
//! io_uring transport, and the gRPC control link with its event journal.
//! The binary is `codeb-switch`.

pub mod ai;
pub mod cidr;
pub mod config;
pub mod control;
pub mod fdlimit;
pub mod media;
pub mod metrics;
pub mod ports;
pub mod protection;
pub mod rebind;
pub mod registrar;
pub mod routing;
pub mod sip;
