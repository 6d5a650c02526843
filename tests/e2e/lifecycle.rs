//! End-to-end tests of the lifecycle after the first invitation: Enforce and drift,
//! deletion policies and the finalizer, acceptance and expiry on resync, two resources naming
//! one person, adoption, and the events for every change made in the API.

use std::time::Duration;

use crate::common::*;
use invite_mock::{MockConfig, RunningMock};
use invite_operator::api::{
    InvitationEndpoint, Ownership, UserInvitation, UserInvitationStatus, UserState, UserStatus,
};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

/// Whether a status has `n` users.
fn has_users(n: usize) -> impl Fn(&UserInvitationStatus) -> bool {
    move |s| s.users.len() == n
}

fn has_state(email: &'static str, state: UserState) -> impl Fn(&UserInvitationStatus) -> bool {
    move |s| crate::common::flavor::state(s, email) == Some(state)
}

/// Whether `u`'s invitation is `Invited` and not expired.
fn invited_and_fresh(u: &UserStatus) -> bool {
    u.state == UserState::Invited && u.expires_at.is_some_and(|t| t > jiff::Timestamp::now())
}

/// The team's spec: these `users` (see [`user`]) and the fields of `extra`.
fn user_spec(users: Value, extra: Value) -> Value {
    let spec =
        json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "wavefront"}, "users": users});
    with(spec, extra)
}

/// The team's spec: `emails` without permissions, and the fields of `extra`.
fn team(emails: &[&str], extra: Value) -> Value {
    with(users_spec("wavefront", emails, &[]), extra)
}

fn user(email: &str, groups: &[&str], user_groups: &[&str]) -> Value {
    json!({"emailAddress": email, "groups": groups, "userGroups": user_groups})
}

/// An OrgInvitation spec of `usernames` through the endpoint `csp`, and the fields of `extra`.
fn org(usernames: &[&str], extra: Value) -> Value {
    let spec = json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "csp"},
                      "orgInvitation": {"usernames": usernames}});
    with(spec, extra)
}

