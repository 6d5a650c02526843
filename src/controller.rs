//! The Kubernetes side: the kube-runtime `Controller` on UserInvitation, reacting to its
//! endpoints and their Secrets, resolving credentials, writing status and events.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use tokio::sync::watch;

use crate::{
    api::{
        AnyEndpoint, ApiFlavor, ClusterInvitationEndpoint, DeletionPolicy, EndpointKind,
        InvitationEndpoint, PAUSED_ANNOTATION, UserInvitation, UserInvitationStatus,
    },
    invite::{
        ErrorCategory, InviteApi, InviteClient, OrgInvitationClient, Transport, TransportSettings,
        UserInviteClient, transport::backoff_delay,
    },
    reconcile::{
        self, StatusWriter, SyncInput, WriteError,
        plan::{self, Blocked, ReadyReason},
        resolve::{self, SecretLocation},
    },
    telemetry::{Metrics, ReconcileLabels, UserStateLabels},
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

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace the operator runs in (default namespace of ClusterInvitationEndpoint Secrets).
    pub operator_namespace: String,
    /// Interval of the slow resync that checks invited users for acceptance and expiry.
    pub resync_interval: Duration,
    /// First retry delay after a transient failure.
    pub retry_base_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// How many UserInvitations are reconciled at once.
    pub concurrency: u16,
    /// Attempts for idempotent API reads within one reconcile.
    pub read_attempts: u32,
    /// Namespaces whose UserInvitations are reconciled; empty means all.
    pub watch_namespaces: Vec<String>,
    /// Label selector of the ClusterInvitationEndpoints this controller serves (their status
    /// and the UserInvitations naming them); `None` means all.
    pub cluster_endpoint_selector: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            operator_namespace: "invite-operator".into(),
            resync_interval: Duration::from_secs(600),
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            concurrency: 8,
            read_attempts: 3,
            watch_namespaces: Vec::new(),
            cluster_endpoint_selector: None,
        }
    }
}

/// Readiness of the controller, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Readiness {
    /// The CRDs are not installed yet.
    #[default]
    WaitingForCrds,
    /// Caches are syncing.
    Syncing,
    /// Reconciling.
    Ready,
}

/// Shared state of the reconciler.
pub struct Context {
    client: Client,
    settings: Settings,
    metrics: Metrics,
    recorder: Recorder,
    namespaced_endpoints: Store<InvitationEndpoint>,
    cluster_endpoints: Store<ClusterInvitationEndpoint>,
    shared: Arc<Shared>,
    /// Set once both endpoint caches are complete. (kube's `Store::wait_until_ready` wakes
    /// only one of several waiters, so one task waits on the stores and publishes it here.)
    caches_ready: watch::Receiver<bool>,
    failures: Mutex<HashMap<ObjectRef<UserInvitation>, u32>>,
    last_check: Mutex<HashMap<ObjectRef<UserInvitation>, Instant>>,
}

/// Errors of one reconcile.
#[derive(thiserror::Error, Debug)]
pub enum ReconcileError {
    /// The sync with the API failed.
    #[error(transparent)]
    Sync(#[from] reconcile::SyncError),
    /// A Kubernetes call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The resource cannot be worked on until something changes.
    #[error("{}", .0.message)]
    Blocked(Blocked),
}

impl ReconcileError {
    /// A guarded write lost a race with another change of the resource: its new version is
    /// reconciled instead, so this is no failure.
    fn is_conflict(&self) -> bool {
        match self {
            ReconcileError::Sync(e) => e.is_conflict(),
            ReconcileError::Kube(e) => is_guard_failure(e),
            ReconcileError::Blocked(_) => false,
        }
    }

    fn category(&self) -> ErrorCategory {
        match self {
            ReconcileError::Sync(e) => e.category(),
            ReconcileError::Kube(_) => ErrorCategory::Transient,
            ReconcileError::Blocked(_) => ErrorCategory::Configuration,
        }
    }

    fn label(&self) -> &'static str {
        match self.category() {
            ErrorCategory::Transient => "transient",
            ErrorCategory::Configuration => "configuration",
            ErrorCategory::Permanent => "permanent",
        }
    }
}

