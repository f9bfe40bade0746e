//! The switch's routing configuration: trunks, SIP users, inbound routes,
//! virtual numbers (AI personas) and outbound whitelists, each owned by a
//! tenant (empty in a standalone file).
//!
//! In standalone mode it comes from a TOML file; the control plane pushes
//! the same snapshot over gRPC (`control::snapshot` maps it). Either way it
//! is validated as a whole before it replaces the running one, so a bad
//! file or snapshot never half-applies and the switch keeps its last good
//! configuration.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
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

impl TrunkTransport {
    /// The transport as a Via names it.
    pub fn via_name(self) -> &'static str {
        match self {
            TrunkTransport::Udp => "UDP",
            TrunkTransport::Tcp => "TCP",
        }
    }

    /// The `transport` URI parameter naming it (RFC 3261 §19.1.1), for
    /// Request-URIs and our Contact; none for UDP, the default.
    pub fn uri_param(self) -> &'static str {
        match self {
            TrunkTransport::Udp => "",
            TrunkTransport::Tcp => ";transport=tcp",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub id: String,
    /// The tenant owning the trunk (empty: standalone).
    #[serde(default)]
    pub tenant: String,
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
    /// Source networks INVITEs from this trunk arrive from; empty: its own
    /// signalling address (the resolved `host`).
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
    #[serde(default)]
    pub tenant: String,
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
    /// The tenant whose trunks' calls this route applies to.
    #[serde(default)]
    pub tenant: String,
    pub did: String,
    #[serde(default)]
    pub from: Option<String>,
    /// The user whose contacts ring (exactly one of `user`, `trunk` and
    /// `virtual_number`).
    #[serde(default)]
    pub user: Option<String>,
    /// Forward the call out through this trunk instead.
    #[serde(default)]
    pub trunk: Option<String>,
    /// A virtual number answered by its AI persona.
    #[serde(default)]
    pub virtual_number: Option<String>,
}

