//! Trunks as a carrier sees them, with SIPp playing the carrier: calls
//! forwarded out through a trunk that challenges them, registration with
//! digest, and the OPTIONS keep-alive's up/down state.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: failing loudly is the point

mod common;

use std::time::{Duration, Instant};

use common::{Switch, scenario, sipp_client, sipp_server};

fn carrier_config(carrier_port: u16, register: bool, options_interval: u32) -> String {
    format!(
        r#"
[[trunks]]
id = "tr_0000000000000001"
host = "127.0.0.1"
inbound = ["127.0.0.0/8"]
options_interval = 0

[[trunks]]
id = "tr_00000000000000ca"
host = "127.0.0.1"
port = {carrier_port}
username = "acct"
password = "s3cret-pw"
realm = "carrier.example"
register = {register}
options_interval = {options_interval}

[[routes]]
did = "*"
trunk = "tr_00000000000000ca"
"#
    )
}

fn wait_for(sw: &Switch, line: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if sw.metrics().lines().any(|l| l == line) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn calls_forwarded_to_a_trunk_answer_its_digest_challenge() {
    let carrier = sipp_server(&["-sf", scenario("uas_trunk_auth.xml").to_str().unwrap()]);
    let sw = Switch::start(&carrier_config(carrier.port, false, 0), &[]);
    let (ok, failed) = sipp_client(sw.sip, &["-sn", "uac", "-m", "3", "-r", "3"]);
    assert_eq!(
        (ok, failed),
        (3, 0),
        "the carrier verified our credentials on every call"
    );
}

#[test]
fn registers_with_the_trunk() {
    let carrier = sipp_server(&["-sf", scenario("uas_trunk_register.xml").to_str().unwrap()]);
    let sw = Switch::start(&carrier_config(carrier.port, true, 0), &[]);
    assert!(
        wait_for(
            &sw,
            "codeb_trunk_registered{trunk=\"tr_00000000000000ca\"} 1"
        ),
        "{}",
        sw.metrics()
    );
}

#[test]
fn keepalive_marks_a_silent_trunk_down() {
    // Nothing listens on the carrier port: OPTIONS times out (Timer F with
    // T1 shortened to 20 ms, so in 1.3 s).
    let silent = common::free_port();
    let sw = Switch::start(
        &carrier_config(silent, false, 1),
        &[("CODEB_SIP_T1_MS", "20"), ("CODEB_SIP_T2_MS", "160")],
    );
    assert!(
        wait_for(&sw, "codeb_trunk_up{trunk=\"tr_00000000000000ca\"} 0"),
        "{}",
        sw.metrics()
    );
}
