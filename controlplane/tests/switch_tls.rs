//! The control link over mutual TLS: a real `codeb-switch` serving its
//! gRPC link with a certificate and asking for client certificates, and
//! `codeb serve` reaching it at an `https://` URL. Only a control plane that
//! trusts the switch's CA and shows a certificate of the client CA gets
//! through; one without a client certificate, one trusting another CA and
//! one speaking plaintext never see the node up. The switch's certificate
//! is renewed under it with SIGHUP, without dropping the link.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::Server;
use common::platform::{Killed, free_sip_port, wait};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// `der` as PEM (rcgen is built without its PEM writer).
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// A CA: its certificate written to `dir/<name>.pem`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, pem("CERTIFICATE", cert.der())).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem: path,
        }
    }

    /// A leaf for `names`, for `usage`: (certificate, key) files.
    fn leaf(
        &self,
        dir: &Path,
        name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        // Not the CA's name: a leaf named like its issuer reads as
        // self-signed.
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, pem("CERTIFICATE", cert.der())).unwrap();
        std::fs::write(&k, pem("PRIVATE KEY", &key.serialize_der())).unwrap();
        (c, k)
    }
}

/// `codeb_switch_node_up{node="<url>"}` of a control plane (None: no line).
fn node_up(cp: &Server, url: &str) -> Option<String> {
    let auth = format!("Authorization: Bearer {}", common::admin_token(cp));
    let out = Command::new("curl")
        .args(["-s", "-H", &auth, &cp.url("/metrics")])
        .output()
        .unwrap();
    let want = format!("codeb_switch_node_up{{node=\"{url}\"}} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(want.as_str()).map(str::to_owned))
}

#[test]
fn the_control_link_runs_over_mutual_tls() {
    let Some(switch_bin) =
        Some(PathBuf::from(env!("CARGO_BIN_EXE_codeb")).with_file_name("codeb-switch"))
            .filter(|p| p.exists())
    else {
        assert!(
            std::env::var("CODEB_REQUIRE_PG").as_deref() != Ok("1"),
            "codeb-switch is not built beside codeb"
        );
        eprintln!("codeb-switch is not built: skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "link-ca");
    let other_ca = Ca::new(d, "other-ca");
    let (srv_cert, srv_key) = ca.leaf(
        d,
        "switch",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cli_cert, cli_key) = ca.leaf(
        d,
        "cp",
        &["control-plane"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let token = "a-link-token-of-some-length";

    let (sip, grpc) = (free_sip_port(), free_sip_port());
    let rtp = 33_000 + (sip % 100) * 100;
    let _switch = Killed(
        Command::new(&switch_bin)
            .env("CODEB_SIP_ADDR", format!("127.0.0.1:{sip}"))
            .env("CODEB_SWITCH_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("CODEB_RTP_PORTS", format!("{rtp}-{}", rtp + 19))
            .env("CODEB_DATA_DIR", d.join("switch"))
            .env(
                "CODEB_SWITCH_METRICS_ADDR",
                format!("127.0.0.1:{}", free_sip_port()),
            )
            .env("CODEB_SWITCH_TOKEN", token)
            .env("CODEB_SWITCH_TLS_CERT", &srv_cert)
            .env("CODEB_SWITCH_TLS_KEY", &srv_key)
            .env("CODEB_SWITCH_TLS_CLIENT_CA", &ca.pem)
            .env("CODEB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("switch.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let switch_log = || std::fs::read_to_string(d.join("switch.log")).unwrap();
    wait("the switch's gRPC port", 20, || {
        std::net::TcpStream::connect(("127.0.0.1", grpc)).ok()
    });

    let tls_url = format!("https://localhost:{grpc}");
    let path = |p: &PathBuf| p.display().to_string();
    let cp = |name: &str, url: &str, tls: &[(&str, String)]| {
        let mut env: Vec<(&str, &str)> =
            vec![("CODEB_SWITCH_URLS", url), ("CODEB_SWITCH_TOKEN", token)];
        env.extend(tls.iter().map(|(k, v)| (*k, v.as_str())));
        // Its log (warnings) in <name>.log.
        let log = std::fs::File::create(d.join(format!("{name}.log"))).unwrap();
        Server::start_with(&d.join(name), None, &env, Stdio::from(log))
    };
    let trusted = cp(
        "cp-mtls",
        &tls_url,
        &[
            ("CODEB_SWITCH_TLS_CA", path(&ca.pem)),
            ("CODEB_SWITCH_CLIENT_CERT", path(&cli_cert)),
            ("CODEB_SWITCH_CLIENT_KEY", path(&cli_key)),
        ],
    );
    let no_client_cert = cp(
        "cp-no-cert",
        &tls_url,
        &[("CODEB_SWITCH_TLS_CA", path(&ca.pem))],
    );
    let wrong_ca = cp(
        "cp-wrong-ca",
        &tls_url,
        &[
            ("CODEB_SWITCH_TLS_CA", path(&other_ca.pem)),
            ("CODEB_SWITCH_CLIENT_CERT", path(&cli_cert)),
            ("CODEB_SWITCH_CLIENT_KEY", path(&cli_key)),
        ],
    );
    let plain_url = format!("http://127.0.0.1:{grpc}");
    let plaintext = cp("cp-plain", &plain_url, &[]);

    wait("the node up over mutual TLS", 20, || {
        (node_up(&trusted, &tls_url).as_deref() == Some("1")).then_some(())
    });
    // The others have probed every second meanwhile, and again for 3 s.
    std::thread::sleep(Duration::from_secs(3));
    for (cp, url, what) in [
        (&no_client_cert, &tls_url, "without a client certificate"),
        (&wrong_ca, &tls_url, "trusting another CA"),
        (&plaintext, &plain_url, "in plaintext"),
    ] {
        assert_eq!(
            node_up(cp, url).as_deref(),
            Some("0"),
            "a control plane {what} reached the node"
        );
    }
    assert_eq!(node_up(&trusted, &tls_url).as_deref(), Some("1"));
    // The log says why, without debug logging: the TLS alert beneath
    // tonic's "transport error".
    let log = std::fs::read_to_string(d.join("cp-no-cert.log")).unwrap();
    assert!(
        log.contains("switch node unreachable") && log.contains("CertificateRequired"),
        "{log}"
    );
    // A plaintext control plane's says what is likely wrong.
    let log = std::fs::read_to_string(d.join("cp-plain.log")).unwrap();
    assert!(log.contains("its URL takes https://"), "{log}");
    // So does the switch's, at warn.
    let log = switch_log();
    assert!(
        log.contains("WARN") && log.contains("a TLS handshake failed"),
        "{log}"
    );

    // Renewal. Files that do not work are refused, and the certificate in
    // use stays.
    let hup = || {
        let st = Command::new("kill")
            .args(["-HUP", &_switch.0.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };
    std::fs::write(&srv_key, "not a key").unwrap();
    hup();
    wait("the switch to refuse the broken key", 20, || {
        switch_log().contains("TLS files refused").then_some(())
    });
    let log = switch_log();
    assert!(log.contains("CODEB_SWITCH_TLS_KEY"), "{log}");
    let again = cp(
        "cp-again",
        &tls_url,
        &[
            ("CODEB_SWITCH_TLS_CA", path(&ca.pem)),
            ("CODEB_SWITCH_CLIENT_CERT", path(&cli_cert)),
            ("CODEB_SWITCH_CLIENT_KEY", path(&cli_key)),
        ],
    );
    wait("a new connection with the old certificate", 20, || {
        (node_up(&again, &tls_url).as_deref() == Some("1")).then_some(())
    });
    // A renewed certificate (here from the other CA, so that the change
    // shows) is served to new connections after SIGHUP; the connection up
    // already stays up (a restart would have drained the calls).
    let (new_cert, new_key) = other_ca.leaf(
        d,
        "switch-renewed",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    std::fs::copy(&new_cert, &srv_cert).unwrap();
    std::fs::copy(&new_key, &srv_key).unwrap();
    hup();
    wait("the switch to read the renewed certificate", 20, || {
        switch_log()
            .contains("TLS certificate, key and client CA read again")
            .then_some(())
    });
    let renewed = cp(
        "cp-renewed",
        &tls_url,
        &[
            ("CODEB_SWITCH_TLS_CA", path(&other_ca.pem)),
            ("CODEB_SWITCH_CLIENT_CERT", path(&cli_cert)),
            ("CODEB_SWITCH_CLIENT_KEY", path(&cli_key)),
        ],
    );
    wait("the node up with the renewed certificate", 20, || {
        (node_up(&renewed, &tls_url).as_deref() == Some("1")).then_some(())
    });
    assert_eq!(node_up(&trusted, &tls_url).as_deref(), Some("1"));
}

/// A control plane whose link TLS files are wrong does not start, and says
/// which setting is wrong.
#[test]
fn bad_link_tls_files_stop_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    for (env, named) in [
        (
            vec![("CODEB_SWITCH_TLS_CA", &not_pem)],
            "CODEB_SWITCH_TLS_CA",
        ),
        (
            vec![("CODEB_SWITCH_TLS_CA", &missing)],
            "CODEB_SWITCH_TLS_CA",
        ),
        (
            vec![("CODEB_SWITCH_TLS_CA", &broken)],
            "CODEB_SWITCH_TLS_CA: not a CA certificate",
        ),
        (
            vec![
                ("CODEB_SWITCH_CLIENT_CERT", &broken),
                ("CODEB_SWITCH_CLIENT_KEY", &broken),
            ],
            "CODEB_SWITCH_CLIENT_KEY",
        ),
        (
            vec![("CODEB_SWITCH_CLIENT_CERT", &broken)],
            "CODEB_SWITCH_CLIENT_CERT and CODEB_SWITCH_CLIENT_KEY go together",
        ),
    ] {
        let err = serve_fails(dir.path(), "https://localhost:1", &env);
        assert!(err.contains(named), "{env:?}: {err}");
    }
    // Plaintext URLs beside the link's TLS settings are a mistake.
    let ca = Ca::new(dir.path(), "ca");
    let err = serve_fails(
        dir.path(),
        "http://10.0.0.5:50051",
        &[("CODEB_SWITCH_TLS_CA", &ca.pem)],
    );
    assert!(err.contains("plaintext although"), "{err}");
}

/// `codeb serve` with these switch URLs and settings: it must not start;
/// what it said.
fn serve_fails(dir: &Path, urls: &str, env: &[(&str, &PathBuf)]) -> String {
    let out = Command::new("timeout")
        .args(["20", env!("CARGO_BIN_EXE_codeb"), "serve"])
        .env("CODEB_DATA_DIR", dir.join("cp"))
        .env(
            "CODEB_HTTP_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("CODEB_SWITCH_URLS", urls)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{env:?} started: {err}");
    err
}
