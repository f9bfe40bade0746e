//! The control plane's side of the link to switch nodes
//! (`CODEB_SWITCH_URLS`).
//!
//! What exists today: the configured node list and a reachability probe,
//! which is what the API needs to answer `503 bridge_not_configured` (no
//! nodes) and `502 bridge_unreachable` (no node answers). The gRPC control
//! link that actually places calls is not built yet; until it is, a
//! reachable node is reported as unusable rather than pretending a call was
//! placed.

use std::time::Duration;

use tokio::net::TcpStream;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// No switch nodes are configured.
    NotConfigured,
    /// Nodes are configured but none can take the request.
    Unreachable(String),
}

#[derive(Debug, Clone)]
pub struct SwitchNodes {
    urls: Vec<String>,
}

impl SwitchNodes {
    pub fn new(urls: Vec<String>) -> SwitchNodes {
        SwitchNodes { urls }
    }

    pub fn is_configured(&self) -> bool {
        !self.urls.is_empty()
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Asks a switch node to take a call; returns the node's reply.
    pub async fn place_call(&self, call_id: &str) -> Result<String, LinkError> {
        self.usable_node(call_id).await
    }

    /// Asks the node carrying a call to end it.
    pub async fn hangup(&self, call_id: &str) -> Result<String, LinkError> {
        self.usable_node(call_id).await
    }

    async fn usable_node(&self, call_id: &str) -> Result<String, LinkError> {
        if self.urls.is_empty() {
            return Err(LinkError::NotConfigured);
        }
        let mut problems = Vec::new();
        for url in &self.urls {
            match probe(url).await {
                Ok(()) => {
                    tracing::warn!(node = %url, call = %call_id,
                        "switch node answers, but this build has no switch control link");
                    problems.push(format!(
                        "{url}: reachable, but this control plane build has no switch control link"
                    ));
                }
                Err(e) => problems.push(format!("{url}: {e}")),
            }
        }
        Err(LinkError::Unreachable(problems.join("; ")))
    }
}

async fn probe(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("bad URL ({e})"))?;
    let host = parsed.host_str().ok_or("URL has no host")?.to_owned();
    let port = parsed.port_or_known_default().ok_or("URL has no port")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("connect failed ({e})")),
        Err(_) => Err("connect timed out".to_owned()),
    }
}
