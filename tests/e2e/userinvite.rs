//! End-to-end tests of the UserInvite flow: the real controller against the in-process
//! Kubernetes API server (or a real cluster) and the stateful mock API over real HTTP.

use std::time::Duration;

use crate::common::{flavor::*, *};
use invite_mock::ScriptedFault;
use invite_operator::api::UserState;
use kube::ResourceExt;
use serde_json::{Value, json};

fn invite_calls(mock: &invite_mock::RunningMock) -> Vec<Value> {
    mock.api
        .journal()
        .into_iter()
        .filter(|e| e.method == "POST" && e.path == "/api/v2/user/invite")
        .map(|e| e.body)
        .collect()
}

fn invited_in(body: &Value) -> Vec<String> {
    body.as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["emailAddress"].as_str().map(str::to_string))
        .collect()
}

/// The team's spec: `emails`, each with the `dashboard_management` permission.
fn spec(emails: &[&str]) -> Value {
    users_spec("wavefront", emails, &["dashboard_management"])
}

#[tokio::test]
async fn create_invites_every_user_with_one_call_and_reports_ready() {
    let s = Harness::user_invite_running().await;
    let inv = s
        .cluster
        .create_ready(
            "team",
            spec(&["alice@example.com", "Bob@Example.com", "carol@example.com"]),
        )
        .await;
    let status = inv.status.clone().unwrap();
    assert_eq!(
        ready(&status),
        ("True".to_string(), "AllInvited".to_string())
    );
    assert_eq!(status.invited, 3);
    assert_eq!(status.failed, 0);
    assert_eq!(status.observed_generation, inv.metadata.generation);
    assert_eq!(status.invited_users.len(), 3);
    for user in &status.users {
        assert_eq!(user.state, UserState::Invited, "{user:?}");
        assert!(user.invited_at.is_some() && user.expires_at.is_some());
        assert_eq!(
            user.expires_at
                .unwrap()
                .duration_since(user.invited_at.unwrap()),
            jiff::SignedDuration::from_hours(24)
        );
    }
    let calls = invite_calls(&s.mock);
    assert_eq!(calls.len(), 1, "one batched invite call: {calls:?}");
    assert_eq!(invited_in(&calls[0]).len(), 3);
    for email in ["alice@example.com", "bob@example.com", "carol@example.com"] {
        assert_eq!(s.mock.api.invitations_sent_to(email), 1, "{email}");
    }
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
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "no Kubernetes write on a no-op restart"
    );
    let changes = changes_since(&s.mock, journal_before);
    assert!(
        changes.is_empty(),
        "no API call that changes anything: {changes:?}"
    );
    assert_eq!(flavor.invite_posts(&s.mock).len(), 1);
    s.controller = Some(restarted);
    s.finish().await;
}

per_flavor!(
    restart_sends_nothing_again_and_writes_nothing() =>
    restart_sends_nothing_again_and_writes_nothing_userinvite,
    restart_sends_nothing_again_and_writes_nothing_orginvitation
);

#[tokio::test]
async fn an_added_user_is_invited_alone() {
    let s = Harness::user_invite_running().await;
    s.cluster
        .create_ready("team", spec(&["alice@example.com", "bob@example.com"]))
        .await;
    s.cluster
        .patch_spec(
            "team",
            spec(&["alice@example.com", "bob@example.com", "dave@example.com"]),
        )
        .await;
    let inv = s
        .cluster
        .wait_status("team", "dave invited", |st| st.invited == 3 && is_ready(st))
        .await;
    assert_eq!(state_of(&inv, "dave@example.com"), UserState::Invited);
    let calls = invite_calls(&s.mock);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(invited_in(&calls[1]), vec!["dave@example.com"]);
    assert_eq!(s.mock.api.invitations_sent_to("alice@example.com"), 1);
    s.finish().await;
}

