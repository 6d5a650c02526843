//! End-to-end tests of the OrgInvitation flow (seed 002): the real controller, the in-process
//! Kubernetes API server (or a real cluster) and the mock of the organization API.

use std::time::Duration;

use crate::common::{flavor::*, *};
use invite_mock::{JournalEntry, MockConfig, RunningMock, ScriptedFault};
use invite_operator::api::{UserInvitationStatus, UserState};
use serde_json::{Value, json};

/// The bodies of the answered invite calls.
fn invite_posts(mock: &RunningMock) -> Vec<Value> {
    let journal = mock.api.journal().into_iter();
    let answered = journal.filter(|e| Flavor::OrgInvitation.is_invite_post(e) && e.status != 0);
    answered.map(|e| e.body).collect()
}

fn token_exchanges(mock: &RunningMock) -> usize {
    let journal = mock.api.journal();
    let exchanged = |e: &&JournalEntry| e.is_token_exchange() && e.status == 200;
    journal.iter().filter(exchanged).count()
}

/// Whether the API refused a call with 401.
fn saw_401(mock: &RunningMock) -> bool {
    mock.api.journal().iter().any(|e| e.status == 401)
}

/// The team's OrgInvitation spec: `usernames` as organization members, invited by the platform.
fn spec(usernames: &[&str]) -> Value {
    let invited_by = json!({"orgInvitation": {"invitedBy": "platform@example.com"}});
    with(org_spec("csp", usernames, "org_member"), invited_by)
}

/// A scripted answer `status` with `message` to every invite call.
fn refusal(status: u16, message: &str) -> ScriptedFault {
    let fault = ScriptedFault::new(status).message(message);
    Flavor::OrgInvitation.on_invite(fault)
}

const DANA: &str = "dana@example.com";

/// Sets the usernames of the resource `org`; waits until they are all invited.
async fn set_usernames(s: &Harness, usernames: &[&str]) {
    let spec = json!({"orgInvitation": {"usernames": usernames}});
    s.cluster.patch_spec("org", spec).await;
    let all = |st: &UserInvitationStatus| st.invited as usize == usernames.len() && is_ready(st);
    let what = "the usernames invited";
    let inv = s.cluster.wait_status("org", what, all).await;
    for username in usernames {
        assert_eq!(state_of(&inv, username), UserState::Invited, "{username}");
    }
}

#[tokio::test]
async fn create_invites_with_one_call_and_records_invitation_references() {
    let s = Harness::org_invitation_running().await;
    let people = [DANA, "eve@example.com"];
    let inv = s.cluster.create_ready("org", spec(&people)).await;
    let status = status_of(&inv);
    assert_eq!(status.invited, 2);
    for user in &status.users {
        assert_eq!(user.state, UserState::Invited);
        let reference = user.identifier.as_deref().unwrap();
        assert!(reference.contains("/invitations/"), "{reference}");
        let (invited, expires) = (user.invited_at.unwrap(), user.expires_at.unwrap());
        let expires = expires.duration_since(invited);
        let week = jiff::SignedDuration::from_hours(24 * 7);
        assert!((expires - week).as_secs().abs() <= 2, "{expires}");
    }
    assert_eq!(status.invited_users, people);
    let posts = invite_posts(&s.mock);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["usernames"], json!(people));
    let roles = &posts[0]["organizationRoles"];
    assert_eq!(roles, &json!([{"name": "org_member"}]));
    assert_eq!(posts[0]["invitedBy"], json!("platform@example.com"));
    assert_sent(&s.mock, &[DANA], 1);
    s.finish().await;
}

