//! A bounds-safe forward reader used by every header grammar.

use super::{is_token_char, is_ws, quoted_string_len};
use crate::error::ValueError;

/// A forward-only reader over a byte slice; every accessor is bounds-safe.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        Self { s, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.s.get(self.pos..).unwrap_or_default()
    }

    /// Consumes `b` if it is next.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips SP/HTAB and reports whether any was skipped.
    pub(crate) fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Consumes `SWS b SWS` (the SEMI/EQUAL/SLASH/COMMA of §25.1).
    pub(crate) fn eat_separator(&mut self, b: u8) -> bool {
        let save = self.pos;
        self.skip_ws();
        if self.eat(b) {
            self.skip_ws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// Takes `n` octets, or fails without moving.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.s.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }

    /// Takes a non-empty token.
    pub(crate) fn token(&mut self) -> Result<&'a [u8], ValueError> {
        let t = self.take_while(is_token_char);
        if t.is_empty() {
            Err(ValueError::Malformed)
        } else {
            Ok(t)
        }
    }

    /// Takes a quoted-string (quotes included).
    pub(crate) fn quoted(&mut self) -> Result<&'a [u8], ValueError> {
        let len = quoted_string_len(self.rest())?;
        self.take(len).ok_or(ValueError::Malformed)
    }
}
