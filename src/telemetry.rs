//! Telemetry: logging setup and Prometheus metrics.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber. `filter` uses `RUST_LOG` syntax.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Labels of an API call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiCallLabels {
    /// `kind/namespace/name` of the endpoint.
    pub endpoint: String,
    /// Operation in snake_case, e.g. `invite_users`.
    pub operation: String,
    /// HTTP status code, or `error` when there was no answer.
    pub code: String,
}

/// Labels of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `ok` or the error category.
    pub result: String,
}

/// Labels of a reconcile deferred because its namespace or endpoint used its share of the
/// reconcile slots.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeferLabels {
    /// `namespace` or `endpoint`.
    pub share: String,
}

/// Labels of the users-by-state gauge (per namespace, never per resource: the series stay
/// few however many resources there are).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserStateLabels {
    /// Namespace of the UserInvitations.
    pub namespace: String,
    /// The user state in snake_case (`already_member`).
    pub state: String,
}

/// Labels of the endpoint readiness gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `InvitationEndpoint` or `ClusterInvitationEndpoint`.
    pub kind: String,
    /// Namespace of an InvitationEndpoint (empty for a ClusterInvitationEndpoint).
    pub namespace: String,
    /// Name of the endpoint.
    pub name: String,
}

/// Labels of the build information gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The operator's version (Cargo.toml).
    pub version: String,
    /// The git commit it was built from (`GIT_SHA` at build time), or `unknown`.
    pub revision: String,
}

/// `text` as a metric label value: snake_case (`invite users` → `invite_users`,
/// `AlreadyMember` → `already_member`).
pub fn snake_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    let mut previous: Option<char> = None;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase()
                && previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
            {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
        previous = Some(c);
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

/// Every metric of the operator.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// API calls by endpoint, operation and status code.
    pub api_calls: Family<ApiCallLabels, Counter>,
    /// API call latency by endpoint, operation and status code.
    pub api_call_duration: Family<ApiCallLabels, Histogram>,
    /// Reconciles by result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration.
    pub reconcile_duration: Histogram,
    /// Reconciles deferred by the fair share of reconcile slots.
    pub deferred: Family<DeferLabels, Counter>,
    /// Users by state, per namespace.
    pub users: Family<UserStateLabels, Gauge>,
    /// 1 while this replica leads (runs the controller), else 0.
    pub leader: Gauge,
    /// Whether each endpoint this replica serves is Ready (1) or not (0); only the leader
    /// has series.
    pub endpoint_ready: Family<EndpointLabels, Gauge>,
    /// Events not published because their queue was full (events are best effort).
    pub events_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The reconcile counters, every result from the start (at 0): a rate or an increase over a
/// series that appears with its first error would miss that error.
fn zeroed_reconciles() -> Family<ReconcileLabels, Counter> {
    let reconciles = Family::<ReconcileLabels, Counter>::default();
    for result in ["ok", "transient", "configuration", "permanent"] {
        let result = result.to_string();
        reconciles
            .get_or_create(&ReconcileLabels { result })
            .inc_by(0);
    }
    reconciles
}

/// The deferral counters, both series from the start (at 0), so that a rate over them exists
/// before the first.
fn zeroed_deferrals() -> Family<DeferLabels, Counter> {
    let deferred = Family::<DeferLabels, Counter>::default();
    for share in ["namespace", "endpoint"] {
        let share = share.to_string();
        deferred.get_or_create(&DeferLabels { share }).inc_by(0);
    }
    deferred
}

/// Registers `build_info`: always 1, labelled with the version and revision.
fn register_build_info(registry: &mut Registry) {
    let build_info = Family::<BuildLabels, Gauge>::default();
    build_info
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: option_env!("GIT_SHA")
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_string(),
        })
        .set(1);
    registry.register(
        "build_info",
        "Always 1; the labels say which build of the operator runs",
        build_info,
    );
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("invite_operator");
        let api_calls = Family::<ApiCallLabels, Counter>::default();
        let api_call_duration = Family::<ApiCallLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(latency_buckets())) as fn() -> Histogram,
        );
        let reconciles = zeroed_reconciles();
        let reconcile_duration = Histogram::new(latency_buckets());
        let users = Family::<UserStateLabels, Gauge>::default();
        let deferred = zeroed_deferrals();
        registry.register(
            "reconciles_deferred",
            "UserInvitation reconciles put off because their namespace or endpoint held its share of the reconcile slots",
            deferred.clone(),
        );
        registry.register(
            "api_calls",
            "Invite API calls by endpoint, operation and status code",
            api_calls.clone(),
        );
        registry.register(
            "api_call_duration_seconds",
            "Invite API call latency",
            api_call_duration.clone(),
        );
        registry.register(
            "reconciles",
            "UserInvitation reconciles by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of UserInvitation reconciles",
            reconcile_duration.clone(),
        );
        registry.register(
            "users",
            "Users of UserInvitations by invitation state, per namespace",
            users.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica is the leader and runs the controller, else 0",
            leader.clone(),
        );
        let endpoint_ready = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_ready",
            "Whether an endpoint is Ready (1) or not (0), by kind, namespace and name (leader only)",
            endpoint_ready.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events not published because the event queue was full (events never delay a status write)",
            events_dropped.clone(),
        );
        register_build_info(&mut registry);
        Metrics {
            registry: Arc::new(registry),
            leader,
            endpoint_ready,
            api_calls,
            api_call_duration,
            reconciles,
            reconcile_duration,
            deferred,
            users,
            events_dropped,
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// A recorder of API calls feeding these metrics.
    pub fn api_call_recorder(&self) -> ApiCallRecorder {
        ApiCallRecorder {
            metrics: Some(self.clone()),
        }
    }
}

/// Records API calls into the metrics (or nowhere, for one-shot runs and tests).
#[derive(Clone, Default)]
pub struct ApiCallRecorder {
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for ApiCallRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiCallRecorder")
    }
}

impl ApiCallRecorder {
    /// Records one call.
    pub fn record(&self, endpoint: &str, operation: &str, code: &str, elapsed: Duration) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let labels = ApiCallLabels {
            endpoint: endpoint.to_string(),
            operation: snake_case(operation),
            code: code.to_string(),
        };
        metrics.api_calls.get_or_create(&labels).inc();
        metrics
            .api_call_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_snake_case() {
        for (text, label) in [
            ("invite users", "invite_users"),
            ("list organization users", "list_organization_users"),
            ("AlreadyMember", "already_member"),
            ("Invited", "invited"),
            ("queue", "queue"),
            ("exchange token ", "exchange_token"),
        ] {
            assert_eq!(snake_case(text), label);
        }
    }
}
