//! The Kubernetes side of the benchmark: the API server (in-process or a real cluster), the
//! kubeconfig the controller process reads, namespaces, endpoints, the UserInvitations, and
//! the two ways Kubernetes writes are counted (the in-process server's request records, or a
//! watch counting resourceVersion changes).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use invite_operator::api::{InvitationEndpoint, UserInvitation, all_crds};
use k8s_openapi::{
    api::{core::v1::Namespace, core::v1::Secret, events::v1::Event},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use kube_test_apiserver::TestApiServer;
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

use crate::BenchResult;

/// The Kubernetes API the benchmark runs against.
pub struct Cluster {
    /// The benchmark's own client (its User-Agent is kube's default, never the operator's).
    pub client: Client,
    /// The kubeconfig file the controller process is started with.
    pub kubeconfig: PathBuf,
    /// The in-process server, when no `--kubeconfig` was given.
    pub server: Option<TestApiServer>,
}

impl Cluster {
    /// The real cluster of `kubeconfig`, or a fresh in-process server (whose kubeconfig is
    /// written into `work_dir`).
    pub async fn connect(kubeconfig: Option<&Path>, work_dir: &Path) -> BenchResult<Cluster> {
        let (config, kubeconfig, server) = match kubeconfig {
            Some(path) => {
                let path = std::fs::canonicalize(path)
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
                let file = kube::config::Kubeconfig::read_from(&path)
                    .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
                let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| format!("invalid kubeconfig {}: {e}", path.display()))?;
                (config, path, None)
            }
            None => {
                let server = TestApiServer::start().await;
                let path = work_dir.join("kubeconfig");
                std::fs::write(&path, in_process_kubeconfig(&server.url()))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                (server.config(), path, Some(server))
            }
        };
        let client = Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
        Ok(Cluster {
            client,
            kubeconfig,
            server,
        })
    }

    /// What the table calls this API server.
    pub async fn describe(&self) -> String {
        if self.server.is_some() {
            return "in-process API server (kube-test-apiserver)".into();
        }
        match self.client.apiserver_version().await {
            Ok(v) => format!(
                "kube-apiserver {} ({})",
                v.git_version,
                self.kubeconfig.display()
            ),
            Err(_) => format!("the cluster of {}", self.kubeconfig.display()),
        }
    }

    /// Applies the operator's CRDs and waits until UserInvitations are served.
    pub async fn install_crds(&self) -> BenchResult<()> {
        let crds = Api::<CustomResourceDefinition>::all(self.client.clone());
        for crd in all_crds() {
            kube_test_apiserver::create_or_replace(&crds, &crd)
                .await
                .map_err(|e| format!("apply CRD {}: {e}", crd.name_any()))?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Api::<UserInvitation>::all(self.client.clone())
            .list(&ListParams::default().limit(1))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err("the UserInvitation CRD was not served within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Creates a namespace.
    pub async fn create_namespace(&self, name: &str) -> BenchResult<()> {
        let ns: Namespace = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"invite-operator-bench": "true"}}}),
        )
        .expect("a valid namespace");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| format!("create namespace {name}: {e}"))?;
        Ok(())
    }

    /// Deletes a namespace and waits (at most `wait`) until it is gone.
    pub async fn delete_namespace(&self, name: &str, wait: Duration) -> BenchResult<()> {
        let api = Api::<Namespace>::all(self.client.clone());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(format!("delete namespace {name}: {e}")),
        }
        let started = Instant::now();
        let mut reported = Instant::now();
        loop {
            match api.get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) | Err(_) if started.elapsed() > wait => {
                    return Err(format!(
                        "namespace {name} still there {} s after its deletion",
                        wait.as_secs()
                    ));
                }
                _ => {}
            }
            if reported.elapsed() > Duration::from_secs(5) {
                crate::progress(format_args!(
                    "waiting for namespace {name} to be deleted ({:.0} s)",
                    started.elapsed().as_secs_f64()
                ));
                reported = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates the Secret holding the token under key `token`.
    pub async fn put_secret(&self, ns: &str, name: &str, token: &str) -> BenchResult<()> {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"invite.operators.dev/credentials": "true"}},
            "stringData": {"token": token},
        }))
        .expect("a valid secret");
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .map_err(|e| format!("create Secret {ns}/{name}: {e}"))?;
        Ok(())
    }

    /// Creates an InvitationEndpoint from its spec and returns its `requestsPerSecond` as the
    /// controller reads it (the default in code when the spec names none: the CRD sets no
    /// defaults in `spec`).
    pub async fn put_endpoint(&self, ns: &str, name: &str, spec: Value) -> BenchResult<u32> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            ns,
            &ApiResource::erase::<InvitationEndpoint>(&()),
        );
        let object: DynamicObject = ours("InvitationEndpoint", ns, name, spec)?;
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| format!("create InvitationEndpoint {ns}/{name}: {e}"))?;
        let stored: InvitationEndpoint = serde_json::from_value(
            serde_json::to_value(&created).map_err(|e| format!("endpoint: {e}"))?,
        )
        .map_err(|e| format!("InvitationEndpoint {ns}/{name}: {e}"))?;
        Ok(stored.spec.connection.requests_per_second)
    }

    /// Creates UserInvitations (name, spec), `concurrency` requests at once, retrying
    /// transient failures. Reports progress as `label`.
    pub async fn create_invitations(
        &self,
        label: &str,
        ns: &str,
        invitations: Vec<(String, Value)>,
        concurrency: usize,
    ) -> BenchResult<Duration> {
        let api: Api<UserInvitation> = Api::namespaced(self.client.clone(), ns);
        let total = invitations.len();
        let started = Instant::now();
        let mut reported = Instant::now();
        let mut done = 0usize;
        let mut creates = futures::stream::iter(invitations)
            .map(|(name, spec)| {
                let api = api.clone();
                async move { create_with_retries(&api, ns, &name, spec).await }
            })
            .buffer_unordered(concurrency.max(1));
        while let Some(result) = creates.next().await {
            result?;
            done += 1;
            if reported.elapsed() > Duration::from_secs(2) {
                crate::progress(format_args!(
                    "[{label}] created {done}/{total} UserInvitations ({:.1} s)",
                    started.elapsed().as_secs_f64()
                ));
                reported = Instant::now();
            }
        }
        Ok(started.elapsed())
    }

    /// A mark in the in-process server's request records, to count what came after it.
    pub fn request_mark(&self) -> usize {
        self.server.as_ref().map_or(0, |s| s.requests().len())
    }

    /// The controller's Kubernetes writes in namespace `ns` since `mark`, from the in-process
    /// server's request records (requests whose User-Agent is the operator's). `None` on a real
    /// cluster.
    pub fn recorded_writes(&self, ns: &str, mark: usize) -> Option<Writes> {
        let server = self.server.as_ref()?;
        let mut writes = Writes::default();
        for request in server.requests().iter().skip(mark) {
            let by_controller = request
                .user_agent
                .as_deref()
                .is_some_and(|ua| ua.starts_with("invite-operator/"));
            if !by_controller || request.namespace.as_deref() != Some(ns) {
                continue;
            }
            let write = matches!(request.verb.as_str(), "create" | "update" | "patch")
                || (request.verb == "delete" && request.resource == "inviteintents");
            if !write {
                continue;
            }
            let failed = request.status >= 400;
            match (request.resource.as_str(), request.subresource.as_deref()) {
                ("userinvitations", Some("status")) if failed => writes.status_failed += 1,
                ("userinvitations", Some("status")) => writes.status += 1,
                ("userinvitations", None) if failed => writes.finalizer_failed += 1,
                ("userinvitations", None) => writes.finalizer += 1,
                ("events", _) if !failed => writes.events += 1,
                ("inviteintents", _) => writes.journal += 1,
                ("invitationendpoints", Some("status")) => writes.endpoint_status += 1,
                _ => writes.other += 1,
            }
        }
        Some(writes)
    }
}

