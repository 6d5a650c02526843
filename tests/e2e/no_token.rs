//! No token anywhere (issue 8): a full flow through both APIs — invite, enforce, remove,
//! delete, an expired access token replaced, a refused API token — at TRACE level, then every
//! output of the operator is searched for every token value: the raw API tokens, their base64
//! (as in a Secret's data), and the access tokens the OrgInvitation exchange returned.
//!
//! Searched: everything logged (text and JSON formatters, every target, every span field),
//! the Events of the namespace, the status of every object, the `/metrics` text, and the
//! `Debug` output of the settings and of the endpoint clients (holding a token and a cached
//! access token). Everything logged on the test's threads is captured (`common::logs`), at TRACE.

use std::{sync::Arc, time::Duration};

use crate::common::{logs::Captured, *};
use invite_operator::{
    api::{AnyEndpoint, ClusterInvitationEndpoint, InvitationEndpoint, UserInvitationStatus},
    invite::{
        ApiToken,
        client::{ClientSettings, build_client},
        coalesce::BatchSettings,
    },
    telemetry::Metrics,
};
use k8s_openapi::{ByteString, api::events::v1::Event};
use kube::{Api, api::ListParams};
use serde_json::json;

fn random_token(prefix: &str) -> String {
    let (high, low) = (rand::random::<u64>(), rand::random::<u64>());
    format!("{prefix}-{high:016x}{low:016x}")
}

/// The base64 of `token` as it appears in a Secret's `data`.
fn base64(token: &str) -> String {
    let encoded = serde_json::to_value(ByteString(token.as_bytes().to_vec()));
    encoded.unwrap().as_str().unwrap().to_string()
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap()
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

#[test]
fn no_token_appears_in_logs_events_status_metrics_or_debug_output() {
    let logs = Captured::default();
    logs.runtime().block_on(no_token_in_a_full_flow(logs));
}

async fn no_token_in_a_full_flow(logs: Captured) {
    let token = random_token("apitoken");
    let wrong = random_token("wrongtoken");
    let cluster = TestCluster::start().await;
    let config = MockConfig {
        token: token.clone(),
        organization_id: ORG.into(),
        ..MockConfig::default()
    };
    let mock = MockApi::start(config).await.unwrap();
    cluster.put_secret("api-token", &token).await;
    cluster.put_secret("wrong-token", &wrong).await;
    // Both APIs, each with the token and with the refused one.
    for (suffix, secret) in [("", "api-token"), ("-refused", "wrong-token")] {
        let (wavefront, csp) = (format!("wavefront{suffix}"), format!("csp{suffix}"));
        let url = &mock.url;
        cluster.user_invite_endpoint(&wavefront, url, secret).await;
        cluster.org_endpoint(&csp, url, secret, ORG).await;
    }
    let mut settings = cluster.settings();
    settings.resync_interval = Duration::from_millis(300);
    let controller = cluster.start_controller_with(settings.clone());

    full_flow(&cluster, &mock).await;
    let mut outputs = statuses_and_deletion(&cluster, &mock).await;
    let (debug, access_tokens) = debug_output(&cluster, &mock, &settings, &token).await;
    let metrics = controller.metrics.clone();
    controller.stop().await;
    let (client, namespace) = (cluster.client.clone(), &cluster.namespace);
    let events = Api::<Event>::namespaced(client.clone(), namespace);
    let events = events.list(&ListParams::default()).await.unwrap();
    let revoked = events
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("Revoked"));
    assert!(revoked, "the flow produced events");
    let namespaced = Api::<InvitationEndpoint>::namespaced(client.clone(), namespace);
    let namespaced = namespaced.list(&ListParams::default()).await.unwrap();
    let ours = ListParams::default().labels(&cluster.selector());
    let cluster_scoped = Api::<ClusterInvitationEndpoint>::all(client);
    let cluster_scoped = cluster_scoped.list(&ours).await.unwrap();
    outputs.push(("Events", to_json(&events)));
    outputs.push(("InvitationEndpoints", to_json(&namespaced)));
    outputs.push(("ClusterInvitationEndpoints", to_json(&cluster_scoped)));
    let metrics = metrics.encode();
    let api_calls = metrics.contains("invite_operator_api_calls_total");
    assert!(api_calls, "{metrics}");
    outputs.push(("metrics", metrics));
    outputs.push(("Debug", debug));
    let logged = logs.text();
    let at_trace = logged.lines().count() > 100 && logged.contains("TRACE");
    assert!(at_trace, "TRACE logs were captured");
    outputs.push(("logs", logged));

    let mut secrets = vec![
        ("API token".to_string(), token.clone()),
        ("API token, base64".to_string(), base64(&token)),
        ("refused token".to_string(), wrong.clone()),
        ("refused token, base64".to_string(), base64(&wrong)),
    ];
    let access = access_tokens
        .into_iter()
        .map(|a| ("access token".to_string(), a));
    secrets.extend(access);
    let mut found = Vec::new();
    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what} is empty");
        let leaked = leaks(text, &secrets).into_iter();
        found.extend(leaked.map(|leak| format!("{what}: {leak}")));
    }
    assert!(found.is_empty(), "tokens found:\n{}", found.join("\n"));
    mock.shutdown().await;
    cluster.cleanup().await;
}

