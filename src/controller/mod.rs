//! The Kubernetes side: kube-runtime controllers for UserInvitations (one shard per watched
//! namespace, or one for all) and for the endpoints' status, wired to their watches.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | wiring: the shards, the cluster endpoint cache, readiness |
//! | `shard.rs` | one shard: its watches, caches, holder-index feed and start gate |
//! | `context.rs` | settings and the state reconcilers share |
//! | `invitation.rs` | the UserInvitation reconciler and its error policy |
//! | `cleanup.rs` | the finalizer and what deletionPolicy Delete removes on deletion |
//! | `resolution.rs` | finding an endpoint, its token and client |
//! | `endpoint_status.rs` | the endpoint-status reconciler |
//! | `kubernetes.rs` | guarded status writes, finalizer patches, Ready condition, cache trimming |
//! | `events.rs` | events |
//! | `clients.rs` | the endpoint client cache, tokens, and the registry of addresses in flight |
//! | `holders.rs` | who holds which person, across resources |
//! | `memory.rs` | what is remembered per resource (and forgotten on deletion) |
//! | `fair_share.rs` | the share of reconcile slots one namespace or endpoint may hold |
//! | `request_limit.rs` | the bound on Kubernetes requests in flight |

mod cleanup;
mod clients;
mod context;
mod endpoint_status;
mod events;
mod fair_share;
mod holders;
mod invitation;
mod kubernetes;
mod memory;
mod request_limit;
mod resolution;
mod shard;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use cleanup::FINALIZER;
pub use clients::{ClientSettings, build_client};
pub use context::{Context, EndpointKey, Settings, Shard};
pub use endpoint_status::{EndpointCheck, next_status};
pub use invitation::ReconcileError;
pub use kubernetes::{KubeStatusWriter, is_guard_failure};

use crate::{
    api::{ClusterInvitationEndpoint, EndpointKind, UserInvitation},
    health::Readiness,
    leader::Leadership,
    telemetry::Metrics,
};

/// Field manager and event reporter name.
pub const CONTROLLER_NAME: &str = "invite-operator";

/// The User-Agent of the controller's Kubernetes requests.
pub const USER_AGENT: &str = concat!("invite-operator/", env!("CARGO_PKG_VERSION"));

/// A Kubernetes client that identifies itself as the operator (User-Agent), so its requests
/// can be told apart in audit logs, with at most `max_requests` requests in flight at once
/// (watches and Lease requests not counted; see [`request_limit`]).
pub fn kube_client(mut config: kube::Config, max_requests: usize) -> Result<Client, kube::Error> {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&request_limit::RequestLimitLayer::new(max_requests))
        .build())
}

/// How clients of the controller's endpoints are built.
fn client_settings(ctx: &Context) -> ClientSettings {
    let leadership = ctx.leadership.clone();
    ClientSettings {
        recorder: ctx.metrics.api_call_recorder(),
        read_attempts: ctx.settings.read_attempts,
        limits: ctx.settings.lookup_limits,
        batch: ctx.settings.batch,
        may_act: Arc::new(move || leadership.is_valid()),
    }
}

/// The watch of the endpoints of `kind` this controller serves: those its selector selects,
/// or all. Everything that reads endpoints (the caches resources are resolved from, the
/// endpoint-status controllers) watches through it, so an endpoint it does not select is
/// never checked, written or used.
fn endpoint_watch(settings: &Settings, kind: EndpointKind) -> watcher::Config {
    match settings.endpoint_selector(kind) {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    }
}

/// Waits until the UserInvitation CRD is served, polling; reports it in `readiness` while
/// waiting. Returns false when shut down first.
pub async fn wait_for_crds(
    client: &Client,
    scope: Option<&str>,
    readiness: &watch::Sender<Readiness>,
    shutdown: &CancellationToken,
) -> bool {
    let api = kubernetes::scoped::<UserInvitation>(client, scope);
    let mut delay = Duration::from_millis(250);
    loop {
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(e) => {
                let _ = readiness.send(Readiness::WaitingForCrds);
                tracing::warn!(error = %e, "waiting for the UserInvitation CRD to be installed (invite-operator crd | kubectl apply -f -)");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// The leader gauge at 1 while the controller runs (under leader election, only while this
/// replica leads); when it ends, the gauge is 0 and the per-endpoint series are gone (the new
/// leader reports them).
struct Leading(Metrics);

impl Leading {
    fn new(metrics: &Metrics) -> Leading {
        metrics.leader.set(1);
        Leading(metrics.clone())
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.leader.set(0);
        self.0.endpoint_ready.clear();
    }
}

/// Runs the controller until `shutdown` is cancelled. `leadership` is asked before every call
/// that changes data in an invite API.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    readiness: watch::Sender<Readiness>,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    let _leading = Leading::new(&metrics);
    let scopes = settings.scopes();
    if !wait_for_crds(&client, scopes[0].as_deref(), &readiness, &shutdown).await {
        return;
    }
    let _ = readiness.send(Readiness::Syncing);
    let (cluster_endpoints, cluster_writer) = reflector::store::<ClusterInvitationEndpoint>();
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        leadership,
        cluster_endpoints,
    ));
    let cluster_stream = watcher(
        Api::<ClusterInvitationEndpoint>::all(client.clone()),
        endpoint_watch(&ctx.settings, EndpointKind::ClusterInvitationEndpoint),
    )
    .default_backoff()
    .modify(kubernetes::trim_for_cache)
    .reflect(cluster_writer)
    .flat_map(kubernetes::spec_changes());
    // Every shard's reconciles start once every shard listed its resources (the holder index
    // spans them all) and its endpoint caches are complete.
    let (listed, _) = watch::channel(0usize);
    let (shard_ready, _) = watch::channel(0usize);
    let shard_count = scopes.len();
    let (fan_out, mut cluster_streams) =
        shard::fan_out(cluster_stream, shard_count, shutdown.clone());
    let shards = scopes.iter().cloned().map(|scope| {
        let gates = shard::Gates {
            listed: listed.clone(),
            ready: shard_ready.clone(),
            shards: shard_count,
        };
        shard::run_shard(
            ctx.clone(),
            scope,
            cluster_streams.remove(0),
            gates,
            shutdown.clone(),
        )
    });
    let endpoint_checks = scopes
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, scope)| endpoint_status::run(ctx.clone(), scope, i == 0, shutdown.clone()));
    let report_ready = async {
        let mut ready = shard_ready.subscribe();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            Ok(_) = ready.wait_for(|n| *n >= shard_count) => {
                let _ = readiness.send(Readiness::Ready);
            }
        }
    };
    let work = async {
        futures::join!(
            futures::future::join_all(shards),
            futures::future::join_all(endpoint_checks),
        )
    };
    let side = async {
        futures::join!(fan_out, report_ready);
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = work => {}
        _ = side => {}
    }
    tracing::info!("controller stopped");
}
