//! The Kubernetes side: kube-runtime controllers for UserInvitations (one shard per watched
//! namespace, or one for all) and for the endpoints' status, wired to their watches.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | wiring: shards, watches, caches, readiness |
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

mod cleanup;
mod clients;
mod context;
mod endpoint_status;
mod events;
mod holders;
mod invitation;
mod kubernetes;
mod memory;
mod resolution;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use cleanup::FINALIZER;
pub use clients::{ClientSettings, build_client};
pub use context::{Context, Settings, Shard};
pub use endpoint_status::{EndpointCheck, next_status};
pub use invitation::ReconcileError;
pub use kubernetes::{KubeStatusWriter, is_stale_write};

use crate::{
    api::{ClusterInvitationEndpoint, EndpointKind, InvitationEndpoint, UserInvitation},
    health::Readiness,
    leader::Leadership,
    telemetry::Metrics,
};

/// Field manager and event reporter name.
pub const CONTROLLER_NAME: &str = "invite-operator";

/// The User-Agent of the controller's Kubernetes requests.
pub const USER_AGENT: &str = concat!("invite-operator/", env!("CARGO_PKG_VERSION"));

/// A Kubernetes client that identifies itself as the operator (User-Agent), so its requests
/// can be told apart in audit logs.
pub fn kube_client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    Client::try_from(config)
}

/// How clients of the controller's endpoints are built.
fn client_settings(ctx: &Context) -> ClientSettings {
    let leadership = ctx.leadership.clone();
    ClientSettings {
        recorder: ctx.metrics.api_call_recorder(),
        read_attempts: ctx.settings.read_attempts,
        batch: ctx.settings.batch,
        may_act: Arc::new(move || leadership.is_valid()),
    }
}