/// Whether a write guarded by what was read (a JSON patch `test` of the resourceVersion or of
/// the finalizer, or a write carrying the resourceVersion) failed because the object changed
/// meanwhile. The API server answers a failed JSON patch `test` with `422 Invalid`, the
/// generic message "the server rejected our request due to an error in our request" and no
/// causes (a refused value is also `422 Invalid`, but lists its causes); a stale
/// resourceVersion is a `409 Conflict`.
pub fn is_guard_failure(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            status.is_conflict()
                || (status.code == 422
                    && status.reason == "Invalid"
                    && status.details.as_ref().is_none_or(|d| d.causes.is_empty()))
        }
        _ => false,
    }
}

/// Waits until the UserInvitation CRD is served, polling; sets `readiness` while waiting.
pub async fn wait_for_crds(
    client: &Client,
    scope: Option<&str>,
    readiness: &watch::Sender<Readiness>,
) {
    let api = scoped::<UserInvitation>(client, scope);
    let mut delay = Duration::from_millis(250);
    loop {
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(_) => return,
            Err(e) => {
                let _ = readiness.send(Readiness::WaitingForCrds);
                tracing::warn!(error = %e, "waiting for the UserInvitation CRD to be installed (invite-operator crd | kubectl apply -f -)");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    readiness: watch::Sender<Readiness>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // One shard per watched namespace (or one for all): each has its own watches and caches;
    // API clients and the per-API locks are shared, so exactly-once holds across shards.
    // A namespace named twice is one shard: two would reconcile its resources twice.
    let mut scopes: Vec<Option<String>> = Vec::new();
    for namespace in &settings.watch_namespaces {
        if !scopes.iter().flatten().any(|n| n == namespace) {
            scopes.push(Some(namespace.clone()));
        }
    }
    if scopes.is_empty() {
        scopes.push(None);
    }
    wait_for_crds(&client, scopes[0].as_deref(), &readiness).await;
    let _ = readiness.send(Readiness::Syncing);
    let shared = Arc::new(Shared::default());
    let shutdown = futures::FutureExt::shared(
        Box::pin(shutdown) as std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>
    );
    let synced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shards = scopes.len();
    let runs = scopes.clone().into_iter().map(|scope| {
        let ready = {
            let readiness = readiness.clone();
            let synced = synced.clone();
            move || {
                if synced.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == shards {
                    let _ = readiness.send(Readiness::Ready);
                }
            }
        };
        run_shard(
            client.clone(),
            scope,
            settings.clone(),
            metrics.clone(),
            shared.clone(),
            ready,
            shutdown.clone(),
        )
    });
    let endpoint_ctx = Arc::new(crate::endpoint_status::EndpointContext {
        client: client.clone(),
        operator_namespace: settings.operator_namespace.clone(),
        cluster_endpoint_selector: settings.cluster_endpoint_selector.clone(),
        resync_interval: settings.resync_interval,
        client_for: {
            let (shared, metrics, attempts) =
                (shared.clone(), metrics.clone(), settings.read_attempts);
            Box::new(move |endpoint, location, token| {
                shared.client_for(endpoint, location, token, &metrics, attempts)
            })
        },
    });
    let endpoint_runs = scopes.into_iter().enumerate().map(|(i, scope)| {
        crate::endpoint_status::run(endpoint_ctx.clone(), scope, i == 0, shutdown.clone())
    });
    futures::join!(
        futures::future::join_all(runs),
        futures::future::join_all(endpoint_runs)
    );
    tracing::info!("controller stopped");
}

/// State shared by every shard of the controller.
#[derive(Default)]
struct Shared {
    clients: Mutex<HashMap<String, (String, InviteClient)>>,
    api_locks: Mutex<HashMap<String, Arc<AddressLocks>>>,
}

fn scoped<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_shard(
    client: Client,
    scope: Option<String>,
    settings: Settings,
    metrics: Metrics,
    shared: Arc<Shared>,
    on_synced: impl FnOnce() + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let scope = scope.as_deref();
    let (namespaced_endpoints, ns_writer) = reflector::store::<InvitationEndpoint>();
    let (cluster_endpoints, cluster_writer) = reflector::store::<ClusterInvitationEndpoint>();
    let ns_stream = reflector::reflector(
        ns_writer,
        watcher(scoped(&client, scope), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let cluster_stream = reflector::reflector(
        cluster_writer,
        watcher(
            Api::all(client.clone()),
            cluster_endpoint_watch(settings.cluster_endpoint_selector.as_deref()),
        ),
    )
    .default_backoff()
    .touched_objects();
    let secrets = watcher(
        scoped::<PartialObjectMeta<Secret>>(&client, scope),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();

    let recorder = Recorder::new(client.clone(), Reporter::from(CONTROLLER_NAME));
    let (caches_ready_tx, caches_ready) = watch::channel(false);
    let context = Arc::new(Context {
        client: client.clone(),
        settings: settings.clone(),
        metrics,
        recorder,
        namespaced_endpoints: namespaced_endpoints.clone(),
        cluster_endpoints: cluster_endpoints.clone(),
        shared,
        caches_ready,
        failures: Mutex::default(),
        last_check: Mutex::default(),
    });

    let controller = Controller::new(
        scoped::<UserInvitation>(&client, scope),
        watcher::Config::default(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency));
    let invitations = controller.store();
    let by_ns_endpoint = invitations.clone();
    let by_cluster_endpoint = invitations.clone();
    let by_secret = invitations.clone();
    let (ns_eps, cluster_eps, operator_ns) = (
        namespaced_endpoints.clone(),
        cluster_endpoints.clone(),
        settings.operator_namespace.clone(),
    );
    let controller = controller
        .watches_stream(ns_stream, move |endpoint: InvitationEndpoint| {
            referencing(
                &by_ns_endpoint,
                EndpointKind::InvitationEndpoint,
                endpoint.metadata.namespace.as_deref(),
                &endpoint.name_any(),
            )
        })
        .watches_stream(
            cluster_stream,
            move |endpoint: ClusterInvitationEndpoint| {
                referencing(
                    &by_cluster_endpoint,
                    EndpointKind::ClusterInvitationEndpoint,
                    None,
                    &endpoint.name_any(),
                )
            },
        )
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            secret_dependents(&by_secret, &ns_eps, &cluster_eps, &operator_ns, &secret)
        })
        .graceful_shutdown_on(shutdown);

    // The endpoint caches are fed by the controller's own watch streams; the reconciler waits
    // for them (see `reconcile_invitation`), and readiness follows them.
    {
        let (a, b) = (namespaced_endpoints.clone(), cluster_endpoints.clone());
        tokio::spawn(async move {
            if a.wait_until_ready().await.is_ok() && b.wait_until_ready().await.is_ok() {
                let _ = caches_ready_tx.send(true);
                on_synced();
            }
        });
    }
    controller
        .run(reconcile_invitation, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                    tracing::debug!(%object, %error, "reconcile failed")
                }
                Err(error) => tracing::warn!(%error, "controller"),
            }
        })
        .await;
}