#[tokio::test]
async fn a_rejected_user_fails_alone_with_the_api_message() {
    let s = Harness::user_invite_running().await;
    let spec = json!({
        "endpointRef": {"kind": "InvitationEndpoint", "name": "wavefront"},
        "users": [
            {"emailAddress": "alice@example.com", "groups": ["dashboard_management"], "userGroups": []},
            {"emailAddress": "mallory@example.com", "groups": ["no_such_permission"], "userGroups": []},
            {"emailAddress": "carol@example.com", "groups": [], "userGroups": []},
        ]
    });
    s.cluster.create_invitation("team", spec).await;
    let inv = s.cluster.wait_for_reason("team", "PartiallyFailed").await;
    let status = inv.status.clone().unwrap();
    assert_eq!(state_of(&inv, "alice@example.com"), UserState::Invited);
    assert_eq!(state_of(&inv, "carol@example.com"), UserState::Invited);
    assert_eq!(state_of(&inv, "mallory@example.com"), UserState::Failed);
    let mallory = status
        .users
        .iter()
        .find(|u| u.email_address == "mallory@example.com")
        .unwrap();
    let message = mallory.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("no_such_permission"),
        "the API's message is kept: {message}"
    );
    assert_eq!((status.invited, status.failed), (2, 1));
    assert_eq!(s.mock.api.invitations_sent_to("alice@example.com"), 1);
    assert_eq!(s.mock.api.invitations_sent_to("mallory@example.com"), 0);
    s.finish().await;
}

#[tokio::test]
async fn transient_failures_are_retried_without_duplicates() {
    let s = Harness::user_invite_running().await;
    s.mock
        .api
        .add_fault(ScriptedFault::new(429).path("/api/v2/user/invite").times(2));
    s.cluster
        .create_ready("team", spec(&["alice@example.com", "bob@example.com"]))
        .await;
    assert_eq!(invite_calls(&s.mock).len(), 3, "two 429s, then success");
    assert_eq!(s.mock.api.invitations_sent_to("alice@example.com"), 1);
    assert_eq!(s.mock.api.invitations_sent_to("bob@example.com"), 1);
    s.finish().await;
}

#[tokio::test]
async fn a_lost_response_does_not_send_a_second_invitation() {
    let s = Harness::user_invite_running().await;
    // The API invites, then the answer is lost (a 503 after the fact).
    s.mock.api.add_fault(
        ScriptedFault::new(503)
            .path("/api/v2/user/invite")
            .times(1)
            .after_effect(true),
    );
    let inv = s
        .cluster
        .create_ready("team", spec(&["alice@example.com"]))
        .await;
    assert_eq!(state_of(&inv, "alice@example.com"), UserState::Invited);
    assert_eq!(invite_calls(&s.mock).len(), 1, "looked up, not re-posted");
    assert_eq!(s.mock.api.invitations_sent_to("alice@example.com"), 1);
    s.finish().await;
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
    let inv = s
        .cluster
        .create_ready("team", spec(&["old@example.com", "new@example.com"]))
        .await;
    assert_eq!(state_of(&inv, "old@example.com"), UserState::AlreadyMember);
    assert_eq!(state_of(&inv, "new@example.com"), UserState::Invited);
    assert_eq!(s.mock.api.invitations_sent_to("old@example.com"), 0);
    let calls = invite_calls(&s.mock);
    assert_eq!(calls.len(), 1);
    assert_eq!(invited_in(&calls[0]), vec!["new@example.com"]);
    s.finish().await;
}

#[tokio::test]
async fn a_missing_endpoint_then_secret_are_reported_and_recovered_from() {
    let s = Harness::running().await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    cluster
        .create_invitation("team", spec(&["alice@example.com"]))
        .await;
    let inv = cluster.wait_for_reason("team", "EndpointNotFound").await;
    assert_eq!(state_of(&inv, "alice@example.com"), UserState::Pending);
    assert!(
        mock.api.journal().is_empty(),
        "no API call without an endpoint"
    );

    cluster
        .user_invite_endpoint("wavefront", &mock.url, "api-token")
        .await;
    let message = cluster.wait_reason("team", "EndpointNotReady").await;
    assert!(message.contains("api-token"), "{message}");
    assert!(
        mock.api.journal().is_empty(),
        "no API call without credentials"
    );

    cluster.put_secret("api-token", "e2e-token").await;
    let inv = cluster.wait_ready("team").await;
    assert_eq!(state_of(&inv, "alice@example.com"), UserState::Invited);
    assert_eq!(mock.api.invitations_sent_to("alice@example.com"), 1);
    s.finish().await;
}

