//! The registrar with digest authentication, and a call scripted from both
//! ends in Rust: the caller (a trunk) sends everything an A-leg may carry,
//! the callee (a registered user) checks that none of it crosses, and that
//! both legs see only the switch's own addresses in SIP and SDP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: failing loudly is the point

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bytes::Bytes;
use codeb_sip::digest::{Answer, pick_challenge};
use codeb_sip::{Limits, Message, parse_datagram};
use common::{Switch, loopback_config, status_of};

struct Peer {
    sock: UdpSocket,
    addr: SocketAddr,
}

impl Peer {
    fn new() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let addr = sock.local_addr().unwrap();
        Peer { sock, addr }
    }

    fn send(&self, to: SocketAddr, msg: &str) {
        self.sock.send_to(msg.as_bytes(), to).unwrap();
    }

    /// The next message, skipping 100 Trying.
    fn recv(&self) -> (Message, String, SocketAddr) {
        loop {
            let mut buf = vec![0u8; 65536];
            let (n, from) = self.sock.recv_from(&mut buf).expect("a message within 5 s");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with("SIP/2.0 100 ") {
                continue;
            }
            let msg =
                parse_datagram(Bytes::copy_from_slice(&buf[..n]), &Limits::default()).unwrap();
            return (msg, text, from);
        }
    }
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn register(p: &Peer, sw: SocketAddr, cseq: u32, auth: Option<&str>) -> (Message, String) {
    let a = p.addr;
    let auth = auth
        .map(|v| format!("Authorization: {v}\r\n"))
        .unwrap_or_default();
    p.send(
        sw,
        &format!(
            "REGISTER sip:codeb SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKreg{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:alex@codeb>;tag=r1\r\nTo: <sip:alex@codeb>\r\nCall-ID: reg-1@{a}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alex@{a};transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\"\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
        ),
    );
    let (m, t, _) = p.recv();
    (m, t)
}

fn answer(m: &Message, password: &str, cseq_uri: &str) -> String {
    let ch = pick_challenge(
        m.headers().www_authenticates().unwrap().iter(),
        Some("codeb"),
    )
    .unwrap();
    codeb_sip::digest::authorize(
        &ch,
        &Answer {
            username: "alex",
            password,
            method: "REGISTER",
            uri: cseq_uri,
            cnonce: "0a4f113b",
            nc: 1,
        },
    )
    .unwrap()
}