/// The watch of the ClusterInvitationEndpoints a controller serves.
pub fn cluster_endpoint_watch(selector: Option<&str>) -> watcher::Config {
    match selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    }
}

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

fn secret_dependents(
    invitations: &Store<UserInvitation>,
    namespaced: &Store<InvitationEndpoint>,
    cluster: &Store<ClusterInvitationEndpoint>,
    operator_namespace: &str,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<UserInvitation>> {
    let (ns, name) = (
        secret.metadata.namespace.clone().unwrap_or_default(),
        secret.name_any(),
    );
    let mut out = Vec::new();
    for ep in namespaced.state() {
        let location =
            resolve::secret_location(&AnyEndpoint::Namespaced((*ep).clone()), operator_namespace);
        if location.namespace == ns && location.name == name {
            out.extend(referencing(
                invitations,
                EndpointKind::InvitationEndpoint,
                ep.metadata.namespace.as_deref(),
                &ep.name_any(),
            ));
        }
    }
    for ep in cluster.state() {
        let location =
            resolve::secret_location(&AnyEndpoint::Cluster((*ep).clone()), operator_namespace);
        if location.namespace == ns && location.name == name {
            out.extend(referencing(
                invitations,
                EndpointKind::ClusterInvitationEndpoint,
                None,
                &ep.name_any(),
            ));
        }
    }
    out
}

/// Writes the status of one UserInvitation with a JSON patch that first tests the
/// resourceVersion it was read at: a concurrent change makes the write fail (and nothing is
/// sent to the API after a failed intent write).
pub struct KubeStatusWriter {
    api: Api<UserInvitation>,
    name: String,
    resource_version: String,
}

impl KubeStatusWriter {
    /// A writer for `invitation`, as read at its current resourceVersion.
    pub fn new(client: Client, invitation: &UserInvitation) -> KubeStatusWriter {
        KubeStatusWriter {
            api: Api::namespaced(
                client,
                invitation.metadata.namespace.as_deref().unwrap_or_default(),
            ),
            name: invitation.name_any(),
            resource_version: invitation.resource_version().unwrap_or_default(),
        }
    }
}

impl StatusWriter for KubeStatusWriter {
    async fn write(&mut self, status: &UserInvitationStatus) -> Result<(), WriteError> {
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": self.resource_version},
            {"op": "add", "path": "/status", "value": status},
        ]))
        .map_err(|e| WriteError {
            message: e.to_string(),
            conflict: false,
        })?;
        let updated = self
            .api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
            .map_err(|e| WriteError {
                conflict: is_guard_failure(&e),
                message: e.to_string(),
            })?;
        self.resource_version = updated.resource_version().unwrap_or_default();
        Ok(())
    }
}

