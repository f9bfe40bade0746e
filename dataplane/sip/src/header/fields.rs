//! The ordered list of header lines a message carries, and the generic
//! single-value and list access the typed views are built on.

use std::sync::OnceLock;

use bytes::Bytes;

use super::{CSeq, Header, KnownHeader, NameAddr, Via};
use crate::error::ValueError;
use crate::limits::Limits;
use crate::params::split_list;

/// The header fields of a message, in wire order.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    entries: Vec<Header>,
    limits: Limits,
    /// Typed views already parsed from these lines; allocated on the
    /// first view, dropped by every change to the lines.
    parsed: OnceLock<Box<Parsed>>,
}

/// The typed values that the transaction layer, the dialog layer and the
/// B2BUA each read from every message (several times per message between
/// them), parsed once on first use. Errors are kept too, so a bad line is
/// not re-parsed either. Nothing here outlives a change to the lines (see
/// [`Headers::changed`]), so a view never disagrees with them.
#[derive(Debug, Clone, Default)]
pub(super) struct Parsed {
    pub(super) top_via: OnceLock<Result<Via, ValueError>>,
    pub(super) from: OnceLock<Result<NameAddr, ValueError>>,
    pub(super) to: OnceLock<Result<NameAddr, ValueError>>,
    pub(super) call_id: OnceLock<Result<Bytes, ValueError>>,
    pub(super) cseq: OnceLock<Result<CSeq, ValueError>>,
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Headers {}

impl Headers {
    /// An empty list with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list whose typed views use `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            entries: Vec::with_capacity(16),
            limits,
            parsed: OnceLock::new(),
        }
    }

    /// The views parsed so far (allocated on first use).
    pub(super) fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(Box::default)
    }

    /// Forgets every parsed view: called by each method that changes the
    /// lines, which are all in this file (`entries` is private).
    fn changed(&mut self) {
        self.parsed = OnceLock::new();
    }

    /// The bounds typed views apply.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.entries.iter()
    }

    pub fn push(&mut self, header: Header) {
        self.changed();
        self.entries.push(header);
    }

    /// Inserts at `index` (clamped to the end).
    pub fn insert(&mut self, index: usize, header: Header) {
        self.changed();
        let index = index.min(self.entries.len());
        self.entries.insert(index, header);
    }

    /// Keeps the headers for which `keep` returns `true`.
    pub fn retain(&mut self, keep: impl FnMut(&Header) -> bool) {
        self.changed();
        self.entries.retain(keep);
    }

    /// Removes every header called `name` (any case, compact forms
    /// included) and returns how many were removed.
    pub fn remove_named(&mut self, name: &[u8]) -> usize {
        self.changed();
        let before = self.entries.len();
        self.entries.retain(|h| !h.name.is(name));
        before - self.entries.len()
    }

    /// Removes every header `name`; returns how many were removed.
    pub fn remove(&mut self, name: KnownHeader) -> usize {
        self.changed();
        let before = self.entries.len();
        self.entries.retain(|h| h.name.known() != Some(name));
        before - self.entries.len()
    }

    /// Values of every line of `name`, in order.
    pub fn get_all(&self, name: KnownHeader) -> impl Iterator<Item = &Bytes> + '_ {
        self.entries
            .iter()
            .filter(move |h| h.name.known() == Some(name))
            .map(|h| &h.value)
    }

    /// The first line of `name`.
    pub fn get(&self, name: KnownHeader) -> Option<&Bytes> {
        self.get_all(name).next()
    }

    /// The first line whose name is `name` (any case; unknown names too).
    pub fn get_named(&self, name: &[u8]) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|h| h.name.is(name))
            .map(|h| &h.value)
    }

    /// How many lines of `name` there are.
    pub fn count(&self, name: KnownHeader) -> usize {
        self.get_all(name).count()
    }

    /// The one line of a single-valued header: `Missing` or `Repeated`
    /// otherwise (RFC 4475 `multi01`).
    pub fn single(&self, name: KnownHeader) -> Result<&Bytes, ValueError> {
        self.optional(name)?.ok_or(ValueError::Missing)
    }

    /// At most one line of a single-valued header.
    pub fn optional(&self, name: KnownHeader) -> Result<Option<&Bytes>, ValueError> {
        let mut all = self.get_all(name);
        let first = all.next();
        if all.next().is_some() {
            Err(ValueError::Repeated)
        } else {
            Ok(first)
        }
    }

    /// Splits every line of list header `name` into values and parses each
    /// with `f(owner, value)`. Empty elements are malformed; a wholly empty
    /// line is skipped where `allow_empty` (Accept, Allow, Supported may be
    /// sent empty). At most `max` values.
    pub fn parse_list<T>(
        &self,
        name: KnownHeader,
        max: usize,
        allow_empty: bool,
        mut f: impl FnMut(&Bytes, &[u8]) -> Result<T, ValueError>,
    ) -> Result<Vec<T>, ValueError> {
        let mut out = Vec::new();
        for value in self.get_all(name) {
            if allow_empty && value.is_empty() {
                continue;
            }
            for item in split_list(value) {
                if item.is_empty() {
                    return Err(ValueError::Malformed);
                }
                if out.len() >= max {
                    return Err(ValueError::TooMany);
                }
                out.push(f(value, item)?);
            }
        }
        Ok(out)
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::HeaderName;

    fn headers(lines: &[(&str, &'static str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in lines {
            h.push(Header::new(HeaderName::parse(n.to_string()).unwrap(), *v).unwrap());
        }
        h
    }

    #[test]
    fn removal_by_any_spelling() {
        let mut h = headers(&[
            ("X-Bypass-me", "lol"),
            ("x-bypass-ME", "lol"),
            ("l", "0"),
            ("Subject", "s"),
        ]);
        assert_eq!(
            h.get_named(b"X-BYPASS-ME").map(|v| &v[..]),
            Some(&b"lol"[..])
        );
        assert_eq!(h.remove_named(b"x-bypass-me"), 2);
        assert_eq!(h.remove(KnownHeader::ContentLength), 1);
        assert_eq!(h.len(), 1);
    }
}
