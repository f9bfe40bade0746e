//! The SSRF guard: decides which addresses a webhook URL may reach.
//!
//! A URL is checked when a subscription is created and again on every new
//! connection a delivery opens. The host is resolved once per connection;
//! every address it resolves to must pass (one internal answer refuses the
//! lot, so a name cannot smuggle an internal address in beside a public
//! one), and the connection goes only to those vetted addresses, never to a
//! second lookup's answer, so DNS rebinding gains nothing. Addresses in
//! `CODEB_WEBHOOK_ALLOW` pass despite the table in `addr`; the control
//! plane's own listening ports on this machine never do.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::addr::{IpNet, canonical, forbidden};

/// Longest time a DNS lookup may take when a subscription is created.
const CREATE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers a name from a table or function; None: no such name.
pub type FixedLookup = Arc<dyn Fn(&str) -> Option<Vec<IpAddr>> + Send + Sync>;

/// Name resolution. `Fixed` answers from a function instead of DNS: tests
/// use it to play an internal name or a rebinding DNS server.
#[derive(Clone)]
pub enum Resolver {
    System,
    Fixed(FixedLookup),
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resolver::System => "Resolver::System",
            Resolver::Fixed(_) => "Resolver::Fixed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("{0}")]
    BadUrl(&'static str),
    #[error("{host} {detail}")]
    Forbidden { host: String, detail: String },
    #[error("{0} is the platform's own listener")]
    OwnListener(SocketAddr),
    #[error("{host} does not resolve ({why})")]
    Unresolvable { host: String, why: String },
}

#[derive(Debug, Clone)]
pub struct UrlGuard {
    allow: Vec<IpNet>,
    own_ports: Vec<u16>,
    resolver: Resolver,
}

/// Where a URL points: host as written (without IPv6 brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl UrlGuard {
    /// `own_ports`: ports this platform listens on; a URL reaching one of
    /// them on this machine is refused even when its address is allowed.
    pub fn new(allow: Vec<IpNet>, own_ports: Vec<u16>, resolver: Resolver) -> UrlGuard {
        UrlGuard {
            allow,
            own_ports: own_ports.into_iter().filter(|p| *p != 0).collect(),
            resolver,
        }
    }

    pub fn with_resolver(mut self, resolver: Resolver) -> UrlGuard {
        self.resolver = resolver;
        self
    }

    /// The URL's shape: http(s), a host, no credentials.
    pub fn target(url: &url::Url) -> Result<Target, GuardError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GuardError::BadUrl("must be an http or https URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GuardError::BadUrl("must not carry credentials"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(GuardError::BadUrl("must have a host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or(GuardError::BadUrl("must have a port"))?;
        Ok(Target { host, port })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let c = canonical(ip);
        self.allow.iter().any(|n| n.contains(ip) || n.contains(c))
    }

    /// Vets one address; returns the address to connect to.
    pub fn vet(&self, host: &str, ip: IpAddr, port: u16) -> Result<SocketAddr, GuardError> {
        let c = canonical(ip);
        let to = SocketAddr::new(c, port);
        if self.own_ports.contains(&port) && is_this_machine(c) {
            return Err(GuardError::OwnListener(to));
        }
        if self.allowed(ip) {
            return Ok(to);
        }
        if let Some(what) = forbidden(ip) {
            let detail = if host.parse::<IpAddr>().is_ok() {
                format!("is {what}")
            } else {
                format!("resolved to {ip}, {what}")
            };
            return Err(GuardError::Forbidden {
                host: host.to_owned(),
                detail,
            });
        }
        Ok(to)
    }

    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, GuardError> {
        let unresolvable = |why: String| GuardError::Unresolvable {
            host: host.to_owned(),
            why,
        };
        match &self.resolver {
            Resolver::System => tokio::net::lookup_host((host, port))
                .await
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .map_err(|e| unresolvable(e.to_string())),
            Resolver::Fixed(f) => f(host).ok_or_else(|| unresolvable("no such name".into())),
        }
    }