async fn reconcile_invitation(
    invitation: Arc<UserInvitation>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    // Endpoint caches must be complete before deciding, or an endpoint that merely was not
    // listed yet would be reported missing.
    let mut caches_ready = ctx.caches_ready.clone();
    let _ = caches_ready.wait_for(|ready| *ready).await;
    let started = Instant::now();
    let key = ObjectRef::from_obj(invitation.as_ref());
    let span = tracing::info_span!(
        "reconcile",
        namespace = invitation.metadata.namespace.as_deref().unwrap_or_default(),
        name = %invitation.name_any(),
        endpoint = %resolve::endpoint_display(&invitation),
    );
    let result =
        tracing::Instrument::instrument(reconcile_inner(&invitation, &ctx, &key), span).await;
    let conflict = matches!(&result, Err(e) if e.is_conflict());
    let result = match result {
        Err(error) if conflict => {
            // Someone changed the resource since it was read: the watch brings its new
            // version, which is reconciled from scratch (the requeue is a fallback).
            tracing::debug!(
                namespace = invitation.metadata.namespace.as_deref().unwrap_or_default(),
                name = %invitation.name_any(),
                %error,
                "the resource changed meanwhile; reconciling its new version"
            );
            Ok(Action::requeue(ctx.settings.retry_base_delay))
        }
        other => other,
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            result: label.to_string(),
        })
        .inc();
    if result.is_ok() && !conflict {
        ctx.failures.lock().expect("lock").remove(&key);
    }
    result
}

fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_millis() as u64 / 10;
    interval + Duration::from_millis(rand::random_range(0..=spread.max(1)))
}

/// Finalizer held while deletionPolicy Delete has cleanup to do.
pub const FINALIZER: &str = "invite.operators.dev/cleanup";