/// Plays someone editing the user in the product, through the API itself.
async fn revoke_in_product(mock: &RunningMock, id: &str, permission: &str) {
    let request = reqwest::Client::new().post(format!("{}/api/v2/user/{id}/revoke", mock.url));
    let request = request.bearer_auth(TOKEN).form(&[("group", permission)]);
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// Makes `email`'s invitation in the status of "team" a minute past its expiry.
async fn expire_in_status(cluster: &TestCluster, email: &str) {
    let invitations = cluster.invitations();
    let mut status = invitations.get("team").await.unwrap().status.unwrap();
    for u in status.users.iter_mut().filter(|u| u.email_address == email) {
        u.expires_at = Some(jiff::Timestamp::now() - jiff::SignedDuration::from_mins(1));
    }
    let patch = Patch::Merge(json!({"status": status}));
    let pp = PatchParams::default();
    invitations.patch_status("team", &pp, &patch).await.unwrap();
}

/// A running controller (`resync`: resyncing every 200 ms) and "team" Ready with `spec`.
async fn team_ready(resync: bool, spec: Value) -> Harness {
    let s = if resync {
        Harness::user_invite_resyncing().await
    } else {
        Harness::user_invite_running().await
    };
    s.cluster.create_ready("team", spec).await;
    s
}

/// The groups of the mock's user `id` (sorted), for [`eventually`].
fn groups_are(mock: &RunningMock, id: &str, want: &[&str]) -> Result<(), String> {
    let want = want.iter().map(|g| g.to_string()).collect();
    expect_eq(groups_of(mock, id), want)
}

#[tokio::test]
async fn invite_only_never_touches_an_invited_user() {
    let a = user("a@example.com", &["dashboard_management"], &[]);
    let spec = user_spec(json!([a]), json!({}));
    let s = team_ready(true, spec).await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    let ready = mock.api.journal().len();
    let users = json!([user("a@example.com", &["alerts_management"], &[])]);
    cluster.patch_spec("team", json!({"users": users})).await;
    cluster.wait_generation("team", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    groups_are(mock, "a@example.com", &["dashboard_management"]).unwrap();
    assert_eq!(changes_since(mock, ready), Vec::<String>::new());
    s.finish().await;
}

#[tokio::test]
async fn enforce_applies_spec_changes_and_corrects_drift() {
    let s = Harness::user_invite_resyncing().await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    mock.api.seed_user_group("ug-1", "Data");
    mock.api.seed_user_group("ug-2", "Ops");
    let a = user("a@example.com", &["dashboard_management"], &["ug-1"]);
    let enforce = json!({"accessPolicy": "Enforce"});
    let spec = user_spec(json!([a]), enforce);
    cluster.create_ready("team", spec).await;
    // The spec changes: one permission more, another user group.
    let both = ["alerts_management", "dashboard_management"];
    let a = user("a@example.com", &both, &["ug-2"]);
    cluster.patch_spec("team", json!({"users": [a]})).await;
    let granted = async || groups_are(mock, "a@example.com", &both);
    eventually("a's new permission", granted).await;
    let new_group = async || expect_eq(user_groups_of(mock, "a@example.com"), vec!["ug-2".into()]);
    eventually("a's new user group", new_group).await;
    cluster.wait_event("team", "Updated").await;
    // Someone revokes a permission in the product: the next resync grants it again.
    revoke_in_product(mock, "a@example.com", "alerts_management").await;
    groups_are(mock, "a@example.com", &["dashboard_management"]).unwrap();
    eventually("the revoked permission granted again", granted).await;
    assert_eq!(mock.api.invitations_sent_to("a@example.com"), 1);
    s.finish().await;
}

/// The user groups of the mock's user `id` but `Everyone`, sorted.
fn user_groups_of(mock: &RunningMock, id: &str) -> Vec<String> {
    let user = mock.api.user(id).expect("user exists");
    let groups = user["userGroups"].as_array().unwrap().iter();
    let named = groups.filter(|g| g["name"] != "Everyone");
    let ids = named.filter_map(|g| g["id"].as_str().or(g.as_str()));
    sorted(&json!(ids.collect::<Vec<_>>()))
}

#[tokio::test]
async fn existing_users_are_adopted_and_managed_under_enforce() {
    let s = Harness::user_invite_resyncing().await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    let old =
        json!({"identifier": "old@example.com", "groups": ["user_management"], "userGroups": []});
    mock.api.seed_user(old);
    let users = json!([user("old@example.com", &["dashboard_management"], &[])]);
    let spec = user_spec(users, json!({"accessPolicy": "Enforce"}));
    let inv = cluster.create_ready("team", spec).await;
    assert_eq!(state_of(&inv, "old@example.com"), UserState::AlreadyMember);
    let enforced = async || groups_are(mock, "old@example.com", &["dashboard_management"]);
    eventually("the adopted user's permissions enforced", enforced).await;
    assert_eq!(mock.api.invitations_sent_to("old@example.com"), 0);
    s.finish().await;
}

#[tokio::test]
async fn retain_leaves_removed_users_and_deleted_resources_alone_without_a_finalizer() {
    let s = team_ready(false, team(&["a@example.com", "b@example.com"], json!({}))).await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    let ready = mock.api.journal().len();
    let inv = cluster.invitations().get("team").await.unwrap();
    assert!(inv.finalizers().is_empty());
    let users = json!([user("a@example.com", &[], &[])]);
    cluster.patch_spec("team", json!({"users": users})).await;
    cluster.wait_status("team", "b dropped", has_users(1)).await;
    cluster.remove("team").await;
    assert!(mock.api.user("a@example.com").is_some() && mock.api.user("b@example.com").is_some());
    assert_eq!(changes_since(mock, ready), Vec::<String>::new());
    s.finish().await;
}

#[tokio::test]
async fn delete_removes_users_dropped_from_the_spec_and_on_deletion() {
    let s = Harness::user_invite_running().await;
    let (cluster, api) = (&s.cluster, &s.mock.api);
    api.seed_user(json!({"identifier": "old@example.com", "groups": [], "userGroups": []}));
    let emails = ["a@example.com", "b@example.com", "old@example.com"];
    let spec = team(&emails, json!({"deletionPolicy": "Delete"}));
    let inv = cluster.create_ready("team", spec).await;
    let cleanup = ["invite.operators.dev/cleanup".to_string()];
    assert_eq!(inv.finalizers(), &cleanup);
    // On the team's own (namespaced) endpoint, Delete adopts the user who existed before.
    let old = crate::common::flavor::entry(inv.status.as_ref().unwrap(), "old@example.com");
    let old = old.unwrap();
    let adopted = (UserState::AlreadyMember, Some(Ownership::Adopted));
    assert_eq!((old.state, old.ownership), adopted);

    let users = json!([
        user("a@example.com", &[], &[]),
        user("old@example.com", &[], &[])
    ]);
    cluster.patch_spec("team", json!({"users": users})).await;
    cluster.wait_status("team", "b removed", has_users(2)).await;
    assert!(api.user("b@example.com").is_none(), "b was deleted");
    cluster.wait_event("team", "Deleted").await;

    cluster.remove("team").await;
    let a = api.user("a@example.com");
    assert!(a.is_none(), "a was deleted with the resource");
    let old = api.user("old@example.com");
    assert!(old.is_none(), "the adopted user was deleted too");
    s.finish().await;
}

/// The controller running and "team" Ready, a@ with `deletionPolicy: Delete`.
async fn a_to_delete() -> Harness {
    let delete = json!({"deletionPolicy": "Delete"});
    team_ready(false, team(&["a@example.com"], delete)).await
}

#[tokio::test]
async fn a_resource_whose_endpoint_is_gone_can_still_be_deleted() {
    let s = a_to_delete().await;
    let (cluster, mock) = (&s.cluster, &s.mock);
    let (client, namespace) = (cluster.client.clone(), &cluster.namespace);
    let endpoints = Api::<InvitationEndpoint>::namespaced(client, namespace);
    let deleted = endpoints.delete("wavefront", &Default::default()).await;
    deleted.unwrap();
    cluster.wait_for_reason("team", "EndpointNotFound").await;
    cluster.remove("team").await;
    cluster.wait_event("team", "CleanupSkipped").await;
    let left = mock.api.user("a@example.com").is_some();
    assert!(left, "left behind, and said so");
    s.finish().await;
}

#[tokio::test]
async fn switching_to_retain_releases_the_finalizer() {
    let s = a_to_delete().await;
    let cluster = &s.cluster;
    let retain = json!({"deletionPolicy": "Retain"});
    cluster.patch_spec("team", retain).await;
    eventually("the finalizer released", async || {
        let team = cluster.invitations().get("team").await.unwrap();
        expect_eq(team.finalizers().to_vec(), Vec::<String>::new())
    })
    .await;
    s.finish().await;
}

#[tokio::test]
async fn acceptance_and_expiry_are_observed_and_expired_invitations_resent_once() {
    let emails = ["yes@example.com", "late@example.com"];
    let s = team_ready(true, team(&emails, json!({"reinviteExpired": true}))).await;
    let (cluster, api) = (&s.cluster, &s.mock.api);
    api.login("yes@example.com");
    let accepted = has_state("yes@example.com", UserState::Accepted);
    cluster.wait_status("team", "accepted", accepted).await;
    cluster.wait_event("team", "Accepted").await;

    // 24 hours pass without late@ accepting (the mock's link expires; so does the status').
    api.expire_invitations();
    expire_in_status(cluster, "late@example.com").await;
    let late = |u: &UserStatus| u.email_address == "late@example.com" && invited_and_fresh(u);
    let reinvited = |s: &UserInvitationStatus| s.users.iter().any(late);
    cluster.wait_status("team", "re-invited", reinvited).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let late = api.invitations_sent_to("late@example.com");
    assert_eq!(late, 2, "re-sent once for one expiry");
    assert_eq!(api.invitations_sent_to("yes@example.com"), 1);
    s.finish().await;
}

/// A re-send (`reinviteExpired`) that shares a refused call with a new user: finding the
/// existing user after the refusal proves nothing, so the re-send is never recorded as sent
/// without being sent. It is posted again (alone) and sent once.
#[tokio::test]
async fn a_resend_in_a_refused_batch_is_recorded_sent_only_when_it_was() {
    let s = Harness::user_invite_resyncing().await;
    let (cluster, api) = (&s.cluster, &s.mock.api);
    let late = "late@example.com";
    let spec = team(&[late], json!({"reinviteExpired": true}));
    cluster.create_ready("team", spec).await;
    // The invitation expires; the same edit adds a new person, so one call carries both.
    api.expire_invitations();
    api.add_fault(
        invite_mock::ScriptedFault::new(400)
            .method("POST")
            .path("/api/v2/user/invite")
            .body_contains("fresh@example.com")
            .message("Request could not be processed"),
    );
    expire_in_status(cluster, late).await;
    let users = json!([user(late, &[], &[]), user("fresh@example.com", &[], &[])]);
    cluster.patch_spec("team", json!({"users": users})).await;
    let both = |st: &UserInvitationStatus| {
        st.observed_generation == Some(2) && st.users.iter().all(invited_and_fresh)
    };
    cluster.wait_status("team", "both invited", both).await;
    assert_eq!(api.invitations_sent_to(late), 2, "re-sent, for real, once");
    let journal = api.journal();
    let refused = journal
        .iter()
        .filter(|e| e.path == "/api/v2/user/invite" && e.status == 400);
    assert_eq!(refused.count(), 1, "only the shared call was refused");
    assert_eq!(api.invitations_sent_to("fresh@example.com"), 1);
    s.finish().await;
}

#[tokio::test]
async fn an_expired_org_invitation_is_reported_expired_without_reinvite() {
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    s.start_controller_resyncing(Duration::from_millis(200));
    let (cluster, api) = (&s.cluster, &s.mock.api);
    let spec = org(&["x@example.com"], json!({}));
    cluster.create_ready("org", spec).await;
    api.expire_invitations();
    let expired = has_state("x@example.com", UserState::Expired);
    cluster.wait_status("org", "expired", expired).await;
    cluster.wait_event("org", "Expired").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.invitations_sent_to("x@example.com"), 1);
    s.finish().await;
}

/// One invite request for the shared person, whatever a second one would be answered: also
/// to an API that sends again.
#[tokio::test]
async fn two_resources_naming_one_person_send_one_invitation() {
    for config in [MockConfig::default(), resending(MockConfig::default())] {
        two_resources_naming_one_person(config).await;
    }
}

async fn two_resources_naming_one_person(config: MockConfig) {
    let mut s = Harness::user_invite_on(config).await;
    s.start_controller();
    let (cluster, api) = (&s.cluster, &s.mock.api);
    api.set_latency(Duration::from_millis(30));
    // Created together.
    let shared = || team(&["shared@example.com"], json!({}));
    tokio::join!(
        cluster.create_invitation("first", shared()),
        cluster.create_invitation("second", shared()),
    );
    let mut states = Vec::new();
    for name in ["first", "second"] {
        states.push(state_of(
            &cluster.wait_ready(name).await,
            "shared@example.com",
        ));
    }
    assert!(states.contains(&UserState::Invited), "{states:?}");
    assert!(states.contains(&UserState::AlreadyMember), "{states:?}");
    assert_eq!(api.invitations_sent_to("shared@example.com"), 1);
    assert_invite_requests_once(api, &["shared@example.com".into()], "shared");
    s.finish().await;
}

/// The events name what was done in the API (Invited, InviteFailed), carry no secret, and a
/// repeat (the API refusing a retried user again with the same words) is counted into the
/// event's series instead of a second event.
#[tokio::test]
async fn events_name_what_was_done_and_a_repeat_is_counted_into_one_series() {
    let s = Harness::user_invite_running().await;
    let cluster = &s.cluster;
    let bad = user("bad@example.com", &["nope"], &[]);
    let users = |extra: &str| json!([bad, user(extra, &[], &[])]);
    let spec = user_spec(users("a@example.com"), json!({}));
    cluster.create_invitation("team", spec).await;
    cluster.wait_for_reason("team", "PartiallyFailed").await;
    cluster.wait_event("team", "Invited").await;
    cluster.wait_event("team", "InviteFailed").await;
    let events = Api::<Event>::namespaced(cluster.client.clone(), &cluster.namespace);
    let listed = events.list(&ListParams::default()).await.unwrap();
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains(TOKEN), "no secret in events");
    // A new spec retries the refused user, and the API refuses it again with the same words.
    let retried = json!({"users": users("b@example.com")});
    cluster.patch_spec("team", retried).await;
    let b_invited = |st: &UserInvitationStatus| {
        st.observed_generation == Some(2) && st.invited == 1 && st.users.len() == 2
    };
    cluster.wait_status("team", "b invited", b_invited).await;
    eventually("the repeat counted into the event's series", async || {
        let events = cluster.events_of("team").await;
        let failed = events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("InviteFailed"));
        let failed: Vec<&Event> = failed.collect();
        assert_eq!(failed.len(), 1, "one InviteFailed event: {failed:#?}");
        let count = failed[0].series.as_ref().map(|series| series.count);
        expect_eq(count, Some(2))
    })
    .await;
    s.finish().await;
}

