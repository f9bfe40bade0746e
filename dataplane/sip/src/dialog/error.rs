//! Errors of the dialog layer, sorted by who is at fault. Received
//! in-dialog requests never produce errors: [`Dialog::handle_request`]
//! answers them (see [`Incoming`]).
//!
//! [`Dialog::handle_request`]: super::Dialog::handle_request
//! [`Incoming`]: super::Incoming

use thiserror::Error;

use crate::error::ValueError;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DialogError {
    // --- The messages given cannot make a dialog (the peer's fault when
    // --- they came off the wire).
    /// Only INVITE with a 101–299 response (or, for the UAS, a request
    /// without a To tag) creates a dialog here.
    #[error("not a dialog-creating request or response")]
    NotDialogCreating,
    /// The response has no To tag, so it cannot identify a dialog.
    #[error("response has no To tag")]
    NoRemoteTag,
    /// The INVITE has no Contact, so there is no remote target (§12.1.1).
    #[error("request has no Contact")]
    NoContact,
    /// A header needed to build the dialog or a request is invalid.
    #[error("invalid message: {0}")]
    Invalid(#[from] ValueError),

    // --- Our caller's misuse.
    /// The dialog is terminated.
    #[error("dialog terminated")]
    Terminated,
    /// Not allowed in this state: re-INVITE on an early dialog, BYE from
    /// the caller on an early dialog (CANCEL instead, §15), BYE from the
    /// callee before its 2xx was ACKed (§15).
    #[error("not allowed in the dialog's current state")]
    WrongState,
    /// An INVITE (or UPDATE offer) is in progress in either direction
    /// (§14.1; RFC 3311 §5.1).
    #[error("an INVITE or UPDATE is already pending")]
    Pending,
    /// ACK and CANCEL are not started as in-dialog requests: use
    /// [`super::Dialog::ack`] and the transaction layer's CANCEL.
    #[error("method cannot be sent this way")]
    WrongMethod,
    /// No 2xx to an INVITE of ours with this CSeq awaits an ACK.
    #[error("no 2xx with this CSeq to acknowledge")]
    NothingToAck,
    /// The local CSeq reached 2^32-1.
    #[error("CSeq space exhausted")]
    SequenceExhausted,

    // --- Capacity.
    #[error("dialog table full")]
    TableFull,
    #[error("dialog already in the table")]
    Exists,
}
