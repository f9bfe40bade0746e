//! A pushed `ConfigSnapshot` as the switch's [`SwitchConfig`], and the last
//! good one kept in the data directory (`config.pb`, the snapshot's
//! protobuf bytes) so a restarted switch runs on it before the control
//! plane is back.

use std::io;
use std::path::{Path, PathBuf};

use codeb_proto::v1::{self, inbound_route};
use prost::Message as _;

use crate::cidr::Cidr;
use crate::config::{
    AiConfig, ConfigError, RouteConfig, SwitchConfig, TrunkConfig, TrunkTransport, UserConfig,
    VirtualNumberConfig, WhitelistConfig,
};

/// The largest snapshot file read back at start.
const MAX_SNAPSHOT: u64 = 64 << 20;

fn invalid(m: String) -> ConfigError {
    ConfigError::Invalid(m)
}

fn ai(a: Option<&v1::AiSession>) -> AiConfig {
    a.map(|a| AiConfig {
        model: a.model.clone(),
        voice: a.voice.clone(),
        language: a.language.clone(),
        system_prompt: a.system_prompt.clone(),
        api_key: a.api_key.clone(),
        transfer_targets: a.transfer_targets.clone(),
        save_transcript: a.save_transcript,
    })
    .unwrap_or_default()
}

