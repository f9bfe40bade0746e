//! A callee's 3xx: followed to a user of the tenant, refused otherwise;
//! the caller never sees a 3xx or the callee side's Contact.

use super::*;

/// Carol is a second user, at B2.
fn harness() -> Harness {
    Harness::with_config(
        None,
        &format!(
            r#"
[[users]]
name = "carol"
contact = "sip:carol@{B2}"
"#
        ),
    )
}

/// The B-side peer at `at` redirects its INVITE to `contact`; the switch
/// ACKs the 3xx.
fn redirect(h: &mut Harness, at: &str, invite: &Request, contact: &str) {
    let moved = invite
        .reply(StatusCode::new(302).unwrap(), Some(b"movedtag"))
        .header(KnownHeader::Contact, contact.to_owned())
        .build()
        .unwrap();
    h.send(at, moved);
}

fn methods(msgs: Vec<Message>) -> Vec<Method> {
    msgs.into_iter().map(|m| request(m).method).collect()
}

#[test]
fn a_redirect_to_a_user_of_the_tenant_rings_that_user() {
    let mut h = harness();
    let invite = h.invite_from_a("1000", &[]);
    h.send(A, invite);
    let to_bob = request(h.one(B));
    redirect(&mut h, B, &to_bob, "<sip:carol@198.51.100.50>;q=0.5");
    assert_eq!(methods(h.take(B)), [Method::Ack]);
    let to_carol = request(h.one(B2));
    assert_eq!(to_carol.method, Method::Invite);
    assert!(h.take(A).is_empty(), "A sees no 3xx");

    let ok = to_carol
        .reply(StatusCode::OK, Some(b"caroltag"))
        .header(KnownHeader::Contact, format!("<sip:carol@{B2}>"))
        .body(&super::super::sdp_type(), sdp_answer("192.0.2.21", 43000))
        .build()
        .unwrap();
    h.send(B2, ok);
    assert_eq!(methods(h.take(B2)), [Method::Ack]);
    let ok_a = response(h.one(A));
    assert_eq!(ok_a.status, StatusCode::OK);
    let contact = header(&ok_a, KnownHeader::Contact).unwrap();
    assert!(contact.contains("192.0.2.1"), "our Contact: {contact}");
    assert_eq!(h.core.stats.redirects_followed, 1);
}

#[test]
fn a_redirect_elsewhere_is_refused_and_the_caller_gets_480() {
    let mut h = harness();
    let invite = h.invite_from_a("1000", &[]);
    h.send(A, invite);
    let to_bob = request(h.one(B));
    // A number at a foreign host, and a host with no user: neither is a
    // user of the tenant.
    redirect(
        &mut h,
        B,
        &to_bob,
        "<sip:+19005550100@premium.example>, <sip:203.0.113.9>",
    );
    assert_eq!(methods(h.take(B)), [Method::Ack]);
    assert!(h.take(B2).is_empty());
    let to_a = response(h.one(A));
    assert_eq!(to_a.status, StatusCode::TEMPORARILY_UNAVAILABLE);
    assert_eq!(header(&to_a, KnownHeader::Contact), None);
    assert_eq!(h.core.stats.redirects_refused, 1);
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn redirects_that_loop_end_with_480() {
    let mut h = harness();
    let invite = h.invite_from_a("1000", &[]);
    h.send(A, invite);
    let mut at = B;
    let mut followed = 0;
    loop {
        let Some(Message::Request(next)) = h
            .take(at)
            .into_iter()
            .find(|m| m.as_request().is_some_and(|r| r.method == Method::Invite))
        else {
            break;
        };
        let (to, there) = if at == B { ("carol", B2) } else { ("bob", B) };
        redirect(&mut h, at, &next, &format!("<sip:{to}@192.0.2.99>"));
        followed += 1;
        at = there;
        assert!(followed < 100, "bounded");
    }
    assert_eq!(followed, 16, "the first branch and 15 redirects");
    assert_eq!(h.core.stats.redirects_followed, 15);
    assert_eq!(h.core.stats.redirects_refused, 1);
    assert_eq!(
        response(h.one(A)).status,
        StatusCode::TEMPORARILY_UNAVAILABLE
    );
}
