//! Errors of the transaction layer, sorted by who is at fault. Received
//! messages never produce errors (the layer drops or answers what it
//! cannot use and counts it in [`Stats`](super::Stats)); these are answers
//! to the TU's calls.

use thiserror::Error;

use super::State;
use crate::error::ValueError;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransactionError {
    // --- Our caller's misuse.
    /// The id names no live transaction (it may have terminated).
    #[error("no such transaction")]
    Unknown,
    /// Responses go to server transactions, CANCEL to client INVITEs.
    #[error("wrong kind of transaction for this call")]
    WrongKind,
    /// The transaction's state does not allow this (e.g. a second final
    /// response).
    #[error("not allowed in state {0:?}")]
    WrongState(State),
    /// ACK for a 2xx is sent outside transactions (§13.2.2.4, §17.1.1.3);
    /// ACK for a non-2xx is the client transaction's own.
    #[error("ACK is never sent as a transaction")]
    AckIsNotATransaction,
    /// A machine was created for a method of the other kind.
    #[error("method does not fit this kind of transaction")]
    WrongMethod,
    /// A request sent by a client transaction needs a top Via with an
    /// RFC 3261 branch (magic cookie) to match its responses.
    #[error("request has no RFC 3261 branch in its top Via")]
    NoBranch,
    /// Another live client transaction already uses this branch and method.
    #[error("branch already in use")]
    DuplicateBranch,

    // --- Capacity.
    /// The table holds `max_transactions` already.
    #[error("transaction table full")]
    TableFull,

    // --- Message content.
    /// A message built from the TU's input is invalid.
    #[error("invalid message: {0}")]
    Invalid(#[from] ValueError),
}
