//! The Replaces header (RFC 3891), also as it arrives %-escaped in a
//! Refer-To URI header. Asserts: no panic; what parses is within the
//! bounds (Call-ID and tags at most `max_ident_len`, tags non-empty
//! tokens) and parses again, to the same value, from its canonical form.
#![no_main]

use bytes::Bytes;
use codeb_sip::header::Replaces;
use codeb_sip::{Limits, NameAddr};
use libfuzzer_sys::fuzz_target;

fn check(r: &Replaces, limits: &Limits) {
    assert!(r.call_id.len() <= limits.max_ident_len);
    for tag in [&r.to_tag, &r.from_tag] {
        assert!(!tag.is_empty() && tag.len() <= limits.max_ident_len);
    }
    let canonical = Bytes::from(format!(
        "{};to-tag={};from-tag={}{}",
        String::from_utf8_lossy(&r.call_id),
        String::from_utf8_lossy(&r.to_tag),
        String::from_utf8_lossy(&r.from_tag),
        if r.early_only { ";early-only" } else { "" }
    ));
    let again = Replaces::parse(&canonical, &canonical, limits).expect("canonical form parses");
    assert_eq!(&again, r);
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let value = Bytes::copy_from_slice(data);
    if let Ok(r) = Replaces::parse(&value, &value, &limits) {
        check(&r, &limits);
    }
    // The same bytes as a Refer-To URI header value.
    let uri = format!("<sip:c@example.com?Replaces={}>", String::from_utf8_lossy(data));
    if let Ok(addr) = NameAddr::from_bytes(uri)
        && let Some(sip) = addr.uri.as_sip()
    {
        for (name, value) in sip.header_pairs().take(8) {
            if name.eq_ignore_ascii_case(b"Replaces") {
                let value = Bytes::copy_from_slice(&value);
                if let Ok(r) = Replaces::parse(&value, &value, &limits) {
                    check(&r, &limits);
                }
            }
        }
    }
});