/// A username added to a resource is invited alone, with the cached access token; once every
/// access token expired, the next call gets a 401, exchanges again and goes on: nothing is
/// lost. (The restart: `restart_sends_nothing_again_and_writes_nothing_orginvitation`.)
#[tokio::test]
async fn an_added_username_is_invited_alone_and_an_expired_access_token_is_replaced() {
    let s = Harness::org_invitation_running().await;
    s.cluster.create_ready("org", spec(&[DANA])).await;
    assert_eq!(token_exchanges(&s.mock), 1, "the access token is cached");
    let frank = "frank@example.com";
    set_usernames(&s, &[DANA, frank]).await;
    let posts = invite_posts(&s.mock);
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1]["usernames"], json!([frank]));
    assert_eq!(token_exchanges(&s.mock), 1, "the access token is cached");

    s.mock.api.expire_access_tokens();
    set_usernames(&s, &[DANA, frank, "gus@example.com"]).await;
    assert_eq!(token_exchanges(&s.mock), 2);
    assert!(saw_401(&s.mock), "a 401 was seen and handled");
    assert_sent(&s.mock, &["gus@example.com", frank, DANA], 1);
    s.finish().await;
}

#[tokio::test]
async fn members_and_pending_invitations_are_not_invited_again() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    let (member, pending) = ("member@example.com", "pending@example.com");
    s.mock.api.seed_org_member(member);
    s.start_controller();
    // Another resource already invited pending@example.com.
    s.cluster.create_ready("first", spec(&[pending])).await;
    let both = spec(&[member, pending]);
    let inv = s.cluster.create_ready("second", both).await;
    assert_eq!(state_of(&inv, member), UserState::AlreadyMember);
    assert_eq!(state_of(&inv, pending), UserState::Invited);
    assert_sent(&s.mock, &[pending], 1);
    assert_sent(&s.mock, &[member], 0);
    assert_eq!(invite_posts(&s.mock).len(), 1);
    s.finish().await;
}

#[tokio::test]
async fn a_refused_user_fails_alone_and_whole_request_errors_are_retried() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    // Two 500s on the invite call, then the real answer: the operator role may only go to
    // vmware.com users, so one of the two is refused.
    let server_error = ScriptedFault::new(500).times(2);
    s.mock
        .api
        .add_fault(Flavor::OrgInvitation.on_invite(server_error));
    s.start_controller();
    let (ops, outsider) = ("ops@vmware.com", "outsider@example.com");
    let spec = org_spec("csp", &[ops, outsider], "platform_operator");
    s.cluster.create_invitation("ops", spec).await;
    let inv = s.cluster.wait_for_reason("ops", "PartiallyFailed").await;
    assert_eq!(state_of(&inv, ops), UserState::Invited);
    assert_eq!(state_of(&inv, outsider), UserState::Failed);
    let message = entry(status_of(&inv), outsider).unwrap().message.clone();
    let message = message.unwrap_or_default().to_lowercase();
    assert!(message.contains("operator"), "{message}");
    assert_sent(&s.mock, &[ops], 1);
    assert_sent(&s.mock, &[outsider], 0);
    s.finish().await;
}

#[tokio::test]
async fn an_unknown_organization_is_an_endpoint_problem() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    let (url, cluster) = (&s.mock.url, &s.cluster);
    let (secret, org) = ("csp-token", "no-such-org");
    cluster.org_endpoint("csp", url, secret, org).await;
    s.start_controller();
    s.cluster.create_invitation("org", spec(&[DANA])).await;
    let message = s.cluster.wait_reason("org", "EndpointNotReady").await;
    let named = message.contains("no-such-org") || message.contains("not found");
    assert!(named, "{message}");
    assert_sent(&s.mock, &[DANA], 0);
    s.finish().await;
}

#[tokio::test]
async fn short_lived_access_tokens_are_refreshed_before_they_expire() {
    let access_token_ttl = Duration::from_millis(600);
    let config = MockConfig {
        access_token_ttl,
        ..Default::default()
    };
    let mut s = Harness::org_invitation(config).await;
    s.start_controller();
    s.cluster.create_ready("a", spec(&["a@example.com"])).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.cluster.create_ready("b", spec(&["b@example.com"])).await;
    assert!(token_exchanges(&s.mock) >= 2);
    let refused = saw_401(&s.mock);
    assert!(!refused, "refreshed before expiry, so no call was refused");
    s.finish().await;
}