#[tokio::test]
async fn delete_revokes_the_pending_org_invitation_of_a_removed_user() {
    let s = Harness::org_invitation_running().await;
    let (cluster, api) = (&s.cluster, &s.mock.api);
    let delete = json!({"deletionPolicy": "Delete"});
    let spec = org(&["stay@example.com", "go@example.com"], delete);
    cluster.create_ready("org", spec).await;
    let stay = json!({"orgInvitation": {"usernames": ["stay@example.com"]}});
    cluster.patch_spec("org", stay).await;
    cluster.wait_status("org", "go removed", has_users(1)).await;
    let status_of = |name: &str| {
        let invitation = api
            .org_invitations()
            .into_iter()
            .find(|i| i["username"] == name);
        invitation.map(|i| i["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(status_of("go@example.com").as_deref(), Some("REVOKED"));
    assert_eq!(status_of("stay@example.com").as_deref(), Some("AVAILABLE"));
    cluster.wait_event("org", "Revoked").await;
    cluster.remove("org").await;
    assert_eq!(status_of("stay@example.com").as_deref(), Some("REVOKED"));
    s.finish().await;
}

#[tokio::test]
async fn only_the_watched_namespaces_are_reconciled() {
    let mut s = Harness::user_invite().await;
    let other = s.cluster.create_namespace("other").await;
    let mut settings = s.cluster.settings();
    settings.watch_namespaces = vec![s.cluster.namespace.clone()];
    s.start_controller_with(settings);
    let (cluster, mock) = (&s.cluster, &s.mock);
    let elsewhere = json!({"name": "elsewhere", "namespace": other});
    let x = team(&["x@example.com"], json!({}));
    let y = team(&["y@example.com"], json!({}));
    cluster.create_invitation_with(elsewhere, x).await;
    cluster.create_ready("here", y).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = Api::<UserInvitation>::namespaced(cluster.client.clone(), &other);
    let elsewhere = other.get("elsewhere").await.unwrap();
    assert!(elsewhere.status.is_none(), "not watched, not touched");
    assert_eq!(mock.api.invitations_sent_to("x@example.com"), 0);
    s.finish().await;
}

/// A namespace named twice in the watched namespaces (`--watch-namespaces a,a`) is watched
/// and reconciled by one shard, not two.
#[tokio::test]
async fn a_namespace_named_twice_is_watched_once() {
    let mut s = Harness::user_invite().await;
    let Some(server) = s.cluster.server.clone() else {
        eprintln!("skipped: needs the in-process API server (request records)");
        return s.finish().await;
    };
    let mut settings = s.cluster.settings();
    settings.watch_namespaces = vec![s.cluster.namespace.clone(), s.cluster.namespace.clone()];
    s.start_controller_with(settings);
    let spec = team(&["a@example.com"], json!({}));
    s.cluster.create_ready("team", spec).await;
    let watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.user_agent.as_deref() == Some(invite_operator::controller::USER_AGENT))
        .filter(|r| r.verb == "watch" && r.resource == "userinvitations")
        .map(|r| r.path)
        .collect();
    assert_eq!(watches.len(), 1, "{watches:?}");
    s.finish().await;
}

#[tokio::test]
async fn two_resources_naming_one_person_send_one_org_invitation() {
    // The organization API happily sends a second invitation to a pending username, so only
    // the operator's serialization of lookups and invitations per API prevents a duplicate.
    let mut s = Harness::org_invitation(MockConfig::default()).await;
    s.mock.api.set_latency(Duration::from_millis(40));
    let names = ["first", "second", "third"];
    for name in names {
        let spec = org(&["shared@example.com"], json!({}));
        s.cluster.create_invitation(name, spec).await;
    }
    // Start the controller after the resources exist, so their reconciles start together.
    s.start_controller();
    for name in names {
        s.cluster.wait_ready(name).await;
    }
    assert_eq!(s.mock.api.invitations_sent_to("shared@example.com"), 1);
    assert_invite_requests_once(&s.mock.api, &["shared@example.com".into()], "shared");
    s.finish().await;
}
