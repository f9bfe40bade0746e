//! The switch's routing configuration: trunks, SIP users, inbound routes.
//!
//! In standalone mode it comes from a TOML file; later the control plane
//! pushes the same snapshot over gRPC. Either way it is validated as a whole
//! before it replaces the running one, so a bad file never half-applies and
//! the switch keeps its last good configuration.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use crate::cidr::Cidr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    #[default]
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub id: String,
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub transport: TrunkTransport,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// User part of From on outbound calls (default: the caller's number).
    #[serde(default)]
    pub from_user: String,
    /// Host part of From (default: the trunk host).
    #[serde(default)]
    pub from_domain: String,
    /// 0 = unlimited.
    #[serde(default)]
    pub max_concurrent_calls: u32,
    /// 0 = unlimited.
    #[serde(default)]
    pub calls_per_second: u32,
    #[serde(default)]
    pub register: bool,
    #[serde(default = "default_register_expires")]
    pub register_expires: u32,
    /// The trunk outbound calls use when they name none.
    #[serde(default)]
    pub default: bool,
    /// Source networks INVITEs from this trunk arrive from.
    #[serde(default)]
    pub inbound: Vec<Cidr>,
    /// The digest realm we answer challenges for [default: the host]; a
    /// challenge for any other realm is not answered.
    #[serde(default)]
    pub realm: Option<String>,
    /// Seconds between OPTIONS keep-alives (0: none).
    #[serde(default = "default_options_interval")]
    pub options_interval: u32,
}

fn default_options_interval() -> u32 {
    30
}

impl TrunkConfig {
    pub fn realm(&self) -> &str {
        self.realm.as_deref().unwrap_or(&self.host)
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(5060)
    }
}

fn default_register_expires() -> u32 {
    3600
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Digest password for REGISTER; users without one cannot register.
    #[serde(default)]
    pub password: Option<String>,
    /// A fixed contact (a PBX or a test UAS), used beside registrations.
    #[serde(default)]
    pub contact: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub did: String,
    #[serde(default)]
    pub from: Option<String>,
    /// The user whose contacts ring (one of `user` and `trunk`).
    #[serde(default)]
    pub user: Option<String>,
    /// Forward the call out through this trunk instead.
    #[serde(default)]
    pub trunk: Option<String>,
}

