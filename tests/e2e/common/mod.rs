//! The one e2e harness: a Kubernetes API (the in-process test server, or a real cluster when
//! `INVITE_OPERATOR_E2E_KUBECONFIG` names a kubeconfig), the mock invite API, and the real
//! controller running in this process.
//!
//! Every test is isolated, so the suite runs in parallel on one real cluster:
//! - it gets an id and its own namespace (`invite-e2e-<id>`, more with
//!   [`TestCluster::create_namespace`]);
//! - every object it creates is labelled [`SUITE_LABEL`]`=true` and [`TEST_ID_LABEL`]`=<id>`
//!   (namespaces also carry the test's name in [`TEST_NAME_ANNOTATION`]);
//! - cluster-scoped objects (ClusterInvitationEndpoints, RBAC) and the Leases tests name are
//!   named uniquely ([`TestCluster::unique`]); Leases live in the test's namespaces;
//! - its controllers ([`TestCluster::settings`]) watch only its namespace and serve only the
//!   ClusterInvitationEndpoints carrying its id.
//!
//! Every test removes what it created on a real cluster, whether it passes, fails or panics:
//! [`TestCluster`] holds a drop guard that stops the test's controllers, strips the finalizers
//! they left on UserInvitations and deletes the test's namespaces and cluster-scoped objects
//! (found by the test id label). `tests/e2e/leftovers.rs` checks that nothing labelled by the suite
//! is left after a run.
#![allow(dead_code)]

pub mod endpoints;
pub mod flavor;
pub mod logs;
pub mod spec;
pub mod tenancy_kit;
pub mod wait;

pub use spec::{org_spec, users_spec, with};
pub use wait::{eventually, eventually_every, expect_eq};

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use invite_mock::{MockApi, MockConfig, RunningMock};
use invite_operator::{
    api::{
        ClusterInvitationEndpoint, InvitationEndpoint, UserInvitation, UserInvitationStatus,
        all_crds,
    },
    controller::{self, Settings},
    health::Readiness,
    leader::Leadership,
    telemetry::Metrics,
};
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{Namespace, Secret},
        events::v1::Event,
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use kube_test_apiserver::TestApiServer;
use serde_json::{Value, json};
use tokio::{
    sync::watch,
    task::{AbortHandle, JoinHandle},
};

/// `Deref` and `DerefMut` of a test's environment (a struct with a field `harness`) to its
/// [`Harness`].
macro_rules! deref_to_harness {
    ($env:ty) => {
        impl std::ops::Deref for $env {
            type Target = $crate::common::Harness;
            fn deref(&self) -> &Self::Target {
                &self.harness
            }
        }
        impl std::ops::DerefMut for $env {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.harness
            }
        }
    };
}
pub(crate) use deref_to_harness;

/// How long a test waits for the controller to reach a state.
pub const WAIT: Duration = Duration::from_secs(30);

/// The environment variable naming the kubeconfig of a real cluster to run against.
pub const KUBECONFIG_ENV: &str = "INVITE_OPERATOR_E2E_KUBECONFIG";

/// Label (value `"true"`) on every object the suite creates.
pub const SUITE_LABEL: &str = "invite-e2e";
/// Label carrying the id of the test that created the object.
pub const TEST_ID_LABEL: &str = "invite-e2e/test-id";
/// Annotation on a test's namespaces naming the test.
pub const TEST_NAME_ANNOTATION: &str = "invite-e2e/test-name";

/// The token of the mock API ([`Harness`]).
pub const TOKEN: &str = "e2e-token";
/// The organization of the mock's OrgInvitation API.
pub const ORG: &str = "mock-org";

/// The controller client's bound on Kubernetes requests in flight in the tests: small, so that
/// requests really queue behind it.
pub const KUBERNETES_REQUESTS: usize = 8;

/// `rel` in this package's folder, found at run time: `cargo test` sets `CARGO_MANIFEST_DIR` for
/// the test process. Not `env!`: a test binary compiled in another copy of the repository that
/// shares the target folder (CI's clean-copy run) would read that copy's files, and cargo does
/// not rebuild it when only the folder differs.
pub fn package_path(rel: &str) -> std::path::PathBuf {
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&dir).join(rel)
}

/// The kubeconfig of the real cluster to run against, if any.
pub fn real_cluster_kubeconfig() -> Option<String> {
    std::env::var(KUBECONFIG_ENV).ok().filter(|p| !p.is_empty())
}

/// Whether the API server checks admission (only a real one evaluates the CRDs' schema and
/// CEL, see tests/support/README.md); prints that the test is skipped when it does not.
pub fn admission_checked() -> bool {
    let real = real_cluster_kubeconfig().is_some();
    if !real {
        eprintln!(
            "skipped: needs a real API server (admission: the in-process one evaluates no CRD schema or CEL, see tests/support/README.md)"
        );
    }
    real
}

/// A Kubernetes API to test against, with a fresh namespace; cleans up after the test (see
/// the module docs).
pub struct TestCluster {
    pub client: Client,
    /// Configuration for more clients (the controller's identifies itself by User-Agent).
    pub config: kube::Config,
    /// The test's namespace (`invite-e2e-<id>`).
    pub namespace: String,
    /// The test's id: the value of [`TEST_ID_LABEL`] on everything it creates.
    pub id: String,
    pub server: Option<TestApiServer>,
    guard: CleanupGuard,
}

