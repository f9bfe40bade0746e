//! The transaction layer under arbitrary sequences of time steps, received
//! messages (generated from a small vocabulary so that they match each
//! other and our transactions often, with malformed variants) and TU
//! calls. Asserts: no panic, the table never holds more than its bound,
//! and everything it puts on the wire parses.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_sip::transaction::{Config, Event, IdGenerator, Peer, TransactionLayer};
use codeb_sip::{
    Host, Limits, Method, NameAddr, RequestBuilder, StatusCode, TransactionId, Transport, Uri, Via,
    parse_datagram,
};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 8;

/// Reads the fuzz input as a stream of small numbers.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    fn pick<'t, T>(&mut self, from: &'t [T]) -> Option<&'t T> {
        let i = usize::from(self.byte()?);
        from.get(i % from.len().max(1))
    }
}

const METHODS: [&str; 7] = ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "FOO"];
const STATUSES: [u16; 9] = [100, 180, 183, 200, 202, 404, 487, 491, 503];

/// A received message from the vocabulary; bits of `shape` break it.
fn message(inp: &mut Input<'_>, our_branches: &[Bytes]) -> Option<Bytes> {
    let kind = inp.byte()?;
    let shape = inp.byte()?;
    let n = inp.byte()? % 4;
    let method = *inp.pick(&METHODS)?;
    let branch = match inp.byte()? % 4 {
        0 => format!(";branch=z9hG4bK{n}"),
        1 => format!(";branch=old{n}"),
        2 => String::new(),
        _ => match inp.pick(our_branches) {
            Some(b) => format!(";branch={}", String::from_utf8_lossy(b)),
            None => format!(";branch=z9hG4bK{n}"),
        },
    };
    let start = if kind % 2 == 0 {
        format!("{method} sip:bob@example.com SIP/2.0\r\n")
    } else {
        format!("SIP/2.0 {} Whatever\r\n", inp.pick(&STATUSES)?)
    };
    let mut lines = vec![
        format!("Via: SIP/2.0/UDP 192.0.2.{}:5060{branch};rport", n % 2 + 1),
        "From: <sip:alice@example.com>;tag=a1".to_owned(),
        if shape & 1 == 0 {
            "To: <sip:bob@example.com>".to_owned()
        } else {
            format!("To: <sip:bob@example.com>;tag=t{n}")
        },
        format!("Call-ID: call{}", n % 2),
        format!("CSeq: {} {method}", n % 3),
        "Max-Forwards: 70".to_owned(),
    ];
    if shape & 2 != 0 {
        lines.push("Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKsecond".to_owned());
    }
    if shape & 4 != 0 {
        let victim = usize::from(shape >> 4) % lines.len();
        lines.remove(victim);
    }
    if shape & 8 != 0 {
        let victim = usize::from(shape >> 5) % lines.len();
        if let Some(l) = lines.get_mut(victim) {
            l.push_str(";;\u{7}");
        }
    }
    let mut text = start;
    for l in lines {
        text.push_str(&l);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(text))
}

