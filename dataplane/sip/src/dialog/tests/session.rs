use super::*;
use crate::header::Refresher;

fn se_of(m: &Response) -> Option<(u32, Option<Refresher>)> {
    m.headers
        .session_expires()
        .unwrap()
        .map(|se| (se.interval, se.refresher))
}

fn requires_timer(h: &crate::Headers) -> bool {
    h.option_tags(KnownHeader::Require)
        .unwrap()
        .iter()
        .any(|t| t == "timer")
}

/// Runs `d`'s timers up to `until` and returns the events they raised
/// with the offset from `from` at which each fired.
fn run(d: &mut Dialog<Peer>, from: Instant, until: Instant) -> Vec<(Duration, DialogEvent)> {
    let mut out = Vec::new();
    while let Some(at) = d.poll_timeout().filter(|at| *at <= until) {
        d.handle_timeout(at);
        for e in events(d) {
            out.push((at - from, e));
        }
    }
    out
}

#[test]
fn the_uac_refreshes_at_half_and_the_uas_gives_up_before_expiry() {
    let mut c = call_with(
        config(),
        &[
            (KnownHeader::Supported, "timer"),
            (KnownHeader::SessionExpires, "1800;refresher=uac"),
        ],
    );
    assert_eq!(c.alice.session_timer(), Some((1800, true)));
    assert_eq!(c.bob.session_timer(), Some((1800, false)));
    let answered = c.t0 + ms(20);
    assert_eq!(
        run(&mut c.alice, answered, answered + secs(901)),
        vec![(secs(900), DialogEvent::RefreshDue)]
    );
    // The refresh keeps the roles: Alice is the UAC of it and refreshes.
    let refresh = c.alice.request(Method::Update).unwrap().build().unwrap();
    let se = refresh.headers.session_expires().unwrap().unwrap();
    assert_eq!((se.interval, se.refresher), (1800, Some(Refresher::Uac)));
    assert_eq!(refresh.headers.min_se().unwrap(), Some(90));
    let now = answered + secs(901);
    assert_eq!(c.bob.handle_request(now, &refresh), Incoming::Accept);
    let ok = bob_answers(now, &mut c.bob, &refresh, 200);
    assert_eq!(se_of(&ok), Some((1800, Some(Refresher::Uac))));
    assert!(requires_timer(&ok.headers));
    c.alice.handle_response(now, &ok);
    // Both timers restarted from the refresh.
    assert_eq!(c.alice.session_timer(), Some((1800, true)));
    assert_eq!(run(&mut c.alice, now, now + secs(899)), vec![]);
    // Bob gives up 32 s before expiry if the next refresh never comes.
    assert_eq!(
        run(&mut c.bob, now, now + secs(4000)),
        vec![(secs(1768), DialogEvent::SessionExpired)]
    );
    assert_eq!(c.bob.session_timer(), None);
}

/// A 2xx to INFO (a relayed key, say), or to any request that is not a
/// session refresh, leaves the session timer as it was: the refresher
/// still refreshes (before, the 2xx, with no Session-Expires, dropped the
/// timer, and the far end ended the call at expiry).
#[test]
fn a_2xx_to_info_leaves_the_session_timer_running() {
    let mut c = call_with(
        config(),
        &[
            (KnownHeader::Supported, "timer"),
            (KnownHeader::SessionExpires, "1800;refresher=uac"),
        ],
    );
    let answered = c.t0 + ms(20);
    let now = answered + secs(10);
    for method in [Method::Info, Method::Options] {
        let request = c.alice.request(method.clone()).unwrap().build().unwrap();
        assert_eq!(c.bob.handle_request(now, &request), Incoming::Accept);
        let ok = bob_answers(now, &mut c.bob, &request, 200);
        assert_eq!(se_of(&ok), None, "{method:?}: no Session-Expires");
        c.alice.handle_response(now, &ok);
        assert_eq!(c.alice.session_timer(), Some((1800, true)), "{method:?}");
    }
    assert_eq!(
        run(&mut c.alice, answered, answered + secs(901)),
        vec![(secs(900), DialogEvent::RefreshDue)]
    );
}