impl TestCluster {
    /// The in-process API server, or the real cluster of `INVITE_OPERATOR_E2E_KUBECONFIG`.
    pub async fn start() -> TestCluster {
        logs::init();
        let (config, server) = match real_cluster_kubeconfig() {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
                let options = Default::default();
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await;
                (config.expect("kubeconfig is usable"), None)
            }
            None => {
                let server = TestApiServer::start().await;
                (server.config(), Some(server))
            }
        };
        let client = Client::try_from(config.clone()).expect("client");
        install_crds(&client).await;
        let id = format!("{:08x}", rand::random::<u32>());
        let guard = CleanupGuard {
            // Against the in-process server there is nothing to remove: it ends with the test.
            config: server.is_none().then(|| config.clone()),
            id: id.clone(),
            tasks: Arc::default(),
        };
        let cluster = TestCluster {
            client,
            config,
            namespace: format!("invite-e2e-{id}"),
            id,
            server,
            guard,
        };
        cluster.create_namespace_named(&cluster.namespace).await;
        cluster
    }

    /// The labels every object of this test carries.
    pub fn labels(&self) -> Value {
        json!({SUITE_LABEL: "true", TEST_ID_LABEL: self.id})
    }

    /// The label selector of this test's objects.
    pub fn selector(&self) -> String {
        format!("{TEST_ID_LABEL}={}", self.id)
    }

    /// A name unique to this test, for cluster-scoped objects and Leases.
    pub fn unique(&self, name: &str) -> String {
        format!("{name}-{}", self.namespace)
    }

    /// Creates another namespace for this test, `<namespace>-<suffix>`; returns its name.
    pub async fn create_namespace(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.namespace);
        self.create_namespace_named(&name).await;
        name
    }

    async fn create_namespace_named(&self, name: &str) {
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("unknown");
        let annotations = json!({TEST_NAME_ANNOTATION: test});
        let metadata = json!({"name": name, "labels": self.labels(), "annotations": annotations});
        let namespace = serde_json::from_value(json!({"metadata": metadata})).unwrap();
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let created = namespaces.create(&PostParams::default(), &namespace).await;
        created.expect("create a test namespace");
    }

    /// Controller settings for this test: short retry delays, scoped to the test's namespace
    /// and to the ClusterInvitationEndpoints labelled with its id. The operator namespace (where
    /// cluster endpoints' Secrets default to) is the test's namespace.
    pub fn settings(&self) -> Settings {
        Settings {
            watch_namespaces: vec![self.namespace.clone()],
            cluster_endpoint_selector: Some(self.selector()),
            ..base_settings(&self.namespace)
        }
    }

    /// [`TestCluster::settings`] with a collection window (300 ms) that surely spans resources
    /// created together; the first job of a quiet queue waits the whole window too.
    pub fn batching_settings(&self) -> Settings {
        let mut settings = self.settings();
        settings.batch.window = Duration::from_millis(300);
        settings.batch.linger = settings.batch.window;
        settings
    }

    /// A client as the controller builds it (it identifies itself by User-Agent, and holds
    /// requests beyond [`KUBERNETES_REQUESTS`]).
    pub fn controller_client(&self) -> Client {
        let client = controller::kube_client(self.config.clone(), KUBERNETES_REQUESTS);
        client.expect("controller client")
    }

    /// A client identifying itself as the controller (without its bound on requests in
    /// flight) that records every request it sends (see [`RequestLog`]): which objects one
    /// controller wrote, against either API server.
    pub fn recording_controller_client(&self) -> (Client, RequestLog) {
        let log = RequestLog::default();
        let recorder = log.clone();
        let mut config = self.config.clone();
        let agent = http::HeaderValue::from_static(controller::USER_AGENT);
        config.headers.push((http::header::USER_AGENT, agent));
        let record = move |request: http::Request<kube::client::Body>| {
            recorder.record(request.method().as_str(), request.uri().path());
            request
        };
        let builder = kube::client::ClientBuilder::try_from(config).expect("controller client");
        let client = builder.with_layer(&tower::util::MapRequestLayer::new(record));
        (client.build(), log)
    }

    /// Starts the real controller with `settings` on a recording client; returns it and what
    /// it sends to the Kubernetes API.
    pub fn start_recorded_controller(&self, settings: Settings) -> (RunningController, RequestLog) {
        let (client, log) = self.recording_controller_client();
        (self.start_controller_on(client, settings), log)
    }

    /// Starts the real controller with this test's settings.
    pub fn start_controller(&self) -> RunningController {
        self.start_controller_with(self.settings())
    }

    /// Starts the real controller with `settings` (start from [`TestCluster::settings`]).
    pub fn start_controller_with(&self, settings: Settings) -> RunningController {
        self.start_controller_on(self.controller_client(), settings)
    }

    /// Starts the real controller on `client`, aborted when the test ends.
    fn start_controller_on(&self, client: Client, settings: Settings) -> RunningController {
        let controller = RunningController::start(client, settings);
        if let Some(handle) = &controller.handle {
            self.abort_on_drop(handle.abort_handle());
        }
        controller
    }

    /// Aborts this task (a controller, a replica) when the test ends, before the cleanup.
    pub fn abort_on_drop(&self, task: AbortHandle) {
        self.guard.tasks.lock().unwrap().push(task);
    }

    /// Whether the tests run against the in-process server (request records available).
    pub fn is_test_server(&self) -> bool {
        self.server.is_some()
    }

    /// A kubeconfig file for processes (the operator binary): the real cluster's, or one
    /// written for the in-process server (removed at cleanup).
    pub fn kubeconfig_file(&self) -> std::path::PathBuf {
        if let Some(path) = real_cluster_kubeconfig() {
            return path.into();
        }
        let server = self.server.as_ref().expect("the in-process server");
        let path = self.kubeconfig_path();
        let url = server.url();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {url}\n\
             users:\n- name: t\n  user: {{}}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: t\n\
             current-context: t\n"
        );
        std::fs::write(&path, kubeconfig).unwrap();
        path
    }

    /// Where [`TestCluster::kubeconfig_file`] writes the in-process server's kubeconfig.
    fn kubeconfig_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}.kubeconfig", self.namespace))
    }

    pub fn invitations(&self) -> Api<UserInvitation> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Metadata of a namespaced object of this test: name, namespace and labels.
    pub fn metadata(&self, name: &str) -> Value {
        json!({"name": name, "namespace": self.namespace, "labels": self.labels()})
    }

    /// Creates (or replaces) the Secret holding the token.
    pub async fn put_secret(&self, name: &str, token: &str) {
        self.put_token_secret(name, token, true).await;
    }

    /// [`TestCluster::put_secret`] without the credentials label (e.g. another app's token).
    pub async fn put_unlabelled_secret(&self, name: &str, token: &str) {
        self.put_token_secret(name, token, false).await;
    }

    async fn put_token_secret(&self, name: &str, token: &str, labelled: bool) {
        let mut metadata = self.metadata(name);
        if labelled {
            metadata["labels"]["invite.operators.dev/credentials"] = json!("true");
        }
        let data = BTreeMap::from([("token".into(), ByteString(token.as_bytes().to_vec()))]);
        let metadata = serde_json::from_value(metadata).unwrap();
        let secret = Secret {
            metadata,
            data: Some(data),
            ..Default::default()
        };
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.namespace);
        let put = kube_test_apiserver::create_or_replace(&secrets, &secret).await;
        put.expect("create or replace secret");
    }

    /// Creates a namespaced UserInvite endpoint pointing at `url`, reading the token from
    /// Secret `secret`.
    pub async fn user_invite_endpoint(&self, name: &str, url: &str, secret: &str) {
        let spec = json!({"api": "UserInvite", "url": url});
        self.namespaced_endpoint(name, spec, secret).await;
    }

    /// Creates a namespaced OrgInvitation endpoint for organization `org` at `url`.
    pub async fn org_endpoint(&self, name: &str, url: &str, secret: &str, org: &str) {
        let spec = json!({"api": "OrgInvitation", "url": url, "organizationId": org});
        self.namespaced_endpoint(name, spec, secret).await;
    }

    /// Applies an InvitationEndpoint: `spec` plus the Secret reference and test-friendly
    /// limits (100 requests/s, 5 s timeout).
    async fn namespaced_endpoint(&self, name: &str, mut spec: Value, secret: &str) {
        spec["credentials"] = json!({"secretRef": {"name": secret}});
        spec["requestsPerSecond"] = json!(100);
        spec["timeoutSeconds"] = json!(5);
        self.apply_endpoint(name, spec).await;
    }

    /// Creates or updates the InvitationEndpoint `name` with exactly this spec.
    pub async fn apply_endpoint(&self, name: &str, spec: Value) {
        let labels = self.labels();
        self.apply_endpoint_labelled(name, spec, labels).await;
    }

    /// Creates or updates the InvitationEndpoint `name` with exactly this spec and these
    /// labels (include [`TestCluster::labels`]).
    pub async fn apply_endpoint_labelled(&self, name: &str, spec: Value, labels: Value) {
        let mut metadata = self.metadata(name);
        metadata["labels"] = labels;
        let endpoint = object("InvitationEndpoint", metadata, spec);
        let endpoints = Api::<InvitationEndpoint>::namespaced(self.client.clone(), &self.namespace);
        let put = kube_test_apiserver::create_or_replace(&endpoints, &endpoint).await;
        put.expect("create or replace endpoint");
    }

    /// Creates a cluster endpoint (name it with [`TestCluster::unique`]) from a JSON spec,
    /// labelled with the test's id, so this test's controllers serve it (and no other's).
    pub async fn cluster_endpoint(&self, name: &str, spec: Value) {
        let labels = self.labels();
        self.cluster_endpoint_labelled(name, spec, labels).await;
    }

    /// Creates a cluster endpoint with exactly these labels (include [`TestCluster::labels`]'s
    /// suite and test id labels so that the cleanup finds it).
    pub async fn cluster_endpoint_labelled(&self, name: &str, spec: Value, labels: Value) {
        let metadata = json!({"name": name, "labels": labels});
        let endpoint = object("ClusterInvitationEndpoint", metadata, spec);
        let endpoints = Api::<ClusterInvitationEndpoint>::all(self.client.clone());
        let put = kube_test_apiserver::create_or_replace(&endpoints, &endpoint).await;
        put.expect("create or replace cluster endpoint");
    }

    /// Creates a UserInvitation from its spec.
    pub async fn create_invitation(&self, name: &str, spec: Value) -> UserInvitation {
        let metadata = json!({"name": name});
        self.create_invitation_with(metadata, spec).await
    }

    /// Creates a UserInvitation from its spec and `metadata` (its name; another namespace,
    /// annotations, finalizers), merged over the test's namespace and labels.
    pub async fn create_invitation_with(&self, metadata: Value, spec: Value) -> UserInvitation {
        let metadata = with(self.metadata(""), metadata);
        let namespace = metadata["namespace"].as_str().expect("a namespace");
        let invitations = Api::namespaced(self.client.clone(), namespace);
        let invitation: UserInvitation = object("UserInvitation", metadata.clone(), spec);
        let pp = PostParams::default();
        let created = invitations.create(&pp, &invitation).await;
        created.expect("create invitation")
    }

    /// The events (events.k8s.io) about the resource `name` in the test namespace.
    pub async fn events_of(&self, name: &str) -> Vec<Event> {
        // Events are published after the pass that caused them (best effort, from a queue):
        // read until the list has not changed for three reads in a row (at most 3 s).
        let api = Api::<Event>::namespaced(self.client.clone(), &self.namespace);
        let read = || async {
            let all = api.list(&ListParams::default()).await.unwrap().items;
            let about =
                |e: &Event| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
            all.into_iter().filter(about).collect::<Vec<Event>>()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let (mut events, mut same) = (read().await, 0);
        while same < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = read().await;
            same = if again.len() == events.len() {
                same + 1
            } else {
                0
            };
            events = again;
        }
        events
    }

    /// Merge-patches a UserInvitation's spec.
    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.merge_patch(name, json!({"spec": spec})).await;
    }

    /// Merge-patches the UserInvitation `name`.
    async fn merge_patch(&self, name: &str, patch: Value) {
        let (params, patch) = (PatchParams::default(), Patch::Merge(patch));
        let patched = self.invitations().patch(name, &params, &patch).await;
        patched.expect("patch invitation");
    }

    /// Waits until the UserInvitation's status satisfies `check`; panics with the last status.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&UserInvitationStatus) -> bool,
    ) -> UserInvitation {
        eventually(what, async || {
            let inv = self.invitations().get(name).await.expect("get invitation");
            match &inv.status {
                Some(status) if check(status) => Ok(inv),
                _ => Err(serde_json::to_string_pretty(&inv.status).unwrap()),
            }
        })
        .await
    }

    /// Waits until the UserInvitation's status is of the spec's `generation`.
    pub async fn wait_generation(&self, name: &str, generation: i64) -> UserInvitation {
        let what = format!("generation {generation} observed");
        let observed = |s: &UserInvitationStatus| s.observed_generation == Some(generation);
        self.wait_status(name, &what, observed).await
    }

    /// Waits until the UserInvitation `name`'s Ready reason is `reason`; returns the message.
    pub async fn wait_reason(&self, name: &str, reason: &'static str) -> String {
        let inv = self.wait_for_reason(name, reason).await;
        ready_message(inv.status.as_ref().expect("a status"))
    }

    /// Waits until the UserInvitation `name`'s Ready reason is `reason`; returns it.
    pub async fn wait_for_reason(&self, name: &str, reason: &'static str) -> UserInvitation {
        self.wait_status(name, reason, reason_is(reason)).await
    }

    /// The UserInvitations of the test's namespace.
    pub async fn list_invitations(&self) -> Vec<UserInvitation> {
        let list = self.invitations().list(&ListParams::default()).await;
        list.expect("list invitations").items
    }

    /// Waits until the UserInvitation `name` is gone (its finalizer released).
    pub async fn wait_gone(&self, name: &str) {
        let gone = async || self.invitations().get_opt(name).await.unwrap().is_none();
        eventually(&format!("{name} to be deleted"), gone).await
    }

    /// Deletes the UserInvitation `name` and waits until it is gone.
    pub async fn remove(&self, name: &str) {
        self.delete(name).await;
        self.wait_gone(name).await;
    }

    /// Sets (or, with `null`, removes) the annotation `key` of the UserInvitation `name`.
    pub async fn annotate(&self, name: &str, key: &str, value: Value) {
        let annotations = json!({"metadata": {"annotations": {key: value}}});
        self.merge_patch(name, annotations).await;
    }

    /// Creates the UserInvitation `name` and waits until it is Ready.
    pub async fn create_ready(&self, name: &str, spec: Value) -> UserInvitation {
        self.create_invitation(name, spec).await;
        self.wait_ready(name).await
    }

    /// Waits until the UserInvitation `name` is Ready.
    pub async fn wait_ready(&self, name: &str) -> UserInvitation {
        self.wait_status(name, "Ready", is_ready).await
    }

    /// Deletes the UserInvitation `name` (it may stay until its finalizer is released).
    pub async fn delete(&self, name: &str) {
        let deleted = self.invitations().delete(name, &Default::default()).await;
        deleted.expect("delete invitation");
    }

    /// Waits for a `reason` event about `name`; returns the notes of those events.
    pub async fn wait_event(&self, name: &str, reason: &str) -> Vec<String> {
        eventually(&format!("a {reason} event for {name}"), async || {
            let events = self.events_of(name).await;
            let note = |e: &Event| e.note.clone().unwrap_or_default();
            let of_reason = events
                .iter()
                .filter(|e| e.reason.as_deref() == Some(reason));
            let notes: Vec<String> = of_reason.map(note).collect();
            let reasons: Vec<_> = events.iter().map(|e| &e.reason).collect();
            let seen = (!notes.is_empty()).then_some(notes);
            seen.ok_or(format!("{reasons:?}"))
        })
        .await
    }

    /// The end of a passing test: stops its controllers and removes what it created (a
    /// failing test gets the same from the drop guard).
    pub async fn cleanup(mut self) {
        self.guard.abort_tasks();
        if self.guard.config.take().is_some() {
            let removed = remove_test_objects(&self.client, &self.id).await;
            removed.unwrap_or_else(|e| panic!("cleaning up test {}: {e}", self.id));
        }
        let _ = std::fs::remove_file(self.kubeconfig_path());
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Stops a test's tasks and, on a real cluster, removes what the test created, when the
/// [`TestCluster`] is dropped (also when the test fails or panics).
struct CleanupGuard {
    /// The real cluster's configuration; `None` against the in-process server or once cleaned.
    config: Option<kube::Config>,
    id: String,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl CleanupGuard {
    fn abort_tasks(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.drain(..).for_each(|task| task.abort());
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        self.abort_tasks();
        let Some(config) = self.config.take() else {
            return;
        };
        // The test's runtime may be gone or blocked in this drop: clean up from a thread with a
        // runtime of its own, and wait for it.
        let id = self.id.clone();
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let client = Client::try_from(config).map_err(|e| e.to_string())?;
                remove_test_objects(&client, &id).await
            })
        })
        .join();
        match cleaned {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleaning up test {}: {e}", self.id),
            Err(_) => eprintln!("cleaning up test {}: the cleanup panicked", self.id),
        }
    }
}