#[tokio::test]
async fn a_wrong_token_is_a_configuration_problem_until_fixed() {
    let mut s = Harness::start().await;
    s.cluster.put_secret("api-token", "wrong-token").await;
    s.cluster
        .user_invite_endpoint("wavefront", &s.mock.url, "api-token")
        .await;
    s.start_controller();
    let (cluster, mock) = (&s.cluster, &s.mock);
    cluster
        .create_invitation("team", spec(&["alice@example.com"]))
        .await;
    let inv = cluster.wait_for_reason("team", "EndpointNotReady").await;
    let status = inv.status.unwrap();
    assert!(ready_message(&status).contains("401"), "{status:?}");
    assert!(
        !serde_json::to_string(&status)
            .unwrap()
            .contains("wrong-token"),
        "no secret in status"
    );
    cluster.put_secret("api-token", "e2e-token").await;
    cluster.wait_ready("team").await;
    assert_eq!(mock.api.invitations_sent_to("alice@example.com"), 1);
    s.finish().await;
}

#[tokio::test]
async fn cluster_endpoints_enforce_namespace_selector_and_allowed_grants() {
    let mut s = Harness::start().await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    cluster.put_secret("api-token", "e2e-token").await;
    let name = cluster.unique("shared");
    cluster
        .cluster_endpoint(
            &name,
            json!({
                "api": "UserInvite",
                "url": mock.url,
                "credentials": {"secretRef": {"name": "api-token", "namespace": cluster.namespace}},
                "namespaceSelector": {"matchLabels": {"invite-e2e": "true"}},
                "allowed": {"groups": ["dashboard_management"]}
            }),
        )
        .await;
    s.start_controller();
    let (cluster, mock) = (&s.cluster, &s.mock);
    let spec = |groups: Value| {
        json!({
            "endpointRef": {"kind": "ClusterInvitationEndpoint", "name": name},
            "users": [{"emailAddress": "alice@example.com", "groups": groups, "userGroups": []}]
        })
    };
    cluster
        .create_invitation("too-much", spec(json!(["user_management"])))
        .await;
    let message = cluster.wait_reason("too-much", "NotAllowed").await;
    assert!(message.contains("user_management"), "{message}");
    cluster
        .create_ready("fine", spec(json!(["dashboard_management"])))
        .await;
    assert_eq!(mock.api.invitations_sent_to("alice@example.com"), 1);
    s.finish().await;
}

#[tokio::test]
async fn an_api_mismatch_and_a_pause_make_no_api_calls() {
    let s = Harness::user_invite_running().await;
    let mismatch = org_spec("wavefront", &["bob@example.com"], "org_member");
    s.cluster.create_invitation("org", mismatch).await;
    let message = s.cluster.wait_reason("org", "EndpointMismatch").await;
    assert!(message.contains("OrgInvitation"), "{message}");

    let paused = json!({"name": "paused", "annotations": {"invite.operators.dev/paused": "true"}});
    s.cluster
        .create_invitation_with(paused, spec(&["paula@example.com"]))
        .await;
    s.cluster.wait_for_reason("paused", "Paused").await;
    assert!(
        s.mock.api.journal().is_empty(),
        "{:?}",
        s.mock.api.journal()
    );
    s.finish().await;
}

#[tokio::test]
async fn the_controller_waits_for_its_crds_instead_of_exiting() {
    // Needs an API server without the CRDs: an in-process one of its own, also when the
    // suite runs against a real cluster.
    let server = kube_test_apiserver::TestApiServer::start().await;
    let controller = RunningController::start(
        invite_operator::controller::kube_client(
            server.config(),
            crate::common::KUBERNETES_REQUESTS,
        )
        .unwrap(),
        base_settings("default"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *controller.readiness.borrow(),
        invite_operator::health::Readiness::WaitingForCrds
    );
    assert!(
        !controller.is_finished(),
        "still running while the CRDs are missing"
    );
    let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        kube::Api::all(server.client());
    for crd in invite_operator::api::all_crds() {
        crds.create(&Default::default(), &crd).await.unwrap();
    }
    let mut readiness = controller.readiness.clone();
    tokio::time::timeout(
        WAIT,
        readiness.wait_for(|r| *r == invite_operator::health::Readiness::Ready),
    )
    .await
    .expect("ready once the CRDs exist")
    .unwrap();
    controller.stop().await;
    server.shutdown().await;
}