/// The watch of the ClusterInvitationEndpoints this controller serves.
fn cluster_endpoint_watch(settings: &Settings) -> watcher::Config {
    match settings
        .cluster_endpoint_selector
        .as_deref()
        .filter(|s| !s.is_empty())
    {
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
        cluster_endpoint_watch(&ctx.settings),
    )
    .default_backoff()
    .modify(kubernetes::trim_for_cache)
    .reflect(cluster_writer)
    .touched_objects();
    // Every shard's reconciles start once every shard listed its resources (the holder index
    // spans them all) and its endpoint caches are complete.
    let (listed, _) = watch::channel(0usize);
    let (shard_ready, _) = watch::channel(0usize);
    let shard_count = scopes.len();
    let (fan_out, mut cluster_streams) = fan_out(cluster_stream, shard_count, shutdown.clone());
    let shards = scopes.iter().cloned().map(|scope| {
        let gates = Gates {
            listed: listed.clone(),
            ready: shard_ready.clone(),
            shards: shard_count,
        };
        run_shard(
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

/// Copies one stream of ClusterInvitationEndpoint changes to every shard: returns the future
/// that drives the watch (until shutdown) and one stream per shard.
fn fan_out(
    stream: impl futures::Stream<Item = Result<ClusterInvitationEndpoint, watcher::Error>>
    + Send
    + 'static,
    shards: usize,
    shutdown: CancellationToken,
) -> (
    impl Future<Output = ()>,
    Vec<futures::stream::BoxStream<'static, ClusterInvitationEndpoint>>,
) {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let driver = async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(endpoint)) => {
                    for tx in &senders {
                        let _ = tx.send(endpoint.clone());
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "watching ClusterInvitationEndpoints"),
                None => return,
            }
        }
    };
    let streams = receivers
        .into_iter()
        .map(|rx| tokio_stream_of(rx).boxed())
        .collect();
    (driver, streams)
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// What a shard waits for before its first reconcile, and reports when it is ready.
struct Gates {
    listed: watch::Sender<usize>,
    ready: watch::Sender<usize>,
    shards: usize,
}

async fn run_shard(
    ctx: Arc<Context>,
    scope: Option<String>,
    cluster_changes: futures::stream::BoxStream<'static, ClusterInvitationEndpoint>,
    gates: Gates,
    shutdown: CancellationToken,
) {
    let client = ctx.client.clone();
    let (namespaced_endpoints, ns_writer) = reflector::store::<InvitationEndpoint>();
    let ns_stream = watcher(
        kubernetes::scoped::<InvitationEndpoint>(&client, scope.as_deref()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(kubernetes::trim_for_cache)
    .reflect(ns_writer)
    .touched_objects();
    let (invitations, inv_writer) = reflector::store::<UserInvitation>();
    let observer = Observer::new(ctx.clone(), scope.clone(), gates.listed.clone());
    let invitation_stream = watcher(
        kubernetes::scoped::<UserInvitation>(&client, scope.as_deref()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(kubernetes::trim_for_cache)
    .map_ok(move |event| {
        observer.observe(&event);
        event
    })
    .reflect(inv_writer)
    .applied_objects()
    // The controller's own status writes change none of these: they trigger no pass.
    .predicate_filter(pass_trigger, Default::default());
    let (caches_ready_tx, caches_ready) = watch::channel(false);
    let shard = Arc::new(Shard {
        ctx: ctx.clone(),
        scope: scope.clone(),
        namespaced_endpoints: namespaced_endpoints.clone(),
        caches_ready,
    });
    let gate = open_gate(
        namespaced_endpoints.clone(),
        ctx.cluster_endpoints.clone(),
        gates,
        caches_ready_tx,
    );
    let by_ns_endpoint = invitations.clone();
    let by_cluster_endpoint = invitations.clone();
    let controller = Controller::for_stream(invitation_stream, invitations)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency),
        )
        .watches_stream(ns_stream, move |endpoint: InvitationEndpoint| {
            let ns = endpoint.namespace();
            referencing(
                &by_ns_endpoint,
                EndpointKind::InvitationEndpoint,
                ns.as_deref(),
                &endpoint.name_any(),
            )
        })
        .watches_stream(
            cluster_changes.map(Ok::<_, watcher::Error>),
            move |endpoint: ClusterInvitationEndpoint| {
                referencing(
                    &by_cluster_endpoint,
                    EndpointKind::ClusterInvitationEndpoint,
                    None,
                    &endpoint.name_any(),
                )
            },
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(invitation::reconcile, invitation::error_policy, shard)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                    tracing::debug!(%object, %error, "reconcile failed")
                }
                Err(error) => tracing::warn!(%error, "controller"),
            }
        });
    // The gate ends once open (or never, when the caches never sync); the controller ends on
    // shutdown.
    tokio::select! {
        _ = controller => {}
        _ = async { gate.await; std::future::pending::<()>().await } => {}
    }
}

/// Opens a shard's gate once its endpoint caches are complete and every shard listed its
/// resources.
async fn open_gate(
    namespaced: Store<InvitationEndpoint>,
    cluster: Store<ClusterInvitationEndpoint>,
    gates: Gates,
    open: watch::Sender<bool>,
) {
    if namespaced.wait_until_ready().await.is_err() || cluster.wait_until_ready().await.is_err() {
        return;
    }
    let mut listed = gates.listed.subscribe();
    if listed.wait_for(|n| *n >= gates.shards).await.is_err() {
        return;
    }
    let _ = open.send(true);
    gates.ready.send_modify(|n| *n += 1);
}

/// What makes a change of a UserInvitation worth a pass: its spec (generation), annotations
/// (pause), finalizers and deletion. The controller's own status writes change none of them.
fn pass_trigger(invitation: &UserInvitation) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = &invitation.metadata;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// The UserInvitations that reference an endpoint.
fn referencing(
    invitations: &Store<UserInvitation>,
    kind: EndpointKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<UserInvitation>> {
    invitations
        .state()
        .iter()
        .filter(|inv| {
            let r = &inv.spec.endpoint_ref;
            r.kind == kind
                && r.name == name
                && (namespace.is_none() || inv.metadata.namespace.as_deref() == namespace)
        })
        .map(|inv| ObjectRef::from_obj(inv.as_ref()))
        .collect()
}

/// Keeps the holder index and the per-resource memory in step with the UserInvitation watch:
/// complete after each (re)list, pruned on deletion.
struct Observer {
    ctx: Arc<Context>,
    scope: Option<String>,
    listed: watch::Sender<usize>,
    listed_once: std::sync::atomic::AtomicBool,
}

impl Observer {
    fn new(ctx: Arc<Context>, scope: Option<String>, listed: watch::Sender<usize>) -> Observer {
        Observer {
            ctx,
            scope,
            listed,
            listed_once: Default::default(),
        }
    }

    fn observe(&self, event: &watcher::Event<UserInvitation>) {
        let (holders, memory) = (&self.ctx.holders, &self.ctx.memory);
        match event {
            watcher::Event::Init => holders.relist_started(&self.scope),
            watcher::Event::InitApply(object) => {
                let key = invitation::resource_key(object);
                holders.update(&key, object.status.as_ref());
                holders.relisted(&self.scope, &key);
            }
            watcher::Event::InitDone => {
                for gone in holders.relist_done(&self.scope) {
                    memory.forget(&gone);
                }
                if !self
                    .listed_once
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    self.listed.send_modify(|n| *n += 1);
                }
            }
            watcher::Event::Apply(object) => {
                holders.update(&invitation::resource_key(object), object.status.as_ref());
            }
            watcher::Event::Delete(object) => {
                let key = invitation::resource_key(object);
                holders.remove(&key);
                memory.forget(&key);
            }
        }
    }
}