/// Removes everything labelled with the test id `id` from a real cluster: the UserInvitations
/// of its namespaces lose their finalizers (first marked deleted, so that nobody can add one
/// again), then its namespaces, ClusterInvitationEndpoints, cluster RBAC and admission policies
/// are deleted.
/// Namespaces are deleted asynchronously by the cluster (`tests/e2e/leftovers.rs` waits for them).
async fn remove_test_objects(client: &Client, id: &str) -> Result<(), String> {
    let selector = ListParams::default().labels(&format!("{TEST_ID_LABEL}={id}"));
    // Ok when done or when it was not there (404).
    fn gone<T>(r: Result<T, kube::Error>, what: impl Fn() -> String) -> Result<(), String> {
        gone_or(r.map(|_| ()), || ()).map_err(|e| format!("{}: {e}", what()))
    }
    let (dp, all) = (DeleteParams::default(), ListParams::default());
    let namespaces = Api::<Namespace>::all(client.clone());
    let listed = namespaces.list(&selector).await;
    let listed = listed.map_err(|e| format!("list namespaces: {e}"))?;
    for ns in listed.items.iter().map(|ns| ns.name_any()) {
        let invitations: Api<UserInvitation> = Api::namespaced(client.clone(), &ns);
        let deleted = invitations.delete_collection(&dp, &all).await;
        gone(deleted, || format!("delete the UserInvitations of {ns}"))?;
        let left = invitations.list(&all).await;
        let left = left.map_err(|e| format!("list the UserInvitations of {ns}: {e}"))?;
        let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        let pp = PatchParams::default();
        let finalized = left.iter().filter(|i| !i.finalizers().is_empty());
        for name in finalized.map(|i| i.name_any()) {
            let patched = invitations.patch(&name, &pp, &no_finalizers).await;
            gone(patched, || format!("remove the finalizers of {ns}/{name}"))?;
        }
        let deleted = namespaces.delete(&ns, &dp).await;
        gone(deleted, || format!("delete namespace {ns}"))?;
    }
    delete_all::<ClusterInvitationEndpoint>(client, &selector).await?;
    delete_all::<ClusterRoleBinding>(client, &selector).await?;
    delete_all::<ClusterRole>(client, &selector).await?;
    // Admission policies (tests/e2e/rbac.rs), in whichever version the server serves (404: none).
    for api_version in ADMISSION_POLICY_VERSIONS {
        for kind in ADMISSION_POLICY_KINDS {
            let resource = admission_policy_resource(api_version, kind);
            let api: Api<kube::core::DynamicObject> = Api::all_with(client.clone(), &resource);
            let names = admission_policies(client, &resource, &selector).await;
            let names = gone_or(names, Vec::new);
            let names = names.map_err(|e| format!("list {kind}s ({api_version}): {e}"))?;
            for name in names {
                let deleted = api.delete(&name, &dp).await;
                gone(deleted, || format!("delete {kind} {name}"))?;
            }
        }
    }
    Ok(())
}

