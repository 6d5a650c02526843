//! Running the controller: waiting for the CRD, the cluster endpoint cache fanned out to the
//! shards, the endpoint-status controllers, and readiness.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    context::{Context, Settings},
    endpoint_status,
    kubernetes::writes as kubernetes,
    shard,
};
use crate::{
    api::{ClusterInvitationEndpoint, EndpointKind, UserInvitation},
    health::Readiness,
    leader::Leadership,
    telemetry::Metrics,
};

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

/// The watch of the ClusterInvitationEndpoints this controller serves, feeding the one cache
/// of them; yields the endpoints whose spec changed.
fn cluster_endpoint_changes(
    ctx: &Context,
    cache: reflector::store::Writer<ClusterInvitationEndpoint>,
) -> impl futures::Stream<Item = Result<ClusterInvitationEndpoint, watcher::Error>> + Send + 'static
{
    watcher(
        Api::<ClusterInvitationEndpoint>::all(ctx.client.clone()),
        ctx.settings
            .endpoint_watch(EndpointKind::ClusterInvitationEndpoint),
    )
    .default_backoff()
    .modify(kubernetes::trim_for_cache)
    .reflect(cache)
    .flat_map(kubernetes::spec_changes())
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
    // The intent journal first: its open addresses are held before any pass plans.
    if !ctx.journal.load(&scopes, &shutdown).await {
        return;
    }
    let cluster_stream = cluster_endpoint_changes(&ctx, cluster_writer);
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
    // The fair share's safety net (a wake that found nothing to run).
    let sweep = every(ctx.settings.fair_share_sweep, || ctx.fair_share.wake_idle());
    let side = async {
        futures::join!(fan_out, report_ready, sweep);
    };
    tokio::select! {
        _ = work => {}
        _ = side => {}
    }
    tracing::info!("controller stopped");
}

/// Runs `work` every `period` (at least every millisecond), the first time at once; a tick
/// missed while the runtime was busy is delayed, not caught up. Never ends.
pub(super) async fn every(period: std::time::Duration, mut work: impl FnMut()) {
    let period = period.max(std::time::Duration::from_millis(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        work();
    }
}
