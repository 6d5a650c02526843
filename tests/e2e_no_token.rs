//! No token anywhere (issue 8): a full flow through both APIs — invite, enforce, remove,
//! delete, an expired access token replaced, a refused API token — at TRACE level, then every
//! output of the operator is searched for every token value: the raw API tokens, their base64
//! (as in a Secret's data), and the access tokens the OrgInvitation exchange returned.
//!
//! Searched: everything logged (text and JSON formatters, every target, every span field),
//! the Events of the namespace, the status of every object, the `/metrics` text, and the
//! `Debug` output of the settings and of the endpoint clients (holding a token and a cached
//! access token). Its own test binary: it owns the global tracing subscriber.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use invite_operator::{
    api::{AnyEndpoint, ClusterInvitationEndpoint, InvitationEndpoint, UserInvitation},
    invite::{
        ApiToken,
        client::{ClientSettings, build_client},
        coalesce::BatchSettings,
    },
    telemetry::Metrics,
};
use k8s_openapi::{ByteString, api::events::v1::Event};
use kube::{
    Api,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Everything the process logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs the global subscriber: every target at TRACE, as text and as JSON lines.
    fn install() -> Captured {
        let captured = Captured::default();
        let (text, json) = (captured.0.clone(), captured.0.clone());
        tracing_subscriber::registry()
            .with(EnvFilter::new("trace"))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || Sink(text.clone())),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(move || Sink(json.clone())),
            )
            .init();
        captured
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn random_token(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// The base64 of `token` as it appears in a Secret's `data`.
fn base64(token: &str) -> String {
    serde_json::to_value(ByteString(token.as_bytes().to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// Every place in `text` where a secret occurs, with the line around it.
fn leaks(text: &str, secrets: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        for (what, secret) in secrets {
            if line.contains(secret.as_str()) {
                let excerpt: String = line.chars().take(300).collect();
                found.push(format!("{what}: {excerpt}"));
            }
        }
    }
    found
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn no_token_appears_in_logs_events_status_metrics_or_debug_output() {
    let logs = Captured::install();
    let token = random_token("apitoken");
    let wrong = random_token("wrongtoken");
    let cluster = TestCluster::start().await;
    let mock = MockApi::start(MockConfig {
        token: token.clone(),
        organization_id: ORG.into(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    cluster.put_secret("api-token", &token).await;
    cluster.put_secret("wrong-token", &wrong).await;
    cluster
        .user_invite_endpoint("wavefront", &mock.url, "api-token")
        .await;
    cluster
        .org_endpoint("csp", &mock.url, "api-token", ORG)
        .await;
    cluster
        .user_invite_endpoint("wavefront-refused", &mock.url, "wrong-token")
        .await;
    cluster
        .org_endpoint("csp-refused", &mock.url, "wrong-token", ORG)
        .await;
    let mut settings = cluster.settings();
    settings.resync_interval = Duration::from_millis(300);
    let controller = cluster.start_controller_with(settings.clone());

    // UserInvite: invite, enforce, remove (Delete).
    let user = |email: &str, groups: &[&str]| json!({"emailAddress": email, "groups": groups, "userGroups": []});
    cluster
        .create_invitation(
            "users",
            json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "wavefront"},
                   "accessPolicy": "Enforce", "deletionPolicy": "Delete",
                   "users": [user("a@example.com", &["dashboard_management"]),
                             user("b@example.com", &[])]}),
        )
        .await;
    // OrgInvitation: invite, remove (revoke).
    cluster
        .create_invitation(
            "org",
            json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "csp"},
                   "deletionPolicy": "Delete",
                   "orgInvitation": {"usernames": ["c@example.com", "d@example.com"]}}),
        )
        .await;
    // Refused tokens, on both APIs.
    cluster
        .create_invitation(
            "refused",
            json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "wavefront-refused"},
                   "users": [user("e@example.com", &[])]}),
        )
        .await;
    cluster
        .create_invitation(
            "org-refused",
            json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "csp-refused"},
                   "orgInvitation": {"usernames": ["f@example.com"]}}),
        )
        .await;
    cluster.wait_status("users", "Ready", is_ready).await;
    cluster.wait_status("org", "Ready", is_ready).await;
    cluster
        .wait_status("refused", "refused", reason_is("EndpointNotReady"))
        .await;
    cluster
        .wait_status("org-refused", "refused", |s| ready(s).0 == "False")
        .await;

    cluster
        .patch_spec(
            "users",
            json!({"users": [user("a@example.com", &["alerts_management"])]}),
        )
        .await;
    wait_until("enforced and removed", || {
        mock.api.user("b@example.com").is_none()
            && mock
                .api
                .user("a@example.com")
                .is_some_and(|u| u["groups"] == json!(["alerts_management"]))
    })
    .await;
    // The access token expires: the next call is refused (401) and a new one is exchanged.
    mock.api.expire_access_tokens();
    cluster
        .patch_spec(
            "org",
            json!({"orgInvitation": {"usernames": ["c@example.com", "g@example.com"]}}),
        )
        .await;
    cluster
        .wait_status("org", "g invited, d revoked", |s| {
            is_ready(s) && s.users.len() == 2 && s.observed_generation == Some(2)
        })
        .await;
    assert_eq!(mock.api.invitations_sent_to("g@example.com"), 1);

    // Every status, before the resources go.
    let mut outputs: Vec<(&str, String)> = Vec::new();
    let invitations = Api::<UserInvitation>::namespaced(cluster.client.clone(), &cluster.namespace);
    outputs.push((
        "UserInvitations",
        serde_json::to_string(&invitations.list(&ListParams::default()).await.unwrap()).unwrap(),
    ));
    for name in ["users", "org"] {
        invitations
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    for name in ["users", "org"] {
        while invitations.get_opt(name).await.unwrap().is_some() {
            assert!(tokio::time::Instant::now() < deadline, "{name} not deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(mock.api.user("a@example.com").is_none());
    let access_tokens = mock.api.access_tokens();
    assert!(access_tokens.len() >= 2, "an access token was replaced");

    // The endpoint clients as the controller builds them, one with a cached access token.
    let namespaced =
        Api::<InvitationEndpoint>::namespaced(cluster.client.clone(), &cluster.namespace);
    let client_settings = ClientSettings {
        recorder: Metrics::new().api_call_recorder(),
        read_attempts: 1,
        limits: Default::default(),
        batch: BatchSettings::default(),
        may_act: Arc::new(|| true),
    };
    let mut debug = vec![
        format!("{settings:?}"),
        format!("{:?}", ApiToken::new(&token)),
    ];
    for name in ["wavefront", "csp"] {
        let endpoint = AnyEndpoint::Namespaced(Box::new(namespaced.get(name).await.unwrap()));
        let api = build_client(&endpoint, ApiToken::new(&token), &client_settings).unwrap();
        api.verify_credentials().await.unwrap();
        debug.push(format!("{api:?} {api:#?}"));
    }
    let access_tokens: Vec<String> = mock.api.access_tokens();

    let metrics = controller.metrics.clone();
    controller.stop().await;
    let events = Api::<Event>::namespaced(cluster.client.clone(), &cluster.namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Revoked")),
        "the flow produced events"
    );
    outputs.push(("Events", serde_json::to_string(&events).unwrap()));
    outputs.push((
        "InvitationEndpoints",
        serde_json::to_string(&namespaced.list(&ListParams::default()).await.unwrap()).unwrap(),
    ));
    outputs.push((
        "ClusterInvitationEndpoints",
        serde_json::to_string(
            &Api::<ClusterInvitationEndpoint>::all(cluster.client.clone())
                .list(&ListParams::default().labels(&cluster.selector()))
                .await
                .unwrap(),
        )
        .unwrap(),
    ));
    let metrics = metrics.encode();
    assert!(
        metrics.contains("invite_operator_api_calls_total"),
        "{metrics}"
    );
    outputs.push(("metrics", metrics));
    outputs.push(("Debug", debug.join("\n")));
    let logged = logs.text();
    assert!(
        logged.lines().count() > 100 && logged.contains("TRACE"),
        "TRACE logs were captured"
    );
    outputs.push(("logs", logged));

    let mut secrets = vec![
        ("API token".to_string(), token.clone()),
        ("API token, base64".to_string(), base64(&token)),
        ("refused token".to_string(), wrong.clone()),
        ("refused token, base64".to_string(), base64(&wrong)),
    ];
    for access in &access_tokens {
        secrets.push(("access token".to_string(), access.clone()));
    }
    let mut found = Vec::new();
    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what} is empty");
        for leak in leaks(text, &secrets) {
            found.push(format!("{what}: {leak}"));
        }
    }
    assert!(found.is_empty(), "tokens found:\n{}", found.join("\n"));
    mock.shutdown().await;
    cluster.cleanup().await;
}
