//! The admin pages the spec's quick start sends a newcomer to, clicked
//! through in a real headless Chromium (DevTools protocol) against a real
//! `codeb serve`: sign in, mint an API key and use it, subscribe a webhook
//! receiver and check the shown secret signs its test event, rotate and
//! delete; and on the whole platform (switch, simulator, SIPp callee),
//! watch a call on the monitor until it ends, read its transcript there,
//! and hang up a scheduled call.
//!
//! Without Chromium the tests print a skip line, unless
//! `CODEB_REQUIRE_CHROMIUM=1` (set by tests/run), which fails them.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use std::process::Stdio;

use common::cdp::Tab;
use common::platform::{Hooks, Platform, free_sip_port, sipp_callee, wait};
use common::{ADMIN, ADMIN_PW, Server, browser, curl};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::json;

/// Signs in on the page now shown, as a person would.
fn sign_in(tab: &mut Tab, password: &str) {
    tab.wait_for(
        "the sign-in form",
        "!document.getElementById('sign-in').hidden",
    );
    tab.fill("#sign-in-form [name=username]", ADMIN);
    tab.fill("#sign-in-form [name=password]", password);
    tab.click("#sign-in-form button[type=submit]");
}

/// The status of GET `path` with `bearer`.
fn status_with(server: &Server, bearer: &str, path: &str) -> u16 {
    curl(&[
        "-H",
        &format!("Authorization: Bearer {bearer}"),
        &server.url(path),
    ])
    .0
}

/// `X-CodeB-Signature` of `body` under `secret`, as the spec's recipe
/// computes it.
fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Clicks a two-step button twice (arm, then confirm).
fn confirm(tab: &mut Tab, selector: &str, armed_text: &str) {
    tab.click(selector);
    assert_eq!(tab.text(selector), armed_text);
    tab.click(selector);
}