/// Maps and validates a snapshot as a whole.
pub fn to_config(s: &v1::ConfigSnapshot) -> Result<SwitchConfig, ConfigError> {
    let mut trunks = Vec::with_capacity(s.trunks.len());
    for t in &s.trunks {
        let transport = match t.transport.to_ascii_lowercase().as_str() {
            "" | "udp" => TrunkTransport::Udp,
            "tcp" => TrunkTransport::Tcp,
            other => return Err(invalid(format!("trunk {}: transport {other:?}", t.id))),
        };
        let port = match t.port {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| invalid(format!("trunk {}: port {p}", t.id)))?),
        };
        let inbound = t
            .inbound
            .iter()
            .map(|c| {
                c.parse::<Cidr>()
                    .map_err(|e| invalid(format!("trunk {}: {e}", t.id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        trunks.push(TrunkConfig {
            id: t.id.clone(),
            tenant: t.tenant.clone(),
            host: t.host.clone(),
            port,
            transport,
            username: t.username.clone(),
            password: t.password.clone(),
            from_user: t.from_user.clone(),
            from_domain: t.from_domain.clone(),
            max_concurrent_calls: t.max_concurrent_calls,
            calls_per_second: t.calls_per_second,
            register: t.register,
            register_expires: if t.register_expires == 0 {
                3600
            } else {
                t.register_expires
            },
            default: t.is_default,
            inbound,
            realm: (!t.realm.is_empty()).then(|| t.realm.clone()),
            options_interval: t.options_interval,
        });
    }
    let users = s
        .users
        .iter()
        .map(|u| UserConfig {
            name: u.name.clone(),
            tenant: u.tenant.clone(),
            password: (!u.password.is_empty()).then(|| u.password.clone()),
            contact: (!u.contact.is_empty()).then(|| u.contact.clone()),
        })
        .collect();
    let mut routes = Vec::with_capacity(s.routes.len());
    for r in &s.routes {
        let (mut user, mut trunk, mut virtual_number) = (None, None, None);
        match &r.target {
            Some(inbound_route::Target::User(u)) => user = Some(u.clone()),
            Some(inbound_route::Target::Trunk(t)) => trunk = Some(t.clone()),
            Some(inbound_route::Target::VirtualNumber(v)) => virtual_number = Some(v.clone()),
            None => return Err(invalid(format!("route {}: no target", r.did))),
        }
        routes.push(RouteConfig {
            tenant: r.tenant.clone(),
            did: r.did.clone(),
            from: (!r.from_number.is_empty()).then(|| r.from_number.clone()),
            user,
            trunk,
            virtual_number,
        });
    }
    let virtual_numbers = s
        .virtual_numbers
        .iter()
        .map(|v| VirtualNumberConfig {
            tenant: v.tenant.clone(),
            number: v.number.clone(),
            name: v.name.clone(),
            ai: ai(v.ai.as_ref()),
            max_seconds: v.max_seconds,
        })
        .collect();
    let whitelists = s
        .whitelists
        .iter()
        .map(|w| WhitelistConfig {
            tenant: w.tenant.clone(),
            numbers: w.numbers.clone(),
            enforce: w.enforce,
        })
        .collect();
    let config = SwitchConfig {
        version: s.version,
        realm: None,
        trunks,
        users,
        routes,
        virtual_numbers,
        whitelists,
    };
    config.validate()?;
    Ok(config)
}

/// Where the last good pushed snapshot is kept.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("config.pb")
}

/// Keeps `snapshot` as the last good one (atomically and durably).
pub fn store(data_dir: &Path, snapshot: &v1::ConfigSnapshot) -> io::Result<()> {
    let p = path(data_dir);
    let tmp = p.with_extension("pb.tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&snapshot.encode_to_vec())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &p)?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// The last good pushed snapshot, if one was kept: `Ok(None)` when there
/// is none, an error when it cannot be read or no longer validates.
pub fn load(data_dir: &Path) -> Result<Option<SwitchConfig>, String> {
    let p = path(data_dir);
    let meta = match std::fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    if meta.len() > MAX_SNAPSHOT {
        return Err(format!("{}: larger than {MAX_SNAPSHOT} bytes", p.display()));
    }
    let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let snap = v1::ConfigSnapshot::decode(bytes.as_slice())
        .map_err(|e| format!("{}: {e}", p.display()))?;
    to_config(&snap)
        .map(Some)
        .map_err(|e| format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    pub(crate) fn sample(version: u64) -> v1::ConfigSnapshot {
        v1::ConfigSnapshot {
            version,
            trunks: vec![v1::Trunk {
                id: "tr_0000000000000001".into(),
                tenant: "example.com".into(),
                host: "127.0.0.1".into(),
                port: 5080,
                transport: "udp".into(),
                username: "acct".into(),
                password: "pw".into(),
                is_default: true,
                inbound: vec!["127.0.0.0/8".into()],
                ..Default::default()
            }],
            users: vec![v1::User {
                name: "alex".into(),
                tenant: "example.com".into(),
                contact: "sip:alex@127.0.0.1:5090".into(),
                ..Default::default()
            }],
            routes: vec![
                v1::InboundRoute {
                    tenant: "example.com".into(),
                    did: "1000".into(),
                    target: Some(inbound_route::Target::User("alex".into())),
                    ..Default::default()
                },
                v1::InboundRoute {
                    tenant: "example.com".into(),
                    did: "2000".into(),
                    target: Some(inbound_route::Target::VirtualNumber("+15550001111".into())),
                    ..Default::default()
                },
            ],
            virtual_numbers: vec![v1::VirtualNumber {
                tenant: "example.com".into(),
                number: "+15550001111".into(),
                name: "reception".into(),
                ai: Some(v1::AiSession {
                    model: "openai/gpt-realtime".into(),
                    ..Default::default()
                }),
                max_seconds: 300,
            }],
            whitelists: vec![v1::Whitelist {
                tenant: "example.com".into(),
                numbers: vec!["+15551230000".into()],
                enforce: true,
            }],
        }
    }

    #[test]
    fn maps_a_snapshot() {
        let c = to_config(&sample(7)).unwrap();
        assert_eq!(c.version, 7);
        assert_eq!(c.trunks[0].port(), 5080);
        assert!(c.trunks[0].default);
        assert_eq!(
            c.default_trunk("example.com").unwrap().id,
            "tr_0000000000000001"
        );
        assert_eq!(c.users[0].password, None);
        assert_eq!(c.routes[1].virtual_number.as_deref(), Some("+15550001111"));
        assert_eq!(c.virtual_numbers[0].ai.model, "openai/gpt-realtime");
        assert!(c.may_dial("example.com", "15551230000"));
        assert!(!c.may_dial("example.com", "+15559999999"));
        assert!(c.may_dial("other.example", "+15559999999"));
    }

    #[test]
    fn refuses_bad_snapshots_whole() {
        let mut s = sample(1);
        s.trunks[0].transport = "sctp".into();
        assert!(to_config(&s).unwrap_err().to_string().contains("transport"));
        let mut s = sample(1);
        s.trunks[0].port = 70_000;
        assert!(to_config(&s).is_err());
        let mut s = sample(1);
        s.routes[1].target = Some(inbound_route::Target::VirtualNumber("+1999".into()));
        assert!(
            to_config(&s)
                .unwrap_err()
                .to_string()
                .contains("no virtual number")
        );
        let mut s = sample(1);
        s.routes[0].target = None;
        assert!(to_config(&s).is_err());
        let mut s = sample(1);
        s.trunks[0].inbound = vec!["10.0.0.0/99".into()];
        assert!(to_config(&s).is_err());
    }

    #[test]
    fn the_last_good_snapshot_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        store(dir.path(), &sample(9)).unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap().version, 9);
        std::fs::write(path(dir.path()), b"\xff\xff\xff").unwrap();
        assert!(
            load(dir.path()).is_err(),
            "garbage is an error, not a panic"
        );
    }
}
