//! What GitOps tools read: the statuses the controller writes in every state a resource can
//! reach, kept as fixtures under `tests/health/fixtures/` for the Argo CD health check
//! (`deploy/argocd/health.lua`, run on each fixture by `tests/health/test_health_lua.py`).
//!
//! This test drives one resource into each state, normalizes what varies between runs (times,
//! the test's namespace, the mock's port) and compares the result with the committed fixture,
//! so a change to what the controller writes cannot leave the fixtures (and the health check
//! tested on them) behind. `UPDATE_HEALTH_FIXTURES=1 cargo test --test e2e health::` rewrites
//! them.

use std::time::Duration;

use crate::common::*;
use invite_mock::MockConfig;
use invite_operator::api::{ClusterInvitationEndpoint, InvitationEndpoint};
use kube::Api;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const FIXTURES: &str = "tests/health/fixtures";

/// Stand-ins for what differs between runs.
const NAMESPACE: &str = "team-a";
const MOCK_URL: &str = "http://127.0.0.1:8443";
const SLOW_URL: &str = "http://127.0.0.1:8444";
const CLOSED_URL: &str = "http://127.0.0.1:8445";
const TIME: &str = "2026-01-01T00:00:00Z";
const UID: &str = "6d1f6e4c-0000-4000-8000-000000000000";

