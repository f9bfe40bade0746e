use base64::Engine as _;
use codeb_types::{CallStatus, UtcMillis};

use super::*;
use crate::store::Turn;

/// An independent quoted-printable decoder (RFC 2045 §6.7) for round trips.
fn qp_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let body = s.strip_suffix("\r\n").unwrap_or(s);
    for line in body.split("\r\n") {
        let (line, soft) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let b = line.as_bytes();
        let mut j = 0;
        while j < b.len() {
            if b[j] == b'=' {
                let hex = std::str::from_utf8(&b[j + 1..j + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                j += 3;
            } else {
                out.push(b[j]);
                j += 1;
            }
        }
        if !soft {
            out.push(b'\n');
        }
    }
    out
}

#[test]
fn quoted_printable_round_trips_and_keeps_lines_short() {
    let long_turn = "Grüße aus Köln = ok. ".repeat(1000);
    let samples = [
        "plain ascii\n".to_owned(),
        "trailing space \nand tab\t\nend".to_owned(),
        "€ sign, ≠, 日本語, emoji 🎉\n".to_owned(),
        format!("{long_turn}\n"),
        ".leading dot\n..two\n".to_owned(),
        "x".repeat(75) + "=\n" + &"y".repeat(76) + "\n",
        "carriage\r\nreturns\r\n".to_owned(),
    ];
    for text in samples {
        let qp = quoted_printable(&text);
        assert!(qp.is_ascii(), "{qp}");
        assert!(qp.ends_with("\r\n"));
        for line in qp.split("\r\n") {
            assert!(line.len() <= 76, "line of {}: {line}", line.len());
            assert!(!line.ends_with(' ') && !line.ends_with('\t'), "{line:?}");
            assert!(!line.contains('\r') && !line.contains('\n'));
        }
        let want = text.replace("\r\n", "\n");
        let want = if want.ends_with('\n') {
            want
        } else {
            want + "\n"
        };
        assert_eq!(String::from_utf8(qp_decode(&qp)).unwrap(), want);
    }
}

#[test]
fn dates_are_rfc5322() {
    // The same instants as Python's email.utils.format_datetime prints.
    let t = UtcMillis::parse_rfc3339("2026-06-04T17:55:12.401Z").unwrap();
    assert_eq!(rfc5322_date(t), "Thu, 04 Jun 2026 17:55:12 +0000");
    let t = UtcMillis::parse_rfc3339("2024-02-29T00:00:00Z").unwrap();
    assert_eq!(rfc5322_date(t), "Thu, 29 Feb 2024 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(UtcMillis(0)),
        "Thu, 01 Jan 1970 00:00:00 +0000"
    );
    let t = UtcMillis::parse_rfc3339("2027-12-26T23:59:59Z").unwrap();
    assert_eq!(rfc5322_date(t), "Sun, 26 Dec 2027 23:59:59 +0000");
}

#[test]
fn subjects_are_ascii_or_encoded_words() {
    assert_eq!(
        encode_header_value("Subject", "Call to +1555: finished"),
        "Call to +1555: finished"
    );
    let long = "word ".repeat(40);
    let folded = encode_header_value("Subject", long.trim_end());
    assert!(folded.split("\r\n").all(|l| l.len() <= 78), "{folded}");
    assert_eq!(folded.replace("\r\n ", " "), long.trim_end());
    let utf = "Anruf an +49 (Zahnärztin Müller – Erinnerung 🦷): finished ".repeat(3);
    let enc = encode_header_value("Subject", &utf);
    assert!(enc.is_ascii());
    let mut decoded = Vec::new();
    for word in enc.split("\r\n ") {
        assert!(word.len() <= 75, "{word}");
        let b64 = word
            .strip_prefix("=?utf-8?B?")
            .and_then(|w| w.strip_suffix("?="))
            .unwrap();
        decoded.extend(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        );
        // Every word decodes to whole characters on its own.
        assert!(std::str::from_utf8(&decoded).is_ok());
    }
    assert_eq!(String::from_utf8(decoded).unwrap(), utf);
    // Text that looks like an encoded word is encoded, not passed through.
    assert!(encode_header_value("Subject", "=?x?Q?a?=").starts_with("=?utf-8?B?"));
}

#[test]
fn dot_stuffing() {
    assert_eq!(
        dot_stuff("a\r\n.b\r\n..c\r\n.\r\n"),
        b"a\r\n..b\r\n...c\r\n..\r\n.\r\n"
    );
    assert_eq!(dot_stuff(".x"), b"..x\r\n.\r\n");
    assert_eq!(dot_stuff(""), b"\r\n.\r\n");
    // A dot inside a line is left alone.
    assert_eq!(dot_stuff("a.b\r\n"), b"a.b\r\n.\r\n");
}

fn summary<'a>(turns: &'a [Turn]) -> CallSummary<'a> {
    CallSummary {
        call_id: "oac-0123456789ab",
        phone: "+15551234567",
        display_name: "Reminder",
        status: CallStatus::EndedSuccess,
        outcome: "finished",
        answered: true,
        attempt: 1,
        dispatched_at: Some(UtcMillis(1_780_000_000_000)),
        answered_at: Some(UtcMillis(1_780_000_002_000)),
        ended_at: UtcMillis(1_780_000_060_000),
        talk_seconds: 58,
        duration_seconds: 60,
        error_detail: "",
        trunk_id: Some("tr_0123456789abcdef"),
        tokens: 150,
        transcript: Some(("outbound-ai-x.txt", turns)),
    }
}

