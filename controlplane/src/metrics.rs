//! Prometheus metrics of the control plane: HTTP requests by route, method
//! and status, and their latency; webhook and email attempts; calls ended,
//! by status and outcome ([`CallEnds`]); and, read at each scrape, the
//! calls in hand by status and each switch node's state. Routes are the
//! matched route templates (`/api.ashx/v1/calls/{id}`), never raw paths,
//! so label cardinality stays bounded whatever clients send.

use axum::extract::MatchedPath;
use axum::http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use codeb_types::CallStatus;

/// A request's route label: the route template the router matched (shared
/// with the router, not copied per request), or a fixed name.
#[derive(Clone, Debug)]
pub enum Route {
    Matched(MatchedPath),
    Fixed(&'static str),
}

impl Route {
    pub fn as_str(&self) -> &str {
        match self {
            Route::Matched(p) => p.as_str(),
            Route::Fixed(s) => s,
        }
    }
}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

/// The method label: the method's name for the standard ones, `other` for
/// any other token a client sends (each would otherwise be a new series).
pub fn method_label(method: &Method) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, name)| name)
}

/// The standard methods and their labels.
const KNOWN_METHODS: [(Method, &str); 9] = [
    (Method::GET, "GET"),
    (Method::POST, "POST"),
    (Method::PUT, "PUT"),
    (Method::DELETE, "DELETE"),
    (Method::PATCH, "PATCH"),
    (Method::HEAD, "HEAD"),
    (Method::OPTIONS, "OPTIONS"),
    (Method::CONNECT, "CONNECT"),
    (Method::TRACE, "TRACE"),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptEndLabels {
    status: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The outcomes a call can end with (the spec's glossary, and `busy` and
/// `failed` for attempts that reached no one); any other string the
/// switch reports counts as `other`, so the label stays bounded.
const OUTCOMES: [&str; 11] = [
    "finished",
    "far-hangup",
    "empty-room",
    "transferred-to-vnum",
    "voicemail",
    "not-now",
    "no-answer",
    "cancelled",
    "max-duration",
    "busy",
    "failed",
];

/// `outcome` as a label: itself if it is one of [`OUTCOMES`], else `other`.
pub fn outcome_label(outcome: &str) -> &'static str {
    OUTCOMES
        .iter()
        .find(|o| **o == outcome)
        .copied()
        .unwrap_or("other")
}

/// Call ends recorded in this process, counted when the transaction that
/// records them commits (`store::StoreTx`): for outbound calls each
/// attempt's end and each cancellation before dialling, by the status it
/// left the call in (`ended-failed-retry-pending` for an attempt to be
/// tried again) and the outcome; each inbound call by its outcome. Shared
/// by the store, which counts, and [`Metrics`], which shows them.
#[derive(Clone, Debug, Default)]
pub struct CallEnds {
    attempts: Family<AttemptEndLabels, Counter>,
    inbound: Family<OutcomeLabels, Counter>,
    corrections: Family<CorrectionLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CorrectionLabels {
    direction: &'static str,
    outcome: &'static str,
}

impl CallEnds {
    pub fn attempt(&self, status: CallStatus, outcome: &str) {
        self.attempts
            .get_or_create(&AttemptEndLabels {
                status: status.as_str(),
                outcome: outcome_label(outcome),
            })
            .inc();
    }

    pub fn inbound(&self, outcome: &str) {
        self.inbound
            .get_or_create(&OutcomeLabels {
                outcome: outcome_label(outcome),
            })
            .inc();
    }

    /// An end counted as lost that its node's own account corrected to
    /// `outcome`.
    pub fn correction(&self, inbound: bool, outcome: &str) {
        self.corrections
            .get_or_create(&CorrectionLabels {
                direction: if inbound { "inbound" } else { "outbound" },
                outcome: outcome_label(outcome),
            })
            .inc();
    }

    /// Corrections counted (see [`Self::correction`]).
    #[cfg(test)]
    pub fn corrections(&self, inbound: bool, outcome: &'static str) -> u64 {
        self.corrections
            .get_or_create(&CorrectionLabels {
                direction: if inbound { "inbound" } else { "outbound" },
                outcome,
            })
            .get()
    }

    /// Attempts counted as ended with `status` and `outcome` (a label).
    #[cfg(test)]
    pub fn attempts(&self, status: CallStatus, outcome: &'static str) -> u64 {
        self.attempts
            .get_or_create(&AttemptEndLabels {
                status: status.as_str(),
                outcome,
            })
            .get()
    }

    /// Inbound calls counted as ended with `outcome` (a label).
    #[cfg(test)]
    pub fn inbound_count(&self, outcome: &'static str) -> u64 {
        self.inbound.get_or_create(&OutcomeLabels { outcome }).get()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    /// A URL of CODEB_SWITCH_URLS (bounded by the configuration).
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
    method: &'static str,
}

fn latency_histogram() -> Histogram {
    // 250 µs .. ~4 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    webhook_attempts: Family<AttemptLabels, Counter>,
    webhook_latency: Histogram,
    emails_sent: Counter,
    emails_failed: Counter,
    email_retries: Counter,
    calls: Family<StatusLabels, Gauge>,
    node_up: Family<NodeLabels, Gauge>,
    node_calls: Family<NodeLabels, Gauge>,
}

/// One switch node as a scrape sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSample {
    pub url: String,
    /// It answered its last probe.
    pub up: bool,
    /// Calls it last said it carries (0 when unknown).
    pub active_calls: i64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Self::with_call_ends(CallEnds::default())
    }

    /// Metrics that show `ends` (the store's: `Store::call_ends`).
    pub fn with_call_ends(ends: CallEnds) -> Metrics {
        let mut registry = Registry::with_prefix("codeb");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head",
            latency.clone(),
        );
        let webhook_attempts = Family::<AttemptLabels, Counter>::default();
        let webhook_latency = latency_histogram();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by result (success, http_error, timeout, transport_error, refused)",
            webhook_attempts.clone(),
        );
        registry.register(
            "webhook_attempt_duration_seconds",
            "Time from sending a webhook to its response",
            webhook_latency.clone(),
        );
        let (emails_sent, emails_failed, email_retries) =
            (Counter::default(), Counter::default(), Counter::default());
        registry.register(
            "emails_sent",
            "Transcript emails the SMTP relay accepted",
            emails_sent.clone(),
        );
        registry.register(
            "emails_failed",
            "Transcript emails given up on (5xx, or retries exhausted)",
            emails_failed.clone(),
        );
        registry.register(
            "email_retries",
            "Email attempts that will be retried (4xx, connection failures)",
            email_retries.clone(),
        );
        let calls = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "calls",
            "Outbound calls not yet ended, by status (every tenant)",
            calls.clone(),
        );
        registry.register(
            "outbound_call_ends",
            "Ends outbound calls recorded in this process (each attempt's end, and a cancellation before dialling), by the status they left the call in and the outcome",
            ends.attempts,
        );
        registry.register(
            "inbound_call_ends",
            "Inbound calls that ended in this process, by outcome",
            ends.inbound,
        );
        registry.register(
            "call_end_corrections",
            "Call ends recorded as lost (counted among the ends as failed) that their switch node's own account, read when it answered again, corrected in this process; by direction and the corrected outcome",
            ends.corrections,
        );
        let (node_up, node_calls) = (
            Family::<NodeLabels, Gauge>::default(),
            Family::<NodeLabels, Gauge>::default(),
        );
        registry.register(
            "switch_node_up",
            "Whether the switch node answered its last probe",
            node_up.clone(),
        );
        registry.register(
            "switch_node_active_calls",
            "Calls the switch node last said it carries",
            node_calls.clone(),
        );
        Metrics {
            calls,
            node_up,
            node_calls,
            emails_sent,
            emails_failed,
            email_retries,
            registry,
            requests,
            latency,
            webhook_attempts,
            webhook_latency,
        }
    }

    /// One request answered: `method` is a `method_label`.
    pub fn observe(&self, route: Route, method: &'static str, status: u16, seconds: f64) {
        let mut labels = RequestLabels {
            route,
            method,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        let route = RouteLabels {
            route: std::mem::replace(&mut labels.route, Route::Fixed("")),
            method,
        };
        self.latency.get_or_create(&route).observe(seconds);
    }

    pub fn observe_webhook_attempt(&self, result: &'static str, seconds: f64) {
        self.webhook_attempts
            .get_or_create(&AttemptLabels { result })
            .inc();
        self.webhook_latency.observe(seconds);
    }

    /// One email attempt's result: `sent`, `retry` or `failed`.
    pub fn observe_email(&self, result: &str) {
        match result {
            "sent" => self.emails_sent.inc(),
            "failed" => self.emails_failed.inc(),
            _ => self.email_retries.inc(),
        };
    }

    /// What a scrape read: the live calls by status (a status left out has
    /// none) and the switch nodes.
    pub fn set_live(&self, calls: &[(String, i64)], nodes: &[NodeSample]) {
        for status in [
            CallStatus::Scheduled,
            CallStatus::Dispatching,
            CallStatus::InFlight,
            CallStatus::EndedFailedRetryPending,
        ] {
            let n = calls
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, n)| *n);
            self.calls
                .get_or_create(&StatusLabels {
                    status: status.as_str(),
                })
                .set(n);
        }
        for n in nodes {
            let labels = NodeLabels {
                node: n.url.clone(),
            };
            self.node_up.get_or_create(&labels).set(i64::from(n.up));
            self.node_calls.get_or_create(&labels).set(n.active_calls);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        let calls = Route::Fixed("/api.ashx/v1/calls");
        m.observe(calls.clone(), method_label(&Method::GET), 200, 0.002);
        m.observe(calls, "GET", 200, 0.004);
        let odd = Method::from_bytes(b"FROBNICATE").unwrap();
        m.observe(Route::Fixed("unmatched"), method_label(&odd), 405, 0.001);
        m.observe_webhook_attempt("success", 0.01);
        m.observe_email("sent");
        let ends = CallEnds::default();
        let m2 = Metrics::with_call_ends(ends.clone());
        ends.attempt(CallStatus::EndedFailedRetryPending, "no-answer");
        ends.attempt(CallStatus::EndedSuccess, "finished");
        ends.attempt(CallStatus::EndedSuccess, "finished");
        ends.attempt(CallStatus::EndedFailedFinal, "something the switch made up");
        ends.inbound("far-hangup");
        let text = m2.render();
        for line in [
            r#"codeb_outbound_call_ends_total{status="ended-failed-retry-pending",outcome="no-answer"} 1"#,
            r#"codeb_outbound_call_ends_total{status="ended-success",outcome="finished"} 2"#,
            r#"codeb_outbound_call_ends_total{status="ended-failed-final",outcome="other"} 1"#,
            r#"codeb_inbound_call_ends_total{outcome="far-hangup"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("made up"), "{text}");
        let text = m.render();
        assert!(text.contains("codeb_emails_sent_total 1"), "{text}");
        assert!(text.contains("codeb_emails_failed_total 0"), "{text}");
        assert!(
            text.contains(r#"codeb_webhook_attempts_total{result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"codeb_http_requests_total{route="/api.ashx/v1/calls",method="GET",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"codeb_http_requests_total{route="unmatched",method="other",status="405"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains("FROBNICATE"), "{text}");
        assert!(
            text.contains(r#"codeb_http_request_duration_seconds_count{route="/api.ashx/v1/calls",method="GET"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn live_calls_and_nodes() {
        let m = Metrics::new();
        m.set_live(
            &[("in-flight".into(), 3), ("scheduled".into(), 7)],
            &[NodeSample {
                url: "http://10.0.0.10:50051".into(),
                up: true,
                active_calls: 3,
            }],
        );
        let text = m.render();
        for line in [
            r#"codeb_calls{status="in-flight"} 3"#,
            r#"codeb_calls{status="scheduled"} 7"#,
            r#"codeb_calls{status="dispatching"} 0"#,
            r#"codeb_switch_node_up{node="http://10.0.0.10:50051"} 1"#,
            r#"codeb_switch_node_active_calls{node="http://10.0.0.10:50051"} 3"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn method_labels() {
        // Each standard method's label is its own name.
        for (m, _) in &KNOWN_METHODS {
            assert_eq!(method_label(m), m.as_str());
        }
        assert_eq!(
            method_label(&Method::from_bytes(b"FROBNICATE").unwrap()),
            "other"
        );
    }
}