#[test]
fn a_uac_without_timer_support_leaves_refreshing_to_the_uas() {
    let mut c = call_with(config(), &[(KnownHeader::SessionExpires, "600")]);
    assert_eq!(c.bob.session_timer(), Some((600, true)));
    assert_eq!(c.alice.session_timer(), Some((600, false)));
    let answered_bob = c.t0 + ms(10);
    assert_eq!(
        run(&mut c.bob, answered_bob, answered_bob + secs(300)),
        vec![(secs(300), DialogEvent::RefreshDue)]
    );
    // Bob refreshes with a re-INVITE as its UAC; Alice answers as UAS and
    // the roles stay: Bob refreshes, Alice watches.
    let refresh = c.bob.request(Method::Invite).unwrap().build().unwrap();
    let se = refresh.headers.session_expires().unwrap().unwrap();
    assert_eq!((se.interval, se.refresher), (600, Some(Refresher::Uac)));
    let now = answered_bob + secs(300);
    assert_eq!(c.alice.handle_request(now, &refresh), Incoming::Accept);
    let ok = c.alice.reply(&refresh, StatusCode::OK).build().unwrap();
    c.alice.sent_response(now, &ok);
    assert_eq!(se_of(&ok), Some((600, Some(Refresher::Uac))));
    assert_eq!(c.alice.session_timer(), Some((600, false)));
    c.bob.handle_response(now, &ok);
    assert_eq!(c.bob.session_timer(), Some((600, true)));
    // Alice's own expiry: 600 s minus 32 s.
    let ack = sent(&mut c.bob);
    assert_eq!(
        c.alice.handle_request(now, ack[0].as_request().unwrap()),
        Incoming::Ack
    );
    assert_eq!(
        run(&mut c.alice, now, now + secs(1000)),
        vec![(secs(568), DialogEvent::SessionExpired)]
    );
}

#[test]
fn short_intervals_get_422_and_the_sender_raises_its_min_se() {
    let strict = DialogConfig {
        session_timer: Some(SessionTimerConfig {
            min_se: 2000,
            ..SessionTimerConfig::default()
        }),
        ..config()
    };
    // A dialog-creating INVITE is checked by the TU before any dialog.
    let inv = invite(
        &[],
        &[
            (KnownHeader::Supported, "timer"),
            (KnownHeader::SessionExpires, "600"),
        ],
    );
    let r = strict.session_timer.unwrap().check(&inv, b"b").unwrap();
    assert_eq!(r.status.as_u16(), 422);
    assert_eq!(min_se_of_422(&r), Some(2000));
    assert_eq!(config().session_timer.unwrap().check(&inv, b"b"), None);

    // In a dialog, the dialog checks.
    let mut c = call_with(config(), &[(KnownHeader::Supported, "timer")]);
    c.bob.config = strict;
    let reinvite = c.alice.request(Method::Invite).unwrap().build().unwrap();
    let Incoming::Reject(r) = c.bob.handle_request(c.t0, &reinvite) else {
        panic!("expected 422")
    };
    assert_eq!(min_se_of_422(&r), Some(2000));
    assert!(!c.bob.is_pending(), "a refused re-INVITE is not pending");
    c.alice.handle_response(c.t0, &r);
    assert_eq!(
        events(&mut c.alice),
        vec![DialogEvent::SessionIntervalRaised { min_se: 2000 }]
    );
    let again = c.alice.request(Method::Invite).unwrap().build().unwrap();
    assert!(again.headers.session_expires().unwrap().unwrap().interval >= 2000);
    assert_eq!(again.headers.min_se().unwrap(), Some(2000));
    assert_eq!(c.bob.handle_request(c.t0, &again), Incoming::Accept);
}

#[test]
fn a_2xx_without_session_expires_means_no_timer() {
    let mut c = call_with(no_timers(), &[(KnownHeader::SessionExpires, "600")]);
    assert_eq!(c.bob.session_timer(), None);
    assert_eq!(c.alice.session_timer(), None);
    assert_eq!(c.alice.poll_timeout(), None);
    // With timers configured, an offer goes out in re-INVITEs anyway.
    c.alice.config = config();
    let reinvite = c.alice.request(Method::Invite).unwrap().build().unwrap();
    let se = reinvite.headers.session_expires().unwrap().unwrap();
    assert_eq!((se.interval, se.refresher), (1800, Some(Refresher::Uac)));
}

#[test]
fn the_initial_offer_helper_asks_to_refresh() {
    let b = RequestBuilder::new(Method::Invite, Uri::parse("sip:b@example.com").unwrap());
    let r = SessionTimerConfig::default().offer(b).build().unwrap();
    assert_eq!(
        r.headers
            .session_expires()
            .unwrap()
            .map(|s| (s.interval, s.refresher)),
        Some((1800, Some(Refresher::Uac)))
    );
    assert!(
        r.headers
            .option_tags(KnownHeader::Supported)
            .unwrap()
            .iter()
            .any(|t| t == "timer")
    );
}
