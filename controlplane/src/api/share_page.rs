//! The public page behind a share link: the transcript as a small,
//! self-contained HTML document. Everything from the transcript is
//! HTML-escaped; the page loads nothing (its Content-Security-Policy says
//! so) and sends no Referer, so the token in its URL does not leak. A link
//! that does not work gets an HTML 404 page with the same headers.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use codeb_types::UtcMillis;

use crate::store::TranscriptRecord;

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;\
padding:0 1rem;color:#1b1b1b}h1{font-size:1.3rem}dl{display:grid;grid-template-columns:\
max-content 1fr;gap:.2rem 1rem;color:#555}dd{margin:0}.turn{margin:.8rem 0}.who{font-weight:600}\
.AI .who{color:#0b5cad}.ts{color:#888;font-size:.8rem;margin-left:.5rem}";

/// The whole page for one transcript.
pub fn render(t: &TranscriptRecord) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>Transcript {id}</title>\
         <style>{STYLE}</style></head><body><h1>Transcript {id}</h1><dl>",
        id = escape(&t.call_id)
    );
    let mut field = |k: &str, v: &str| {
        if !v.is_empty() {
            let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
        }
    };
    field("Source", &t.caller_source);
    field("Rule", &t.rule);
    field("Started", &t.started_at.to_iso());
    field(
        "Ended",
        &t.ended_at.map(UtcMillis::to_iso).unwrap_or_default(),
    );
    field("Duration", &format!("{} s", t.duration_sec));
    field("Outcome", &t.outcome);
    h.push_str("</dl><main>");
    for turn in &t.turns {
        let class = if turn.speaker == "AI" { "AI" } else { "Caller" };
        let _ = write!(
            h,
            "<div class=\"turn {class}\"><span class=\"who\">{}</span>\
             <span class=\"ts\">{}</span><div>{}</div></div>",
            escape(&turn.speaker),
            escape(&turn.ts.to_iso()),
            escape(&turn.text)
        );
    }
    h.push_str("</main></body></html>");
    h
}

/// The page as a response, with the headers that keep it contained.
pub fn response(t: &TranscriptRecord) -> Response {
    contained(render(t).into_response())
}

/// What an unknown, revoked or expired link shows: a 404 page that says
/// nothing about which, contained like the transcript page (a browser
/// shows it, and its URL still carries a token).
pub fn not_found() -> Response {
    let page = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
                <meta name=\"robots\" content=\"noindex\"><title>Share link not found</title>\
                </head><body><h1>No such share link</h1>\
                <p>It may have expired or been revoked.</p></body></html>";
    contained((StatusCode::NOT_FOUND, page).into_response())
}

/// A public page whose URL is a secret: nothing may load, run, frame it,
/// post from it, rebase its links or learn its URL through a Referer; no
/// sniffing; no indexing. (`Cache-Control: no-store` comes from the
/// router, for every response.)
fn contained(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    for (k, v) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Turn;

    #[test]
    fn everything_is_escaped() {
        let t = TranscriptRecord {
            call_id: "oac-0123456789ab".into(),
            caller_source: "outbound-ai".into(),
            outcome: "finished".into(),
            turns: vec![Turn {
                speaker: "Caller".into(),
                text: "<script>alert('x')</script> & \"ünïcode\"".into(),
                ts: UtcMillis(0),
            }],
            ..Default::default()
        };
        let h = render(&t);
        assert!(!h.contains("<script>"), "{h}");
        assert!(
            h.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;ünïcode&quot;"),
            "{h}"
        );
        assert!(h.contains("Transcript oac-0123456789ab"));
    }
}
