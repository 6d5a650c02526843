//! End-to-end tests of the OrgInvitation flow (seed 002): the real controller, the in-process
//! Kubernetes API server (or a real cluster) and the mock of the organization API.

use std::time::Duration;

use crate::common::*;
use invite_mock::{MockConfig, ScriptedFault};
use invite_operator::api::UserState;
use serde_json::{Value, json};

fn invite_posts(mock: &invite_mock::RunningMock) -> Vec<Value> {
    mock.api
        .journal()
        .into_iter()
        .filter(|e| e.method == "POST" && e.path.ends_with("/invitations") && e.status != 0)
        .map(|e| e.body)
        .collect()
}

fn token_exchanges(mock: &invite_mock::RunningMock) -> usize {
    mock.api
        .journal()
        .iter()
        .filter(|e| e.path.ends_with("/auth/api-tokens/authorize") && e.status == 200)
        .count()
}

/// The team's OrgInvitation spec: `usernames` as organization members, invited by the platform.
fn spec(usernames: &[&str]) -> Value {
    with(
        org_spec("csp", usernames, "org_member"),
        json!({"orgInvitation": {"invitedBy": "platform@example.com"}}),
    )
}

/// The controller running and the resource `org` of dana Ready.
async fn dana_ready() -> Harness {
    let s = Harness::org_invitation_running().await;
    s.cluster
        .create_ready("org", spec(&["dana@example.com"]))
        .await;
    s
}

/// Adds `username` to the resource `org` of dana; waits until it is invited.
async fn add_to_dana(s: &Harness, username: &str) {
    let usernames = json!({"orgInvitation": {"usernames": ["dana@example.com", username]}});
    s.cluster.patch_spec("org", usernames).await;
    let inv = s
        .cluster
        .wait_status("org", username, |st| st.invited == 2 && is_ready(st))
        .await;
    assert_eq!(state_of(&inv, username), UserState::Invited);
}

#[tokio::test]
async fn create_invites_with_one_call_and_records_invitation_references() {
    let s = Harness::org_invitation_running().await;
    let inv = s
        .cluster
        .create_ready("org", spec(&["dana@example.com", "eve@example.com"]))
        .await;
    let status = inv.status.clone().unwrap();
    assert_eq!(status.invited, 2);
    for user in &status.users {
        assert_eq!(user.state, UserState::Invited);
        let reference = user.identifier.as_deref().unwrap();
        assert!(reference.contains("/invitations/"), "{reference}");
        let expires = user
            .expires_at
            .unwrap()
            .duration_since(user.invited_at.unwrap());
        assert!(
            (expires - jiff::SignedDuration::from_hours(24 * 7))
                .as_secs()
                .abs()
                <= 2,
            "{expires}"
        );
    }
    assert_eq!(
        status.invited_users,
        vec!["dana@example.com", "eve@example.com"]
    );
    let posts = invite_posts(&s.mock);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(
        posts[0]["usernames"],
        json!(["dana@example.com", "eve@example.com"])
    );
    assert_eq!(
        posts[0]["organizationRoles"],
        json!([{"name": "org_member"}])
    );
    assert_eq!(posts[0]["invitedBy"], json!("platform@example.com"));
    assert_eq!(s.mock.api.invitations_sent_to("dana@example.com"), 1);
    s.finish().await;
}

/// (The restart: `restart_sends_nothing_again_and_writes_nothing_orginvitation`.)
#[tokio::test]
async fn an_added_username_is_invited_alone() {
    let s = dana_ready().await;
    add_to_dana(&s, "frank@example.com").await;
    let posts = invite_posts(&s.mock);
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1]["usernames"], json!(["frank@example.com"]));
    assert_eq!(s.mock.api.invitations_sent_to("dana@example.com"), 1);
    s.finish().await;
}

#[tokio::test]
async fn members_and_pending_invitations_are_not_invited_again() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    s.mock.api.seed_org_member("member@example.com");
    s.start_controller();
    // Another resource already invited pending@example.com.
    s.cluster
        .create_ready("first", spec(&["pending@example.com"]))
        .await;
    let inv = s
        .cluster
        .create_ready(
            "second",
            spec(&["member@example.com", "pending@example.com"]),
        )
        .await;
    assert_eq!(
        state_of(&inv, "member@example.com"),
        UserState::AlreadyMember
    );
    assert_eq!(state_of(&inv, "pending@example.com"), UserState::Invited);
    assert_eq!(s.mock.api.invitations_sent_to("pending@example.com"), 1);
    assert_eq!(s.mock.api.invitations_sent_to("member@example.com"), 0);
    assert_eq!(invite_posts(&s.mock).len(), 1);
    s.finish().await;
}