    /// Resolves `host` once and vets every answer; returns the addresses
    /// a connection may use.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ips = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self.lookup(host, port).await?,
        };
        if ips.is_empty() {
            return Err(GuardError::Unresolvable {
                host: host.to_owned(),
                why: "no addresses".into(),
            });
        }
        let mut out: Vec<SocketAddr> = Vec::with_capacity(ips.len());
        for ip in ips {
            let to = self.vet(host, ip, port)?;
            if !out.contains(&to) {
                out.push(to);
            }
        }
        Ok(out)
    }

    /// The check when a subscription is created: refuses a URL whose host
    /// is or resolves to an address it may not reach. A name that does not
    /// resolve (yet) is accepted; every delivery checks again.
    pub async fn check_new_url(&self, url: &url::Url) -> Result<(), GuardError> {
        let t = Self::target(url)?;
        match tokio::time::timeout(CREATE_LOOKUP_TIMEOUT, self.resolve(&t.host, t.port)).await {
            Ok(Ok(_)) | Ok(Err(GuardError::Unresolvable { .. })) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(e),
        }
    }
}

/// Whether `ip` is an address of this machine: loopback, unspecified (which
/// connects to this machine), or assigned to one of its interfaces (binding
/// to it succeeds only then).
fn is_this_machine(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &[&str]) -> UrlGuard {
        let names = |h: &str| -> Option<Vec<IpAddr>> {
            match h {
                "public.test" => Some(vec!["93.184.216.34".parse().ok()?]),
                "internal.test" => Some(vec!["10.1.2.3".parse().ok()?]),
                "mixed.test" => Some(vec![
                    "93.184.216.34".parse().ok()?,
                    "169.254.169.254".parse().ok()?,
                ]),
                "mapped.test" => Some(vec!["::ffff:127.0.0.1".parse().ok()?]),
                "empty.test" => Some(vec![]),
                _ => None,
            }
        };
        UrlGuard::new(
            allow.iter().map(|a| a.parse().unwrap()).collect(),
            vec![8080],
            Resolver::Fixed(Arc::new(names)),
        )
    }

    async fn check(g: &UrlGuard, url: &str) -> Result<(), GuardError> {
        g.check_new_url(&url::Url::parse(url).unwrap()).await
    }

    #[tokio::test]
    async fn creation_checks() {
        let g = guard(&[]);
        for ok in [
            "https://public.test/hook",
            "https://8.8.8.8/",
            "http://[2606:4700:4700::1111]:8443/x",
            "https://nxdomain.test/", // accepted: checked again on delivery
        ] {
            assert_eq!(check(&g, ok).await, Ok(()), "{ok}");
        }
        for (bad, want) in [
            ("http://127.0.0.1/", "loopback"),
            ("http://127.1/", "loopback"),
            ("http://2130706433/", "loopback"),
            ("http://0x7f000001/", "loopback"),
            ("http://0177.0.0.1/", "loopback"),
            ("http://[::1]/", "loopback"),
            ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
            ("http://[::ffff:7f00:1]/", "IPv4-mapped"),
            ("http://[64:ff9b::a00:1]/", "NAT64"),
            ("http://0.0.0.0/", "unspecified"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://100.64.1.1/", "CGNAT"),
            ("http://internal.test/", "resolved to 10.1.2.3, a private"),
            ("http://mixed.test/", "169.254.169.254"),
            ("http://mapped.test/", "IPv4-mapped"),
        ] {
            let e = check(&g, bad).await.unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        for bad in [
            "ftp://8.8.8.8/",
            "https://u:p@8.8.8.8/",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(check(&g, bad).await, Err(GuardError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn operator_exceptions_but_never_our_own_port() {
        let g = guard(&["127.0.0.0/8", "10.0.0.0/8"]);
        assert_eq!(check(&g, "http://127.0.0.1:9000/").await, Ok(()));
        assert_eq!(check(&g, "http://[::ffff:127.0.0.1]:9000/").await, Ok(()));
        assert_eq!(check(&g, "http://internal.test/").await, Ok(()));
        let e = check(&g, "http://127.0.0.1:8080/").await.unwrap_err();
        assert!(matches!(e, GuardError::OwnListener(_)), "{e}");
        let e = check(&g, "http://localhost.invalid.test:8080/").await;
        assert_eq!(e, Ok(()), "unresolvable names pass creation");
        assert!(check(&g, "http://192.168.1.1/").await.is_err());
        // Connections go to the canonical address.
        let to = g.resolve("mapped.test", 9000).await.unwrap();
        assert_eq!(to, vec!["127.0.0.1:9000".parse::<SocketAddr>().unwrap()]);
        assert!(matches!(
            g.resolve("empty.test", 80).await,
            Err(GuardError::Unresolvable { .. })
        ));
    }
}