/// Deletes the cluster-scoped objects of kind `K` that `selector` selects.
async fn delete_all<K>(client: &Client, selector: &ListParams) -> Result<(), String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let (api, dp) = (Api::<K>::all(client.clone()), DeleteParams::default());
    let deleted = api.delete_collection(&dp, selector).await;
    deleted
        .map(|_| ())
        .map_err(|e| format!("delete {}s: {e}", K::kind(&())))
}

/// The names of the admission policies (or bindings) of `resource` that `selector` selects.
/// Read as plain JSON: Kubernetes 1.28 and 1.29 leave `items` out of an empty v1beta1 list,
/// which kube's typed lists refuse.
pub async fn admission_policies(
    client: &Client,
    resource: &kube::core::ApiResource,
    selector: &ListParams,
) -> Result<Vec<String>, kube::Error> {
    let url = format!("/apis/{}/{}", resource.api_version, resource.plural);
    let request = kube::core::Request::new(url)
        .list(selector)
        .map_err(kube::Error::BuildRequest)?;
    let list: Value = client.request(request).await?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["metadata"]["name"].as_str().map(String::from))
        .collect())
}

/// `result`, or `default()` when what was asked for is not there (404).
fn gone_or<T>(
    result: Result<T, kube::Error>,
    default: impl FnOnce() -> T,
) -> Result<T, kube::Error> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(default()),
        other => other,
    }
}