#[test]
fn an_admin_mints_a_key_and_subscribes_a_webhook_through_the_pages() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        None,
        &[("CODEB_WEBHOOK_ALLOW", "127.0.0.0/8")],
        Stdio::inherit(),
    );
    let hooks = Hooks::start();
    let mut tab = Tab::open(&chromium);

    // Signed out: the page asks for the password and shows nothing else.
    tab.goto(&server.url("/api-keys-admin.html"));
    assert!(!tab.shown("#app"));
    sign_in(&mut tab, "not-the-password");
    let err = tab.wait_for(
        "the refusal",
        "document.getElementById('sign-in-error').textContent",
    );
    assert_eq!(err, "Invalid username or password");
    assert!(!tab.shown("#app"));
    sign_in(&mut tab, ADMIN_PW);
    tab.wait_for("the page", "!document.getElementById('app').hidden");
    assert_eq!(tab.text("#who"), ADMIN);

    // + New API key: shown once, and it works as a bearer. Its name is
    // shown as text, markup and all.
    let name = "crm-sync <b>bold</b>";
    assert!(!tab.shown("#key-form"), "the form opens on + New API key");
    tab.click("#new-key");
    assert!(tab.shown("#key-form"));
    tab.fill("#key-form [name=name]", name);
    tab.click("#key-form button[type=submit]");
    let key = tab.wait_for(
        "the new key",
        "(document.getElementById('secret-value') || {}).textContent",
    );
    let key = key.as_str().unwrap().to_owned();
    assert!(key.starts_with("ak_") && key.len() == 35, "{key}");
    assert!(!tab.shown("#key-form"), "closed once created");
    assert_eq!(status_with(&server, &key, "/api.ashx/v1/calls"), 200);
    tab.wait_for(
        "the key's row",
        "document.querySelectorAll('#keys-body tr').length === 1",
    );
    assert_eq!(tab.text("#keys-body td.name"), name);
    assert_eq!(
        tab.eval("document.querySelector('#keys-body b') === null"),
        true
    );
    // Shown once: a reload has the list, not the key.
    tab.goto(&server.url("/api-keys-admin.html"));
    tab.wait_for(
        "the list again",
        "document.querySelectorAll('#keys-body tr').length === 1",
    );
    assert!(!tab.shown("#secret"));
    assert!(
        !tab.eval("document.body.textContent")
            .as_str()
            .unwrap()
            .contains(&key)
    );

    // An access token that stopped working is refreshed once, unseen.
    tab.eval(
        "(() => { const s = JSON.parse(sessionStorage.getItem('codeb.admin.session')); \
         s.access = 'expired'; sessionStorage.setItem('codeb.admin.session', JSON.stringify(s)); })()",
    );
    tab.goto(&server.url("/api-keys-admin.html"));
    tab.wait_for(
        "the list after a refresh",
        "document.querySelectorAll('#keys-body tr').length === 1",
    );
    assert!(!tab.shown("#sign-in"));

    // Revoke takes two clicks; then the key is refused.
    confirm(&mut tab, "#keys-body button.danger", "Confirm revoke");
    tab.wait_for(
        "the row gone",
        "document.querySelectorAll('#keys-body tr').length === 0",
    );
    assert!(tab.shown("#keys-empty"));
    assert_eq!(status_with(&server, &key, "/api.ashx/v1/calls"), 401);

    // + New webhook to every event: the secret shown signs the test fire.
    tab.goto(&server.url("/webhooks-admin.html"));
    tab.wait_for(
        "the webhooks page",
        "!document.getElementById('app').hidden",
    );
    tab.click("#new-webhook");
    tab.fill("#webhook-form [name=url]", &hooks.url);
    // No event chosen: said so, nothing made.
    tab.click("#webhook-form button[type=submit]");
    let err = tab.wait_for(
        "the refusal",
        "document.getElementById('error').textContent",
    );
    assert!(
        err.as_str().unwrap().starts_with("Choose the events"),
        "{err}"
    );
    // As the spec's quick start says: check the * box, click Create.
    tab.click("#webhook-form [value=\"*\"]");
    assert_eq!(
        tab.eval("document.querySelector('#webhook-form [value=\"call.ended\"]').disabled"),
        true,
        "* covers the rest"
    );
    tab.click("#webhook-form button[type=submit]");
    let secret = tab.wait_for(
        "the secret",
        "(document.getElementById('secret-value') || {}).textContent",
    );
    let secret = secret.as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    tab.click("#secret-done");
    tab.wait_for(
        "the subscription's row",
        "document.querySelectorAll('#webhooks-body tr').length === 1",
    );
    assert_eq!(tab.text("#webhooks-body td.url"), hooks.url);
    assert_eq!(tab.text("#webhooks-body td.state"), "active");
    let token = common::admin_token(&server);
    let listed = common::api(&server, &token, "GET", "/api.ashx/v1/webhooks", None);
    assert_eq!(listed["data"][0]["events"], json!(["*"]), "{listed}");

    tab.eval(
        "[...document.querySelectorAll('#webhooks-body button')]\
         .find(b => b.textContent === 'Test fire').click()",
    );
    let test = wait("webhook.test at the receiver", 20, || {
        hooks.all().into_iter().find(|d| d.event == "webhook.test")
    });
    assert_eq!(
        test.signature,
        signature(&secret, &test.raw),
        "the shown secret signs it"
    );
    let notice = tab.wait_for(
        "the notice",
        "document.getElementById('notice').textContent",
    );
    assert!(
        notice.as_str().unwrap().contains(&test.id),
        "{notice} names {}",
        test.id
    );
    // The delivery log shows it delivered (Refresh until it is).
    let row = format!(
        "#deliveries-body tr[data-id=\"{}\"] .delivery-state",
        test.id
    );
    tab.wait_for(
        "the delivery succeeded in the log",
        &format!(
            "(document.querySelector({r}) || {{}}).textContent === 'succeeded' || \
             ([...document.querySelectorAll('#deliveries button')]\
              .find(b => b.textContent === 'Refresh')?.click(), false)",
            r = json!(row)
        ),
    );

    // Rotate: a new secret, shown once.
    tab.eval(
        "[...document.querySelectorAll('#webhooks-body button')]\
         .find(b => b.textContent === 'Rotate secret').id = 'rotate'",
    );
    confirm(&mut tab, "#rotate", "Confirm rotate");
    let rotated = tab.wait_for(
        "the new secret",
        &format!(
            "((document.getElementById('secret-value') || {{}}).textContent || '') \
             .replace({s}, '')",
            s = json!(secret)
        ),
    );
    let rotated = rotated.as_str().unwrap().to_owned();
    assert!(rotated.starts_with("whsec_"), "{rotated}");
    assert!(
        tab.text("#secret")
            .contains("the old secret no longer does")
    );
    // It signs the next delivery's X-CodeB-Signature, at once.
    tab.eval(
        "[...document.querySelectorAll('#webhooks-body button')]\
         .find(b => b.textContent === 'Test fire').click()",
    );
    let again = wait("a second webhook.test", 20, || {
        hooks
            .all()
            .into_iter()
            .filter(|d| d.event == "webhook.test")
            .nth(1)
    });
    assert_eq!(again.signature, signature(&rotated, &again.raw));

    // Delete: gone from the page and the API.
    tab.eval(
        "[...document.querySelectorAll('#webhooks-body button')]\
         .find(b => b.textContent === 'Delete').id = 'delete'",
    );
    confirm(&mut tab, "#delete", "Confirm delete");
    tab.wait_for(
        "the row gone",
        "document.querySelectorAll('#webhooks-body tr').length === 0",
    );
    let listed = common::api(&server, &token, "GET", "/api.ashx/v1/webhooks", None);
    assert_eq!(listed["total"], 0, "{listed}");

    // Sign out ends the session for every page of the tab and revokes its
    // refresh token at the issuer, and with it the session's access token.
    let session = tab.eval("JSON.parse(sessionStorage.getItem('codeb.admin.session'))");
    let refresh = session["refresh"].as_str().unwrap().to_owned();
    let access = session["access"].as_str().unwrap().to_owned();
    assert_eq!(
        curl(&[
            "-H",
            &format!("Authorization: Bearer {access}"),
            &server.url("/api.ashx/v1/webhooks"),
        ])
        .0,
        200
    );
    tab.click_to_new_document("#sign-out");
    tab.wait_for(
        "the page signed out",
        "!document.getElementById('sign-in').hidden",
    );
    assert_eq!(tab.text("#sign-in-error"), "Signed out.");
    assert!(!tab.shown("#secret"), "nothing of the last session stays");
    wait("the refresh token revoked", 10, || {
        let (code, body, _) = curl(&[
            "-X",
            "POST",
            &server.url("/oidc.ashx/token"),
            "-d",
            "grant_type=refresh_token",
            "-d",
            "client_id=codeb-admin",
            "-d",
            &format!("refresh_token={refresh}"),
        ]);
        (code == 400 && body["error"] == "invalid_grant").then_some(())
    });
    let (code, body, _) = curl(&[
        "-H",
        &format!("Authorization: Bearer {access}"),
        &server.url("/api.ashx/v1/webhooks"),
    ]);
    assert_eq!(code, 401, "the signed-out access token: {body}");
    tab.goto(&server.url("/outbound-ai-monitor.html"));
    tab.wait_for(
        "the sign-in form",
        "!document.getElementById('sign-in').hidden",
    );
    assert!(!tab.shown("#app"));
}

