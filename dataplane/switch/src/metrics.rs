//! Prometheus metrics of the switch, rendered from the SIP core's and the
//! reactor's counters by the SIP thread (which owns them) and served by a
//! small HTTP thread, so scraping never touches the signalling path.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sip::Core;
use crate::sip::transport::WireStats;

/// The latest rendering, shared with the HTTP thread.
#[derive(Clone, Default)]
pub struct Exposition(Arc<Mutex<String>>);

impl Exposition {
    pub fn set(&self, text: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }

    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ")
}

/// The text exposition format (version 0.0.4).
pub fn render(core: &Core, wire: &WireStats, backend: &str) -> String {
    let io = &wire.io;
    let mut o = String::new();
    let s = &core.stats;
    let l = core.layer_stats();
    let counter = |o: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    counter(
        &mut o,
        "codeb_sip_messages_received_total",
        "SIP messages received",
        s.messages_in,
    );
    counter(
        &mut o,
        "codeb_sip_stateless_replies_total",
        "Malformed requests answered statelessly",
        s.stateless_replies,
    );
    counter(
        &mut o,
        "codeb_sip_dropped_invalid_total",
        "Messages dropped as invalid",
        s.dropped_invalid,
    );
    counter(
        &mut o,
        "codeb_sip_dropped_scanner_total",
        "Requests from scanner user agents dropped",
        s.dropped_scanner,
    );
    counter(
        &mut o,
        "codeb_sip_rate_limited_total",
        "Messages dropped by per-source rate limits",
        s.dropped_rate_limited,
    );
    counter(
        &mut o,
        "codeb_virtual_number_calls_total",
        "Inbound calls answered by a virtual number's AI persona",
        s.virtual_number_calls,
    );
    counter(
        &mut o,
        "codeb_sip_digest_replays_total",
        "REGISTERs with digest credentials already used (replayed), challenged again",
        s.digest_replays,
    );
    counter(
        &mut o,
        "codeb_virtual_number_refused_total",
        "Inbound calls routed to a virtual number that ended before the answer (refused, or given up while ringing)",
        s.virtual_number_refused,
    );
    counter(
        &mut o,
        "codeb_sip_framing_errors_total",
        "TCP framing errors (connection closed)",
        s.framing_errors,
    );
    counter(
        &mut o,
        "codeb_sip_keepalive_pongs_total",
        "CRLF keep-alive pings answered on TCP connections (RFC 5626)",
        s.keepalive_pongs,
    );
    counter(
        &mut o,
        "codeb_sip_forbidden_destinations_total",
        "Sends refused to broadcast/multicast addresses",
        s.dropped_forbidden_destination,
    );
    counter(
        &mut o,
        "codeb_sip_retransmissions_absorbed_total",
        "Retransmitted requests absorbed by transactions",
        l.retransmissions_absorbed,
    );
    counter(
        &mut o,
        "codeb_sip_stray_responses_total",
        "Responses matching no transaction",
        l.stray_responses,
    );
    gauge(
        &mut o,
        "codeb_sip_transactions",
        "Live SIP transactions",
        core.transactions() as u64,
    );
    gauge(
        &mut o,
        "codeb_sip_dialogs",
        "Active call legs (dialogs)",
        core.dialogs() as u64,
    );
    counter(
        &mut o,
        "codeb_rtp_timeouts_total",
        "Answered calls hung up because their RTP stopped (CODEB_RTP_TIMEOUT)",
        s.rtp_timeouts,
    );
    let _ = writeln!(
        o,
        "# HELP codeb_dtmf_digits_total Keys pressed on calls' legs by how they came (telephone-event: RFC 4733; inband: tones heard in G.711 audio without telephone-event)\n# TYPE codeb_dtmf_digits_total counter"
    );
    for source in ["telephone-event", "inband"] {
        let _ = writeln!(
            o,
            "codeb_dtmf_digits_total{{source=\"{source}\"}} {}",
            s.dtmf_digits.get(source).copied().unwrap_or(0)
        );
    }
    counter(
        &mut o,
        "codeb_sip_tcp_connects_total",
        "TCP connections the switch opened (to trunks configured for TCP)",
        s.outbound.connects,
    );
    counter(
        &mut o,
        "codeb_sip_tcp_connect_failures_total",
        "TCP connections the switch opened that failed before they were up",
        s.outbound.connect_failures,
    );
    counter(
        &mut o,
        "codeb_sip_tcp_refused_total",
        "Messages not sent because an opening TCP connection's queue or the outbound connection table was full",
        s.outbound.refused,
    );
    counter(
        &mut o,
        "codeb_sip_tcp_refused_per_address_total",
        "Accepted TCP connections closed at once because their address already held the most one address may (256)",
        s.tcp_refused_per_address,
    );
    gauge(
        &mut o,
        "codeb_sip_tcp_outbound_connections",
        "TCP connections the switch opened, open or opening",
        core.outbound_connections() as u64,
    );
    let (relayed, ports) = core.media_stats();
    counter(
        &mut o,
        "codeb_media_relayed_packets_total",
        "RTP packets relayed by the media workers",
        relayed,
    );
    gauge(
        &mut o,
        "codeb_media_ports_in_use",
        "RTP ports held by calls (two per call)",
        ports as u64,
    );
    if let Some(io) = core.media_io() {
        counter(
            &mut o,
            "codeb_media_datagrams_in_total",
            "RTP and RTCP datagrams the media workers received",
            io.datagrams_in,
        );
        counter(
            &mut o,
            "codeb_media_datagrams_out_total",
            "RTP and RTCP datagrams the media workers sent",
            io.datagrams_out,
        );
        counter(
            &mut o,
            "codeb_media_datagrams_truncated_total",
            "Media datagrams too large for a receive buffer (dropped)",
            io.truncated,
        );
        counter(
            &mut o,
            "codeb_media_send_errors_total",
            "Media sends the kernel refused (each a lost packet)",
            io.send_errors,
        );
        counter(
            &mut o,
            "codeb_media_steered_strays_total",
            "Steered media datagrams for a port no call holds any more, or paused for a flood (CODEB_RTP_STEER=on)",
            io.steered_strays,
        );
        counter(
            &mut o,
            "codeb_media_flood_pauses_total",
            "Media ports paused for 2 s because they received more datagrams a second than CODEB_RTP_FLOOD_PPS",
            io.flood_pauses,
        );
        gauge(
            &mut o,
            "codeb_media_flooded_ports",
            "Media ports paused for a flood now",
            io.flooded_ports,
        );
        counter(
            &mut o,
            "codeb_media_source_filters_refused_total",
            "Kernel source filters for a call's media port that the kernel refused (the call's own source check still drops strangers, after reading them)",
            io.filters_refused,
        );
        gauge(
            &mut o,
            "codeb_media_port_steering_workers",
            "Media workers receiving their ports through port steering (CODEB_RTP_STEER=on)",
            io.steering_workers as u64,
        );
    }
    let _ = writeln!(
        o,
        "# HELP codeb_calls Calls in progress by phase (routing: the caller's INVITE is pending; answered: waiting for the caller's ACK; confirmed; ending: BYEs or CANCELs out)\n# TYPE codeb_calls gauge"
    );
    for (phase, n) in core.calls_by_phase() {
        let _ = writeln!(o, "codeb_calls{{phase=\"{phase}\"}} {n}");
    }
    gauge(
        &mut o,
        "codeb_sip_registrations",
        "Registered contacts",
        core.registrar().total() as u64,
    );
    let _ = writeln!(
        o,
        "# HELP codeb_sip_parse_errors_total Malformed messages by problem\n# TYPE codeb_sip_parse_errors_total counter"
    );
    let mut problems: Vec<_> = s.problems.iter().collect();
    problems.sort();
    for (k, v) in problems {
        let _ = writeln!(
            o,
            "codeb_sip_parse_errors_total{{kind=\"{}\"}} {v}",
            escape(k)
        );
    }
    let _ = writeln!(
        o,
        "# HELP codeb_sip_refer_transfers_total REFER transfers by result (transferred, failed: the target did not answer, refused: 403)\n# TYPE codeb_sip_refer_transfers_total counter"
    );
    for result in ["transferred", "failed", "refused"] {
        let v = s.refer_transfers.get(result).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "codeb_sip_refer_transfers_total{{result=\"{result}\"}} {v}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP codeb_sip_redirects_total Callee redirects (3xx) by result (followed to a user of the tenant, refused: 480 to the caller)\n# TYPE codeb_sip_redirects_total counter\ncodeb_sip_redirects_total{{result=\"followed\"}} {}\ncodeb_sip_redirects_total{{result=\"refused\"}} {}",
        s.redirects_followed, s.redirects_refused
    );
    let _ = writeln!(
        o,
        "# HELP codeb_sip_responses_total Final responses sent, by method and status\n# TYPE codeb_sip_responses_total counter"
    );
    let mut responses: Vec<_> = s.responses.iter().collect();
    responses.sort();
    for ((m, code), v) in responses {
        let _ = writeln!(
            o,
            "codeb_sip_responses_total{{method=\"{}\",status=\"{code}\"}} {v}",
            escape(m)
        );
    }
    let _ = writeln!(
        o,
        "# HELP codeb_trunk_up Trunk answers OPTIONS (1), does not (0); absent until known\n# TYPE codeb_trunk_up gauge"
    );
    let trunks = core.trunk_status();
    for t in &trunks {
        if let Some(up) = t.up {
            let _ = writeln!(
                o,
                "codeb_trunk_up{{trunk=\"{}\"}} {}",
                escape(&t.id),
                u8::from(up)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP codeb_trunk_registered Registration with the trunk is current\n# TYPE codeb_trunk_registered gauge"
    );
    for t in &trunks {
        if let Some(r) = t.registered {
            let _ = writeln!(
                o,
                "codeb_trunk_registered{{trunk=\"{}\"}} {}",
                escape(&t.id),
                u8::from(r)
            );
        }
    }
    counter(
        &mut o,
        "codeb_io_datagrams_in_total",
        "Datagrams received",
        io.datagrams_in,
    );
    counter(
        &mut o,
        "codeb_io_datagrams_out_total",
        "Datagrams sent",
        io.datagrams_out,
    );
    counter(
        &mut o,
        "codeb_io_datagrams_truncated_total",
        "Datagrams too large for a buffer",
        io.datagrams_truncated,
    );
    counter(
        &mut o,
        "codeb_io_send_errors_total",
        "Failed sends",
        io.send_errors,
    );
    counter(
        &mut o,
        "codeb_io_refused_connections_total",
        "TCP connections refused at the limit",
        io.refused_connections,
    );
    gauge(
        &mut o,
        "codeb_io_open_connections",
        "Open TCP connections",
        io.open_connections,
    );
    counter(
        &mut o,
        "codeb_sip_transport_queue_drops_total",
        "SIP datagrams dropped because the SIP core's queue was full",
        wire.queue_drops,
    );
    let _ = writeln!(
        o,
        "# HELP codeb_io_backend IO backend in use\n# TYPE codeb_io_backend gauge\ncodeb_io_backend{{backend=\"{backend}\"}} 1"
    );
    o
}

/// Serves `GET /metrics` on `addr` from a thread of its own.
pub fn serve(addr: SocketAddr, exposition: Exposition) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics ") {
                ("200 OK", exposition.get())
            } else if head.starts_with("GET /healthz ") {
                ("200 OK", "ok\n".to_owned())
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(local)
}