async fn reconcile_inner(
    invitation: &UserInvitation,
    ctx: &Context,
    key: &ObjectRef<UserInvitation>,
) -> Result<Action, ReconcileError> {
    let namespace = invitation.metadata.namespace.clone().unwrap_or_default();
    let name = invitation.name_any();
    let generation = invitation.metadata.generation.unwrap_or(0);
    let previous = invitation.status.clone().unwrap_or_default();
    let mut writer = KubeStatusWriter::new(ctx.client.clone(), invitation);
    let paused = invitation
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true");

    if invitation.metadata.deletion_timestamp.is_some() {
        return cleanup(ctx, invitation, paused).await;
    }
    // The finalizer is held only while deletionPolicy Delete has something to clean up.
    let wants_finalizer = invitation.spec.deletion_policy == DeletionPolicy::Delete;
    if wants_finalizer != has_finalizer(invitation) {
        let updated = set_finalizer(ctx, invitation, wants_finalizer).await?;
        writer.resource_version = updated.resource_version().unwrap_or_default();
    }

    let requested = match plan::requested_addresses(&invitation.spec) {
        Ok(r) => r,
        Err(blocked) => {
            return block(
                ctx,
                invitation,
                &previous,
                &[],
                generation,
                blocked,
                &mut writer,
            )
            .await;
        }
    };
    if paused {
        let blocked = Blocked::new(
            ReadyReason::Paused,
            format!("paused by the {PAUSED_ANNOTATION} annotation; no API calls are made"),
        );
        block(
            ctx,
            invitation,
            &previous,
            &requested,
            generation,
            blocked,
            &mut writer,
        )
        .await?;
        return Ok(Action::await_change());
    }

    let (api, lock) = match resolve_api(ctx, invitation, &namespace, requested.len()).await? {
        Ok(resolved) => resolved,
        Err(blocked) => {
            return block(
                ctx,
                invitation,
                &previous,
                &requested,
                generation,
                blocked,
                &mut writer,
            )
            .await;
        }
    };

    let check_invited = {
        let mut checks = ctx.last_check.lock().expect("lock");
        let due = checks
            .get(key)
            .is_none_or(|t| t.elapsed() >= ctx.settings.resync_interval);
        if due {
            checks.insert(key.clone(), Instant::now());
        }
        due
    };
    let input = SyncInput {
        spec: &invitation.spec,
        requested: &requested,
        previous: &previous,
        generation,
        check_invited,
        settle_time: api.request_timeout(),
    };
    // One sync at a time per address and API: two resources naming the same person must not
    // both see "absent" and both invite.
    let result = {
        let addresses = requested
            .iter()
            .chain(previous.users.iter().map(|u| &u.email_address));
        let _serialized = lock.lock(addresses).await;
        reconcile::sync_users(&api, input, &mut writer).await
    };
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            if check_invited {
                ctx.last_check.lock().expect("lock").remove(key);
            }
            return Err(error.into());
        }
    };
    record_user_gauges(ctx, &namespace, &name, &report.status);
    publish_sync_events(ctx, invitation, api.flavor(), &report).await;
    if let Some(wait) = report.settle_after {
        // An earlier invite request may still be in flight: look again once it has settled.
        return Ok(Action::requeue(wait + Duration::from_millis(100)));
    }
    Ok(Action::requeue(jittered(ctx.settings.resync_interval)))
}

type ResolvedApi = (InviteClient, Arc<AddressLocks>);

/// Locks that serialize the work on one address against one API: two resources naming the
/// same person must not both find them absent and both invite. Addresses hash onto a fixed
/// set of stripes, so resources naming different people proceed in parallel.
pub struct AddressLocks {
    stripes: Vec<Arc<tokio::sync::Mutex<()>>>,
}

impl Default for AddressLocks {
    fn default() -> Self {
        AddressLocks {
            stripes: (0..64).map(|_| Arc::default()).collect(),
        }
    }
}

impl AddressLocks {
    /// Locks every stripe the addresses fall on, in stripe order (so two callers can never
    /// wait on each other in a cycle). The locks are held until the guards are dropped.
    pub async fn lock<'a>(
        &self,
        addresses: impl IntoIterator<Item = &'a String>,
    ) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        use std::hash::{Hash, Hasher};
        let mut indices: Vec<usize> = addresses
            .into_iter()
            .map(|a| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                a.to_ascii_lowercase().hash(&mut h);
                (h.finish() % self.stripes.len() as u64) as usize
            })
            .collect();
        indices.sort_unstable();
        indices.dedup();
        let mut guards = Vec::with_capacity(indices.len());
        for i in indices {
            guards.push(self.stripes[i].clone().lock_owned().await);
        }
        guards
    }
}

/// Finds the endpoint, checks it may serve the resource, reads the token and returns the
/// endpoint's client with the lock that serializes syncs against its API.
async fn resolve_api(
    ctx: &Context,
    invitation: &UserInvitation,
    namespace: &str,
    users: usize,
) -> Result<Result<ResolvedApi, Blocked>, ReconcileError> {
    let endpoint = find_endpoint(ctx, invitation);
    let namespace_labels = match &endpoint {
        Some(AnyEndpoint::Cluster(c)) if c.spec.namespace_selector.is_some() => {
            namespace_labels(&ctx.client, namespace).await?
        }
        _ => BTreeMap::new(),
    };
    if let Err(blocked) =
        resolve::check_endpoint(invitation, endpoint.as_ref(), &namespace_labels, users)
    {
        return Ok(Err(blocked));
    }
    let endpoint = endpoint.expect("checked above");
    let location = resolve::secret_location(&endpoint, &ctx.settings.operator_namespace);
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &location.namespace)
        .get_opt(&location.name)
        .await?;
    let token = match resolve::read_token(secret.as_ref(), &location) {
        Ok(t) => t,
        Err(blocked) => return Ok(Err(blocked)),
    };
    let api = match client_for(ctx, &endpoint, &location, token) {
        Ok(api) => api,
        Err(message) => return Ok(Err(Blocked::new(ReadyReason::EndpointNotReady, message))),
    };
    let connection = endpoint.connection();
    let lock_key = format!(
        "{}|{}",
        connection.url.trim_end_matches('/'),
        connection.organization_id.as_deref().unwrap_or_default()
    );
    let lock = ctx
        .shared
        .api_locks
        .lock()
        .expect("lock")
        .entry(lock_key)
        .or_default()
        .clone();
    Ok(Ok((api, lock)))
}