/// What varies between runs, and what stands in for it in a fixture.
struct Normalize(Vec<(String, &'static str)>);

impl Normalize {
    fn value(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if s.parse::<jiff::Timestamp>().is_ok() {
                    *s = TIME.to_string();
                    return;
                }
                for (from, to) in &self.0 {
                    *s = s.replace(from.as_str(), to);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            Value::Object(map) => {
                if let Some(uid) = map.get_mut("uid") {
                    *uid = json!(UID);
                }
                map.values_mut().for_each(|v| self.value(v))
            }
            _ => {}
        }
    }

    /// The part of `object` a health check reads, normalized.
    fn fixture(&self, object: &Value) -> Value {
        let mut fixture = json!({
            "apiVersion": object["apiVersion"],
            "kind": object["kind"],
            "metadata": {
                "name": object["metadata"]["name"],
                "generation": object["metadata"]["generation"],
            },
            "status": object["status"],
        });
        if let Some(namespace) = object["metadata"].get("namespace") {
            fixture["metadata"]["namespace"] = namespace.clone();
        }
        self.value(&mut fixture);
        fixture
    }
}

/// The Ready condition's reason in an object's status.
fn ready_reason(object: &Value) -> Option<&str> {
    let conditions = object["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    ready["reason"].as_str()
}

/// Waits until the object's status satisfies `check`; returns it as JSON.
async fn wait_json<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    eventually(&format!("{name} to reach {what}"), async || {
        let object = serde_json::to_value(api.get(name).await.expect("get")).unwrap();
        let seen = format!("{:#}", object["status"]);
        check(&object).then_some(object).ok_or(seen)
    })
    .await
}

/// A URL on loopback where nothing listens (a port the system gave and took back).
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn users(emails: &[&str], groups: &[&str]) -> Value {
    let user = |e: &&str| json!({"emailAddress": e, "groups": groups});
    emails.iter().map(user).collect()
}

fn spec(endpoint: &str, users: Value) -> Value {
    json!({"endpointRef": {"kind": "InvitationEndpoint", "name": endpoint}, "users": users})
}

/// Compares the fixture `name` with `actual`, or writes it (`UPDATE_HEALTH_FIXTURES=1`).
/// Returns the difference, if any.
fn check_fixture(name: &str, actual: &Value) -> Option<String> {
    let path = package_path(FIXTURES).join(format!("{name}.json"));
    let text = format!("{}\n", serde_json::to_string_pretty(actual).unwrap());
    if std::env::var_os("UPDATE_HEALTH_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return None;
    }
    let stored = std::fs::read_to_string(&path).ok();
    let stored: Option<Value> = stored.and_then(|t| serde_json::from_str(&t).ok());
    (stored.as_ref() != Some(actual)).then(|| format!("{name}: the controller now writes\n{text}"))
}

#[tokio::test]
async fn every_state_matches_its_health_fixture() {
    let mut h = Harness::user_invite().await;
    // A second API that answers slowly, so that a resource is seen while its invitations are
    // in flight, and a URL where nothing answers.
    let slow = start_mock(MockConfig::default()).await;
    slow.api.set_latency(Duration::from_secs(3));
    let closed = closed_url();
    h.start_controller();
    let shared = endpoints_in_every_state(&h, &slow.url, &closed).await;
    invitations_in_every_state(&h.cluster, &shared.0).await;
    let normalize = Normalize(vec![
        (slow.url.clone(), SLOW_URL),
        (closed.clone(), CLOSED_URL),
        (h.mock.url.clone(), MOCK_URL),
        (h.cluster.namespace.clone(), NAMESPACE),
    ]);
    let fixtures = objects_in_every_state(&h.cluster, &shared).await;
    let check = |(name, object): &(String, Value)| check_fixture(name, &normalize.fixture(object));
    let differences: Vec<String> = fixtures.iter().filter_map(check).collect();
    assert!(
        differences.is_empty(),
        "the health fixtures are stale; check the changes and rewrite them with \
         UPDATE_HEALTH_FIXTURES=1 cargo test --test e2e health::\n{}",
        differences.join("\n")
    );
    // Every fixture in the folder comes from this test.
    let stored = std::fs::read_dir(package_path(FIXTURES)).unwrap().count();
    assert_eq!(stored, fixtures.len(), "a fixture no state produces");
    slow.shutdown().await;
    h.finish().await;
}

/// Endpoints in each state; returns the names of the two cluster endpoints (Ready, and
/// without its Secret).
async fn endpoints_in_every_state(h: &Harness, slow: &str, closed: &str) -> (String, String) {
    let (cluster, mock) = (&h.cluster, h.mock.url.as_str());
    cluster.put_secret("wrong-token", "not-the-token").await;
    cluster.put_unlabelled_secret("unlabelled", TOKEN).await;
    // (name, URL, Secret); a UserInvite token is checked on first use, an OrgInvitation token
    // right away.
    for (name, url, secret) in [
        ("slow", slow, "api-token"),
        ("down", closed, "api-token"),
        ("no-secret", mock, "not-written-yet"),
        ("rejected", mock, "wrong-token"),
        ("not-labelled", mock, "unlabelled"),
    ] {
        cluster.user_invite_endpoint(name, url, secret).await;
    }
    let org = [
        ("unreachable", closed, "api-token"),
        ("rejected-org", mock, "wrong-token"),
    ];
    for (name, url, secret) in org {
        cluster.org_endpoint(name, url, secret, ORG).await;
    }
    let plain_http = json!({"api": "UserInvite", "url": "http://invite.example.com",
                            "credentials": {"secretRef": {"name": "api-token"}}});
    cluster.apply_endpoint("plain-http", plain_http).await;
    let ns = &cluster.namespace;
    let cluster_spec = |secret: &str| {
        json!({
            "api": "UserInvite", "url": mock,
            "credentials": {"secretRef": {"name": secret, "namespace": ns}},
            "maxUsersPerInvitation": 1,
        })
    };
    let (shared, no_secret) = (cluster.unique("shared"), cluster.unique("shared-no-secret"));
    let (ready, missing) = (cluster_spec("api-token"), cluster_spec("not-written-yet"));
    cluster.cluster_endpoint(&shared, ready).await;
    cluster.cluster_endpoint(&no_secret, missing).await;
    (shared, no_secret)
}

/// UserInvitations in each state; `shared` is a cluster endpoint they are not allowed on.
async fn invitations_in_every_state(cluster: &TestCluster, shared: &str) {
    let refused = |emails: &[&str]| users(emails, &["no-such-group"]);
    let (bad, b) = (
        refused(&["bad@example.com"]),
        users(&["b@example.com"], &[]),
    );
    let partly = json!([bad[0], b[0]]);
    let one = |endpoint: &str, email: &str| spec(endpoint, users(&[email], &[]));
    let twice = users(&["Case@example.com", "case@example.com"], &[]);
    for (name, body) in [
        ("all-invited", one("wavefront", "a@example.com")),
        ("partially-failed", spec("wavefront", partly)),
        ("failed", spec("wavefront", refused(&["f@example.com"]))),
        ("invalid-spec", spec("wavefront", twice)),
        (
            "endpoint-mismatch",
            json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "wavefront"},
                   "orgInvitation": {"usernames": ["o@example.com"]}}),
        ),
        ("endpoint-not-found", one("nowhere", "n@example.com")),
        ("endpoint-not-ready", one("rejected", "r@example.com")),
        ("waiting-for-secret", one("no-secret", "w@example.com")),
        ("pending", one("down", "p@example.com")),
        (
            "not-allowed",
            json!({"endpointRef": {"kind": "ClusterInvitationEndpoint", "name": shared},
                   "users": users(&["x@example.com", "y@example.com"], &[])}),
        ),
    ] {
        cluster.create_invitation(name, body).await;
    }
    let paused = json!({"name": "paused", "annotations": {"invite.operators.dev/paused": "true"}});
    let spec = spec("wavefront", users(&["z@example.com"], &[]));
    cluster.create_invitation_with(paused, spec).await;
}