/// One of the operator's objects: a `kind` named `name` in `ns`, with `spec`.
fn ours<T: serde::de::DeserializeOwned>(
    kind: &str,
    ns: &str,
    name: &str,
    spec: Value,
) -> BenchResult<T> {
    let object = json!({
        "apiVersion": "invite.operators.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    serde_json::from_value(object).map_err(|e| format!("{kind} {ns}/{name}: {e}"))
}

async fn create_with_retries(
    api: &Api<UserInvitation>,
    ns: &str,
    name: &str,
    spec: Value,
) -> BenchResult<()> {
    let invitation: UserInvitation = ours("UserInvitation", ns, name, spec)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.create(&PostParams::default(), &invitation).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt > 1 => return Ok(()),
            Err(e) if attempt < 6 && transient(&e) => {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => return Err(format!("create UserInvitation {ns}/{name}: {e}")),
        }
    }
}

fn transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

/// A kubeconfig for the in-process server: plain HTTP, no credentials (it has no
/// authentication).
fn in_process_kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: {url}\n\
         users:\n- name: bench\n  user: {{}}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\n    namespace: default\n\
         current-context: bench\n"
    )
}

/// Kubernetes writes of the controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writes {
    /// Status patches that changed the resource.
    pub status: u64,
    /// Status patches refused (a stale resourceVersion guard: 409/422), request records only.
    pub status_failed: u64,
    /// Patches of the resource itself (finalizers).
    pub finalizer: u64,
    /// Such patches refused, request records only.
    pub finalizer_failed: u64,
    /// Event creations and series updates.
    pub events: u64,
    /// Creates and deletes of the intent journal (`InviteIntent`s), request records only.
    pub journal: u64,
    /// Status writes of InvitationEndpoints (the endpoint check), request records only.
    pub endpoint_status: u64,
    /// Any other write (none expected), request records only.
    pub other: u64,
}