fn new_request(ids: &mut IdGenerator, method: Method) -> Option<codeb_sip::Request> {
    let via = Via::new(
        &Transport::Udp,
        &Host::from_bytes("192.0.2.99").ok()?,
        Some(5060),
        &ids.branch(),
        true,
    )
    .ok()?;
    RequestBuilder::new(method, Uri::parse("sip:x@192.0.2.1").ok()?)
        .via(&via)
        .from(&NameAddr::from_bytes("<sip:me@example.com>;tag=me").ok()?)
        .to(&NameAddr::from_bytes("<sip:x@example.com>").ok()?)
        .call_id(ids.call_id(None))
        .cseq(1)
        .build()
        .ok()
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mut layer: TransactionLayer<Peer> = TransactionLayer::new(Config {
        max_transactions: MAX,
        ..Config::default()
    });
    let mut ids = IdGenerator::new(1);
    let peers = [
        Peer::udp("192.0.2.1:5060".parse().expect("address")),
        Peer::tcp("192.0.2.2:5060".parse().expect("address")),
    ];
    let mut now = Instant::now();
    let mut known: Vec<TransactionId> = Vec::new();
    let mut our_branches: Vec<Bytes> = Vec::new();
    while let Some(op) = inp.byte() {
        match op % 10 {
            0 | 1 => {
                let step = u64::from(inp.byte().unwrap_or(0)) * 250;
                now += Duration::from_millis(step);
                layer.handle_timeout(now);
            }
            2..=4 => {
                let Some(wire) = message(&mut inp, &our_branches) else {
                    break;
                };
                let Some(from) = inp.pick(&peers) else { break };
                if let Ok(m) = parse_datagram(wire, &Limits::default()) {
                    layer.handle_message(now, m, from.clone());
                }
            }
            5 => {
                let method = match inp.pick(&METHODS) {
                    Some(m) => Method::parse(m.as_bytes().to_vec()).unwrap_or(Method::Options),
                    None => break,
                };
                let Some(to) = inp.pick(&peers) else { break };
                if let Some(r) = new_request(&mut ids, method) {
                    our_branches.extend(r.headers.top_via().ok().and_then(|v| v.branch));
                    if let Ok(id) = layer.send_request(now, r, to.clone()) {
                        known.push(id);
                    }
                }
            }
            6 => {
                let (Some(&id), Some(&status)) = (inp.pick(&known), inp.pick(&STATUSES)) else {
                    continue;
                };
                let status = StatusCode::new(status).unwrap_or(StatusCode::OK);
                if let Some(r) = layer
                    .request(id)
                    .and_then(|r| r.reply(status, Some(b"tu")).build().ok())
                {
                    let _ = layer.respond(now, id, r);
                }
            }
            7 => {
                let Some(&id) = inp.pick(&known) else {
                    continue;
                };
                match inp.byte().unwrap_or(0) % 4 {
                    0 => drop(layer.cancel(now, id)),
                    1 => drop(layer.answer_cancel(now, id, b"tu")),
                    2 => drop(layer.send_trying(now, id)),
                    _ => layer.handle_transport_error(now, id),
                }
            }
            _ => {
                if let Some(at) = layer.poll_timeout() {
                    now = now.max(at);
                    layer.handle_timeout(now);
                }
            }
        }
        assert!(
            layer.len() <= MAX && layer.occupancy() <= MAX,
            "table over its bound"
        );
        while let Some(t) = layer.poll_transmit() {
            assert!(
                parse_datagram(t.payload.clone(), &Limits::default()).is_ok(),
                "we sent something unparsable: {:?}",
                t.payload
            );
        }
        while let Some(ev) = layer.poll_event() {
            match ev {
                Event::Request { id, .. } | Event::Cancel { id, .. } => known.push(id),
                Event::CancelSent { cancel, .. } => known.push(cancel),
                _ => {}
            }
        }
        if known.len() > 64 {
            known.drain(..32);
        }
        if our_branches.len() > 64 {
            our_branches.drain(..32);
        }
    }
    // Whatever happened, the clock runs out: every transaction left is one
    // that waits for a final response without a timer of its own (RFC 3261
    // gives INVITE Proceeding none), and nothing is left scheduled.
    for _ in 0..10_000 {
        let Some(at) = layer.poll_timeout() else {
            break;
        };
        now = now.max(at);
        layer.handle_timeout(now);
        while layer.poll_transmit().is_some() {}
        while layer.poll_event().is_some() {}
    }
    assert_eq!(layer.poll_timeout(), None, "timers never run out");
    for id in known {
        if let Some(state) = layer.state(id) {
            assert_eq!(
                state,
                codeb_sip::transaction::State::Proceeding,
                "{id} stuck"
            );
        }
    }
});