#[tokio::test]
async fn a_refused_user_fails_alone_and_whole_request_errors_are_retried() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    // Two 500s on the invite call, then the real answer: the operator role may only go to
    // vmware.com users, so one of the two is refused.
    s.mock.api.add_fault(
        ScriptedFault::new(500)
            .method("POST")
            .path(&format!("/csp/gateway/am/api/orgs/{ORG}/invitations"))
            .times(2),
    );
    s.start_controller();
    let spec = json!({
        "endpointRef": {"kind": "InvitationEndpoint", "name": "csp"},
        "orgInvitation": {
            "usernames": ["ops@vmware.com", "outsider@example.com"],
            "organizationRoles": [{"name": "platform_operator"}]
        }
    });
    s.cluster.create_invitation("ops", spec).await;
    let inv = s.cluster.wait_for_reason("ops", "PartiallyFailed").await;
    assert_eq!(state_of(&inv, "ops@vmware.com"), UserState::Invited);
    assert_eq!(state_of(&inv, "outsider@example.com"), UserState::Failed);
    let outsider = inv
        .status
        .as_ref()
        .unwrap()
        .users
        .iter()
        .find(|u| u.email_address == "outsider@example.com")
        .unwrap()
        .clone();
    assert!(
        outsider
            .message
            .unwrap_or_default()
            .to_lowercase()
            .contains("operator")
    );
    assert_eq!(s.mock.api.invitations_sent_to("ops@vmware.com"), 1);
    assert_eq!(s.mock.api.invitations_sent_to("outsider@example.com"), 0);
    s.finish().await;
}

#[tokio::test]
async fn an_unknown_organization_is_an_endpoint_problem() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    s.cluster
        .org_endpoint("csp", &s.mock.url, "csp-token", "no-such-org")
        .await;
    s.start_controller();
    s.cluster
        .create_invitation("org", spec(&["dana@example.com"]))
        .await;
    let message = s.cluster.wait_reason("org", "EndpointNotReady").await;
    assert!(
        message.contains("no-such-org") || message.contains("not found"),
        "{message}"
    );
    assert_eq!(s.mock.api.invitations_sent_to("dana@example.com"), 0);
    s.finish().await;
}

#[tokio::test]
async fn an_expired_access_token_is_replaced_and_nothing_is_lost() {
    let s = dana_ready().await;
    assert_eq!(token_exchanges(&s.mock), 1, "the access token is cached");
    // Every access token expires; the next call gets a 401, exchanges again and goes on.
    s.mock.api.expire_access_tokens();
    add_to_dana(&s, "gus@example.com").await;
    assert_eq!(token_exchanges(&s.mock), 2);
    assert!(
        s.mock.api.journal().iter().any(|e| e.status == 401),
        "a 401 was seen and handled"
    );
    assert_eq!(s.mock.api.invitations_sent_to("gus@example.com"), 1);
    assert_eq!(s.mock.api.invitations_sent_to("dana@example.com"), 1);
    s.finish().await;
}

#[tokio::test]
async fn short_lived_access_tokens_are_refreshed_before_they_expire() {
    let mut s = Harness::org_invitation(MockConfig {
        access_token_ttl: Duration::from_millis(600),
        ..Default::default()
    })
    .await;
    s.start_controller();
    s.cluster.create_ready("a", spec(&["a@example.com"])).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.cluster.create_ready("b", spec(&["b@example.com"])).await;
    assert!(token_exchanges(&s.mock) >= 2);
    assert!(
        !s.mock.api.journal().iter().any(|e| e.status == 401),
        "refreshed before expiry, so no call was refused"
    );
    s.finish().await;
}

#[tokio::test]
async fn acceptance_is_observed_on_resync() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    let mut settings = s.cluster.settings();
    settings.resync_interval = Duration::from_millis(200);
    s.start_controller_with(settings);
    s.cluster
        .create_ready("org", spec(&["dana@example.com", "eve@example.com"]))
        .await;
    assert!(s.mock.api.redeem_invitation("dana@example.com"));
    let inv = s
        .cluster
        .wait_status("org", "dana accepted", |st| {
            st.users
                .iter()
                .any(|u| u.email_address == "dana@example.com" && u.state == UserState::Accepted)
        })
        .await;
    assert_eq!(state_of(&inv, "eve@example.com"), UserState::Invited);
    assert!(is_ready(inv.status.as_ref().unwrap()));
    assert_eq!(invite_posts(&s.mock).len(), 1);
    s.finish().await;
}