/// The API versions ValidatingAdmissionPolicy may be served as, newest first:
/// `admissionregistration.k8s.io/v1` from Kubernetes 1.30, `v1beta1` on 1.28 and 1.29 when
/// turned on (`--feature-gates=ValidatingAdmissionPolicy=true
/// --runtime-config=admissionregistration.k8s.io/v1beta1=true`).
pub const ADMISSION_POLICY_VERSIONS: [&str; 2] = [
    "admissionregistration.k8s.io/v1",
    "admissionregistration.k8s.io/v1beta1",
];

/// The kinds of an admission policy: bindings first (the order to delete them in).
pub const ADMISSION_POLICY_KINDS: [&str; 2] = [
    "ValidatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
];

/// The API resource of `kind` (one of [`ADMISSION_POLICY_KINDS`]) in `api_version`.
pub fn admission_policy_resource(api_version: &str, kind: &str) -> kube::core::ApiResource {
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or_else(|| panic!("not a group/version: {api_version}"));
    let plural = match kind {
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding" => "validatingadmissionpolicybindings",
        other => panic!("not an admission policy kind: {other}"),
    };
    kube::core::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The newest API version in which the server serves ValidatingAdmissionPolicy (discovery),
/// if any.
pub async fn served_admission_policy_version(client: &Client) -> Option<&'static str> {
    for api_version in ADMISSION_POLICY_VERSIONS {
        if let Ok(resources) = client.list_api_group_resources(api_version).await
            && resources
                .resources
                .iter()
                .any(|r| r.name == "validatingadmissionpolicies")
        {
            return Some(api_version);
        }
    }
    None
}

/// An object of the operator's `kind` (API version `invite.operators.dev/v1alpha1`).
fn object<K: serde::de::DeserializeOwned>(kind: &str, metadata: Value, spec: Value) -> K {
    let api_version = "invite.operators.dev/v1alpha1";
    let object =
        json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec});
    serde_json::from_value(object).unwrap()
}

