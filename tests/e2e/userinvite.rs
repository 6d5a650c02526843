//! End-to-end tests of the UserInvite flow: the real controller against the in-process
//! Kubernetes API server (or a real cluster) and the stateful mock API over real HTTP.

use std::time::Duration;

use crate::common::{flavor::*, *};
use invite_mock::ScriptedFault;
use invite_operator::{
    api::{UserInvitationStatus, UserState},
    health::Readiness,
};
use kube::ResourceExt;
use serde_json::{Value, json};

/// The addresses of each invite call, in order.
fn invite_calls(mock: &invite_mock::RunningMock) -> Vec<Vec<String>> {
    let posts = Flavor::UserInvite.invite_posts(mock).into_iter();
    posts.map(|e| Flavor::UserInvite.invited_in(&e)).collect()
}

/// The team's spec: `emails`, each with the `dashboard_management` permission.
fn spec(emails: &[&str]) -> Value {
    users_spec("wavefront", emails, &["dashboard_management"])
}

#[tokio::test]
async fn create_invites_every_user_with_one_call_and_reports_ready() {
    let s = Harness::user_invite_running().await;
    let emails = ["alice@example.com", "Bob@Example.com", "carol@example.com"];
    let inv = s.cluster.create_ready("team", spec(&emails)).await;
    let status = inv.status.clone().unwrap();
    let all_invited = ("True".to_string(), "AllInvited".to_string());
    assert_eq!(ready(&status), all_invited);
    assert_eq!((status.invited, status.failed), (3, 0));
    assert_eq!(status.observed_generation, inv.metadata.generation);
    assert_eq!(status.invited_users.len(), 3);
    for user in &status.users {
        assert_eq!(user.state, UserState::Invited, "{user:?}");
        let (invited, expires) = (user.invited_at.unwrap(), user.expires_at.unwrap());
        let valid = jiff::SignedDuration::from_hours(24);
        assert_eq!(expires.duration_since(invited), valid, "{user:?}");
    }
    let calls = invite_calls(&s.mock);
    assert_eq!(calls.len(), 1, "one batched invite call: {calls:?}");
    assert_eq!(calls[0].len(), 3);
    let lowercased = ["alice@example.com", "bob@example.com", "carol@example.com"];
    assert_sent(&s.mock, &lowercased, 1);
    s.finish().await;
}

/// A restarted controller finds everything done: no Kubernetes write, no changing API call,
/// still one invite request. Both flavours.
async fn restart_sends_nothing_again_and_writes_nothing(flavor: Flavor) {
    let mut s = flavor.running(5, 100).await;
    let people = addresses("p", 2);
    let before = s.cluster.create_ready("team", flavor.spec(&people)).await;
    s.controller.take().unwrap().stop().await;
    let journal_before = s.mock.api.journal().len();

    let restarted = s.cluster.start_controller();
    restarted.wait_reconciles(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = s.cluster.invitations().get("team").await.unwrap();
    let unchanged = after.resource_version() == before.resource_version();
    assert!(unchanged, "no Kubernetes write on a no-op restart");
    let changes = changes_since(&s.mock, journal_before);
    let none = changes.is_empty();
    assert!(none, "no API call that changes anything: {changes:?}");
    assert_eq!(flavor.invite_posts(&s.mock).len(), 1);
    s.controller = Some(restarted);
    s.finish().await;
}

per_flavor!(restart_sends_nothing_again_and_writes_nothing() =>
    restart_sends_nothing_again_and_writes_nothing_userinvite,
    restart_sends_nothing_again_and_writes_nothing_orginvitation);

#[tokio::test]
async fn an_added_user_is_invited_alone() {
    let s = Harness::user_invite_running().await;
    let (alice, bob, dave) = ("alice@example.com", "bob@example.com", "dave@example.com");
    s.cluster.create_ready("team", spec(&[alice, bob])).await;
    let cluster = &s.cluster;
    cluster.patch_spec("team", spec(&[alice, bob, dave])).await;
    let invited = |st: &UserInvitationStatus| st.invited == 3 && is_ready(st);
    let inv = cluster.wait_status("team", "dave invited", invited).await;
    assert_eq!(state_of(&inv, dave), UserState::Invited);
    let calls = invite_calls(&s.mock);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1], vec![dave]);
    assert_sent(&s.mock, &[alice], 1);
    s.finish().await;
}