/// Through both APIs: invite, enforce, remove, an expired access token replaced, refused
/// tokens.
async fn full_flow(cluster: &TestCluster, mock: &RunningMock) {
    let user = |email: &str, groups: &[&str]| json!({"emailAddress": email, "groups": groups, "userGroups": []});
    let endpoint = |name: &str| json!({"kind": "InvitationEndpoint", "name": name});
    let resources = [
        // UserInvite: invite, enforce, remove (Delete).
        json!({"endpointRef": endpoint("wavefront"),
               "accessPolicy": "Enforce", "deletionPolicy": "Delete",
               "users": [user("a@example.com", &["dashboard_management"]), user("b@example.com", &[])]}),
        // OrgInvitation: invite, remove (revoke).
        json!({"endpointRef": endpoint("csp"), "deletionPolicy": "Delete",
               "orgInvitation": {"usernames": ["c@example.com", "d@example.com"]}}),
        // Refused tokens, on both APIs.
        json!({"endpointRef": endpoint("wavefront-refused"), "users": [user("e@example.com", &[])]}),
        json!({"endpointRef": endpoint("csp-refused"), "orgInvitation": {"usernames": ["f@example.com"]}}),
    ];
    let names = ["users", "org", "refused", "org-refused"];
    for (name, spec) in names.into_iter().zip(resources) {
        cluster.create_invitation(name, spec).await;
    }
    cluster.wait_ready("users").await;
    cluster.wait_ready("org").await;
    cluster.wait_for_reason("refused", "EndpointNotReady").await;
    let refused = |s: &UserInvitationStatus| ready(s).0 == "False";
    cluster.wait_status("org-refused", "refused", refused).await;

    let enforced = json!({"users": [user("a@example.com", &["alerts_management"])]});
    cluster.patch_spec("users", enforced).await;
    eventually("enforced and removed", async || {
        let a = mock.api.user("a@example.com");
        mock.api.user("b@example.com").is_none()
            && a.is_some_and(|u| u["groups"] == json!(["alerts_management"]))
    })
    .await;
    // The access token expires: the next call is refused (401) and a new one is exchanged.
    mock.api.expire_access_tokens();
    let replaced = json!({"orgInvitation": {"usernames": ["c@example.com", "g@example.com"]}});
    cluster.patch_spec("org", replaced).await;
    let done = |s: &UserInvitationStatus| {
        is_ready(s) && s.users.len() == 2 && s.observed_generation == Some(2)
    };
    let revoked = "g invited, d revoked";
    cluster.wait_status("org", revoked, done).await;
    assert_eq!(mock.api.invitations_sent_to("g@example.com"), 1);
}

/// Every status, then the resources deleted (their users removed).
async fn statuses_and_deletion(
    cluster: &TestCluster,
    mock: &RunningMock,
) -> Vec<(&'static str, String)> {
    let invitations = cluster.list_invitations().await;
    let outputs = vec![("UserInvitations", to_json(&invitations))];
    for name in ["users", "org"] {
        cluster.delete(name).await;
    }
    for name in ["users", "org"] {
        cluster.wait_gone(name).await;
    }
    assert!(mock.api.user("a@example.com").is_none());
    let access_tokens = mock.api.access_tokens();
    assert!(access_tokens.len() >= 2, "an access token was replaced");
    outputs
}

/// The `Debug` of the settings, a token, and the endpoint clients as the controller builds
/// them, one with a cached access token; and the access tokens the mock handed out.
async fn debug_output(
    cluster: &TestCluster,
    mock: &RunningMock,
    settings: &invite_operator::controller::Settings,
    token: &str,
) -> (String, Vec<String>) {
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
        format!("{:?}", ApiToken::new(token)),
    ];
    for name in ["wavefront", "csp"] {
        let endpoint = AnyEndpoint::Namespaced(Box::new(namespaced.get(name).await.unwrap()));
        let api = build_client(&endpoint, ApiToken::new(token), &client_settings).unwrap();
        api.verify_credentials().await.unwrap();
        debug.push(format!("{api:?} {api:#?}"));
    }
    (debug.join("\n"), mock.api.access_tokens())
}