impl Writes {
    /// Writes that changed a UserInvitation.
    pub fn resource_writes(&self) -> u64 {
        self.status + self.finalizer
    }

    /// Every write, events and refused ones included.
    pub fn all(&self) -> u64 {
        self.status
            + self.status_failed
            + self.finalizer
            + self.finalizer_failed
            + self.events
            + self.journal
            + self.endpoint_status
            + self.other
    }
}

/// What the watch knows about one UserInvitation.
#[derive(Debug, Default)]
struct Tracked {
    resource_version: String,
    finalizers: Vec<String>,
    status_writes: u64,
    finalizer_writes: u64,
    done: bool,
    ever_done: bool,
}

#[derive(Default)]
struct TrackerState {
    objects: HashMap<String, Tracked>,
    /// Distinct versions of events seen (created or updated as a series).
    event_versions: HashMap<String, String>,
    event_writes: u64,
    relists: u64,
    last_done: Option<Instant>,
    /// When each resource was first seen done, in order.
    done_at: Vec<Instant>,
}

/// Watches the UserInvitations (and events) of a namespace: when each reached the state the
/// phase waits for, and how many times each changed after it was created (its writes).
pub struct Tracker {
    state: Arc<Mutex<TrackerState>>,
    counts: watch::Receiver<(usize, usize)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a phase waits for in a resource.
pub type DonePredicate = fn(&UserInvitation) -> bool;

/// Ready=True.
pub fn is_ready(invitation: &UserInvitation) -> bool {
    ready_condition(invitation).is_some_and(|(status, _)| status == "True")
}

/// Ready=False with reason EndpointNotFound.
pub fn is_blocked_on_missing_endpoint(invitation: &UserInvitation) -> bool {
    ready_condition(invitation)
        .is_some_and(|(status, reason)| status == "False" && reason == "EndpointNotFound")
}

fn ready_condition(invitation: &UserInvitation) -> Option<(&str, &str)> {
    invitation
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// Watches the `K`s of `ns` (with the watcher's backoff, errors skipped) and calls `on_event`
/// with each event and whether the first listing was done by then; counts `listed` up once it is.
fn spawn_watch<K>(
    client: &Client,
    ns: &str,
    listed: watch::Sender<u8>,
    mut on_event: impl FnMut(watcher::Event<K>, bool) + Send + 'static,
) -> JoinHandle<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut listed_once = false;
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            if matches!(event, watcher::Event::InitDone) && !listed_once {
                listed_once = true;
                listed.send_modify(|n| *n += 1);
            }
            on_event(event, listed_once);
        }
    })
}

