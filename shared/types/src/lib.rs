//! The vocabulary both planes share (the v1 spec's nouns), with no IO and no
//! runtime: identifiers and their wire forms, E.164 numbers, the outbound call
//! state model, outcomes, event names, and UTC timestamps as the API prints
//! them.
//!
//! Anything random (new ids) takes its bytes from the caller, so this crate
//! never touches the OS.

pub mod e164;
pub mod ids;
pub mod state;
pub mod time;
pub mod vendor;

pub use e164::E164;
pub use ids::{
    ApiKeyId, CallId, DeliveryId, EventId, IdError, ShareId, SubscriptionId, TrunkId, UserId,
    VnumCallId,
};
pub use state::{CallStatus, EventName, Outcome};
pub use time::UtcMillis;
pub use vendor::Vendor;