fn has_finalizer(invitation: &UserInvitation) -> bool {
    invitation.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds or removes the finalizer with a JSON patch guarded by `test` operations.
async fn set_finalizer(
    ctx: &Context,
    invitation: &UserInvitation,
    present: bool,
) -> Result<UserInvitation, kube::Error> {
    let finalizers = invitation.finalizers();
    let ops = if present {
        let rv = invitation.resource_version().unwrap_or_default();
        if finalizers.is_empty() {
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        } else {
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ])
        }
    } else {
        let index = finalizers.iter().position(|f| f == FINALIZER).unwrap_or(0);
        json!([
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("a valid JSON patch");
    Api::<UserInvitation>::namespaced(
        ctx.client.clone(),
        invitation.metadata.namespace.as_deref().unwrap_or_default(),
    )
    .patch(
        &invitation.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
}

/// deletionPolicy Delete on a deleted resource: remove what it created, then release the
/// finalizer. A paused resource, or one whose endpoint or credentials are gone, is released
/// at once with a Warning event naming what was left behind.
async fn cleanup(
    ctx: &Context,
    invitation: &UserInvitation,
    paused: bool,
) -> Result<Action, ReconcileError> {
    if !has_finalizer(invitation) {
        return Ok(Action::await_change());
    }
    let status = invitation.status.clone().unwrap_or_default();
    let access = invitation.spec.access_policy;
    let mut remaining: Vec<String> = status
        .users
        .iter()
        .filter(|u| plan::removable(u.state, access))
        .map(|u| u.email_address.clone())
        .collect();
    let namespace = invitation.metadata.namespace.clone().unwrap_or_default();
    let resolved = if paused {
        Err(Blocked::new(ReadyReason::Paused, "the resource is paused"))
    } else if remaining.is_empty() {
        Err(Blocked::new(ReadyReason::AllInvited, "nothing to remove"))
    } else {
        resolve_api(ctx, invitation, &namespace, 0).await?
    };
    match resolved {
        Err(blocked) => {
            if !remaining.is_empty() {
                publish(
                    ctx,
                    invitation,
                    EventType::Warning,
                    "CleanupSkipped",
                    "Delete",
                    format!(
                        "Deleted without removing {} ({}): left behind {}",
                        remaining.len(),
                        blocked.message,
                        summarize_list(&remaining)
                    ),
                )
                .await;
            }
        }
        Ok((api, lock)) => {
            let _serialized = lock
                .lock(status.users.iter().map(|u| &u.email_address))
                .await;
            let (reason, action) = match api.flavor() {
                ApiFlavor::UserInvite => ("Deleted", "Delete"),
                ApiFlavor::OrgInvitation => ("Revoked", "Revoke"),
            };
            for entry in status
                .users
                .iter()
                .filter(|u| plan::removable(u.state, access))
            {
                let done = api
                    .remove(&entry.email_address, entry.identifier.as_deref())
                    .await
                    .map_err(|e| ReconcileError::Sync(e.into()))?;
                remaining.retain(|e| e != &entry.email_address);
                if let Some(done) = done {
                    publish(ctx, invitation, EventType::Normal, reason, action, done).await;
                }
            }
        }
    }
    set_finalizer(ctx, invitation, false).await?;
    Ok(Action::await_change())
}

async fn block(
    ctx: &Context,
    invitation: &UserInvitation,
    previous: &UserInvitationStatus,
    requested: &[String],
    generation: i64,
    blocked: Blocked,
    writer: &mut KubeStatusWriter,
) -> Result<Action, ReconcileError> {
    let status = plan::blocked_status(requested, previous, generation, reconcile::now(), &blocked);
    if &status != previous {
        writer
            .write(&status)
            .await
            .map_err(|e| ReconcileError::Sync(reconcile::SyncError::Write(e)))?;
        let was = previous
            .conditions
            .iter()
            .find(|c| c.type_ == plan::READY)
            .map(|c| c.reason.clone());
        if was.as_deref() != Some(blocked.reason.as_str()) {
            let type_ = if blocked.reason == ReadyReason::Paused {
                EventType::Normal
            } else {
                EventType::Warning
            };
            publish(
                ctx,
                invitation,
                type_,
                blocked.reason.as_str(),
                "Reconcile",
                blocked.message.clone(),
            )
            .await;
        }
    }
    if blocked.reason == ReadyReason::Paused {
        return Ok(Action::await_change());
    }
    Err(ReconcileError::Blocked(blocked))
}

fn find_endpoint(ctx: &Context, invitation: &UserInvitation) -> Option<AnyEndpoint> {
    let r = &invitation.spec.endpoint_ref;
    match r.kind {
        EndpointKind::InvitationEndpoint => {
            let ns = invitation.metadata.namespace.as_deref().unwrap_or_default();
            ctx.namespaced_endpoints
                .get(&ObjectRef::new(&r.name).within(ns))
                .map(|e| AnyEndpoint::Namespaced((*e).clone()))
        }
        EndpointKind::ClusterInvitationEndpoint => ctx
            .cluster_endpoints
            .get(&ObjectRef::new(&r.name))
            .map(|e| AnyEndpoint::Cluster((*e).clone())),
    }
}

async fn namespace_labels(
    client: &Client,
    namespace: &str,
) -> Result<BTreeMap<String, String>, kube::Error> {
    let ns = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await?;
    Ok(ns
        .map(|n| n.metadata.labels.unwrap_or_default())
        .unwrap_or_default())
}

fn endpoint_key(endpoint: &AnyEndpoint) -> String {
    match endpoint {
        AnyEndpoint::Namespaced(e) => format!(
            "InvitationEndpoint/{}/{}",
            e.metadata.namespace.as_deref().unwrap_or_default(),
            e.name_any()
        ),
        AnyEndpoint::Cluster(e) => format!("ClusterInvitationEndpoint/{}", e.name_any()),
    }
}

/// The cached API client of an endpoint, rebuilt when the endpoint's settings or token change.
fn client_for(
    ctx: &Context,
    endpoint: &AnyEndpoint,
    location: &SecretLocation,
    token: crate::invite::ApiToken,
) -> Result<InviteClient, String> {
    ctx.shared.client_for(
        endpoint,
        location,
        token,
        &ctx.metrics,
        ctx.settings.read_attempts,
    )
}

impl Shared {
    /// The cached API client of an endpoint, rebuilt when the endpoint's settings or token
    /// change (so an OrgInvitation access token is shared by everything using the endpoint).
    fn client_for(
        &self,
        endpoint: &AnyEndpoint,
        location: &SecretLocation,
        token: crate::invite::ApiToken,
        metrics: &Metrics,
        read_attempts: u32,
    ) -> Result<InviteClient, String> {
        let key = endpoint_key(endpoint);
        let fingerprint = format!(
            "{:?}|{:?}|{}",
            endpoint.connection(),
            location,
            fingerprint_token(&token)
        );
        let mut clients = self.clients.lock().expect("lock");
        if let Some((fp, client)) = clients.get(&key)
            && fp == &fingerprint
        {
            return Ok(client.clone());
        }
        let client = build_client(
            endpoint,
            token,
            &key,
            metrics.api_call_recorder(),
            read_attempts,
        )?;
        clients.insert(key, (fingerprint, client.clone()));
        Ok(client)
    }
}

fn fingerprint_token(token: &crate::invite::ApiToken) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    h.finish()
}

/// Builds the API client of an endpoint.
pub fn build_client(
    endpoint: &AnyEndpoint,
    token: crate::invite::ApiToken,
    name: &str,
    recorder: crate::telemetry::ApiCallRecorder,
    read_attempts: u32,
) -> Result<InviteClient, String> {
    let connection = endpoint.connection();
    let settings = TransportSettings {
        timeout: Duration::from_secs(connection.timeout_seconds.max(1) as u64),
        requests_per_second: connection.requests_per_second,
        ca_bundle: connection.ca_bundle.clone(),
        read_attempts,
        ..TransportSettings::default()
    };
    let transport = Transport::new(name, settings, recorder)?;
    match connection.api {
        crate::api::ApiFlavor::UserInvite => Ok(InviteClient::UserInvite(UserInviteClient::new(
            &connection.url,
            token,
            transport,
        ))),
        crate::api::ApiFlavor::OrgInvitation => {
            let organization_id = connection
                .organization_id
                .as_deref()
                .filter(|o| !o.is_empty())
                .ok_or("organizationId is required for an OrgInvitation endpoint")?;
            Ok(InviteClient::OrgInvitation(OrgInvitationClient::new(
                &connection.url,
                connection.token_url.as_deref(),
                organization_id,
                token,
                transport,
            )))
        }
    }
}

fn record_user_gauges(ctx: &Context, namespace: &str, name: &str, status: &UserInvitationStatus) {
    for state in crate::api::UserState::ALL {
        let count = status.users.iter().filter(|u| u.state == state).count();
        ctx.metrics
            .users
            .get_or_create(&UserStateLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                state: state.to_string(),
            })
            .set(count as i64);
    }
}

async fn publish_sync_events(
    ctx: &Context,
    invitation: &UserInvitation,
    flavor: ApiFlavor,
    report: &reconcile::SyncReport,
) {
    for (email, changes) in &report.updated {
        publish(
            ctx,
            invitation,
            EventType::Normal,
            "Updated",
            "Enforce",
            format!("Brought {email} to the spec: {changes}"),
        )
        .await;
    }
    let removed_reason = match flavor {
        ApiFlavor::UserInvite => "Deleted",
        ApiFlavor::OrgInvitation => "Revoked",
    };
    for (email, done) in &report.removed {
        let note = match done {
            Some(done) => format!("{email} was removed from the spec: {done}"),
            None => format!("{email} was removed from the spec; nothing was left to remove"),
        };
        publish(
            ctx,
            invitation,
            EventType::Normal,
            removed_reason,
            "Delete",
            note,
        )
        .await;
    }
    if !report.invited.is_empty() {
        publish(
            ctx,
            invitation,
            EventType::Normal,
            "Invited",
            "Invite",
            format!("Invited {}", summarize_list(&report.invited)),
        )
        .await;
    }
    for (email, message) in &report.failed {
        publish(
            ctx,
            invitation,
            EventType::Warning,
            "InviteFailed",
            "Invite",
            format!("Inviting {email} failed: {message}"),
        )
        .await;
    }
    for (email, _, state) in &report.transitions {
        let reason = match state {
            crate::api::UserState::Accepted => "Accepted",
            crate::api::UserState::Expired => "Expired",
            crate::api::UserState::Revoked => "Revoked",
            _ => continue,
        };
        publish(
            ctx,
            invitation,
            EventType::Normal,
            reason,
            "Observe",
            format!("The invitation of {email} is now {state}"),
        )
        .await;
    }
}

fn summarize_list(items: &[String]) -> String {
    const SHOWN: usize = 10;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!(
            "{} and {} more",
            items[..SHOWN].join(", "),
            items.len() - SHOWN
        )
    }
}

async fn publish(
    ctx: &Context,
    invitation: &UserInvitation,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = ctx
        .recorder
        .publish(&event, &invitation.object_ref(&()))
        .await
    {
        tracing::warn!(%error, reason, "cannot publish event");
    }
}

fn error_policy(
    invitation: Arc<UserInvitation>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let key = ObjectRef::from_obj(invitation.as_ref());
    let failures = {
        let mut map = ctx.failures.lock().expect("lock");
        let n = map.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    let base = match error.category() {
        ErrorCategory::Transient => ctx.settings.retry_base_delay,
        // Configuration problems are re-checked slowly; watches on endpoints and Secrets
        // trigger a reconcile as soon as they are fixed.
        ErrorCategory::Configuration | ErrorCategory::Permanent => {
            ctx.settings.retry_base_delay * 8
        }
    };
    let mut delay = backoff_delay(base, failures).min(ctx.settings.retry_max_delay);
    if let ReconcileError::Sync(sync) = error
        && let Some(after) = sync.retry_after()
    {
        delay = delay.max(after.min(ctx.settings.retry_max_delay));
    }
    tracing::info!(
        namespace = invitation.metadata.namespace.as_deref().unwrap_or_default(),
        name = %invitation.name_any(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}