#[tokio::test]
async fn a_rejected_user_fails_alone_with_the_api_message() {
    let s = Harness::user_invite_running().await;
    let (alice, carol) = ("alice@example.com", "carol@example.com");
    let mallory = "mallory@example.com";
    let spec = json!({
        "endpointRef": {"kind": "InvitationEndpoint", "name": "wavefront"},
        "users": [
            {"emailAddress": alice, "groups": ["dashboard_management"], "userGroups": []},
            {"emailAddress": mallory, "groups": ["no_such_permission"], "userGroups": []},
            {"emailAddress": carol, "groups": [], "userGroups": []},
        ]
    });
    s.cluster.create_invitation("team", spec).await;
    let inv = s.cluster.wait_for_reason("team", "PartiallyFailed").await;
    let status = status_of(&inv);
    assert_eq!(state_of(&inv, alice), UserState::Invited);
    assert_eq!(state_of(&inv, carol), UserState::Invited);
    assert_eq!(state_of(&inv, mallory), UserState::Failed);
    let message = entry(status, mallory).unwrap().message.clone();
    let message = message.unwrap_or_default();
    let kept = message.contains("no_such_permission");
    assert!(kept, "the API's message is kept: {message}");
    assert_eq!((status.invited, status.failed), (2, 1));
    assert_sent(&s.mock, &[alice], 1);
    assert_sent(&s.mock, &[mallory], 0);
    s.finish().await;
}

/// Faults of the invite call that the controller gets past: two 429s (retried), and a lost
/// response (a 503 after the API invited: looked up, not posted again). Either way each user
/// gets one email.
#[tokio::test]
async fn transient_failures_are_retried_without_duplicates() {
    let throttled = ScriptedFault::new(429).times(2);
    let lost = ScriptedFault::new(503).times(1).after_effect(true);
    for (fault, calls, what) in [
        (throttled, 3, "two 429s, then success"),
        (lost, 1, "a lost response: looked up, not re-posted"),
    ] {
        let s = Harness::user_invite_running().await;
        s.mock.api.add_fault(fault.path("/api/v2/user/invite"));
        let emails = ["alice@example.com", "bob@example.com"];
        let inv = s.cluster.create_ready("team", spec(&emails)).await;
        let status = status_of(&inv);
        let invited = all_in(status, &emails.map(String::from), UserState::Invited);
        assert!(invited, "{what}");
        assert_eq!(invite_calls(&s.mock).len(), calls, "{what}");
        assert_sent(&s.mock, &emails, 1);
        s.finish().await;
    }
}

#[tokio::test]
async fn an_existing_user_is_already_a_member_and_gets_no_email() {
    let s = Harness::user_invite_running().await;
    s.mock.api.seed_user(json!({
        "identifier": "old@example.com",
        "groups": ["dashboard_management"],
        "userGroups": [],
        "lastSuccessfulLogin": 1_700_000_000_000_i64
    }));
    let (old, new) = ("old@example.com", "new@example.com");
    let inv = s.cluster.create_ready("team", spec(&[old, new])).await;
    assert_eq!(state_of(&inv, old), UserState::AlreadyMember);
    assert_eq!(state_of(&inv, new), UserState::Invited);
    assert_sent(&s.mock, &[old], 0);
    assert_eq!(invite_calls(&s.mock), vec![vec![new]]);
    s.finish().await;
}

/// Configuration problems are reported, make no API call (but the token check), and are
/// recovered from: a missing endpoint, then its missing Secret, then a wrong token (a 401,
/// and no secret in the status).
#[tokio::test]
async fn a_missing_endpoint_secret_or_a_wrong_token_are_reported_and_recovered_from() {
    let s = Harness::running().await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    let alice = "alice@example.com";
    cluster.create_invitation("team", spec(&[alice])).await;
    let inv = cluster.wait_for_reason("team", "EndpointNotFound").await;
    assert_eq!(state_of(&inv, alice), UserState::Pending);
    let journal = mock.api.journal();
    assert!(journal.is_empty(), "no API call without an endpoint");

    let (url, secret) = (&mock.url, "api-token");
    cluster.user_invite_endpoint("wavefront", url, secret).await;
    let message = cluster.wait_reason("team", "EndpointNotReady").await;
    assert!(message.contains(secret), "{message}");
    let journal = mock.api.journal();
    assert!(journal.is_empty(), "no API call without credentials");

    cluster.put_secret(secret, "wrong-token").await;
    let rejected = |st: &UserInvitationStatus| {
        reason_is("EndpointNotReady")(st) && ready_message(st).contains("401")
    };
    let what = "the token rejected";
    let inv = cluster.wait_status("team", what, rejected).await;
    let text = serde_json::to_string(&inv.status).unwrap();
    assert!(!text.contains("wrong-token"), "no secret in status");

    cluster.put_secret(secret, TOKEN).await;
    let inv = cluster.wait_ready("team").await;
    assert_eq!(state_of(&inv, alice), UserState::Invited);
    assert_sent(mock, &[alice], 1);
    s.finish().await;
}

