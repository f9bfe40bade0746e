//! A pair of dialogs (caller and callee of one call) under arbitrary
//! sequences of time steps, generated in-dialog requests and responses
//! (right and wrong tags, CSeqs, session-timer headers, bodies) and TU
//! calls. Asserts: no panic, everything a dialog sends parses, and a
//! terminated dialog stays terminated and silent.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_sip::dialog::{DialogConfig, DialogState, Local};
use codeb_sip::transaction::{IdGenerator, Peer};
use codeb_sip::{
    Dialog, Host, Limits, Message, Method, NameAddr, Request, Response, StatusCode, Transport,
    parse_datagram,
};
use libfuzzer_sys::fuzz_target;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    fn pick<'t, T>(&mut self, from: &'t [T]) -> Option<&'t T> {
        from.get(usize::from(self.byte()?) % from.len().max(1))
    }
}

const METHODS: [&str; 8] = [
    "INVITE", "ACK", "BYE", "UPDATE", "INFO", "CANCEL", "OPTIONS", "PRACK",
];
const STATUSES: [u16; 12] = [100, 180, 200, 202, 408, 422, 481, 486, 487, 491, 500, 603];
const SE: [&str; 6] = [
    "",
    "Session-Expires: 90\r\n",
    "Session-Expires: 1800;refresher=uac\r\n",
    "Session-Expires: 120;refresher=uas\r\nMin-SE: 120\r\n",
    "Session-Expires: 30\r\nSupported: timer\r\n",
    "Session-Expires: x;refresher=both\r\nMin-SE: -1\r\n",
];

fn local(ip: &str) -> Option<Local> {
    Some(Local {
        transport: Transport::Udp,
        host: Host::from_bytes(ip.to_owned()).ok()?,
        port: Some(5060),
        contact: NameAddr::from_bytes(format!("<sip:u@{ip}>")).ok()?,
    })
}

/// One generated message between the two parties of call `call-1`.
fn message(inp: &mut Input<'_>) -> Option<Message> {
    let method = inp.pick(&METHODS)?;
    let shape = inp.byte()?;
    let cseq = inp.byte()? % 6;
    let se = inp.pick(&SE)?;
    let (from_tag, to_tag) = if shape & 1 == 0 {
        ("alice", "bob")
    } else {
        ("bob", "alice")
    };
    let to_tag = if shape & 2 == 0 { to_tag } else { "stranger" };
    let start = if shape & 4 == 0 {
        format!("{method} sip:u@192.0.2.20 SIP/2.0\r\n")
    } else {
        format!("SIP/2.0 {} X\r\n", inp.pick(&STATUSES)?)
    };
    let contact = if shape & 8 == 0 {
        "Contact: <sip:u@203.0.113.9>\r\n"
    } else {
        ""
    };
    let rr = if shape & 16 == 0 {
        ""
    } else {
        "Record-Route: <sip:p.example.com;lr>\r\n"
    };
    let body = if shape & 32 == 0 { "" } else { "v=0\r\n" };
    let text = format!(
        "{start}Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK{cseq}\r\n\
         From: <sip:a@example.com>;tag={from_tag}\r\nTo: <sip:b@example.com>;tag={to_tag}\r\n\
         Call-ID: call-1\r\nCSeq: {cseq} {method}\r\n{contact}{rr}{se}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    parse_datagram(Bytes::from(text), &Limits::default()).ok()
}

fn drain(d: &mut Dialog<Peer>) {
    while let Some(t) = d.poll_transmit() {
        assert!(
            parse_datagram(t.payload.clone(), &Limits::default()).is_ok(),
            "unparsable {:?}",
            t.payload
        );
    }
    while d.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let (Some(alice_l), Some(bob_l)) = (local("192.0.2.10"), local("192.0.2.20")) else {
        return;
    };
    let invite = "INVITE sip:u@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKinv\r\n\
                  From: <sip:a@example.com>;tag=alice\r\nTo: <sip:b@example.com>\r\nCall-ID: call-1\r\n\
                  CSeq: 1 INVITE\r\nContact: <sip:u@192.0.2.10>\r\nSupported: timer\r\n\
                  Session-Expires: 90\r\nContent-Length: 0\r\n\r\n";
    let Ok(Message::Request(invite)) =
        parse_datagram(Bytes::from_static(invite.as_bytes()), &Limits::default())
    else {
        return;
    };
    let mut inp = Input(data);
    let mut ids = IdGenerator::new(7);
    let cfg = DialogConfig {
        auto_ack: data.first().is_some_and(|b| b & 1 == 0),
        ..DialogConfig::default()
    };
    let peer = |ip: &str| Peer::udp(format!("{ip}:5060").parse().expect("address"));
    let Ok(mut bob) = Dialog::uas(&invite, b"bob", bob_l, peer("192.0.2.10"), cfg, &mut ids) else {
        return;
    };
    let Ok(ringing) = bob.reply(&invite, StatusCode::RINGING).build() else {
        return;
    };
    let now0 = Instant::now();
    let Ok(mut alice) = Dialog::uac(
        now0,
        &invite,
        &ringing,
        alice_l,
        peer("192.0.2.20"),
        cfg,
        &mut ids,
    ) else {
        return;
    };
    let mut now = now0;
    let mut last_request: Option<Request> = Some(invite);
    let mut last_response: Option<Response> = None;
    while let Some(op) = inp.byte() {
        let who = op & 1;
        let d = if who == 0 { &mut alice } else { &mut bob };
        let was_terminated = d.state() == DialogState::Terminated;
        match (op >> 1) % 8 {
            0 => {
                now += Duration::from_millis(u64::from(inp.byte().unwrap_or(0)) * 500);
                d.handle_timeout(now);
            }
            1 | 2 => match message(&mut inp) {
                Some(Message::Request(r)) => {
                    let _ = d.handle_request(now, &r);
                    last_request = Some(r);
                }
                Some(Message::Response(r)) => {
                    d.handle_response(now, &r);
                    last_response = Some(r);
                }
                None => {}
            },
            3 => {
                let method = inp
                    .pick(&METHODS)
                    .and_then(|m| Method::parse(m.as_bytes().to_vec()).ok());
                if let Some(Ok(b)) = method.map(|m| d.request(m)) {
                    let _ = b.build();
                }
            }
            4 => {
                let status = inp.pick(&STATUSES).and_then(|s| StatusCode::new(*s));
                if let (Some(req), Some(status)) = (&last_request, status)
                    && let Ok(r) = d.reply(req, status).build()
                {
                    d.sent_response(now, &r);
                }
            }
            5 => {
                let cseq = u32::from(inp.byte().unwrap_or(0) % 6);
                let _ = d.ack(now, cseq);
            }
            6 => {
                if let Some(r) = &last_response {
                    d.handle_response(now, r);
                }
            }
            _ => {
                if let Some(at) = d.poll_timeout() {
                    now = now.max(at);
                    d.handle_timeout(now);
                }
            }
        }
        if was_terminated {
            assert_eq!(
                d.state(),
                DialogState::Terminated,
                "a dialog came back to life"
            );
            assert!(d.poll_event().is_none(), "a terminated dialog spoke");
        }
        drain(d);
    }
});