#[test]
fn digest_registration_then_call_with_topology_hiding() {
    let sw = Switch::start(&loopback_config("sip:uas@127.0.0.1:9"), &[]);
    let b = Peer::new();
    // 1. Challenge: SHA-256 and MD5 offered.
    let (m, text) = register(&b, sw.sip, 1, None);
    assert_eq!(status_of(text.as_bytes()), Some(401), "{text}");
    assert!(
        text.contains("algorithm=SHA-256") && text.contains("algorithm=MD5"),
        "{text}"
    );
    // 2. A wrong password is refused.
    let (_, text) = register(&b, sw.sip, 2, Some(&answer(&m, "wrong", "sip:codeb")));
    assert_eq!(status_of(text.as_bytes()), Some(403), "{text}");
    // 3. The right one binds the contact, parameters kept.
    let (m, _) = register(&b, sw.sip, 3, None);
    let (_, text) = register(&b, sw.sip, 4, Some(&answer(&m, "alex-secret", "sip:codeb")));
    assert_eq!(status_of(text.as_bytes()), Some(200), "{text}");
    let contact = header(&text, "Contact").unwrap();
    assert!(
        contact.contains(&format!("sip:alex@{};transport=udp", b.addr)),
        "{contact}"
    );
    assert!(
        contact.contains("+sip.instance=") && contact.contains(";expires=600"),
        "{contact}"
    );

    // 4. A call from the trunk to DID 1000 (routed to alex).
    let a = Peer::new();
    let aa = a.addr;
    let sip = sw.sip;
    a.send(
        sip,
        &format!(
            "INVITE sip:1000@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {aa};branch=z9hG4bKa1\r\nVia: SIP/2.0/UDP 10.9.8.7:5060;branch=z9hG4bKinternal\r\nMax-Forwards: 70\r\nFrom: \"Carol\" <sip:+15550002222@{aa}>;tag=a1\r\nTo: <sip:1000@{sip}>\r\nCall-ID: secret-a-leg-call-id@10.9.8.7\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{aa}>\r\nX-Bypass-me : lol\r\nP-Internal-Route: 10.9.8.7\r\nContent-Type: application/sdp\r\nContent-Length: 110\r\n\r\nv=0\r\no=- 1 1 IN IP4 10.9.8.7\r\ns=-\r\nc=IN IP4 10.9.8.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\n"
        ),
    );
    let (invite, text, from) = b.recv();
    assert_eq!(from, sw.sip);
    assert!(text.starts_with("INVITE sip:alex@"), "{text}");
    for secret in [
        "secret-a-leg-call-id",
        "10.9.8.7",
        "Bypass",
        "bypass",
        "P-Internal",
        &aa.to_string(),
        "z9hG4bKa1",
    ] {
        assert!(!text.contains(secret), "B sees {secret:?}:\n{text}");
    }
    assert!(
        header(&text, "From").unwrap().contains("+15550002222"),
        "the caller's number crosses"
    );
    assert!(
        header(&text, "From").unwrap().contains("Carol"),
        "and the display name"
    );
    assert_eq!(text.matches("\r\nVia:").count(), 1, "one Via: the switch's");
    assert!(
        text.contains(&format!("c=IN IP4 {}", sw.sip.ip())),
        "SDP carries the switch's media address"
    );
    assert!(
        text.contains("m=audio ") && !text.contains("m=audio 40000"),
        "and its own port"
    );
    assert!(
        text.contains("RTP/AVP 8 "),
        "A's codec is offered first (relay without transcoding)"
    );
    // B rings, then answers.
    let h = invite.headers();
    let inv_via = header(&text, "Via").unwrap();
    let b_from = header(&text, "From").unwrap();
    let b_to = header(&text, "To").unwrap();
    let b_callid = h.call_id().unwrap();
    let b_callid = String::from_utf8_lossy(&b_callid);
    for (code, sdp) in [
        (180, ""),
        (
            200,
            "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 42000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        ),
    ] {
        let reason = if code == 180 { "Ringing" } else { "OK" };
        let ct = if sdp.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        b.send(
            sw.sip,
            &format!(
                "SIP/2.0 {code} {reason}\r\nVia: {inv_via}\r\nFrom: {b_from}\r\nTo: {b_to};tag=tagOfTheCallee\r\nCall-ID: {b_callid}\r\nCSeq: 1 INVITE\r\nContact: <sip:alex@{}>\r\n{ct}Content-Length: {}\r\n\r\n{sdp}",
                b.addr,
                sdp.len()
            ),
        );
    }
    let (_, ack, _) = b.recv();
    assert!(
        ack.starts_with("ACK sip:alex@"),
        "B gets the ACK for its 2xx: {ack}"
    );
    let (_, ringing, _) = a.recv();
    assert_eq!(status_of(ringing.as_bytes()), Some(180), "{ringing}");
    let (_, ok, _) = a.recv();
    assert_eq!(status_of(ok.as_bytes()), Some(200), "{ok}");
    for secret in [
        "m=audio 42000",
        "tagOfTheCallee",
        &b.addr.to_string(),
        b_callid.as_ref(),
    ] {
        assert!(!ok.contains(secret), "A sees {secret:?} of B:\n{ok}");
    }
    assert!(ok.contains("RTP/AVP 8"), "A's answer keeps PCMA");
    let to_a = header(&ok, "To").unwrap().to_owned();
    a.send(sip, &format!("ACK sip:codeb@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {aa};branch=z9hG4bKa2\r\nMax-Forwards: 70\r\nFrom: \"Carol\" <sip:+15550002222@{aa}>;tag=a1\r\nTo: {to_a}\r\nCall-ID: secret-a-leg-call-id@10.9.8.7\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"));
    // A hangs up; B gets a BYE in B's dialog and answers it.
    a.send(sip, &format!("BYE sip:codeb@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {aa};branch=z9hG4bKa3\r\nMax-Forwards: 70\r\nFrom: \"Carol\" <sip:+15550002222@{aa}>;tag=a1\r\nTo: {to_a}\r\nCall-ID: secret-a-leg-call-id@10.9.8.7\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"));
    let (_, bye_ok, _) = a.recv();
    assert_eq!(status_of(bye_ok.as_bytes()), Some(200));
    let (bye, bye_text, _) = b.recv();
    assert!(bye_text.starts_with("BYE sip:alex@"), "{bye_text}");
    assert_eq!(
        String::from_utf8_lossy(&bye.headers().call_id().unwrap()),
        b_callid
    );
    let bye_via = header(&bye_text, "Via").unwrap();
    let bye_cseq = header(&bye_text, "CSeq").unwrap();
    b.send(sw.sip, &format!("SIP/2.0 200 OK\r\nVia: {bye_via}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {b_callid}\r\nCSeq: {bye_cseq}\r\nContent-Length: 0\r\n\r\n", header(&bye_text, "From").unwrap(), header(&bye_text, "To").unwrap()));
    assert_eq!(sw.metric("codeb_sip_dialogs "), Some(0.0));
}

#[test]
fn calls_from_unknown_sources_and_unknown_users() {
    // Loopback is not a trunk here: neither a trunk's inbound network nor
    // a trunk's own address (both are spared the flood limits).
    let config = loopback_config("sip:uas@127.0.0.1:9")
        .replace("inbound = [\"127.0.0.0/8\"]", "inbound = [\"10.0.0.0/8\"]")
        .replace("host = \"127.0.0.1\"", "host = \"10.0.0.1\"");
    let sw = Switch::start(&config, &[]);
    let a = Peer::new();
    let (aa, sip) = (a.addr, sw.sip);
    a.send(sip, &format!("INVITE sip:1000@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {aa};branch=z9hG4bKx1\r\nMax-Forwards: 70\r\nFrom: <sip:x@{aa}>;tag=x\r\nTo: <sip:1000@{sip}>\r\nCall-ID: x1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{aa}>\r\nContent-Length: 0\r\n\r\n"));
    let (_, text, _) = a.recv();
    assert_eq!(status_of(text.as_bytes()), Some(403), "{text}");
    // Scanners get silence (a fresh socket: the 403 above is retransmitted
    // until ACKed, as it should be).
    let a = Peer::new();
    let aa = a.addr;
    a.send(sip, &format!("OPTIONS sip:100@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {aa};branch=z9hG4bKs1\r\nMax-Forwards: 70\r\nFrom: <sip:x@{aa}>;tag=x\r\nTo: <sip:100@{sip}>\r\nCall-ID: s1@test\r\nCSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"));
    a.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        a.sock.recv_from(&mut buf).is_err(),
        "a scanner gets no answer"
    );
    // An untrusted source flooding gets rate limited.
    for i in 0..1000 {
        a.send(sip, &format!("OPTIONS sip:100@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {aa};branch=z9hG4bKf{i}\r\nMax-Forwards: 70\r\nFrom: <sip:x@{aa}>;tag=x\r\nTo: <sip:100@{sip}>\r\nCall-ID: f{i}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"));
    }
    assert!(sw.metric("codeb_sip_rate_limited_total").unwrap() > 0.0);
}
