use super::*;

#[test]
fn integers_are_bounded_and_overflow_checked() {
    assert_eq!(parse_u32(b"0009"), Ok(9));
    assert_eq!(parse_u32(b"4294967295"), Ok(u32::MAX));
    assert_eq!(parse_u32(b"4294967296"), Err(ValueError::OutOfRange));
    assert_eq!(
        parse_u32(b"36893488147419103232"),
        Err(ValueError::OutOfRange)
    );
    assert_eq!(parse_u32(b"-1"), Err(ValueError::Malformed));
    assert_eq!(parse_u32(b""), Err(ValueError::Malformed));
    assert_eq!(
        parse_u32(b"99999999999999999999x"),
        Err(ValueError::Malformed)
    );
    assert_eq!(parse_port(b"65536"), Err(ValueError::OutOfRange));
    assert_eq!(parse_bounded(b"255", 255), Ok(255));
    assert_eq!(parse_bounded(b"256", 255), Err(ValueError::OutOfRange));
}

#[test]
fn quoted_strings_follow_qdtext_and_quoted_pair() {
    assert_eq!(quoted_string_len(b"\"abc\" rest"), Ok(5));
    assert_eq!(quoted_string_len(br#""J Rosenberg \\\"""#), Ok(18));
    assert_eq!(
        quoted_string_len(b"\"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\""),
        Ok(22)
    );
    assert_eq!(
        quoted_string_len(b"\"unterminated"),
        Err(ValueError::Malformed)
    );
    assert_eq!(
        quoted_string_len(b"\"raw\x07ctl\""),
        Err(ValueError::Malformed)
    );
    assert_eq!(
        quoted_string_len(b"\"bad \xff utf8\""),
        Err(ValueError::Malformed)
    );
    assert_eq!(quoted_string_len("\"\u{43e}\u{442}\"".as_bytes()), Ok(6));
    assert_eq!(
        quoted_string_len(b"\"trailing\\"),
        Err(ValueError::Malformed)
    );
    assert_eq!(&*unquote(br#""J Rosenberg \\\"""#), br#"J Rosenberg \""#);
    assert_eq!(&*unquote(b"\"plain\""), b"plain");
}

#[test]
fn escapes_decode_and_validate() {
    assert_eq!(
        &*pct_decode(b"sips%3Auser%40example.com"),
        b"sips:user@example.com"
    );
    assert_eq!(&*pct_decode(b"value%25%34%31"), b"value%41");
    assert_eq!(&*pct_decode(b"null-%00-null"), b"null-\0-null");
    assert_eq!(&*pct_decode(b"50%"), b"50%");
    assert!(is_escaped_text(b"I%20have%20spaces", is_user_char));
    assert!(!is_escaped_text(b"bad%2", is_user_char));
    assert!(!is_escaped_text(b"bad%zz", is_user_char));
    assert!(!is_escaped_text(b"no space", is_user_char));
    assert!(escaped_eq_ignore_case(b"%6C%72", b"LR"));
}

#[test]
fn trimming_and_tokens() {
    assert_eq!(trim_ws(b" \t a b \t"), b"a b");
    assert_eq!(trim_ws(b"   "), b"");
    assert!(is_token(b"!interesting-Method0123456789_*+`.%indeed'~"));
    assert!(!is_token(b"a:b"));
    assert!(!is_token(b""));
}

#[test]
fn cursor_never_reads_past_the_end() {
    let mut c = Cursor::new(b"ab");
    assert_eq!(c.take(3), None);
    assert_eq!(c.take(2), Some(&b"ab"[..]));
    assert!(c.at_end());
    assert_eq!(c.peek(), None);
    assert!(!c.eat(b'a'));
    assert_eq!(c.token(), Err(ValueError::Malformed));
}
