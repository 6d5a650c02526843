//! The controller's settings and the state its reconcilers share.

use std::{sync::Arc, time::Duration};

use kube::{
    Client,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;

use super::{
    fair_share::FairShare,
    kubernetes::{events::Events, journal::Journal},
    state::{
        claims::AddressClaims, clients::EndpointClients, holders::HolderIndex,
        memory::ResourceMemory,
    },
};
use crate::{
    api::{ClusterInvitationEndpoint, EndpointKind, InvitationEndpoint, UserInvitation},
    invite::{LookupLimits, client::ClientSettings, coalesce::BatchSettings},
    leader::Leadership,
    reconcile::resolve::EndpointPolicy,
    telemetry::Metrics,
};

/// Field manager and event reporter name.
pub const CONTROLLER_NAME: &str = "invite-operator";

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
    /// How many UserInvitations are reconciled at once (per watched namespace).
    pub concurrency: u16,
    /// Attempts for idempotent API reads within one reconcile.
    pub read_attempts: u32,
    /// Namespaces whose UserInvitations are reconciled; empty means all.
    pub watch_namespaces: Vec<String>,
    /// Label selector limiting the ClusterInvitationEndpoints served; `None`: all. With a
    /// selector, a UserInvitation naming a ClusterInvitationEndpoint this controller does not
    /// serve (another controller's, or one that does not exist) is left alone entirely.
    pub cluster_endpoint_selector: Option<String>,
    /// Label selector limiting the InvitationEndpoints served (in the watched namespaces);
    /// `None`: all. With a selector, a UserInvitation naming an InvitationEndpoint this
    /// controller does not serve (another controller's, or one that does not exist) is left
    /// alone entirely.
    pub namespaced_endpoint_selector: Option<String>,
    /// How calls to one endpoint are coalesced across resources.
    pub batch: BatchSettings,
    /// How long a token read from a Secret is used before it is read again (it is also read
    /// again after the API refuses it).
    pub secret_cache_ttl: Duration,
    /// What endpoints may reach.
    pub endpoint_policy: EndpointPolicy,
    /// Whether a namespaced InvitationEndpoint may only use Secrets labelled
    /// `invite.operators.dev/credentials: "true"`.
    pub require_credentials_label: bool,
    /// The largest difference between two replicas' clocks that exactly-once tolerates.
    pub max_clock_skew: Duration,
    /// The most of the reconcile slots one namespace, and one endpoint, may hold (0 < share
    /// ≤ 1; default a half).
    pub fair_share: f64,
    /// How often the fair share wakes waiters of shares with free slots again, for a wake that
    /// found nothing to run (default 30 s; a setting for tests, not a flag).
    pub fair_share_sweep: Duration,
    /// Budgets of one lookup (organization snapshot size, overall deadline).
    pub lookup_limits: LookupLimits,
    /// This replica's name (the pod name) as events report it (`reportingInstance`); `None`:
    /// the controller's name.
    pub instance: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            operator_namespace: "invite-operator".into(),
            resync_interval: Duration::from_secs(600),
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            concurrency: 512,
            read_attempts: 3,
            watch_namespaces: Vec::new(),
            cluster_endpoint_selector: None,
            namespaced_endpoint_selector: None,
            batch: BatchSettings::default(),
            secret_cache_ttl: Duration::from_secs(60),
            endpoint_policy: EndpointPolicy::default(),
            require_credentials_label: true,
            max_clock_skew: Duration::from_secs(15),
            fair_share: 0.5,
            fair_share_sweep: super::fair_share::SAFETY_NET,
            lookup_limits: LookupLimits::default(),
            instance: None,
        }
    }
}

impl Settings {
    /// The watched namespaces, each once, in the order given (`[None]`: all namespaces).
    pub fn scopes(&self) -> Vec<Option<String>> {
        let mut scopes: Vec<Option<String>> = Vec::new();
        for ns in self
            .watch_namespaces
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
        {
            if !scopes.iter().flatten().any(|s| s == ns) {
                scopes.push(Some(ns.to_string()));
            }
        }
        if scopes.is_empty() {
            scopes.push(None);
        }
        scopes
    }