#[tokio::test]
async fn acceptance_is_observed_on_resync() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    s.start_controller_resyncing(Duration::from_millis(200));
    let eve = "eve@example.com";
    s.cluster.create_ready("org", spec(&[DANA, eve])).await;
    assert!(s.mock.api.redeem_invitation(DANA));
    let accepted = |st: &_| state(st, DANA) == Some(UserState::Accepted);
    let (cluster, what) = (&s.cluster, "dana accepted");
    let inv = cluster.wait_status("org", what, accepted).await;
    assert_eq!(state_of(&inv, eve), UserState::Invited);
    assert!(is_ready(status_of(&inv)));
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

/// How many invite calls carried `username`.
fn posts_carrying(mock: &RunningMock, username: &str) -> usize {
    Flavor::OrgInvitation.invite_posts_for(mock, username).len()
}

/// A refused call that created the invitations anyway (a gateway refusing after the backend
/// acted): the usernames are found invited before anything is posted again, and none is
/// posted twice.
#[tokio::test]
async fn a_refused_batch_that_invited_anyway_is_not_posted_again() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    let refused = refusal(400, "Request could not be processed");
    s.mock.api.add_fault(refused.after_effect(true));
    s.start_controller();
    let people = [DANA, "eve@example.com", "fay@example.com"];
    let inv = s.cluster.create_ready("org", spec(&people)).await;
    let status = status_of(&inv);
    for user in &status.users {
        assert_eq!(user.state, UserState::Invited, "{status:?}");
    }
    for person in people {
        assert_eq!(posts_carrying(&s.mock, person), 1, "{person} posted once");
    }
    assert_sent(&s.mock, &people, 1);
    s.finish().await;
}

/// A refusal that names nobody never makes another resource's username `Rejected`: three
/// resources share one refused call; only the usernames refused alone fail, and the one in
/// the middle (another resource's) is invited.
#[tokio::test]
async fn a_refusal_that_names_nobody_fails_no_other_resources_usernames() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    let refused = refusal(400, "Role not found").body_contains("bad-");
    s.mock.api.add_fault(refused.times(100));
    // A long collection window, so that the three resources share one call.
    let mut settings = s.cluster.settings();
    settings.batch.window = Duration::from_secs(2);
    settings.batch.linger = settings.batch.window;
    s.start_controller_with(settings);
    let people = ["bad-1@example.com", "good@example.com", "bad-2@example.com"];
    for (i, person) in people.iter().enumerate() {
        let name = format!("r{i}");
        s.cluster.create_invitation(&name, spec(&[person])).await;
    }
    let mut states = Vec::new();
    for (i, person) in people.iter().enumerate() {
        let settled = |st: &UserInvitationStatus| st.users.iter().all(|u| !u.state.is_waiting());
        let name = format!("r{i}");
        let inv = s.cluster.wait_status(&name, "settled", settled).await;
        states.push(state_of(&inv, person));
    }
    let posts = invite_posts(&s.mock);
    let shared = posts
        .iter()
        .any(|body| body["usernames"].as_array().is_some_and(|u| u.len() == 3));
    assert!(shared, "one call carried all three: {posts:?}");
    let want = [UserState::Failed, UserState::Invited, UserState::Failed];
    assert_eq!(states, want, "only the usernames refused alone fail");
    assert_sent(&s.mock, &["good@example.com"], 1);
    s.finish().await;
}

/// A member listing that returns fewer members per page than asked (50 of 200) is read to
/// its end: a member on the third page is found, not invited.
#[tokio::test]
async fn member_paging_follows_the_page_size_the_server_returns() {
    let config = MockConfig {
        max_member_page: 50,
        ..MockConfig::default()
    };
    let mut s = Harness::org_invitation(config).await;
    let members: Vec<String> = (0..130).map(|i| format!("m{i:03}@example.com")).collect();
    s.mock
        .api
        .seed_org_members(members.iter().map(String::as_str));
    s.start_controller();
    let (member, new) = ("m120@example.com", "new@example.com");
    let inv = s.cluster.create_ready("org", spec(&[member, new])).await;
    let state = state_of(&inv, member);
    assert_eq!(state, UserState::AlreadyMember, "{:?}", inv.status);
    assert_eq!(posts_carrying(&s.mock, member), 0);
    assert_eq!(posts_carrying(&s.mock, new), 1);
    s.finish().await;
}