#[test]
fn the_monitor_follows_a_call_to_its_transcript_and_hangs_up_a_scheduled_one() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let Some(p) = Platform::start(&[]) else {
        return;
    };
    let port = free_sip_port();
    let mut sipp = sipp_callee(p.dir.path(), port, &["-sn", "uas", "-m", "1"]);
    p.default_trunk(port);
    let mut tab = Tab::open(&chromium);
    tab.goto(&p.server().url("/outbound-ai-monitor.html"));
    sign_in(&mut tab, ADMIN_PW);
    tab.wait_for("the monitor", "!document.getElementById('app').hidden");
    tab.wait_for(
        "the empty list",
        "!document.getElementById('calls-empty').hidden",
    );

    // A call placed after the page loaded shows up and is followed to its
    // end without a reload.
    let (id, _) = p.place(
        "Greet them, then end the call. END_AFTER_TURNS=0",
        &json!({}),
    );
    let row = format!("#calls-body tr[data-id=\"{id}\"]");
    tab.wait_for(
        "the call ended on the monitor",
        &format!(
            "(document.querySelector({r}) || {{dataset: {{}}}}).dataset.status === 'ended-success'",
            r = json!(row)
        ),
    );
    assert_eq!(tab.text(&format!("{row} td.outcome")), "finished");
    // A keyboard user on the row's Transcript button keeps the focus
    // across the periodic redraw.
    tab.eval(&format!(
        "(() => {{ const b = [...document.querySelector({r}).querySelectorAll('button')]\
         .find(b => b.textContent === 'Transcript'); b.focus(); \
         window.__drawnAt = document.getElementById('updated').textContent; \
         window.__focusedRow = document.querySelector({r}); }})()",
        r = json!(row)
    ));
    tab.wait_for(
        "a redraw",
        &format!(
            "document.getElementById('updated').textContent !== window.__drawnAt \
             && document.querySelector({r}) !== window.__focusedRow",
            r = json!(row)
        ),
    );
    assert_eq!(
        tab.eval(&format!(
            "document.activeElement.textContent === 'Transcript' \
             && document.activeElement.closest('tr') === document.querySelector({r})",
            r = json!(row)
        )),
        json!(true),
        "the focus stayed on the redrawn row's Transcript button"
    );
    tab.eval(&format!(
        "[...document.querySelectorAll({r})].flatMap(r => [...r.querySelectorAll('button')])\
         .find(b => b.textContent === 'Transcript').click()",
        r = json!(row)
    ));
    tab.wait_for(
        "the transcript",
        "document.querySelectorAll('#turns li').length > 0",
    );
    let t = p.get(&format!("/api.ashx/v1/transcripts/{id}"));
    let turns = t["turns"].as_array().unwrap();
    assert_eq!(
        tab.eval("document.querySelectorAll('#turns li').length"),
        json!(turns.len())
    );
    assert_eq!(tab.text("#turns li .who"), "AI");
    let facts = tab.text("#transcript dl");
    assert!(
        facts.contains("Outcomefinished") && !facts.contains("[object"),
        "{facts}"
    );
    assert_eq!(
        tab.text("#turns li .text"),
        turns[0]["text"].as_str().unwrap()
    );

    // A call for later: hung up from the monitor, it is cancelled.
    let at = codeb_types::UtcMillis(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    )
    .plus_ms(3_600_000);
    let (later, _) = p.place("reminder", &json!({"scheduleAtUtc": at.to_iso()}));
    let row = format!("#calls-body tr[data-id=\"{later}\"]");
    tab.wait_for(
        "the scheduled call",
        &format!("document.querySelector({r}) !== null", r = json!(row)),
    );
    assert_eq!(tab.text(&format!("{row} td.status")), "scheduled");
    confirm(&mut tab, &format!("{row} button.danger"), "Confirm hang-up");
    tab.wait_for(
        "the call cancelled",
        &format!(
            "(document.querySelector({r}) || {{dataset: {{}}}}).dataset.status === 'cancelled'",
            r = json!(row)
        ),
    );
    assert_eq!(p.call(&later)["status"], "cancelled");

    // The status filter shows only what it names.
    tab.eval(
        "(() => { const s = document.getElementById('status-filter'); s.value = 'cancelled'; \
         s.dispatchEvent(new Event('change')); })()",
    );
    tab.wait_for(
        "only the cancelled call",
        &format!(
            "[...document.querySelectorAll('#calls-body tr')].map(r => r.dataset.id).join() === {}",
            json!(later)
        ),
    );
    let mut status = sipp.0.wait().unwrap();
    if !status.success() {
        status = sipp.0.wait().unwrap();
    }
    assert!(status.success(), "the callee's call ended cleanly");
}
