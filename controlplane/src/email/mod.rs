//! Transcript + outcome emails: every outbound AI call that ends for good
//! has one queued in the outbox (`store::emails`, written with the call's
//! end); with `CODEB_SMTP_URL` set, `codeb serve` runs a sender that hands
//! them to the relay.
//!
//! - `message`: what the email says, and the RFC 5322 message around it.
//! - `smtp`: the SMTP client (plain or implicit TLS, AUTH PLAIN/LOGIN).
//! - `sender`: the task that claims, sends, retries and records.

pub mod message;
pub mod sender;
pub mod smtp;

#[cfg(test)]
#[path = "../../tests/support/smtp_sink.rs"]
pub(crate) mod smtp_sink;

#[cfg(test)]
mod tests;

pub use sender::{SenderConfig, SenderHandle};
pub use smtp::{SmtpClient, SmtpError, SmtpUrl};

/// Starts the sender for `state`'s configuration; None without a relay
/// (emails stay queued).
pub fn start(state: &crate::state::AppState) -> Result<Option<SenderHandle>, rustls::Error> {
    let email = &state.config.email;
    let Some(url) = email.smtp.clone() else {
        return Ok(None);
    };
    let client = SmtpClient::new(url, &email.host, email.timeout)?;
    Ok(Some(sender::start(
        state.store.clone(),
        state.clock.clone(),
        client,
        SenderConfig::new(email),
        Some(std::sync::Arc::clone(&state.metrics)),
    )))
}