/// Applies the operator's CRDs and waits until they are served.
async fn install_crds(client: &Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in all_crds() {
        let put = kube_test_apiserver::create_or_replace(&crds, &crd).await;
        put.expect("create or replace CRD");
    }
    let invitations = Api::<UserInvitation>::all(client.clone());
    let (one, poll) = (ListParams::default().limit(1), Duration::from_millis(100));
    let served = async || invitations.list(&one).await.is_ok();
    eventually_every(poll, WAIT, "the CRDs to be served", served).await;
}

/// A test's world: its cluster, the mock invite API and, once started, the controller.
pub struct Harness {
    pub cluster: TestCluster,
    pub mock: RunningMock,
    pub controller: Option<RunningController>,
}

impl Harness {
    /// The cluster and the mock API (token [`TOKEN`], organization [`ORG`]); no endpoint, no
    /// controller.
    pub async fn start() -> Harness {
        Harness::with_mock(MockConfig::default()).await
    }

    /// Like [`Harness::start`], with this mock configuration (its token is [`TOKEN`]).
    pub async fn with_mock(config: MockConfig) -> Harness {
        let (cluster, mock) = (TestCluster::start().await, start_mock(config).await);
        Harness {
            cluster,
            mock,
            controller: None,
        }
    }

    /// This harness with the controller started.
    fn started(mut self) -> Harness {
        self.start_controller();
        self
    }

    /// The UserInvite world: Secret `api-token` and InvitationEndpoint `wavefront` on the mock.
    pub async fn user_invite() -> Harness {
        Harness::user_invite_on(MockConfig::default()).await
    }

    /// [`Harness::start`] with the controller started.
    pub async fn running() -> Harness {
        Harness::start().await.started()
    }

    /// [`Harness::user_invite`] with the controller started.
    pub async fn user_invite_running() -> Harness {
        Harness::user_invite().await.started()
    }

    /// [`Harness::user_invite`] with the controller started, resyncing every 200 ms.
    pub async fn user_invite_resyncing() -> Harness {
        let mut h = Harness::user_invite().await;
        h.start_controller_resyncing(Duration::from_millis(200));
        h
    }

    /// [`Harness::org_invitation`] on the default mock, with the controller started.
    pub async fn org_invitation_running() -> Harness {
        let h = Harness::org_invitation(MockConfig::default()).await;
        h.started()
    }

    pub async fn user_invite_on(config: MockConfig) -> Harness {
        let h = Harness::with_mock(config).await;
        h.cluster.put_secret("api-token", TOKEN).await;
        let (url, cluster, secret) = (&h.mock.url, &h.cluster, "api-token");
        cluster.user_invite_endpoint("wavefront", url, secret).await;
        h
    }

    /// The OrgInvitation world: Secret `csp-token` and InvitationEndpoint `csp` for [`ORG`] on
    /// a mock with this configuration.
    pub async fn org_invitation(config: MockConfig) -> Harness {
        let h = Harness::with_mock(config).await;
        h.cluster.put_secret("csp-token", TOKEN).await;
        let url = &h.mock.url;
        h.cluster.org_endpoint("csp", url, "csp-token", ORG).await;
        h
    }

    /// Starts the controller with the test's settings.
    pub fn start_controller(&mut self) {
        self.start_controller_with(self.cluster.settings());
    }

    /// Starts the controller with these settings (start from [`TestCluster::settings`]).
    pub fn start_controller_with(&mut self, settings: Settings) {
        assert!(self.controller.is_none(), "a controller is already running");
        self.controller = Some(self.cluster.start_controller_with(settings));
    }

    /// Starts the controller with the test's settings and this resync interval.
    pub fn start_controller_resyncing(&mut self, every: Duration) {
        let mut settings = self.cluster.settings();
        settings.resync_interval = every;
        self.start_controller_with(settings);
    }

    /// Stops the controller gracefully, stops the mock and removes what the test created.
    pub async fn finish(mut self) {
        if let Some(c) = self.controller.take() {
            c.stop().await;
        }
        self.mock.shutdown().await;
        self.cluster.cleanup().await;
    }
}

/// One `invite-operator run` process against the test's cluster; killed when dropped.
pub struct OperatorProcess {
    pub name: String,
    child: std::process::Child,
    pub metrics_addr: std::net::SocketAddr,
}

impl OperatorProcess {
    /// Starts `invite-operator run --kubeconfig <the test's>` configured through its
    /// environment as the Helm chart does: scoped to the test (`POD_NAMESPACE` and
    /// `WATCH_NAMESPACES` the test's namespace, `CLUSTER_ENDPOINT_SELECTOR` its id),
    /// `METRICS_ADDR` on a free loopback port, `LOG_LEVEL=warn`, then `env` on top. The
    /// operator's other variables are removed from the inherited environment.
    pub fn start(cluster: &TestCluster, name: &str, env: &[(&str, &str)]) -> OperatorProcess {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let metrics_addr = listener.local_addr().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_invite-operator"));
        command
            .args(["run", "--kubeconfig"])
            .arg(cluster.kubeconfig_file());
        let operator_env = "KUBECONFIG POD_NAMESPACE RESYNC_INTERVAL RETRY_BASE_DELAY RETRY_MAX_DELAY \
            CONCURRENCY WATCH_NAMESPACES CLUSTER_ENDPOINT_SELECTOR NAMESPACED_ENDPOINT_SELECTOR \
            LEADER_ELECTION LEASE_NAME LEASE_NAMESPACE LEASE_DURATION POD_NAME LOG_FORMAT";
        for var in operator_env.split_whitespace() {
            command.env_remove(var);
        }
        command
            .env("POD_NAMESPACE", &cluster.namespace)
            .env("WATCH_NAMESPACES", &cluster.namespace)
            .env("CLUSTER_ENDPOINT_SELECTOR", cluster.selector())
            .env("NAMESPACED_ENDPOINTS_LOOPBACK_HTTP", "true")
            .env("METRICS_ADDR", metrics_addr.to_string())
            .env("LOG_LEVEL", "warn");
        for (var, value) in env {
            command.env(var, value);
        }
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = command.spawn().expect("start the operator");
        OperatorProcess {
            name: name.to_string(),
            child,
            metrics_addr,
        }
    }