#[test]
fn the_email_reports_outcome_times_and_turns() {
    let turns = [
        Turn {
            speaker: "AI".into(),
            text: "Hi, this is a reminder.".into(),
            ts: UtcMillis(1_780_000_002_500),
        },
        Turn {
            speaker: "Caller".into(),
            text: "Thanks, bye.".into(),
            ts: UtcMillis(1_780_000_006_000),
        },
    ];
    let (subject, body) = render_call_email(&summary(&turns));
    assert_eq!(
        subject,
        "Call to +15551234567 (Reminder): finished [oac-0123456789ab]"
    );
    for want in [
        "Status:      ended-success",
        "Outcome:     finished",
        "Answered:    yes",
        "Talk time:   58 s",
        "Trunk:       tr_0123456789abcdef",
        "Transcript (2 turns, outbound-ai-x.txt):",
        "] AI: Hi, this is a reminder.\n",
        "] Caller: Thanks, bye.\n",
    ] {
        assert!(body.contains(want), "{want} in:\n{body}");
    }
    assert!(!body.contains("Error:"));
    // A failure without a conversation says so, with its detail.
    let mut s = summary(&[]);
    s.status = CallStatus::EndedFailedFinal;
    s.outcome = "failed";
    s.answered = false;
    s.error_detail = "SIP 503 Service Unavailable";
    s.transcript = None;
    let (subject, body) = render_call_email(&s);
    assert!(
        subject.ends_with(": failed [oac-0123456789ab]"),
        "{subject}"
    );
    assert!(
        body.contains("Error:       SIP 503 Service Unavailable"),
        "{body}"
    );
    assert!(body.contains("No transcript"), "{body}");
    assert!(body.contains("Attempt:     1\n"), "{body}");
    // Cancelled before it was dialled: no attempt (the record says 0).
    s.status = CallStatus::Cancelled;
    s.outcome = "cancelled";
    s.attempt = 0;
    s.dispatched_at = None;
    let (_, body) = render_call_email(&s);
    assert!(body.contains("Attempt:     none (not dialled)"), "{body}");
}

#[test]
fn a_huge_transcript_is_cut_with_a_pointer() {
    let turns: Vec<Turn> = (0..200)
        .map(|i| Turn {
            speaker: "AI".into(),
            text: "z".repeat(16 * 1024),
            ts: UtcMillis(i),
        })
        .collect();
    let (_, body) = render_call_email(&summary(&turns));
    assert!(body.len() <= MAX_BODY_BYTES, "{}", body.len());
    assert!(body.contains("GET /api.ashx/v1/transcripts/oac-0123456789ab"));
}

#[test]
fn the_message_has_the_headers_a_relay_expects() {
    let m = Outgoing {
        id: "em_0123456789abcdef",
        from: "codeb@phone.example.test",
        to: "ops@example.com",
        subject: "Call to +1555 (Zahnärztin): finished",
        body: "Hello\n.dot line\n",
        queued_at: UtcMillis(1_780_000_000_000),
        call_id: "oac-0123456789ab",
    };
    let msg = build_message(&m, "phone.example.test");
    assert!(msg.is_ascii());
    let (head, body) = msg.split_once("\r\n\r\n").unwrap();
    for want in [
        "Date: Thu, 28 May 2026 20:26:40 +0000",
        "From: CodeB <codeb@phone.example.test>",
        "To: <ops@example.com>",
        "Subject: =?utf-8?B?",
        "Message-ID: <em_0123456789abcdef@phone.example.test>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "Auto-Submitted: auto-generated",
    ] {
        assert!(head.contains(want), "{want} in:\n{head}");
    }
    assert!(!head.contains('\n') || head.split("\r\n").all(|l| !l.contains('\n')));
    assert_eq!(body, "Hello\r\n.dot line\r\n");
    assert!(dot_stuff(&msg).ends_with(b"\r\n..dot line\r\n.\r\n"));
}
