//! The SIP side of the switch: the core (screening, transactions,
//! registrar, B2BUA) and the transport address type it speaks in.

pub mod calls;
pub mod core;
pub mod flow;
pub mod outbound;
pub mod transport;
pub mod trunks;

pub use self::core::{Core, CoreSettings, CoreStats, Outgoing};
pub use self::flow::Flow;
