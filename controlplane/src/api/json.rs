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

/// Appends `s` as a JSON string, byte for byte as serde_json writes it.
/// Most stored text needs no escaping (no control character, quote or
/// backslash; other bytes, UTF-8 included, are written as they are), and is
/// copied in one piece after one pass over it; anything else is left to
/// serde_json itself.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // No early exit, so the check compiles to a few wide compares.
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serializing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends `v` in decimal, as serde_json writes an integer.
pub fn write_int(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        // `n % 10` is a single digit.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// The key of an `ObjectWriter` field as written: `,"name":` (the comma
/// is dropped before the first field). A literal, so writing a key is one
/// fixed-size copy.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}
pub(crate) use key;

/// Writes one JSON object field by field, in the order the fields are
/// given, with what serde's derive would write for the same struct: keys
/// are the (camelCase) names given to `key!`, `None` is `null`
/// (`*_or_null`) or no field at all (`skip_*`, for
/// `skip_serializing_if = "Option::is_none"`). The list pages use it for
/// their rows, where serde's per-field dispatch and key escaping cost more
/// than reading the row; the tests hold each row writer to serde's output
/// for the struct it stands for.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    pub fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    /// Writes a `key!` (keys are Rust identifiers in camelCase: nothing to
    /// escape).
    #[inline]
    fn key(&mut self, key: &'static str) {
        debug_assert!(
            key.starts_with(",\"")
                && key.ends_with("\":")
                && key[2..key.len() - 2]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric())
        );
        let skip = usize::from(self.first);
        self.first = false;
        self.out.extend_from_slice(&key.as_bytes()[skip..]);
    }

    #[inline]
    pub fn str(&mut self, key: &'static str, v: &str) {
        self.key(key);
        write_str(self.out, v);
    }

    #[inline]
    pub fn str_or_null(&mut self, key: &'static str, v: Option<&str>) {
        self.key(key);
        match v {
            Some(v) => write_str(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    #[inline]
    pub fn skip_str(&mut self, key: &'static str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(key, v);
        }
    }

    #[inline]
    pub fn int(&mut self, key: &'static str, v: i64) {
        self.key(key);
        write_int(self.out, v);
    }

    #[inline]
    pub fn skip_int(&mut self, key: &'static str, v: Option<i64>) {
        if let Some(v) = v {
            self.int(key, v);
        }
    }

    #[inline]
    pub fn iso(&mut self, key: &'static str, v: Iso) {
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(&v.bytes());
        self.out.push(b'"');
    }

    #[inline]
    pub fn iso_or_null(&mut self, key: &'static str, v: Option<Iso>) {
        match v {
            Some(v) => self.iso(key, v),
            None => {
                self.key(key);
                self.out.extend_from_slice(b"null");
            }
        }
    }

    #[inline]
    pub fn skip_iso(&mut self, key: &'static str, v: Option<Iso>) {
        if let Some(v) = v {
            self.iso(key, v);
        }
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
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
    let total = page.total;
    // The buffer already holds `{"data":[` and the rows.
    let mut out = page.into_buffer();
    // Writing into a Vec cannot fail, and neither can serializing a string.
    let _ = write!(
        out,
        "],\"total\":{},\"limit\":{},\"offset\":{},\"next\":",
        total, paging.limit, paging.offset
    );
    let _ = serde_json::to_writer(&mut out, &next);
    out.push(b'}');
    out
}

/// Values for holding the hand-written writers to serde's output.
#[cfg(test)]
pub(crate) mod samples {
    /// Text that needs no escaping, text that does (every control
    /// character, quote, backslash), DEL, non-ASCII, and long runs.
    pub(crate) fn strings() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            "a",
            "+15551234567",
            "ops@example.com",
            "quote \" inside",
            "back\\slash",
            "tab\tnew\nline\r",
            "\u{7f} del",
            "\u{e9}t\u{e9} \u{2028} \u{1F600}",
            "</script>&<>'",
            "/slash/",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for b in 0u8..0x80 {
            v.push(format!("x{}y", char::from(b)));
        }
        v.push("z".repeat(4000));
        v.push(format!("{}\u{1}", "long ".repeat(300)));
        v
    }

    pub(crate) fn ints() -> Vec<i64> {
        let mut v = vec![
            0,
            1,
            -1,
            9,
            10,
            99,
            100,
            -100,
            i64::MIN,
            i64::MAX,
            i64::MIN + 1,
        ];
        let mut p: i64 = 1;
        while let Some(n) = p.checked_mul(10) {
            v.extend([p - 1, p, p + 1, -p]);
            p = n;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::ListEnvelope;

    #[test]
    fn write_str_is_serde() {
        for s in samples::strings() {
            let mut out = b"prefix".to_vec();
            write_str(&mut out, &s);
            let mut expected = b"prefix".to_vec();
            serde_json::to_writer(&mut expected, &s).unwrap();
            assert_eq!(out, expected, "{s:?}");
        }
    }

    #[test]
    fn write_int_is_serde() {
        for n in samples::ints() {
            let mut out = Vec::new();
            write_int(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

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
                let mut page = JsonPage::new(total, 2);
                for item in &items[..n] {
                    page.push_with(|out| Ok(render(item, out)?)).unwrap();
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