/// Where a matched route sends the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget<'a> {
    User(&'a str),
    Trunk(&'a str),
    VirtualNumber(&'a str),
}

impl RouteConfig {
    pub fn target(&self) -> Option<RouteTarget<'_>> {
        match (&self.user, &self.trunk, &self.virtual_number) {
            (Some(u), None, None) => Some(RouteTarget::User(u)),
            (None, Some(t), None) => Some(RouteTarget::Trunk(t)),
            (None, None, Some(v)) => Some(RouteTarget::VirtualNumber(v)),
            _ => None,
        }
    }
}

/// The AI persona of a virtual number (kept for the AI engine; the switch
/// does not run one yet).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct AiConfig {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub voice: String,
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub system_prompt: String,
    /// Vendor key (secret; never logged).
    #[serde(default)]
    pub api_key: String,
    #[serde(default)]
    pub transfer_targets: Vec<String>,
    #[serde(default)]
    pub save_transcript: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VirtualNumberConfig {
    #[serde(default)]
    pub tenant: String,
    pub number: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ai: AiConfig,
    /// Most talk time of a call to this number (0: the node's default).
    #[serde(default)]
    pub max_seconds: u32,
}

/// The numbers a tenant's outbound calls may dial.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct WhitelistConfig {
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Only listed numbers may be dialled.
    #[serde(default)]
    pub enforce: bool,
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
    #[serde(default)]
    pub virtual_numbers: Vec<VirtualNumberConfig>,
    #[serde(default)]
    pub whitelists: Vec<WhitelistConfig>,
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

/// A tenant name: empty (standalone) or a host-like name.
fn tenant_ok(s: &str) -> bool {
    s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// A dialable number: an optional `+` and 1 to 32 digits, `*` or `#`.
pub fn number_ok(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty()
        && digits.len() <= 32
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
}

impl SwitchConfig {
    /// The trunk an outbound call of `tenant` takes when it names none:
    /// the tenant's trunk marked default, else its only trunk.
    pub fn default_trunk(&self, tenant: &str) -> Option<&TrunkConfig> {
        let mut own = self.trunks.iter().filter(|t| t.tenant == tenant);
        if let Some(d) = self.trunks.iter().find(|t| t.tenant == tenant && t.default) {
            return Some(d);
        }
        match (own.next(), own.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    }

    /// Whether `tenant` may dial `number` (no whitelist, or one not
    /// enforced, allows any).
    pub fn may_dial(&self, tenant: &str, number: &str) -> bool {
        let strip = |s: &str| s.strip_prefix('+').unwrap_or(s).to_owned();
        match self.whitelists.iter().find(|w| w.tenant == tenant) {
            Some(w) if w.enforce => w.numbers.iter().any(|n| strip(n) == strip(number)),
            _ => true,
        }
    }

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
            || self.virtual_numbers.len() > MAX_ITEMS
            || self.whitelists.len() > MAX_ITEMS
        {
            return bad("too many entries".into());
        }
        let mut ids = HashSet::new();
        let mut defaults = HashSet::new();
        for t in &self.trunks {
            if !ids.insert(t.id.as_str()) {
                return bad(format!("trunk id {} appears twice", t.id));
            }
            if !tenant_ok(&t.tenant) {
                return bad(format!("trunk {}: bad tenant", t.id));
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
            if t.default && !defaults.insert(t.tenant.as_str()) {
                return bad(format!(
                    "more than one default trunk for tenant {:?}",
                    t.tenant
                ));
            }
        }
        // User names are unique on a node, across tenants: REGISTER names
        // a user by its name only (one registrar realm per node).
        let mut names = HashSet::new();
        for u in &self.users {
            if !sip_token(&u.name) || !names.insert(u.name.as_str()) {
                return bad(format!("user {:?}: bad or repeated name", u.name));
            }
            if !tenant_ok(&u.tenant) {
                return bad(format!("user {}: bad tenant", u.name));
            }
            if let Some(c) = &u.contact
                && (!(c.starts_with("sip:") || c.starts_with("sips:")) || c.len() > 256)
            {
                return bad(format!("user {}: contact must be a sip: URI", u.name));
            }
        }
        let mut numbers = HashSet::new();
        for v in &self.virtual_numbers {
            if !number_ok(&v.number) || !tenant_ok(&v.tenant) {
                return bad(format!(
                    "virtual number {:?}: bad number or tenant",
                    v.number
                ));
            }
            if !numbers.insert((v.tenant.as_str(), v.number.as_str())) {
                return bad(format!("virtual number {} appears twice", v.number));
            }
            if v.name.len() > 256 || v.ai.system_prompt.len() > 65_536 {
                return bad(format!(
                    "virtual number {}: name or prompt too long",
                    v.number
                ));
            }
        }
        let mut lists = HashSet::new();
        for w in &self.whitelists {
            if !tenant_ok(&w.tenant) || !lists.insert(w.tenant.as_str()) {
                return bad(format!(
                    "whitelist of tenant {:?}: bad or repeated",
                    w.tenant
                ));
            }
            if w.numbers.len() > MAX_ITEMS || !w.numbers.iter().all(|n| number_ok(n)) {
                return bad(format!("whitelist of tenant {:?}: bad number", w.tenant));
            }
        }
        let mut keys = HashSet::new();
        for r in &self.routes {
            if r.did.is_empty() || r.did.len() > 64 || r.did.chars().any(char::is_whitespace) {
                return bad(format!("route {:?}: bad did", r.did));
            }
            if !tenant_ok(&r.tenant) {
                return bad(format!("route {}: bad tenant", r.did));
            }
            if !keys.insert((r.tenant.as_str(), r.did.as_str(), r.from.as_deref())) {
                return bad(format!("route {:?} from {:?} appears twice", r.did, r.from));
            }
            match r.target() {
                Some(RouteTarget::User(u)) if sip_token(u) => {}
                Some(RouteTarget::Trunk(t)) if ids.contains(t) => {}
                Some(RouteTarget::Trunk(t)) => {
                    return bad(format!("route {}: no trunk {t}", r.did));
                }
                Some(RouteTarget::VirtualNumber(v))
                    if numbers.contains(&(r.tenant.as_str(), v)) => {}
                Some(RouteTarget::VirtualNumber(v)) => {
                    return bad(format!("route {}: no virtual number {v}", r.did));
                }
                _ => {
                    return bad(format!(
                        "route {}: needs exactly one of a valid user, trunk or virtual number",
                        r.did
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Resolves every trunk's host (DNS happens here, before a configuration is
/// applied, never on the SIP thread's hot path). A trunk that does not
/// resolve stays configured but unreachable, with a log line.
pub fn resolve_trunks(config: &SwitchConfig) -> HashMap<String, SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let mut out = HashMap::new();
    for t in &config.trunks {
        match (t.host.as_str(), t.port()).to_socket_addrs().map(|mut a| {
            a.find(SocketAddr::is_ipv4)
                .or_else(|| (t.host.as_str(), t.port()).to_socket_addrs().ok()?.next())
        }) {
            Ok(Some(addr)) => {
                out.insert(t.id.clone(), addr);
            }
            Ok(None) | Err(_) => {
                tracing::warn!(trunk = %t.id, host = %t.host, "trunk host does not resolve; calls through it fail until it does")
            }
        }
    }
    out
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
