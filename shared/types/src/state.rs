//! The outbound call state model, call outcomes and event names, spelled
//! exactly as the v1 spec spells them on the wire.

use std::fmt;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }

            /// Every wire spelling, comma-separated, for error messages.
            pub fn expected() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown {} '{}' (expected one of: {})", $what, s, $name::expected()
                    ))
                })
            }
        }
    };
}

wire_enum!(
    /// Where an outbound AI call is in its life (spec: `GET /v1/calls`).
    CallStatus, "status" {
        Scheduled => "scheduled",
        Dispatching => "dispatching",
        InFlight => "in-flight",
        EndedSuccess => "ended-success",
        EndedFailedRetryPending => "ended-failed-retry-pending",
        EndedFailedFinal => "ended-failed-final",
        Cancelled => "cancelled",
    }
);

impl CallStatus {
    /// A call in a terminal state never changes again (hangup is a no-op).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallStatus::EndedSuccess | CallStatus::EndedFailedFinal | CallStatus::Cancelled
        )
    }
}

wire_enum!(
    /// How a call ended (spec: "Outcome glossary").
    Outcome, "outcome" {
        Finished => "finished",
        FarHangup => "far-hangup",
        EmptyRoom => "empty-room",
        TransferredToVnum => "transferred-to-vnum",
        Voicemail => "voicemail",
        NotNow => "not-now",
        NoAnswer => "no-answer",
        Cancelled => "cancelled",
        MaxDuration => "max-duration",
    }
);

wire_enum!(
    /// Events the platform emits (spec: "Event catalogue").
    EventName, "event" {
        CallStarted => "call.started",
        CallAnswered => "call.answered",
        CallTransferred => "call.transferred",
        CallEnded => "call.ended",
        OutboundAiFinished => "outbound-ai.finished",
        TranscriptSaved => "transcript.saved",
        ShareCreated => "share.created",
        ShareViewed => "share.viewed",
        ShareRevoked => "share.revoked",
        WebhookTest => "webhook.test",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings() {
        assert_eq!(CallStatus::InFlight.as_str(), "in-flight");
        assert_eq!(
            CallStatus::parse("ended-failed-retry-pending"),
            Some(CallStatus::EndedFailedRetryPending)
        );
        assert_eq!(CallStatus::parse("In-Flight"), None);
        assert_eq!(CallStatus::ALL.len(), 7);
        assert_eq!(Outcome::parse("max-duration"), Some(Outcome::MaxDuration));
        assert_eq!(
            EventName::OutboundAiFinished.as_str(),
            "outbound-ai.finished"
        );
        assert!(CallStatus::Cancelled.is_terminal());
        assert!(!CallStatus::EndedFailedRetryPending.is_terminal());
    }

    #[test]
    fn serde_errors_list_choices() {
        let err = serde_json::from_str::<CallStatus>("\"ringing\"").unwrap_err();
        assert!(err.to_string().contains("scheduled, dispatching"), "{err}");
    }
}