/// A resource naming a missing endpoint waits for it without a timer: no pass at all while it
/// is missing (with 10,000 such resources, a retry each took the controller's schedule 5 MiB),
/// and one at once when it appears (the endpoint watch starts it).
#[tokio::test]
async fn a_resource_naming_a_missing_endpoint_waits_for_it_without_retrying() {
    let s = Harness::running().await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    let controller = s.controller.as_ref().expect("running");
    let alice = "alice@example.com";
    cluster.create_invitation("team", spec(&[alice])).await;
    cluster.wait_for_reason("team", "EndpointNotFound").await;
    eventually("the pass to end", async || controller.reconciles() >= 1).await;
    let passes = controller.reconciles();
    // Three times the longest retry delay of the tests' settings.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        controller.reconciles(),
        passes,
        "passes while nothing changed"
    );
    cluster.put_secret("api-token", TOKEN).await;
    cluster
        .user_invite_endpoint("wavefront", &mock.url, "api-token")
        .await;
    let inv = cluster.wait_ready("team").await;
    assert_eq!(state_of(&inv, alice), UserState::Invited);
    s.finish().await;
}

#[tokio::test]
async fn cluster_endpoints_enforce_namespace_selector_and_allowed_grants() {
    let mut s = Harness::start().await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    cluster.put_secret("api-token", TOKEN).await;
    let name = cluster.unique("shared");
    let endpoint = json!({
        "api": "UserInvite",
        "url": mock.url,
        "credentials": {"secretRef": {"name": "api-token", "namespace": cluster.namespace}},
        "namespaceSelector": {"matchLabels": {"invite-e2e": "true"}},
        "allowed": {"groups": ["dashboard_management"]}
    });
    cluster.cluster_endpoint(&name, endpoint).await;
    s.start_controller();
    let (cluster, mock) = (&s.cluster, &s.mock);
    let spec = |group: &str| {
        json!({
            "endpointRef": {"kind": "ClusterInvitationEndpoint", "name": name},
            "users": [{"emailAddress": "alice@example.com", "groups": [group], "userGroups": []}]
        })
    };
    let (too_much, fine) = (spec("user_management"), spec("dashboard_management"));
    cluster.create_invitation("too-much", too_much).await;
    let message = cluster.wait_reason("too-much", "NotAllowed").await;
    assert!(message.contains("user_management"), "{message}");
    cluster.create_ready("fine", fine).await;
    assert_sent(mock, &["alice@example.com"], 1);
    s.finish().await;
}

#[tokio::test]
async fn an_api_mismatch_and_a_pause_make_no_api_calls() {
    let s = Harness::user_invite_running().await;
    let cluster = &s.cluster;
    let mismatch = org_spec("wavefront", &["bob@example.com"], "org_member");
    cluster.create_invitation("org", mismatch).await;
    let message = cluster.wait_reason("org", "EndpointMismatch").await;
    assert!(message.contains("OrgInvitation"), "{message}");

    let paused = json!({"name": "paused", "annotations": {"invite.operators.dev/paused": "true"}});
    let spec = spec(&["paula@example.com"]);
    cluster.create_invitation_with(paused, spec).await;
    cluster.wait_for_reason("paused", "Paused").await;
    let journal = s.mock.api.journal();
    assert!(journal.is_empty(), "{journal:?}");
    s.finish().await;
}

#[tokio::test]
async fn the_controller_waits_for_its_crds_instead_of_exiting() {
    // Needs an API server without the CRDs: an in-process one of its own, also when the
    // suite runs against a real cluster.
    let server = kube_test_apiserver::TestApiServer::start().await;
    let client = invite_operator::controller::kube_client(server.config(), KUBERNETES_REQUESTS);
    let controller = RunningController::start(client.unwrap(), base_settings("default"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*controller.readiness.borrow(), Readiness::WaitingForCrds);
    let running = !controller.is_finished();
    assert!(running, "still running while the CRDs are missing");
    let crds = kube::Api::all(server.client());
    for crd in invite_operator::api::all_crds() {
        crds.create(&Default::default(), &crd).await.unwrap();
    }
    let mut readiness = controller.readiness.clone();
    let ready = readiness.wait_for(|r| *r == Readiness::Ready);
    let ready = tokio::time::timeout(WAIT, ready).await;
    ready.expect("ready once the CRDs exist").unwrap();
    controller.stop().await;
    server.shutdown().await;
}