/// Where a matched route sends the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget<'a> {
    User(&'a str),
    Trunk(&'a str),
}

impl RouteConfig {
    pub fn target(&self) -> Option<RouteTarget<'_>> {
        match (&self.user, &self.trunk) {
            (Some(u), None) => Some(RouteTarget::User(u)),
            (None, Some(t)) => Some(RouteTarget::Trunk(t)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Config version (the control plane numbers its snapshots).
    #[serde(default)]
    pub version: u64,
    /// Digest realm of the registrar.
    #[serde(default)]
    pub realm: Option<String>,
    #[serde(default)]
    pub trunks: Vec<TrunkConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

const MAX_ITEMS: usize = 100_000;

fn sip_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()+".contains(&b))
}

impl SwitchConfig {
    pub fn load(path: &Path) -> Result<SwitchConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg: SwitchConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn realm(&self) -> &str {
        self.realm.as_deref().unwrap_or("codeb")
    }

    /// Checks the snapshot as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.trunks.len() > MAX_ITEMS
            || self.users.len() > MAX_ITEMS
            || self.routes.len() > MAX_ITEMS
        {
            return bad("too many entries".into());
        }
        let mut ids = HashSet::new();
        let mut defaults = 0;
        for t in &self.trunks {
            if !ids.insert(t.id.as_str()) {
                return bad(format!("trunk id {} appears twice", t.id));
            }
            if t.host.is_empty()
                || t.host.len() > 253
                || t.host
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return bad(format!("trunk {}: bad host", t.id));
            }
            if t.register && (t.username.is_empty() || t.password.is_empty()) {
                return bad(format!(
                    "trunk {}: register needs username and password",
                    t.id
                ));
            }
            for s in [&t.username, &t.password] {
                if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                    return bad(format!(
                        "trunk {}: credentials contain quotes or control characters",
                        t.id
                    ));
                }
            }
            if !t.from_user.is_empty() && !sip_token(&t.from_user) {
                return bad(format!("trunk {}: bad from_user", t.id));
            }
            if !(60..=86_400).contains(&t.register_expires) {
                return bad(format!("trunk {}: register_expires must be 60-86400", t.id));
            }
            defaults += usize::from(t.default);
        }
        if defaults > 1 {
            return bad("more than one default trunk".into());
        }
        let mut names = HashSet::new();
        for u in &self.users {
            if !sip_token(&u.name) || !names.insert(u.name.as_str()) {
                return bad(format!("user {:?}: bad or repeated name", u.name));
            }
            if let Some(c) = &u.contact
                && (!(c.starts_with("sip:") || c.starts_with("sips:")) || c.len() > 256)
            {
                return bad(format!("user {}: contact must be a sip: URI", u.name));
            }
        }
        let mut keys = HashSet::new();
        for r in &self.routes {
            if r.did.is_empty() || r.did.len() > 64 || r.did.chars().any(char::is_whitespace) {
                return bad(format!("route {:?}: bad did", r.did));
            }
            if !keys.insert((r.did.as_str(), r.from.as_deref())) {
                return bad(format!("route {:?} from {:?} appears twice", r.did, r.from));
            }
            match r.target() {
                Some(RouteTarget::User(u)) if sip_token(u) => {}
                Some(RouteTarget::Trunk(t)) if ids.contains(t) => {}
                Some(RouteTarget::Trunk(t)) => {
                    return bad(format!("route {}: no trunk {t}", r.did));
                }
                _ => {
                    return bad(format!(
                        "route {}: needs exactly one of a valid user or trunk",
                        r.did
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
version = 3
realm = "pbx.example"

[[trunks]]
id = "tr_0123456789abcdef"
host = "127.0.0.1"
port = 5080
username = "acct"
password = "s3cret"
max_concurrent_calls = 10
calls_per_second = 2
default = true
inbound = ["127.0.0.0/8"]

[[users]]
name = "alex"
password = "pw"

[[users]]
name = "pbx"
contact = "sip:pbx@127.0.0.1:5090"

[[routes]]
did = "+15551234567"
user = "alex"

[[routes]]
did = "*"
user = "pbx"
"#;

    #[test]
    fn loads_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("switch.toml");
        std::fs::write(&p, SAMPLE).unwrap();
        let c = SwitchConfig::load(&p).unwrap();
        assert_eq!(c.version, 3);
        assert_eq!(c.realm(), "pbx.example");
        assert_eq!(c.trunks[0].transport, TrunkTransport::Udp);
        assert!(c.trunks[0].inbound[0].contains("127.0.0.9".parse().unwrap()));
        assert_eq!(
            c.users[1].contact.as_deref(),
            Some("sip:pbx@127.0.0.1:5090")
        );
        assert_eq!(c.routes.len(), 2);
    }

    #[test]
    fn refuses_bad_snapshots() {
        let cases = [
            (
                SAMPLE.replace("default = true", "default = true\nbogus = 1"),
                "unknown field",
            ),
            (
                SAMPLE.replace("name = \"pbx\"", "name = \"alex\""),
                "repeated",
            ),
            (
                SAMPLE.replace("password = \"s3cret\"", "password = \"a\\\"b\""),
                "quotes",
            ),
            (
                SAMPLE.replace(
                    "contact = \"sip:pbx@127.0.0.1:5090\"",
                    "contact = \"http://x\"",
                ),
                "sip: URI",
            ),
            (
                SAMPLE.replace(
                    "inbound = [\"127.0.0.0/8\"]",
                    "inbound = [\"127.0.0.0/99\"]",
                ),
                "IP network",
            ),
            (
                format!("{SAMPLE}\n[[routes]]\ndid = \"*\"\nuser = \"x\"\n"),
                "twice",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in cases {
            let p = dir.path().join("c.toml");
            std::fs::write(&p, &text).unwrap();
            let e = SwitchConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
