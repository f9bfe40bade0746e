//! The gRPC contract between the control plane (client) and switch nodes
//! (server): `proto/codeb/switch/v1/switch.proto`, compiled at build time.
//! This crate is the only thing both planes share besides `codeb-types`.

/// `codeb.switch.v1`: the messages, `switch_client::SwitchClient` and
/// `switch_server::{Switch, SwitchServer}`.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    reason = "generated code"
)]
pub mod v1 {
    tonic::include_proto!("codeb.switch.v1");
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::v1;

    #[test]
    fn an_event_survives_the_wire() {
        let ev = v1::Event {
            seq: 7,
            journal_id: "j1".into(),
            at_unix_ms: 1_700_000_000_000,
            call_id: "oac-0123456789ab".into(),
            attempt: 2,
            tenant: "example.com".into(),
            kind: Some(v1::event::Kind::Ended(v1::CallEnded {
                outcome: "far-hangup".into(),
                answered: true,
                talk_seconds: 42,
                ..Default::default()
            })),
        };
        let back = v1::Event::decode(ev.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(v1::ConfigSnapshot::decode(&[0xff, 0xff, 0xff][..]).is_err());
    }
}