#[tokio::test]
async fn users_on_an_org_endpoint_is_a_mismatch() {
    let s = Harness::org_invitation_running().await;
    let spec = users_spec("csp", &["a@example.com"], &[]);
    s.cluster.create_invitation("wrong", spec).await;
    let message = s.cluster.wait_reason("wrong", "EndpointMismatch").await;
    assert!(message.contains("UserInvite"), "{message}");
    // Only the endpoint's own credential check (the token exchange) reaches the API.
    assert_eq!(api_calls(&s.mock), Vec::<String>::new());
    s.finish().await;
}

/// The invite-call bodies that carried `username`.
fn posts_carrying(mock: &invite_mock::RunningMock, username: &str) -> usize {
    invite_posts(mock)
        .iter()
        .filter(|body| {
            body["usernames"]
                .as_array()
                .is_some_and(|u| u.iter().any(|n| n == username))
        })
        .count()
}

/// A refused call that created the invitations anyway (a gateway refusing after the backend
/// acted): the usernames are found invited before anything is posted again, and none is
/// posted twice.
#[tokio::test]
async fn a_refused_batch_that_invited_anyway_is_not_posted_again() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    let mut refused = ScriptedFault::new(400)
        .method("POST")
        .path(&format!("/csp/gateway/am/api/orgs/{ORG}/invitations"));
    refused.after_effect = true;
    refused.message = Some("Request could not be processed".into());
    s.mock.api.add_fault(refused);
    s.start_controller();
    let people = ["dana@example.com", "eve@example.com", "fay@example.com"];
    let inv = s.cluster.create_ready("org", spec(&people)).await;
    let status = inv.status.unwrap();
    for user in &status.users {
        assert_eq!(user.state, UserState::Invited, "{status:?}");
    }
    for person in people {
        assert_eq!(posts_carrying(&s.mock, person), 1, "{person} posted once");
        assert_eq!(s.mock.api.invitations_sent_to(person), 1, "{person}");
    }
    s.finish().await;
}

/// A refusal that names nobody never makes another resource's username `Rejected`: three
/// resources share one refused call; only the usernames refused alone fail, and the one in
/// the middle (another resource's) is invited.
#[tokio::test]
async fn a_refusal_that_names_nobody_fails_no_other_resources_usernames() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    let mut refused = ScriptedFault::new(400)
        .method("POST")
        .path(&format!("/csp/gateway/am/api/orgs/{ORG}/invitations"))
        .body_contains("bad-")
        .times(100);
    refused.message = Some("Role not found".into());
    s.mock.api.add_fault(refused);
    // A long collection window, so that the three resources share one call.
    let mut settings = s.cluster.settings();
    settings.batch.window = Duration::from_secs(2);
    settings.batch.linger = settings.batch.window;
    s.start_controller_with(settings);
    let people = ["bad-1@example.com", "good@example.com", "bad-2@example.com"];
    for (i, person) in people.iter().enumerate() {
        s.cluster
            .create_invitation(&format!("r{i}"), spec(&[person]))
            .await;
    }
    for i in 0..people.len() {
        s.cluster
            .wait_status(&format!("r{i}"), "settled", |st| {
                st.users.iter().all(|u| !u.state.is_waiting())
            })
            .await;
    }
    let shared = invite_posts(&s.mock)
        .iter()
        .any(|body| body["usernames"].as_array().is_some_and(|u| u.len() == 3));
    assert!(
        shared,
        "one call carried all three: {:?}",
        invite_posts(&s.mock)
    );
    let mut states = Vec::new();
    for (i, person) in people.iter().enumerate() {
        let inv = s.cluster.invitations().get(&format!("r{i}")).await.unwrap();
        states.push(state_of(&inv, person));
    }
    assert_eq!(
        states,
        [UserState::Failed, UserState::Invited, UserState::Failed],
        "only the usernames refused alone fail"
    );
    assert_eq!(s.mock.api.invitations_sent_to("good@example.com"), 1);
    s.finish().await;
}

/// A member listing that returns fewer members per page than asked (50 of 200) is read to
/// its end: a member on the third page is found, not invited.
#[tokio::test]
async fn member_paging_follows_the_page_size_the_server_returns() {
    let mut s = Harness::org_invitation(MockConfig {
        max_member_page: 50,
        ..MockConfig::default()
    })
    .await;
    let members: Vec<String> = (0..130).map(|i| format!("m{i:03}@example.com")).collect();
    s.mock
        .api
        .seed_org_members(members.iter().map(String::as_str));
    s.start_controller();
    let inv = s
        .cluster
        .create_ready("org", spec(&["m120@example.com", "new@example.com"]))
        .await;
    assert_eq!(
        state_of(&inv, "m120@example.com"),
        UserState::AlreadyMember,
        "{:?}",
        inv.status
    );
    assert_eq!(posts_carrying(&s.mock, "m120@example.com"), 0);
    assert_eq!(posts_carrying(&s.mock, "new@example.com"), 1);
    s.finish().await;
}
