//! One shard of the controller: the UserInvitation controller of one watched namespace (or of
//! all), its caches and watches, and the gate its reconciles wait behind.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use kube::{
    ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    context::{Context, Shard, Wake},
    error::resource_key,
    invitation,
    kubernetes::writes as kubernetes,
};
use crate::api::{ClusterInvitationEndpoint, EndpointKind, InvitationEndpoint, UserInvitation};

/// Copies one stream of ClusterInvitationEndpoint changes to every shard: returns the future
/// that drives the watch (until shutdown) and one stream per shard.
pub(super) fn fan_out(
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
pub(super) struct Gates {
    pub(super) listed: watch::Sender<usize>,
    pub(super) ready: watch::Sender<usize>,
    pub(super) shards: usize,
}

/// The shard's UserInvitations: their cache, and the changes worth a pass (the holder index
/// and the per-resource memory follow every event on the way).
fn invitation_watch(
    ctx: &Arc<Context>,
    scope: &Option<String>,
    listed: watch::Sender<usize>,
) -> (
    Store<UserInvitation>,
    impl futures::Stream<Item = Result<UserInvitation, watcher::Error>> + Send + 'static,
) {
    let (invitations, writer) = reflector::store::<UserInvitation>();
    let triggers = Arc::new(Triggers::default());
    let feed = HolderFeed::new(ctx.clone(), scope.clone(), listed, triggers.clone());
    let stream = watcher(
        kubernetes::scoped::<UserInvitation>(&ctx.client, scope.as_deref()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(kubernetes::trim_invitation_for_cache)
    .map_ok(move |event| {
        feed.event(&event);
        event
    })
    .reflect(writer)
    .applied_objects()
    // The controller's own status writes change none of these: they trigger no pass.
    .try_filter(move |invitation| std::future::ready(triggers.changed(invitation)));
    (
        invitations,
        kubernetes::without_errors(stream, "UserInvitations"),
    )
}

/// Runs one shard: the UserInvitation controller of one namespace (or all), reacting to its
/// endpoints.
pub(super) async fn run_shard(
    ctx: Arc<Context>,
    scope: Option<String>,
    cluster_changes: futures::stream::BoxStream<'static, ClusterInvitationEndpoint>,
    gates: Gates,
    shutdown: CancellationToken,
) {
    let (namespaced_endpoints, ns_writer) = reflector::store::<InvitationEndpoint>();
    let ns_stream = watcher(
        kubernetes::scoped::<InvitationEndpoint>(&ctx.client, scope.as_deref()),
        ctx.settings
            .endpoint_watch(EndpointKind::InvitationEndpoint),
    )
    .default_backoff()
    .modify(kubernetes::trim_for_cache)
    .reflect(ns_writer)
    .flat_map(kubernetes::spec_changes());
    let ns_stream = kubernetes::without_errors(ns_stream, "InvitationEndpoints");
    let (invitations, invitation_stream) = invitation_watch(&ctx, &scope, gates.listed.clone());
    let (caches_ready_tx, caches_ready) = watch::channel(false);
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let shard = Arc::new(Shard {
        ctx: ctx.clone(),
        namespaced_endpoints: namespaced_endpoints.clone(),
        caches_ready,
        wake,
    });
    let resyncs = wake_due_resyncs(shard.clone(), scope.clone());
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
        // Resources put off for their fair share, each woken when a slot of its share is free,
        // and converged resources whose slow resync is due.
        .reconcile_on(tokio_stream_of(woken).map(|wake: Wake| wake.object_ref()))
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
    // The gate ends once open (or never, when the caches never sync), and the resyncs never;
    // the controller ends on shutdown.
    tokio::select! {
        _ = controller => {}
        _ = async { gate.await; std::future::pending::<()>().await } => {}
        _ = resyncs => {}
    }
}

/// Sends the shard's converged resources whose slow resync is due to its controller, looking
/// every tenth of the resync interval (at least every second).
async fn wake_due_resyncs(shard: Arc<Shard>, scope: Option<String>) {
    let period = (shard.ctx.settings.resync_interval / 10)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    super::run::every(period, || {
        let memory = &shard.ctx.memory;
        for key in memory.due_resyncs(scope.as_deref(), std::time::Instant::now()) {
            let _ = shard.wake.send(Wake::from_key(&key));
        }
    })
    .await
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
/// (pause), finalizers and deletion; its uid, so that a resource deleted and created again
/// under the same name (unseen between two lists) is new. The controller's own status writes
/// change none of them.
fn pass_trigger(invitation: &UserInvitation) -> u64 {
    use std::hash::{Hash, Hasher};
    let meta = &invitation.metadata;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// The [`pass_trigger`] each resource of a shard was last seen with, by `namespace/name`: a
/// watch event whose trigger is unchanged starts no pass. (kube-runtime's `predicate_filter`
/// does the same, but keeps three strings and a timestamp per resource.) Deleted resources
/// are forgotten, and so are those a relist no longer lists.
#[derive(Default)]
struct Triggers {
    seen: std::sync::Mutex<TriggerMap>,
}

#[derive(Default)]
struct TriggerMap {
    /// Per resource: its trigger, and the relist it was last listed or changed in.
    entries: std::collections::HashMap<Box<str>, (u64, u32)>,
    /// Relists begun.
    relist: u32,
}

impl Triggers {
    /// Whether `invitation` changed in a way worth a pass since it was last seen (or is new).
    fn changed(&self, invitation: &UserInvitation) -> bool {
        let trigger = pass_trigger(invitation);
        let key = resource_key(invitation);
        let mut seen = self.seen.lock().expect("lock");
        let relist = seen.relist;
        match seen.entries.get_mut(key.as_str()) {
            Some(last) => {
                let changed = last.0 != trigger;
                *last = (trigger, relist);
                changed
            }
            None => {
                seen.entries.insert(key.into_boxed_str(), (trigger, relist));
                true
            }
        }
    }

    /// A relist began: what it does not list is forgotten when it ends.
    fn relist_started(&self) {
        let mut seen = self.seen.lock().expect("lock");
        seen.relist = seen.relist.wrapping_add(1);
    }

    /// A relist ended (every object it listed went through [`Triggers::changed`]).
    fn relist_done(&self) {
        let mut seen = self.seen.lock().expect("lock");
        let relist = seen.relist;
        seen.entries.retain(|_, (_, listed)| *listed == relist);
    }

    /// Forgets a resource that is gone.
    fn forget(&self, key: &str) {
        self.seen.lock().expect("lock").entries.remove(key);
    }
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
struct HolderFeed {
    ctx: Arc<Context>,
    scope: Option<String>,
    listed: watch::Sender<usize>,
    listed_once: std::sync::atomic::AtomicBool,
    triggers: Arc<Triggers>,
}

impl HolderFeed {
    fn new(
        ctx: Arc<Context>,
        scope: Option<String>,
        listed: watch::Sender<usize>,
        triggers: Arc<Triggers>,
    ) -> HolderFeed {
        HolderFeed {
            ctx,
            scope,
            listed,
            listed_once: Default::default(),
            triggers,
        }
    }

    fn event(&self, event: &watcher::Event<UserInvitation>) {
        let (holders, memory) = (&self.ctx.holders, &self.ctx.memory);
        match event {
            watcher::Event::Init => {
                holders.relist_started(&self.scope);
                self.triggers.relist_started();
            }
            watcher::Event::InitApply(object) => {
                let key = resource_key(object);
                holders.update(&key, object.status.as_ref());
                holders.relisted(&self.scope, &key);
            }
            watcher::Event::InitDone => {
                for gone in holders.relist_done(&self.scope) {
                    memory.forget(&gone);
                }
                self.triggers.relist_done();
                if !self
                    .listed_once
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    self.listed.send_modify(|n| *n += 1);
                }
            }
            watcher::Event::Apply(object) => {
                holders.update(&resource_key(object), object.status.as_ref());
            }
            watcher::Event::Delete(object) => {
                let key = resource_key(object);
                holders.remove(&key);
                memory.forget(&key);
                self.triggers.forget(&key);
                if let Some(uid) = object.metadata.uid.clone() {
                    let journal = self.ctx.journal.clone();
                    tokio::spawn(async move { journal.gone(&uid).await });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invitation(name: &str, uid: &str, generation: i64, paused: bool) -> UserInvitation {
        let mut annotations = serde_json::Map::new();
        if paused {
            annotations.insert(crate::api::PAUSED_ANNOTATION.into(), "true".into());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "invite.operators.dev/v1alpha1", "kind": "UserInvitation",
            "metadata": {
                "name": name, "namespace": "team", "uid": uid, "generation": generation,
                "annotations": annotations,
            },
            "spec": {"endpointRef": {"kind": "InvitationEndpoint", "name": "ep"}},
        }))
        .unwrap()
    }

    #[test]
    fn only_changes_worth_a_pass_trigger_one() {
        let triggers = Triggers::default();
        let first = invitation("a", "u-1", 1, false);
        assert!(triggers.changed(&first), "a new resource");
        assert!(!triggers.changed(&first), "the same again");
        let mut status_written = first.clone();
        status_written.status = Some(Default::default());
        status_written.metadata.resource_version = Some("2".into());
        assert!(!triggers.changed(&status_written), "a status write");
        assert!(
            triggers.changed(&invitation("a", "u-1", 2, false)),
            "a new spec"
        );
        assert!(triggers.changed(&invitation("a", "u-1", 2, true)), "paused");
        assert!(
            triggers.changed(&invitation("a", "u-2", 2, true)),
            "recreated under the same name"
        );
        assert!(triggers.changed(&invitation("b", "u-3", 1, false)));

        // A deleted resource is forgotten; so is one a relist no longer lists.
        triggers.forget("team/b");
        assert_eq!(triggers.seen.lock().unwrap().entries.len(), 1);
        triggers.changed(&invitation("c", "u-4", 1, false));
        triggers.relist_started();
        assert!(!triggers.changed(&invitation("a", "u-2", 2, true)));
        triggers.relist_done();
        let seen = triggers.seen.lock().unwrap();
        assert_eq!(
            seen.entries.keys().map(|k| k.as_ref()).collect::<Vec<_>>(),
            ["team/a"]
        );
    }
}
