//! Shared e2e harness: a Kubernetes API (the in-process test server, or a real cluster when
//! `INVITE_OPERATOR_E2E_KUBECONFIG` names a kubeconfig), the mock invite API, and the real
//! controller running in this process.
#![allow(dead_code)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use invite_mock::{MockApi, MockConfig, RunningMock};
use invite_operator::{
    api::{
        ClusterInvitationEndpoint, InvitationEndpoint, UserInvitation, UserInvitationStatus,
        all_crds,
    },
    controller::{self, Settings},
    health::Readiness,
    telemetry::Metrics,
};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use kube_test_apiserver::TestApiServer;
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle};

/// How long a test waits for the controller to reach a state.
pub const WAIT: Duration = Duration::from_secs(30);

/// A Kubernetes API to test against, with a fresh namespace.
pub struct TestCluster {
    pub client: Client,
    /// Configuration for more clients (the controller's identifies itself by User-Agent).
    pub config: kube::Config,
    pub namespace: String,
    pub server: Option<TestApiServer>,
    cluster_scoped: Vec<String>,
}

impl TestCluster {
    /// The in-process API server, or the real cluster of `INVITE_OPERATOR_E2E_KUBECONFIG`.
    pub async fn start() -> TestCluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let (config, server) = match std::env::var("INVITE_OPERATOR_E2E_KUBECONFIG") {
            Ok(path) if !path.is_empty() => {
                let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .expect("kubeconfig is usable");
                (config, None)
            }
            _ => {
                let server = TestApiServer::start().await;
                (server.config(), Some(server))
            }
        };
        let client = Client::try_from(config.clone()).expect("client");
        install_crds(&client).await;
        let namespace = format!("invite-e2e-{:08x}", rand::random::<u32>());
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": namespace, "labels": {"invite-e2e": "true"}}}),
                )
                .unwrap(),
            )
            .await
            .expect("create the test namespace");
        TestCluster {
            client,
            config,
            namespace,
            server,
            cluster_scoped: Vec::new(),
        }
    }

    /// A client as the controller builds it (it identifies itself by User-Agent).
    pub fn controller_client(&self) -> Client {
        controller::kube_client(self.config.clone()).expect("controller client")
    }

    /// Starts the real controller with test settings.
    pub fn start_controller(&self) -> RunningController {
        RunningController::start(self.controller_client(), test_settings(&self.namespace))
    }

    /// Whether the tests run against the in-process server (request records available).
    pub fn is_test_server(&self) -> bool {
        self.server.is_some()
    }

    pub fn invitations(&self) -> Api<UserInvitation> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A cluster-scoped name unique to this test.
    pub fn unique(&self, name: &str) -> String {
        format!("{name}-{}", self.namespace)
    }

    /// Creates (or replaces) the Secret holding the token.
    pub async fn put_secret(&self, name: &str, token: &str) {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(token.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("apply secret");
    }

    /// Creates a namespaced UserInvite endpoint pointing at `url`, reading the token from
    /// Secret `secret`.
    pub async fn user_invite_endpoint(&self, name: &str, url: &str, secret: &str) {
        self.namespaced_endpoint(name, json!({"api": "UserInvite", "url": url}), secret)
            .await;
    }

    /// Creates a namespaced OrgInvitation endpoint for organization `org` at `url`.
    pub async fn org_endpoint(&self, name: &str, url: &str, secret: &str, org: &str) {
        let spec = json!({"api": "OrgInvitation", "url": url, "organizationId": org});
        self.namespaced_endpoint(name, spec, secret).await;
    }

    /// Applies an InvitationEndpoint: `spec` plus the Secret reference and test-friendly
    /// limits (100 requests/s, 5 s timeout).
    async fn namespaced_endpoint(&self, name: &str, mut spec: serde_json::Value, secret: &str) {
        spec["credentials"] = json!({"secretRef": {"name": secret}});
        spec["requestsPerSecond"] = json!(100);
        spec["timeoutSeconds"] = json!(5);
        let endpoint: InvitationEndpoint = serde_json::from_value(json!({
            "apiVersion": "invite.operators.dev/v1alpha1",
            "kind": "InvitationEndpoint",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }))
        .unwrap();
        Api::<InvitationEndpoint>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&endpoint),
            )
            .await
            .expect("apply endpoint");
    }

    /// Creates a cluster endpoint from a JSON spec; it is deleted at cleanup.
    pub async fn cluster_endpoint(&mut self, name: &str, spec: serde_json::Value) {
        let endpoint: ClusterInvitationEndpoint = serde_json::from_value(json!({
            "apiVersion": "invite.operators.dev/v1alpha1",
            "kind": "ClusterInvitationEndpoint",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        Api::<ClusterInvitationEndpoint>::all(self.client.clone())
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&endpoint),
            )
            .await
            .expect("apply cluster endpoint");
        self.cluster_scoped.push(name.to_string());
    }

    /// Creates a UserInvitation from its spec.
    pub async fn create_invitation(&self, name: &str, spec: serde_json::Value) -> UserInvitation {
        let invitation: UserInvitation = serde_json::from_value(json!({
            "apiVersion": "invite.operators.dev/v1alpha1",
            "kind": "UserInvitation",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }))
        .unwrap();
        self.invitations()
            .create(&PostParams::default(), &invitation)
            .await
            .expect("create invitation")
    }

    /// Merge-patches a UserInvitation's spec.
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.invitations()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .expect("patch spec");
    }

    /// Waits until the UserInvitation's status satisfies `check`; panics with the last status.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&UserInvitationStatus) -> bool,
    ) -> UserInvitation {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let inv = self.invitations().get(name).await.expect("get invitation");
            if let Some(status) = &inv.status
                && check(status)
            {
                return inv;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last status: {}",
                    serde_json::to_string_pretty(&inv.status).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn cleanup(self) {
        for name in &self.cluster_scoped {
            let _ = Api::<ClusterInvitationEndpoint>::all(self.client.clone())
                .delete(name, &DeleteParams::default())
                .await;
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        if let Some(server) = self.server {
            server.shutdown().await;
        }
    }
}

/// Applies the operator's CRDs and waits until they are served.
async fn install_crds(client: &Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in all_crds() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("invite-operator-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while Api::<UserInvitation>::all(client.clone())
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "CRDs never became served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The state of `email` in the resource's status; panics when it has no entry.
pub fn state_of(inv: &UserInvitation, email: &str) -> invite_operator::api::UserState {
    inv.status
        .as_ref()
        .and_then(|s| s.users.iter().find(|u| u.email_address == email))
        .map(|u| u.state)
        .unwrap_or_else(|| panic!("no status entry for {email}"))
}

/// The Ready condition's (status, reason).
pub fn ready(status: &UserInvitationStatus) -> (String, String) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

pub fn is_ready(status: &UserInvitationStatus) -> bool {
    ready(status).0 == "True"
}

pub fn reason_is(reason: &'static str) -> impl Fn(&UserInvitationStatus) -> bool {
    move |s| ready(s).1 == reason
}

/// The mock API with a known token.
pub async fn start_mock() -> RunningMock {
    MockApi::start(MockConfig {
        token: "e2e-token".into(),
        ..Default::default()
    })
    .await
    .expect("start mock")
}

/// Controller settings with short retry delays for tests.
pub fn test_settings(operator_namespace: &str) -> Settings {
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
        ..Settings::default()
    }
}

/// The real controller, running in this process.
pub struct RunningController {
    pub metrics: Metrics,
    pub readiness: watch::Receiver<Readiness>,
    stop: tokio_util::sync::CancellationToken,
    handle: JoinHandle<()>,
}

impl RunningController {
    pub fn start(client: Client, settings: Settings) -> RunningController {
        let metrics = Metrics::new();
        let (readiness_tx, readiness) = watch::channel(Readiness::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(controller::run(
            client,
            settings,
            metrics.clone(),
            readiness_tx,
            invite_operator::leader::Leadership::unconditional(),
            stop.clone(),
        ));
        RunningController {
            metrics,
            readiness,
            stop,
            handle,
        }
    }

    /// Number of reconciles finished so far.
    pub fn reconciles(&self) -> u64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("invite_operator_reconciles_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until at least `n` reconciles finished.
    pub async fn wait_reconciles(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.reconciles() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "controller made {} reconciles, expected {n}",
                self.reconciles()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful stop (as on SIGTERM).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }

    /// Abrupt stop, as a crash: the task is aborted wherever it is.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Shared pointer helper for tests holding the mock.
pub type SharedMock = Arc<RunningMock>;

impl RunningController {
    /// Whether the controller task has ended (returned, panicked or was aborted).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}