    /// Sends SIGTERM and waits for a successful exit.
    pub async fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(kill.expect("kill -TERM").success());
        let exited = async || self.child.try_wait().unwrap();
        let status = eventually(&format!("{} to exit", self.name), exited).await;
        assert!(status.success(), "{} exited with {status}", self.name);
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.metrics_addr);
        let ready = async || match reqwest::get(&url).await {
            Ok(response) if response.status() == 200 => Ok(()),
            Ok(response) => Err(response.status().to_string()),
            Err(e) => Err(e.to_string()),
        };
        eventually(&format!("{} to be ready", self.name), ready).await
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Kubernetes requests one controller sent (method and path), in order: recorded by its
/// client ([`TestCluster::recording_controller_client`]), so it works against the in-process
/// server and a real one alike, and tells two controllers on one API server apart.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<(String, String)>>>);

impl RequestLog {
    fn record(&self, method: &str, path: &str) {
        let request = (method.to_string(), path.to_string());
        self.0.lock().unwrap().push(request);
    }

    /// The writes (anything but GET) to the object `name` of `resource` (plural, e.g.
    /// `userinvitations`), its subresources included, as `METHOD path`.
    pub fn writes_to(&self, resource: &str, name: &str) -> Vec<String> {
        self.writes_under(&format!("/{resource}/{name}"))
    }

    /// The writes (anything but GET) to any object of `resource` (plural, e.g.
    /// `inviteintents`), its subresources included, as `METHOD path`.
    pub fn writes_to_all(&self, resource: &str) -> Vec<String> {
        self.writes_under(&format!("/{resource}"))
    }

    /// The writes to paths ending in `segment` or under it, as `METHOD path`.
    fn writes_under(&self, segment: &str) -> Vec<String> {
        let under = format!("{segment}/");
        let requests = self.0.lock().unwrap();
        let writes = requests
            .iter()
            .filter(|(m, p)| m != "GET" && (p.ends_with(segment) || p.contains(&under)));
        writes.map(|(m, p)| format!("{m} {p}")).collect()
    }

    /// How many Events (events.k8s.io) it created.
    pub fn events_created(&self) -> usize {
        let requests = self.0.lock().unwrap();
        let events = |p: &String| p.starts_with("/apis/events.k8s.io/") && p.ends_with("/events");
        let posts = requests.iter().filter(|(m, p)| m == "POST" && events(p));
        posts.count()
    }
}

/// The state of `email` in the resource's status; panics when it has no entry.
pub fn state_of(inv: &UserInvitation, email: &str) -> invite_operator::api::UserState {
    let state = inv.status.as_ref().and_then(|s| flavor::state(s, email));
    state.unwrap_or_else(|| panic!("no status entry for {email}"))
}

/// The Ready condition's (status, reason).
pub fn ready(status: &UserInvitationStatus) -> (String, String) {
    let (status, reason, _) = ready_condition(status);
    (status, reason)
}

/// The message of the Ready condition (empty without one).
pub fn ready_message(status: &UserInvitationStatus) -> String {
    ready_condition(status).2
}

/// The Ready condition's status, reason and message (empty without one).
fn ready_condition(status: &UserInvitationStatus) -> (String, String, String) {
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let parts = ready.map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    parts.unwrap_or_default()
}

pub fn is_ready(status: &UserInvitationStatus) -> bool {
    ready(status).0 == "True"
}

pub fn reason_is(reason: &'static str) -> impl Fn(&UserInvitationStatus) -> bool {
    move |s| ready(s).1 == reason
}

/// Controller settings with short retry delays for tests, watching everything: only for an
/// API server of the test's own (use [`TestCluster::settings`] otherwise).
pub fn base_settings(operator_namespace: &str) -> Settings {
    Settings {
        operator_namespace: operator_namespace.to_string(),
        resync_interval: Duration::from_secs(3600),
        retry_base_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(500),
        concurrency: 16,
        read_attempts: 2,
        batch: invite_operator::invite::coalesce::BatchSettings {
            window: Duration::from_millis(10),
            ..Default::default()
        },
        secret_cache_ttl: Duration::from_millis(500),
        max_clock_skew: Duration::ZERO,
        // The mock API listens on loopback, and most tests use namespaced endpoints.
        endpoint_policy: invite_operator::reconcile::resolve::EndpointPolicy {
            namespaced_loopback_http: true,
            ..Default::default()
        },
        ..Settings::default()
    }
}

/// The sum of a metric's series whose line starts with `prefix`.
pub fn sum_metric(metrics: &Metrics, prefix: &str) -> u64 {
    let text = metrics.encode();
    let series = text.lines().filter(|l| l.starts_with(prefix));
    let values = series.filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    values.sum::<f64>() as u64
}

