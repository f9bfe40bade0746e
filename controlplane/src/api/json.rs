//! JSON written straight into a response buffer for the list pages: rows
//! are rendered by the store while they are read (`store::JsonPage`), and
//! the envelope around them is written here. The bytes are the same as
//! serializing `ListEnvelope` with serde (the tests below hold them to it).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use codeb_types::UtcMillis;
use serde::Serialize;

use super::extract::{Paging, QueryParams};
use crate::store::JsonPage;

/// A UTC instant serialized as the spec spells it
/// (`2026-01-01T12:00:05.500Z`, as `UtcMillis::to_iso`), formatted on the
/// stack instead of into a new `String`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iso(pub UtcMillis);

impl Iso {
    pub fn opt(t: Option<UtcMillis>) -> Option<Iso> {
        t.map(Iso)
    }

    fn bytes(self) -> [u8; 24] {
        // `civil` clamps to years 0000–9999, so every field fits its width.
        let c = self.0.civil();
        let mut b = *b"0000-00-00T00:00:00.000Z";
        digits(&mut b[0..4], c.year);
        digits(&mut b[5..7], c.month);
        digits(&mut b[8..10], c.day);
        digits(&mut b[11..13], c.hour);
        digits(&mut b[14..16], c.minute);
        digits(&mut b[17..19], c.second);
        digits(&mut b[20..23], c.millis);
        b
    }
}

/// Writes `v` as zero-padded decimal filling `dst` (the low digits, should
/// it be wider).
fn digits(dst: &mut [u8], mut v: i64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + u8::try_from(v.rem_euclid(10)).unwrap_or(0);
        v /= 10;
    }
}

impl Serialize for Iso {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.bytes();
        let text = std::str::from_utf8(&b).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }
}

/// Renders one list item into a page buffer.
pub fn render<T: Serialize>(item: &T, out: &mut Vec<u8>) -> serde_json::Result<()> {
    serde_json::to_writer(out, item)
}

/// The list envelope `{data, total, limit, offset, next}` around a rendered
/// page, as an `application/json` response (what `Json(ListEnvelope)`
/// answers, without building the rows as values first).
pub fn list_response(page: JsonPage, paging: Paging, query: &QueryParams, path: &str) -> Response {
    let body = envelope(page, paging, query, path);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn envelope(page: JsonPage, paging: Paging, query: &QueryParams, path: &str) -> Vec<u8> {
    use std::io::Write as _;
    let next_offset = paging.offset.saturating_add(paging.limit);
    let next = (next_offset < page.total).then(|| query.link(path, paging.limit, next_offset));
    let mut out = Vec::with_capacity(page.items.len() + 160);
    out.extend_from_slice(b"{\"data\":[");
    out.extend_from_slice(&page.items);
    // Writing into a Vec cannot fail, and neither can serializing a string.
    let _ = write!(
        out,
        "],\"total\":{},\"limit\":{},\"offset\":{},\"next\":",
        page.total, paging.limit, paging.offset
    );
    let _ = serde_json::to_writer(&mut out, &next);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::ListEnvelope;

    #[test]
    fn iso_is_to_iso() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut samples = vec![
            0,
            -1,
            1,
            999,
            1_000,
            86_399_999,
            951_782_400_000, // 2000-02-29
            1_767_225_600_000,
            -62_167_219_200_000,
            253_402_300_799_999,
            i64::MIN,
            i64::MAX,
        ];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = i64::try_from(x % 400_000_000_000_000).unwrap() - 100_000_000_000_000;
            samples.push(v);
        }
        for ms in samples {
            let t = UtcMillis(ms);
            assert_eq!(
                serde_json::to_string(&Iso(t)).unwrap(),
                serde_json::to_string(&t.to_iso()).unwrap(),
                "{ms}"
            );
        }
    }

    #[derive(Serialize)]
    struct Item {
        a: &'static str,
        n: i64,
    }

    /// The envelope is byte for byte what serde makes of `ListEnvelope`:
    /// first, middle and last pages, empty pages, filters with characters
    /// that need escaping or encoding.
    #[test]
    fn envelope_is_list_envelope() {
        let items = [
            Item { a: "x", n: 1 },
            Item {
                a: "quote \" and \\ and \u{1}",
                n: -7,
            },
        ];
        for query in [
            "",
            "limit=2",
            "status=in-flight,scheduled&limit=2&offset=2",
            "q=%22%3C%2F%26%C3%A9&limit=2",
        ] {
            let q = QueryParams::parse(Some(query)).unwrap();
            for (n, total, offset) in [(2, 5, 0), (2, 5, 2), (1, 5, 4), (0, 0, 0), (0, 3, 9)] {
                let paging = Paging { limit: 2, offset };
                let mut page = JsonPage {
                    items: Vec::new(),
                    rows: 0,
                    total,
                };
                for item in &items[..n] {
                    if page.rows > 0 {
                        page.items.push(b',');
                    }
                    render(item, &mut page.items).unwrap();
                    page.rows += 1;
                }
                let expected = ListEnvelope::new(
                    items[..n].iter().collect::<Vec<_>>(),
                    total,
                    paging,
                    &q,
                    "/api.ashx/v1/calls",
                );
                assert_eq!(
                    String::from_utf8(envelope(page, paging, &q, "/api.ashx/v1/calls")).unwrap(),
                    serde_json::to_string(&expected).unwrap(),
                    "{query} {n} {total} {offset}"
                );
            }
        }
    }
}