impl Tracker {
    /// Starts watching namespace `ns`; waits until both watches listed.
    pub async fn start(client: &Client, ns: &str, done: DonePredicate) -> BenchResult<Tracker> {
        let state = Arc::new(Mutex::new(TrackerState::default()));
        let (counts_tx, counts) = watch::channel((0, 0));
        let (listed_tx, mut listed) = watch::channel(0u8);
        let invitations = {
            let state = state.clone();
            spawn_watch::<UserInvitation>(client, ns, listed_tx.clone(), move |event, listed| {
                let mut s = state.lock().expect("lock");
                match event {
                    watcher::Event::Init if listed => s.relists += 1,
                    watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                        s.observe(&object, done)
                    }
                    _ => {}
                }
                let seen = s.objects.len();
                let finished = s.objects.values().filter(|o| o.done).count();
                drop(s);
                counts_tx.send_if_modified(|c| {
                    let changed = *c != (seen, finished);
                    *c = (seen, finished);
                    changed
                });
            })
        };
        let events = {
            let state = state.clone();
            spawn_watch::<Event>(client, ns, listed_tx, move |event, _| {
                if let watcher::Event::InitApply(event) | watcher::Event::Apply(event) = event {
                    let mut s = state.lock().expect("lock");
                    let version = event.resource_version().unwrap_or_default();
                    let name = event.name_any();
                    if s.event_versions.get(&name) != Some(&version) {
                        s.event_versions.insert(name, version);
                        s.event_writes += 1;
                    }
                }
            })
        };
        let tracker = Tracker {
            state,
            counts,
            tasks: vec![invitations, events],
        };
        match tokio::time::timeout(Duration::from_secs(60), listed.wait_for(|n| *n >= 2)).await {
            Ok(Ok(_)) => Ok(tracker),
            _ => Err(format!(
                "cannot watch the UserInvitations and Events of {ns}"
            )),
        }
    }

    /// Waits until `expected` resources are done; reports progress as `label`, fails after
    /// `timeout` (measured from `since`) or when `alive` says the controller is gone.
    pub async fn wait_done(
        &self,
        label: &str,
        expected: usize,
        since: Instant,
        timeout: Duration,
        mut alive: impl FnMut() -> BenchResult<()>,
    ) -> BenchResult<Duration> {
        let mut counts = self.counts.clone();
        let mut reported = Instant::now();
        loop {
            let (seen, done) = *counts.borrow_and_update();
            if done >= expected {
                let last = self.state.lock().expect("lock").last_done;
                return Ok(last
                    .unwrap_or_else(Instant::now)
                    .saturating_duration_since(since));
            }
            if since.elapsed() > timeout {
                return Err(format!(
                    "[{label}] only {done} of {expected} resources done after {} s ({seen} seen)",
                    timeout.as_secs()
                ));
            }
            alive()?;
            if reported.elapsed() > Duration::from_secs(2) {
                crate::progress(format_args!(
                    "[{label}] {done}/{expected} done after {:.1} s",
                    since.elapsed().as_secs_f64()
                ));
                reported = Instant::now();
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), counts.changed()).await;
        }
    }

    /// Waits until `expected` resources were seen by the watch (created ones included).
    pub async fn wait_seen(&self, expected: usize, timeout: Duration) -> BenchResult<()> {
        let mut counts = self.counts.clone();
        tokio::time::timeout(timeout, counts.wait_for(|(seen, _)| *seen >= expected))
            .await
            .map_err(|_| format!("the watch saw fewer than {expected} resources"))?
            .map_err(|_| "the watch ended".to_string())?;
        Ok(())
    }

    /// Writes counted so far from resourceVersion changes: status changes, finalizer
    /// changes and event versions.
    pub fn writes(&self) -> Writes {
        let s = self.state.lock().expect("lock");
        Writes {
            status: s.objects.values().map(|o| o.status_writes).sum(),
            finalizer: s.objects.values().map(|o| o.finalizer_writes).sum(),
            events: s.event_writes,
            ..Default::default()
        }
    }

    /// How long after `since` the first `fraction` of the resources were done.
    pub fn done_after(&self, since: Instant, fraction: f64) -> Option<Duration> {
        let s = self.state.lock().expect("lock");
        let k = ((s.done_at.len() as f64 * fraction).ceil() as usize).max(1);
        s.done_at
            .get(k - 1)
            .map(|t| t.saturating_duration_since(since))
    }

    /// How many times the watch had to list again (writes in between are not counted).
    pub fn relists(&self) -> u64 {
        self.state.lock().expect("lock").relists
    }
}

impl TrackerState {
    fn observe(&mut self, object: &UserInvitation, done: DonePredicate) {
        let version = object.resource_version().unwrap_or_default();
        let finalizers = object.finalizers().to_vec();
        let is_done = done(object);
        let tracked = self
            .objects
            .entry(object.name_any())
            .or_insert_with(|| Tracked {
                resource_version: version.clone(),
                finalizers: finalizers.clone(),
                ..Default::default()
            });
        if tracked.resource_version != version {
            tracked.resource_version = version;
            if tracked.finalizers != finalizers {
                tracked.finalizers = finalizers;
                tracked.finalizer_writes += 1;
            } else {
                tracked.status_writes += 1;
            }
        }
        if is_done && !tracked.done {
            let first = !tracked.ever_done;
            tracked.done = true;
            tracked.ever_done = true;
            let now = Instant::now();
            self.last_done = Some(now);
            if first {
                self.done_at.push(now);
            }
        } else if !is_done {
            tracked.done = false;
        }
    }
}