/// The real controller, running in this process; aborted when dropped.
pub struct RunningController {
    pub metrics: Metrics,
    pub readiness: watch::Receiver<Readiness>,
    stop: tokio_util::sync::CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl RunningController {
    /// Starts the controller on `client` (prefer [`TestCluster::start_controller`], which
    /// scopes it to the test).
    pub fn start(client: Client, settings: Settings) -> RunningController {
        let metrics = Metrics::new();
        let (readiness_tx, readiness) = watch::channel(Readiness::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let (leadership, shutdown, meter) =
            (Leadership::unconditional(), stop.clone(), metrics.clone());
        let run = controller::run(client, settings, meter, readiness_tx, leadership, shutdown);
        RunningController {
            metrics,
            readiness,
            stop,
            handle: Some(tokio::spawn(run)),
        }
    }

    /// Number of reconciles finished so far.
    pub fn reconciles(&self) -> u64 {
        sum_metric(&self.metrics, "invite_operator_reconciles_total{")
    }

    /// Number of reconciles finished so far with this result (`ok`, `transient`, …).
    pub fn reconciles_with(&self, result: &str) -> u64 {
        let series = format!("invite_operator_reconciles_total{{result=\"{result}\"}}");
        sum_metric(&self.metrics, &series)
    }

    /// Waits until the controller reports Ready: its caches are synced and the endpoint
    /// watches' initial listings have been handed to the controller.
    pub async fn wait_ready(&self) {
        let mut readiness = self.readiness.clone();
        let ready = readiness.wait_for(|r| *r == Readiness::Ready);
        let in_time = tokio::time::timeout(WAIT, ready).await;
        let running = in_time.expect("the controller became ready in time");
        running.expect("the controller is running");
    }

    /// Waits until at least `n` reconciles finished.
    pub async fn wait_reconciles(&self, n: u64) {
        eventually(&format!("{n} reconciles"), async || {
            let made = self.reconciles();
            let enough = (made >= n).then_some(());
            enough.ok_or(format!("{made} reconciles"))
        })
        .await
    }

    /// Graceful stop (as on SIGTERM); fails the test when the controller task panicked.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(handle) = self.handle.take() {
            let abort = handle.abort_handle();
            match tokio::time::timeout(Duration::from_secs(10), handle).await {
                Ok(result) => fail_on_panic(result),
                Err(_) => abort.abort(),
            }
        }
    }

    /// Abrupt stop, as a crash: the task is aborted wherever it is; fails the test when it
    /// had panicked before.
    pub async fn kill(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            fail_on_panic(handle.await);
        }
    }

    /// Whether the controller task has ended (returned, panicked or was aborted).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

/// Fails the test when a controller task ended in a panic (its message in the failure).
fn fail_on_panic(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result
        && e.is_panic()
    {
        let payload = e.into_panic();
        let text = payload.downcast_ref::<&str>().map(|s| s.to_string());
        let message = text.or_else(|| payload.downcast_ref::<String>().cloned());
        let message = message.unwrap_or_default();
        panic!("the controller task panicked: {message}");
    }
}

/// Exactly once at the wire: each of `addresses` was asked for in exactly one invite request
/// of the mock's journal ([`MockApi::invite_requests`]: refused, accepted or still in flight
/// alike), whatever the API answered and however many emails it sent.
pub fn assert_invite_requests_once(api: &MockApi, addresses: &[String], what: &str) {
    let counts = api.invite_requests();
    let count = |a: &String| counts.get(&a.to_ascii_lowercase()).copied().unwrap_or(0);
    let counted = addresses.iter().map(|a| (a, count(a)));
    let wrong: Vec<(&String, usize)> = counted.filter(|(_, n)| *n != 1).collect();
    if !wrong.is_empty() {
        let journal = api.journal();
        let describe = |e: &invite_mock::JournalEntry| {
            let to = e.invited_addresses()?;
            Some(format!("#{} {} {:?} {to:?}", e.seq, e.status, e.fault_kind))
        };
        let requests: Vec<String> = journal.iter().filter_map(describe).collect();
        panic!(
            "{what}: not exactly one invite request each (address, requests): {wrong:?}; \
             invite requests (seq, status, fault, addresses): {requests:#?}"
        );
    }
}

/// Whether an API request may change something: every request but reads (GET), the
/// UserInvite lookup (`validateUsers`) and the OrgInvitation token exchange, whatever it was
/// answered and also while in flight (invitations, `addUserGroups`, `removeUserGroups`,
/// grants, updates, DELETEs, revocations).
pub fn is_changing(e: &invite_mock::JournalEntry) -> bool {
    e.method != "GET" && e.path != "/api/v2/user/validateUsers" && !e.is_token_exchange()
}

/// The requests of the mock's journal from position `from` on that may change something
/// ([`is_changing`]), as `METHOD path`.
pub fn changes_since(mock: &RunningMock, from: usize) -> Vec<String> {
    let journal = mock.api.journal();
    let calls = journal[from..].iter().filter(|e| is_changing(e));
    calls.map(|e| format!("{} {}", e.method, e.path)).collect()
}

/// The mock's API requests but the token exchanges, as `METHOD path`.
pub fn api_calls(mock: &RunningMock) -> Vec<String> {
    let journal = mock.api.journal();
    let calls = journal.iter().filter(|e| !e.is_token_exchange());
    calls.map(|e| format!("{} {}", e.method, e.path)).collect()
}

/// The strings of the JSON array `values`, sorted.
pub fn sorted(values: &Value) -> Vec<String> {
    let array = values.as_array().into_iter().flatten();
    let strings = array.filter_map(Value::as_str);
    let mut v: Vec<String> = strings.map(str::to_string).collect();
    v.sort();
    v
}

/// Each of `emails` got `n` invitation emails from the mock.
pub fn assert_sent(mock: &RunningMock, emails: &[impl AsRef<str>], n: usize) {
    for email in emails.iter().map(AsRef::as_ref) {
        assert_eq!(mock.api.invitations_sent_to(email), n, "{email}");
    }
}

/// The groups of the mock's UserInvite user `id`, sorted.
pub fn groups_of(mock: &RunningMock, id: &str) -> Vec<String> {
    sorted(&mock.api.user(id).expect("the user exists")["groups"])
}

/// A mock invite API with the suite's token and organization, configured by the rest of
/// `config`.
pub async fn start_mock(config: MockConfig) -> RunningMock {
    let (token, organization_id) = (TOKEN.into(), ORG.into());
    let config = MockConfig {
        token,
        organization_id,
        ..config
    };
    MockApi::start(config).await.expect("start mock")
}

/// `config` for an API that sends again: re-inviting an invited user who never logged in
/// answers 200 and emails again (a second request is not refused, so only the wire shows it).
pub fn resending(config: MockConfig) -> MockConfig {
    MockConfig {
        resend_to_invited: true,
        ..config
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}