/// Every object in the state its fixture shows, by fixture name.
async fn objects_in_every_state(
    cluster: &TestCluster,
    shared: &(String, String),
) -> Vec<(String, Value)> {
    let (shared, shared_no_secret) = shared;
    let ns = &cluster.namespace;
    let invitations = cluster.invitations();
    // Seen while its invitation is in flight (the slow API holds the call for 3 s).
    let spec = spec("slow", users(&["i@example.com"], &[]));
    cluster.create_invitation("inviting", spec).await;
    let inviting = |o: &Value| o["status"]["users"][0]["state"] == "Inviting";
    let inviting = wait_json(&invitations, "inviting", "Inviting", inviting).await;
    let mut fixtures = vec![("userinvitation-inviting".to_string(), inviting)];
    let invitation_states = [
        ("all-invited", "AllInvited"),
        ("partially-failed", "PartiallyFailed"),
        ("failed", "Failed"),
        ("invalid-spec", "InvalidSpec"),
        ("endpoint-mismatch", "EndpointMismatch"),
        ("endpoint-not-found", "EndpointNotFound"),
        ("endpoint-not-ready", "EndpointNotReady"),
        ("waiting-for-secret", "EndpointNotReady"),
        ("pending", "Pending"),
        ("not-allowed", "NotAllowed"),
        ("paused", "Paused"),
    ];
    fixtures.extend(in_states(&invitations, "userinvitation", invitation_states).await);
    let endpoints: Api<InvitationEndpoint> = Api::namespaced(cluster.client.clone(), ns);
    let endpoint_states = [
        ("wavefront", "CredentialsResolved"),
        ("no-secret", "CredentialsNotFound"),
        ("unreachable", "Unreachable"),
        ("rejected-org", "CredentialsRejected"),
        ("not-labelled", "SecretNotLabelled"),
        ("plain-http", "InvalidConfiguration"),
    ];
    fixtures.extend(in_states(&endpoints, "invitationendpoint", endpoint_states).await);
    let cluster_endpoints: Api<ClusterInvitationEndpoint> = Api::all(cluster.client.clone());
    for (name, fixture, reason) in [
        (shared, "ready", "CredentialsResolved"),
        (shared_no_secret, "no-secret", "CredentialsNotFound"),
    ] {
        let in_state = |o: &Value| ready_reason(o) == Some(reason);
        let object = wait_json(&cluster_endpoints, name, reason, in_state).await;
        fixtures.push((format!("clusterinvitationendpoint-{fixture}"), object));
    }
    fixtures
}

/// Each object `name` once its Ready reason is `reason`, as the fixture `<kind>-<name>`.
async fn in_states<K>(
    api: &Api<K>,
    kind: &str,
    states: impl IntoIterator<Item = (&str, &str)>,
) -> Vec<(String, Value)>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let mut fixtures = Vec::new();
    for (name, reason) in states {
        let in_state = |o: &Value| ready_reason(o) == Some(reason);
        fixtures.push((
            format!("{kind}-{name}"),
            wait_json(api, name, reason, in_state).await,
        ));
    }
    fixtures
}