    /// The label selector of the endpoints of `kind` this controller serves; `None`: it serves
    /// all of them (in its namespaces), so a missing one is its to report.
    pub fn endpoint_selector(&self, kind: EndpointKind) -> Option<&str> {
        let selector = match kind {
            EndpointKind::ClusterInvitationEndpoint => &self.cluster_endpoint_selector,
            EndpointKind::InvitationEndpoint => &self.namespaced_endpoint_selector,
        };
        selector.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// The watch of the endpoints of `kind` this controller serves: those its selector
    /// selects, or all. Everything that reads endpoints (the caches resources are resolved
    /// from, the endpoint-status controllers) watches through it, so an endpoint it does not
    /// select is never checked, written or used.
    pub fn endpoint_watch(&self, kind: EndpointKind) -> watcher::Config {
        match self.endpoint_selector(kind) {
            Some(selector) => watcher::Config::default().labels(selector),
            None => watcher::Config::default(),
        }
    }
}

/// State shared by every reconciler of the controller (all shards).
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
    /// The one event recorder.
    pub events: Events,
    /// Whether this replica may act (holds the leader lease).
    pub leadership: Leadership,
    /// The API clients of the endpoints, and their tokens.
    pub clients: EndpointClients,
    /// Addresses being worked on, per API.
    pub claims: AddressClaims,
    /// Who holds which person, per API, as the statuses (and the intent journal) say.
    pub holders: Arc<HolderIndex>,
    /// The intent journal of coalesced invite batches.
    pub journal: Arc<Journal>,
    /// What the controller remembers per resource.
    pub memory: ResourceMemory,
    /// ClusterInvitationEndpoints (one cache for all shards).
    pub cluster_endpoints: Store<ClusterInvitationEndpoint>,
    /// Reconcile slots per namespace and endpoint.
    pub fair_share: FairShare<Wake>,
    /// Endpoints whose Ready condition must be checked again now (a lookup went past a
    /// budget).
    pub endpoint_rechecks: tokio::sync::broadcast::Sender<EndpointKey>,
}

/// An endpoint, as the UserInvitations reference it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointKey {
    /// Its kind.
    pub kind: crate::api::EndpointKind,
    /// Its namespace (InvitationEndpoint).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Metrics,
        leadership: Leadership,
        cluster_endpoints: Store<ClusterInvitationEndpoint>,
    ) -> Context {
        let holders = Arc::new(HolderIndex::default());
        let journal = Arc::new(Journal::new(
            client.clone(),
            settings.operator_namespace.clone(),
            holders.clone(),
        ));
        Context {
            fair_share: FairShare::new(usize::from(settings.concurrency), settings.fair_share),
            endpoint_rechecks: tokio::sync::broadcast::channel(64).0,
            events: Events::new(
                client.clone(),
                CONTROLLER_NAME,
                settings.instance.as_deref().unwrap_or(CONTROLLER_NAME),
                metrics.events_dropped.clone(),
            ),
            memory: ResourceMemory::new(metrics.clone()),
            client,
            settings,
            metrics,
            leadership,
            clients: EndpointClients::with_journal(journal.clone()),
            claims: AddressClaims::default(),
            holders,
            journal,
            cluster_endpoints,
        }
    }

    /// How clients of the controller's endpoints are built.
    pub fn client_settings(&self) -> ClientSettings {
        let leadership = self.leadership.clone();
        ClientSettings {
            recorder: self.metrics.api_call_recorder(),
            read_attempts: self.settings.read_attempts,
            limits: self.settings.lookup_limits,
            batch: self.settings.batch,
            may_act: Arc::new(move || leadership.is_valid()),
        }
    }
}

/// What one shard (one watched namespace, or all) adds to the shared context.
pub struct Shard {
    /// The shared context.
    pub ctx: Arc<Context>,
    /// InvitationEndpoints of the shard's namespace(s).
    pub namespaced_endpoints: Store<InvitationEndpoint>,
    /// Set once the endpoint caches and the holder index are complete.
    pub caches_ready: watch::Receiver<bool>,
    /// Where a resource to run again is sent (a reconcile trigger of this shard's controller):
    /// one put off for its fair share once a slot is free, or one whose slow resync is due.
    pub wake: tokio::sync::mpsc::UnboundedSender<Wake>,
}

/// A UserInvitation to wake (see [`Shard::wake`]), as the fair share's queues keep it:
/// `namespace/name` in one allocation (as an `ObjectRef`, 10,000 waiting resources took four
/// times the room).
#[derive(Debug, PartialEq, Eq)]
pub struct Wake(Box<str>);

impl Wake {
    /// The UserInvitation `name` of `namespace`.
    pub fn new(namespace: &str, name: &str) -> Wake {
        Wake(format!("{namespace}/{name}").into())
    }

    /// The resource of a `namespace/name` key.
    pub fn from_key(key: &str) -> Wake {
        Wake(key.into())
    }

    /// The reference the controller's reconcile trigger takes.
    pub fn object_ref(&self) -> ObjectRef<UserInvitation> {
        // Neither a namespace nor a name holds a '/'.
        let (namespace, name) = self.0.split_once('/').unwrap_or(("", &self.0));
        ObjectRef::new(name).within(namespace)
    }
}
