//! Tenant safety (issue 8): a namespace can make the operator do only what its endpoint grants
//! it. Each test is one attack from the issue, run against the real controller, the Kubernetes
//! API (in-process or real) and the mock API, and shows that the attack now fails:
//!
//! | attack | test |
//! |---|---|
//! | admin stripped, admin deleted | `an_existing_admin_is_neither_stripped_nor_deleted_through_a_restricted_cluster_endpoint` |
//! | adoption without consent | `adoption_is_opt_in_and_enforces_only_what_allowed_covers`, `a_namespaced_endpoint_always_adopts` |
//! | foreign invitation revoked | `an_invitation_sent_by_hand_or_by_another_resource_is_never_revoked` |
//! | unchecked OrgInvitation fields | `org_invitation_fields_outside_allowed_are_refused_before_any_call` |
//! | asking for more after being allowed | `a_resource_edited_to_ask_for_more_is_stopped_before_any_call` |
//! | Enforce tug-of-war | `two_enforce_resources_naming_one_person_make_no_changing_call` |
//! | stale token | `a_rotated_token_is_used_after_the_api_refuses_the_old_one`, `a_rotated_token_is_picked_up_within_the_cache_time` |
//! | plain http, internal hosts | `plain_http_to_a_non_loopback_host_is_refused_unless_the_platform_allows_it`, `namespaced_endpoints_can_be_limited_to_hosts_or_turned_off` |
//! | redirects | `redirects_are_never_followed` |
//! | huge body | `a_huge_answer_is_a_clear_error_and_the_controller_carries_on` |
//! | huge messages | `a_thousand_users_refused_with_long_messages_keep_the_status_small`, `a_refusal_with_a_huge_message_keeps_the_conditions_small` |
//! | unbounded timeout | `timeout_seconds_above_120_is_refused_at_admission` |
//! | stale leader | `a_replica_that_lost_its_lease_sends_no_invitation` |
//! | two controllers serve one resource | `two_operators_with_disjoint_endpoint_selectors_never_serve_one_resource`, `a_controller_with_endpoint_selectors_leaves_resources_it_does_not_serve_alone` |
//!
//! The Secret-list attack is in `tests/e2e/rbac.rs`, tokens in output in `tests/e2e/no_token.rs`.

use std::{net::IpAddr, time::Duration};

use crate::common::{flavor::Flavor, tenancy_kit::*, *};
use invite_mock::{JournalEntry, ScriptedFault};
use invite_operator::{
    api::{
        ClusterInvitationEndpoint, InvitationEndpoint, Ownership, UserInvitation,
        UserInvitationStatus, UserState, UserStatus,
    },
    controller,
    health::Readiness,
    leader::Leadership,
    telemetry::Metrics,
};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use serde_json::{Value, json};

const ADMIN: &str = "admin@example.com";

/// Revocations of OrgInvitation invitations in the journal.
fn org_revocations(mock: &RunningMock) -> Vec<String> {
    mock.api
        .journal()
        .iter()
        .filter(|e| {
            (e.method == "DELETE" && e.path.contains("/invitations/"))
                || (e.method == "POST" && e.query.as_deref().is_some_and(|q| q.contains("revoke")))
        })
        .map(|e| format!("{} {} {:?}", e.method, e.path, e.body))
        .collect()
}

fn entry<'a>(status: &'a UserInvitationStatus, email: &str) -> &'a UserStatus {
    let found = status.users.iter().find(|u| u.email_address == email);
    found.unwrap_or_else(|| panic!("no status entry for {email}: {status:?}"))
}

/// The first user's entry has this ownership.
fn first_owned(ownership: Option<Ownership>) -> impl Fn(&UserInvitationStatus) -> bool {
    move |s| s.users.first().is_some_and(|u| u.ownership == ownership)
}

/// A ClusterInvitationEndpoint for the mock's `api` (`UserInvite`: token in Secret `api-token`
/// of the test's namespace; `OrgInvitation`: in `csp-token`), restricted by `allowed` (`null`:
/// no `allowed`).
fn cluster_endpoint_spec(h: &Harness, api: &str, allowed: Value) -> Value {
    let (flavor, secret) = match api {
        "UserInvite" => (Flavor::UserInvite, "api-token"),
        _ => (Flavor::OrgInvitation, "csp-token"),
    };
    let mut spec = flavor.endpoint(&h.mock.url, 5, 100);
    spec["credentials"]["secretRef"] = json!({"name": secret, "namespace": h.cluster.namespace});
    if !allowed.is_null() {
        spec["allowed"] = allowed;
    }
    spec
}

/// Creates or updates the ClusterInvitationEndpoint `name` for the mock's `api`
/// ([`cluster_endpoint_spec`]).
async fn cluster_endpoint_for(h: &Harness, api: &str, name: &str, allowed: Value) {
    let spec = cluster_endpoint_spec(h, api, allowed);
    h.cluster.cluster_endpoint(name, spec).await;
}

/// A harness with the Secret `api-token` and a UserInvite cluster endpoint restricted by
/// `allowed`, whose name is returned.
async fn shared_endpoint(allowed: Value) -> (Harness, String) {
    let h = Harness::start().await;
    h.cluster.put_secret("api-token", TOKEN).await;
    let shared = h.cluster.unique("shared");
    cluster_endpoint_for(&h, "UserInvite", &shared, allowed).await;
    (h, shared)
}

/// Puts both tokens and creates a UserInvite and an OrgInvitation cluster endpoint with these
/// `allowed` (`null`: none); returns their names.
async fn users_and_org_endpoints(
    h: &Harness,
    users_allowed: Value,
    org_allowed: Value,
) -> (String, String) {
    h.cluster.put_secret("api-token", TOKEN).await;
    h.cluster.put_secret("csp-token", TOKEN).await;
    let (users, org) = (h.cluster.unique("users"), h.cluster.unique("org"));
    cluster_endpoint_for(h, "UserInvite", &users, users_allowed).await;
    cluster_endpoint_for(h, "OrgInvitation", &org, org_allowed).await;
    (users, org)
}

/// Creates both resources, then waits until both are Ready.
async fn both_ready(h: &Harness, resources: [(&str, Value); 2]) {
    for (name, spec) in &resources {
        h.cluster.create_invitation(name, spec.clone()).await;
    }
    for (name, _) in resources {
        h.cluster.wait_ready(name).await;
    }
}

/// A reference to the ClusterInvitationEndpoint `name`.
fn via(name: &str) -> Value {
    json!({"kind": "ClusterInvitationEndpoint", "name": name})
}

/// Enforce and Delete for `user` through `endpoint`.
fn enforce_and_delete(endpoint: Value, user: Value) -> Value {
    json!({"endpointRef": endpoint, "accessPolicy": "Enforce", "deletionPolicy": "Delete",
           "users": [user]})
}

/// Seeds the admin with `groups`, starts the controller (resyncing every 200 ms) and creates
/// `name`: Enforce and Delete for the admin, asking for no groups, through the cluster endpoint
/// `shared`.
async fn claim_admin(h: &mut Harness, name: &str, shared: &str, groups: &[&str]) {
    let admin = json!({"identifier": ADMIN, "groups": groups, "userGroups": []});
    h.mock.api.seed_user(admin);
    h.start_controller_resyncing(Duration::from_millis(200));
    let admin = json!({"emailAddress": ADMIN, "groups": [], "userGroups": []});
    let spec = enforce_and_delete(via(shared), admin);
    h.cluster.create_invitation(name, spec).await;
}

/// Waits until `name`'s status passes `check` (`what`); returns it.
async fn wait_for(
    h: &Harness,
    name: &str,
    what: &str,
    check: impl Fn(&UserInvitationStatus) -> bool,
) -> UserInvitationStatus {
    let inv = h.cluster.wait_status(name, what, check).await;
    inv.status.expect("a status")
}

/// Lets the controller run `n` more reconciles (resyncs, with a short resync interval).
async fn let_resync(h: &Harness, n: u64) {
    let controller = h.controller.as_ref().expect("a running controller");
    let target = controller.reconciles() + n;
    controller.wait_reconciles(target).await;
}

/// An administrator's permissions.
const ADMIN_GROUPS: [&str; 3] = [
    "dashboard_management",
    "token_management",
    "user_management",
];

// -- Ownership and adoption ----------------------------------------------------------------------

/// The first attack: a team lists an existing administrator with no permissions,
/// Enforce and Delete, through a cluster endpoint restricted to `dashboard_management`.
#[tokio::test]
async fn an_existing_admin_is_neither_stripped_nor_deleted_through_a_restricted_cluster_endpoint() {
    let (mut h, shared) = shared_endpoint(json!({"groups": ["dashboard_management"]})).await;
    claim_admin(&mut h, "takeover", &shared, &ADMIN_GROUPS).await;
    let observed =
        |s: &UserInvitationStatus| s.users.iter().any(|u| u.state == UserState::AlreadyMember);
    let status = wait_for(&h, "takeover", "the admin observed", observed).await;
    let admin = entry(&status, ADMIN);
    assert_eq!(admin.ownership, None, "not adopted: {admin:?}");
    assert!(says(admin, "left alone"), "{admin:?}");
    // The condition says why nothing was enforced.
    let message = ready_message(&status);
    assert!(message.contains("existing users left alone"), "{message}");
    // Several resyncs: Enforce never reaches the admin.
    let_resync(&h, 5).await;
    assert_eq!(changes_since(&h.mock, 0), Vec::<String>::new());
    assert_eq!(groups_of(&h.mock, ADMIN), ADMIN_GROUPS);

    // Admin deleted: deleting the resource deletes nothing it did not create.
    h.cluster.remove("takeover").await;
    assert_eq!(changes_since(&h.mock, 0), Vec::<String>::new());
    assert_eq!(groups_of(&h.mock, ADMIN), ADMIN_GROUPS, "the admin exists");
    h.finish().await;
}

/// With `allowed.adoptExistingUsers: true` the same resource adopts the user: Enforce revokes
/// only what `allowed` covers, and Delete deletes the adopted user.
#[tokio::test]
async fn adoption_is_opt_in_and_enforces_only_what_allowed_covers() {
    let allowed = json!({"groups": ["dashboard_management"], "adoptExistingUsers": true});
    let (mut h, shared) = shared_endpoint(allowed).await;
    claim_admin(&mut h, "adopter", &shared, &ADMIN_GROUPS).await;
    let adopted = first_owned(Some(Ownership::Adopted));
    let status = wait_for(&h, "adopter", "the admin adopted", adopted).await;
    assert_eq!(entry(&status, ADMIN).state, UserState::AlreadyMember);
    // Only the covered permission is revoked; those outside `allowed` stay.
    let left = ["token_management", "user_management"];
    eventually("dashboard_management revoked", async || {
        groups_of(&h.mock, ADMIN) == left
    })
    .await;
    let_resync(&h, 5).await;
    assert_eq!(groups_of(&h.mock, ADMIN), left);
    // One revoke, of the covered permission only.
    let revoke = "POST /api/v2/user/admin%40example.com/revoke";
    assert_eq!(changes_since(&h.mock, 0), [revoke]);
    let journal = h.mock.api.journal();
    let revoked = journal.iter().find(|e| e.path.ends_with("/revoke"));
    let body = revoked.unwrap().body.to_string();
    assert!(body.contains("dashboard_management"), "{body}");
    // Delete reaches the adopted user.
    h.cluster.remove("adopter").await;
    assert!(h.mock.api.user(ADMIN).is_none(), "deleted");
    h.finish().await;
}

/// On a namespaced InvitationEndpoint the team brought its own token: adoption is always on.
#[tokio::test]
async fn a_namespaced_endpoint_always_adopts() {
    let mut h = Harness::user_invite().await;
    let old = "old@example.com";
    let user = json!({"identifier": old, "groups": ["user_management"], "userGroups": []});
    h.mock.api.seed_user(user);
    h.start_controller();
    let wavefront = json!({"kind": "InvitationEndpoint", "name": "wavefront"});
    let user = json!({"emailAddress": old, "groups": ["dashboard_management"], "userGroups": []});
    let spec = enforce_and_delete(wavefront, user);
    let inv = h.cluster.create_ready("team", spec).await;
    let status = inv.status.unwrap();
    let entry = entry(&status, old);
    let adopted = (UserState::AlreadyMember, Some(Ownership::Adopted));
    assert_eq!((entry.state, entry.ownership), adopted);
    assert!(!ready_message(&status).contains("left alone"));
    eventually("the spec's grants applied", async || {
        groups_of(&h.mock, old) == ["dashboard_management"]
    })
    .await;
    h.cluster.remove("team").await;
    assert!(h.mock.api.user(old).is_none());
    h.finish().await;
}

/// Sends an OrgInvitation invitation the way a person would, outside the operator.
async fn invite_by_hand(mock: &RunningMock, username: &str) {
    let http = reqwest::Client::new();
    let authorize = format!("{}/csp/gateway/am/api/auth/api-tokens/authorize", mock.url);
    let exchange = http.post(authorize).form(&[("api_token", TOKEN)]).send();
    let token: Value = exchange.await.unwrap().json().await.unwrap();
    let invitations = format!("{}/csp/gateway/am/api/orgs/{ORG}/invitations", mock.url);
    let response = http
        .post(invitations)
        .header("csp-auth-token", token["access_token"].as_str().unwrap())
        .json(&json!({"usernames": [username], "organizationRoles": [{"name": "org_member"}]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// The status of the newest invitation of `username` in the mock.
fn invitation_status(mock: &RunningMock, username: &str) -> Option<String> {
    mock.api
        .org_invitations()
        .into_iter()
        .rfind(|i| i["username"] == username)
        .and_then(|i| i["status"].as_str().map(str::to_string))
}

/// A `deletionPolicy: Delete` resource listing people whose invitations it did not send —
/// one sent by hand, one by another resource — revokes neither when it drops them or is
/// deleted; it revokes only its own.
#[tokio::test]
async fn an_invitation_sent_by_hand_or_by_another_resource_is_never_revoked() {
    let h = Harness::org_invitation_running().await;
    let c = &h.cluster;
    let spec = |names: &[&str], delete: bool| {
        json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "csp"},
               "deletionPolicy": if delete { "Delete" } else { "Retain" },
               "orgInvitation": {"usernames": names}})
    };
    let (hand, other, own) = ("hand@example.com", "other@example.com", "own@example.com");
    invite_by_hand(&h.mock, hand).await;
    c.create_ready("first", spec(&[other], false)).await;
    let taker = spec(&[hand, other, own], true);
    let inv = c.create_ready("taker", taker).await;
    let status = inv.status.unwrap();
    let by_hand = entry(&status, hand);
    let not_owned = (UserState::Invited, None);
    assert_eq!((by_hand.state, by_hand.ownership), not_owned);
    assert!(says(by_hand, "not sent by this resource"), "{by_hand:?}");
    let by_first = entry(&status, other);
    assert_eq!((by_first.state, by_first.ownership), not_owned);
    let owner = format!("{}/first", c.namespace);
    assert!(says(by_first, &owner), "the owner is named: {by_first:?}");
    assert_eq!(entry(&status, own).ownership, Some(Ownership::Created));

    // Dropping both from the spec revokes nothing.
    c.patch_spec("taker", json!({"orgInvitation": {"usernames": [own]}}))
        .await;
    c.wait_status("taker", "the foreign entries dropped", |s| {
        s.observed_generation == Some(2) && s.users.len() == 1
    })
    .await;
    // And deleting the resource revokes only its own invitation.
    c.remove("taker").await;
    assert_eq!(invitation_status(&h.mock, own).as_deref(), Some("REVOKED"));
    let revocations = org_revocations(&h.mock);
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    for foreign in [hand, other] {
        let status = invitation_status(&h.mock, foreign);
        assert_eq!(status.as_deref(), Some("AVAILABLE"), "{foreign}");
        assert_eq!(h.mock.api.invitations_sent_to(foreign), 1, "{foreign}");
    }
    h.finish().await;
}

// -- `allowed` covers everything that grants access ----------------------------------------------

/// `allowed: {organizationRoles: [org_member]}` used to be checked for organization roles
/// only: customRoles, customGroupsIds and service roles went through. Every field that grants
/// access is now checked, and refused with reason NotAllowed naming the field, before any call.
#[tokio::test]
async fn org_invitation_fields_outside_allowed_are_refused_before_any_call() {
    let mut h = Harness::start().await;
    h.cluster.put_secret("csp-token", TOKEN).await;
    let members = h.cluster.unique("members");
    let services = h.cluster.unique("services");
    let member_only = json!({"organizationRoles": ["org_member"]});
    let with_services = with(
        member_only.clone(),
        json!({"serviceDefinitionLinks": ["/paid/ok"]}),
    );
    cluster_endpoint_for(&h, "OrgInvitation", &members, member_only).await;
    cluster_endpoint_for(&h, "OrgInvitation", &services, with_services).await;
    h.start_controller();
    // [resource, endpoint, what it asks for besides org_member, the field its refusal names]
    let cases = json!([
        ["custom-roles", members, {"customRoles": [{"name": "org_owner"}]}, "customRoles"],
        ["custom-groups", members, {"customGroupsIds": ["admins"]}, "customGroupsIds"],
        ["service-link", members, {"serviceRolesDtos": [{"serviceDefinitionLink": "/paid/admin"}]}, "serviceDefinitionLink"],
        ["service-role-names", services, {"serviceRolesDtos": [{"serviceDefinitionLink": "/paid/ok", "serviceRoleNames": ["admin"]}]}, "serviceRoleNames"],
        ["service-role-bindings", services, {"serviceRolesDtos": [{"serviceDefinitionLink": "/paid/ok", "serviceRoles": [{"name": "admin"}]}]}, "serviceRoleNames"],
        ["binding-resource", members, {"organizationRoles": [{"name": "org_member", "resource": "/orgs/other"}]}, "resources"],
        ["org-owner", members, {"organizationRoles": [{"name": "org_owner"}]}, "\"org_owner\""],
        ["org-role-names", members, {"orgRoleNames": ["org_owner"]}, "orgRoleNames"],
    ]);
    refused_naming_their_fields(&h, cases, |name, endpoint, extra| {
        let org = json!({"usernames": [format!("{name}@example.com")],
                         "organizationRoles": [{"name": "org_member"}]});
        json!({"endpointRef": via(endpoint), "orgInvitation": with(org, extra)})
    })
    .await;
    // The endpoints' status checks exchange the token; nothing else reached the API.
    assert_eq!(api_calls(&h.mock), Vec::<String>::new());
    assert!(h.mock.api.org_invitations().is_empty());
    h.finish().await;
}

/// A resource that was allowed, then edited to ask for more, is stopped before any call: no
/// grant under Enforce (UserInvite), no invitation (OrgInvitation), and it keeps its entries.
#[tokio::test]
async fn a_resource_edited_to_ask_for_more_is_stopped_before_any_call() {
    let mut h = Harness::start().await;
    let (users, org) = users_and_org_endpoints(
        &h,
        json!({"groups": ["dashboard_management"]}),
        json!({"organizationRoles": ["org_member"]}),
    )
    .await;
    h.start_controller_resyncing(Duration::from_millis(200));
    let c = &h.cluster;
    let user = |groups: &[&str]| json!([{"emailAddress": "a@example.com", "groups": groups, "userGroups": []}]);
    let for_users = json!({"endpointRef": via(&users),
                            "accessPolicy": "Enforce", "users": user(&["dashboard_management"])});
    let for_org = json!({"endpointRef": via(&org),
                          "orgInvitation": {"usernames": ["b@example.com"],
                                            "organizationRoles": [{"name": "org_member"}]}});
    both_ready(&h, [("users", for_users), ("org", for_org)]).await;
    let before = api_calls(&h.mock);

    let more = user(&["dashboard_management", "user_management"]);
    c.patch_spec("users", json!({"users": more})).await;
    let more = json!({"orgInvitation": {"usernames": ["b@example.com", "c@example.com"],
                                        "organizationRoles": [{"name": "org_member"}],
                                        "customGroupsIds": ["admins"]}});
    c.patch_spec("org", more).await;
    let asking_more = [("users", "user_management"), ("org", "customGroupsIds")];
    assert_refused_keeping_entries(&h, 2, asking_more).await;
    let_resync(&h, 5).await;
    let after = api_calls(&h.mock);
    let none: [String; 0] = [];
    assert_eq!(after[before.len()..], none, "no API call after the edit");
    let granted = groups_of(&h.mock, "a@example.com");
    assert_eq!(granted, ["dashboard_management"]);
    assert_eq!(h.mock.api.invitations_sent_to("c@example.com"), 0);
    h.finish().await;
}

/// Each resource's `generation` is NotAllowed, naming the field, and keeps its first entry:
/// Invited, created by it.
async fn assert_refused_keeping_entries(
    h: &Harness,
    generation: i64,
    resources: [(&str, &str); 2],
) {
    for (name, field) in resources {
        let refused = |s: &UserInvitationStatus| {
            s.observed_generation == Some(generation) && ready(s).1 == "NotAllowed"
        };
        let status = wait_for(h, name, "NotAllowed on this generation", refused).await;
        assert!(ready_message(&status).contains(field), "{status:?}");
        let kept = &status.users[0];
        assert_eq!(kept.state, UserState::Invited, "kept: {status:?}");
        assert_eq!(kept.ownership, Some(Ownership::Created));
    }
}

// -- One person, several resources ---------------------------------------------------------------

/// Two Enforce resources in two namespaces list one person with different grants: the first
/// owns the person, the second names the owner, and resyncs make no changing call.
#[tokio::test]
async fn two_enforce_resources_naming_one_person_make_no_changing_call() {
    // Both may grant anything and adopt existing users: only ownership keeps them apart.
    let anything =
        json!({"groups": ["*"], "userGroups": ["*"], "roles": ["*"], "adoptExistingUsers": true});
    let (mut h, shared) = shared_endpoint(anything).await;
    let other_ns = h.cluster.create_namespace("b").await;
    start_with(&mut h, |s| {
        s.watch_namespaces.push(other_ns.clone());
        s.resync_interval = Duration::from_millis(200);
    });
    let c = &h.cluster;
    let p = "p@example.com";
    let spec = |groups: &[&str]| {
        json!({"endpointRef": via(&shared), "accessPolicy": "Enforce",
               "users": [{"emailAddress": p, "groups": groups, "userGroups": []}]})
    };
    let dashboards = spec(&["dashboard_management"]);
    let first = c.create_ready("first", dashboards).await;
    let owned = entry(first.status.as_ref().unwrap(), p).ownership;
    assert_eq!(owned, Some(Ownership::Created));
    let second = json!({"name": "second", "namespace": other_ns});
    c.create_invitation_with(second, spec(&["alerts_management"]))
        .await;
    let second_api: Api<UserInvitation> = Api::namespaced(c.client.clone(), &other_ns);
    let owner = format!("{}/first", c.namespace);
    let entry = eventually("second to name the owner", async || {
        let status = second_api.get("second").await.unwrap().status;
        let found = status
            .as_ref()
            .and_then(|s| s.users.iter().find(|u| u.email_address == p));
        let naming = found.filter(|e| says(e, &owner)).cloned();
        naming.ok_or(format!("{status:?}"))
    })
    .await;
    assert_eq!(entry.ownership, None, "{entry:?}");
    // Converged: several resyncs of both make no changing call.
    let converged = h.mock.api.journal().len();
    let_resync(&h, 10).await;
    assert_eq!(changes_since(&h.mock, converged), Vec::<String>::new());
    assert_eq!(groups_of(&h.mock, p), ["dashboard_management"]);
    assert_eq!(h.mock.api.invitations_sent_to(p), 1);
    h.finish().await;
}

// -- Secrets: rotation ---------------------------------------------------------------------------

/// The credential labels (opaque) of the requests in the journal, with their statuses.
fn credentials(mock: &RunningMock) -> Vec<(Option<String>, u16)> {
    let journal = mock.api.journal();
    journal
        .into_iter()
        .map(|e| (e.credential, e.status))
        .collect()
}

fn user(email: &str) -> Value {
    users_spec("wavefront", &[email], &[])
}

/// A spec inviting `email` through the ClusterInvitationEndpoint `endpoint`.
fn user_via(endpoint: &str, email: &str) -> Value {
    with(user(email), json!({"endpointRef": via(endpoint)}))
}

/// The UserInvite world plus a ClusterInvitationEndpoint without `allowed` (its name
/// returned), and the controller started with `tweak` applied to its settings.
async fn with_a_cluster_endpoint(
    tweak: impl FnOnce(&mut controller::Settings),
) -> (Harness, String) {
    let mut h = Harness::user_invite().await;
    let shared = h.cluster.unique("shared");
    cluster_endpoint_for(&h, "UserInvite", &shared, Value::Null).await;
    start_with(&mut h, tweak);
    (h, shared)
}

/// A controller caching Secrets for `ttl`; "before" (a@) ready, then the token rotated in the
/// API and the Secret.
async fn ready_then_rotated(ttl: Duration) -> Harness {
    let mut h = Harness::user_invite().await;
    start_with(&mut h, |s| s.secret_cache_ttl = ttl);
    let c = &h.cluster;
    c.create_ready("before", user("a@example.com")).await;
    h.mock.api.set_token("rotated-token");
    c.put_secret("api-token", "rotated-token").await;
    h
}

/// With a token cache far longer than the test, a rotated token is still used right after
/// the API refuses the old one (401): one refusal, then the new token.
#[tokio::test]
async fn a_rotated_token_is_used_after_the_api_refuses_the_old_one() {
    let h = ready_then_rotated(Duration::from_secs(3600)).await;
    let old = credentials(&h.mock)[0].0.clone();
    h.cluster.create_ready("after", user("b@example.com")).await;
    let seen = credentials(&h.mock);
    let refused: Vec<usize> = (0..seen.len()).filter(|i| seen[*i].1 == 401).collect();
    assert_eq!(refused.len(), 1, "one refusal of the old token: {seen:?}");
    assert_eq!(seen[refused[0]].0, old);
    for (credential, status) in &seen[refused[0] + 1..] {
        assert_ne!(credential, &old, "not used again: {seen:?}");
        assert!(*status < 300, "{seen:?}");
    }
    assert_eq!(h.mock.api.invitations_sent_to("b@example.com"), 1);
    h.finish().await;
}

/// Within the cache time a rotated token is picked up without waiting for a refusal.
#[tokio::test]
async fn a_rotated_token_is_picked_up_within_the_cache_time() {
    let h = ready_then_rotated(Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let from = h.mock.api.journal().len();
    h.cluster.create_ready("after", user("b@example.com")).await;
    let journal = h.mock.api.journal();
    let statuses: Vec<u16> = journal[from..].iter().map(|e| e.status).collect();
    // No refusal: the new token was read within the cache time.
    assert!(statuses.iter().all(|s| *s < 300), "{statuses:?}");
    h.finish().await;
}

// -- Endpoints: URL policy, redirects, body and message caps, timeout bound ----------------------

/// A local address that is not loopback (routing only, no packet is sent), if the host has one.
fn non_loopback_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A mock API (token [`TOKEN`]) listening on `ip`; its URL and handle.
async fn mock_on(ip: IpAddr) -> (String, invite_mock::MockApi, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = MockConfig {
        token: TOKEN.into(),
        ..MockConfig::default()
    };
    let api = invite_mock::MockApi::new(config);
    let serving = api.clone();
    let task = tokio::spawn(async move {
        let _ = serving.serve(listener, std::future::pending()).await;
    });
    (url, api, task)
}

/// A namespaced endpoint with a plain `http://` URL to a non-loopback address is refused (the
/// resource's condition and the endpoint's Ready=False) and never called; the platform's
/// `--allow-insecure-http` allows it. Plain http to loopback (the mock) works by default.
#[tokio::test]
async fn plain_http_to_a_non_loopback_host_is_refused_unless_the_platform_allows_it() {
    let mut h = Harness::user_invite().await;
    let remote = match non_loopback_address() {
        Some(ip) => Some(mock_on(ip).await),
        None => {
            eprintln!("no non-loopback address: checking the refusal against 10.255.255.1 only");
            None
        }
    };
    let url = remote.as_ref().map(|(url, _, _)| url.as_str());
    let url = url.unwrap_or("http://10.255.255.1");
    let c = &h.cluster;
    c.user_invite_endpoint("insecure", url, "api-token").await;
    h.start_controller();
    let c = &h.cluster;
    let insecure = json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "insecure"}});
    let remote_spec = with(user("r@example.com"), insecure);
    c.create_invitation("remote", remote_spec).await;
    c.create_invitation("local", user("l@example.com")).await;
    let message = c.wait_reason("remote", "EndpointNotReady").await;
    assert!(message.contains("https://"), "{message}");
    let invalid = c.endpoint_message("insecure", "False", "InvalidConfiguration");
    let message = invalid.await;
    assert!(message.contains("https://"), "{message}");
    c.wait_ready("local").await;
    let controller = h.controller.take().unwrap();
    let endpoint = format!("InvitationEndpoint/{}/insecure", c.namespace);
    let series = format!("invite_operator_api_calls_total{{endpoint=\"{endpoint}\"");
    let calls = sum_metric(&controller.metrics, &series);
    assert_eq!(calls, 0, "no request to the insecure endpoint");
    controller.stop().await;
    let Some((_, remote, task)) = remote else {
        return h.finish().await;
    };
    assert!(remote.journal().is_empty(), "{:?}", remote.journal());

    // The platform opts in.
    start_with(&mut h, |s| s.endpoint_policy.allow_insecure_http = true);
    let c = &h.cluster;
    c.wait_ready("remote").await;
    c.wait_endpoint("insecure", "True", "CredentialsResolved")
        .await;
    assert_eq!(remote.invitations_sent_to("r@example.com"), 1);
    task.abort();
    h.finish().await;
}

/// `--namespaced-endpoint-hosts` limits the hosts namespaced endpoints may call (cluster
/// endpoints are the platform's own), and `--namespaced-endpoints=false` turns them off.
#[tokio::test]
async fn namespaced_endpoints_can_be_limited_to_hosts_or_turned_off() {
    let (mut h, shared) = with_a_cluster_endpoint(|s| {
        s.endpoint_policy.namespaced_endpoint_hosts = vec!["*.wavefront.example.com".into()];
    })
    .await;
    let c = &h.cluster;
    c.create_invitation("local", user("local@example.com"))
        .await;
    let message = c.wait_reason("local", "NotAllowed").await;
    assert!(message.contains("127.0.0.1"), "names the host: {message}");
    c.wait_endpoint("wavefront", "False", "NotAllowed").await;
    let seen = h.mock.api.journal();
    assert!(seen.is_empty(), "{seen:?}");
    c.create_ready("platform", user_via(&shared, "p@example.com"))
        .await;

    restart_with(&mut h, |s| s.endpoint_policy.namespaced_endpoints = false).await;
    let c = &h.cluster;
    let turned_off = |s: &UserInvitationStatus| {
        ready(s).1 == "NotAllowed" && ready_message(s).contains("turned off")
    };
    let inv = c.wait_status("local", "turned off", turned_off).await;
    assert_eq!(state_of(&inv, "local@example.com"), UserState::Pending);
    c.wait_endpoint("wavefront", "False", "NotAllowed").await;
    let journal = h.mock.api.journal();
    let mentions_local = journal
        .iter()
        .filter(|e| e.body.to_string().contains("local@example.com") || e.path.contains("local@"))
        .count();
    assert_eq!(mentions_local, 0);
    h.finish().await;
}

const INVITE: &str = "/api/v2/user/invite";

/// Starts the controller with `fault` scripted 1000 times, creates "team" inviting
/// a@example.com and waits until its status shows `what`.
async fn team_against(
    h: &mut Harness,
    fault: ScriptedFault,
    what: &str,
    shows: impl Fn(&UserInvitationStatus) -> bool,
) -> UserInvitation {
    h.mock.api.add_fault(fault.times(1000));
    h.start_controller();
    let c = &h.cluster;
    c.create_invitation("team", user("a@example.com")).await;
    c.wait_status("team", &format!("{what} reported"), shows)
        .await
}

/// A redirect is a configuration problem, never followed: nothing reaches its Location.
#[tokio::test]
async fn redirects_are_never_followed() {
    let mut h = Harness::user_invite().await;
    let elsewhere = start_mock(MockConfig::default()).await;
    let redirect = ScriptedFault::redirect(307, &format!("{}{INVITE}", elsewhere.url));
    let reported = |s: &UserInvitationStatus| {
        ready(s).1 == "EndpointNotReady" && ready_message(s).contains("never followed")
    };
    let redirect = redirect.method("POST").path(INVITE);
    let inv = team_against(&mut h, redirect, "the redirect", reported).await;
    assert_eq!(state_of(&inv, "a@example.com"), UserState::Pending);
    let journal = elsewhere.api.journal();
    assert!(journal.is_empty(), "{journal:?}");
    assert_eq!(h.mock.api.invitations_sent_to("a@example.com"), 0);
    assert_eq!(elsewhere.api.invitations_sent_to("a@example.com"), 0);
    elsewhere.shutdown().await;
    h.finish().await;
}

/// A 20 MiB answer to a lookup is not read: the condition says it is larger than 8 MiB, the
/// controller carries on, and the resource completes once the API answers normally.
#[tokio::test]
async fn a_huge_answer_is_a_clear_error_and_the_controller_carries_on() {
    let mut h = Harness::user_invite().await;
    let huge = ScriptedFault::huge_body(20 * 1024 * 1024).path("/api/v2/user/validateUsers");
    let reported = |s: &UserInvitationStatus| ready_message(s).contains("larger than 8 MiB");
    let inv = team_against(&mut h, huge, "the huge answer", reported).await;
    assert_eq!(state_of(&inv, "a@example.com"), UserState::Pending);
    assert!(!h.controller.as_ref().unwrap().is_finished());
    assert_eq!(h.mock.api.invitations_sent_to("a@example.com"), 0);
    h.mock.api.clear_faults();
    h.cluster.wait_ready("team").await;
    assert_eq!(h.mock.api.invitations_sent_to("a@example.com"), 1);
    h.finish().await;
}

/// 1000 users all refused with a 64 KiB message: every message is truncated and the status
/// stays far below etcd's 1.5 MiB limit (the write succeeds on a real API server too).
#[tokio::test]
async fn a_thousand_users_refused_with_long_messages_keep_the_status_small() {
    let mut h = Harness::user_invite().await;
    let endpoint = Flavor::UserInvite.endpoint(&h.mock.url, 5, 1000);
    h.cluster.apply_endpoint("wavefront", endpoint).await;
    let long = format!("refused: {}", "no ".repeat(64 * 1024 / 3));
    let refusal = ScriptedFault::new(400).method("POST").path(INVITE);
    h.mock.api.add_fault(refusal.message(long).times(1_000_000));
    h.start_controller();
    let users: Vec<String> = (0..1000).map(|i| format!("u{i:04}@example.com")).collect();
    let spec = users_spec("wavefront", &users, &[]);
    h.cluster.create_invitation("many", spec).await;
    let (poll, within) = (Duration::from_millis(250), Duration::from_secs(240));
    let status = eventually_every(poll, within, "every user failed", async || {
        let status = h.cluster.invitations().get("many").await.unwrap().status;
        match status {
            Some(status) if status.failed == 1000 => Ok(status),
            status => Err(format!("{} failed", status.map_or(0, |s| s.failed))),
        }
    })
    .await;
    assert_eq!(ready(&status).1, "Failed");
    let size = serde_json::to_vec(&status).unwrap().len();
    assert!(size < 400 * 1024, "the status is {size} bytes");
    for u in &status.users {
        let message = u.message.as_deref().unwrap_or_default();
        assert!(message.starts_with("refused: no"), "{u:?}");
        assert!(message.len() <= 1024, "{} bytes", message.len());
    }
    assert!(ready_message(&status).len() <= 2048);
    h.finish().await;
}

/// A refusal whose message is huge (2 MiB, more than etcd stores) never lands whole in a
/// condition: neither the resource's nor the endpoint's.
#[tokio::test]
async fn a_refusal_with_a_huge_message_keeps_the_conditions_small() {
    let mut h = Harness::user_invite().await;
    let huge = format!("go away {}", "x".repeat(2 * 1024 * 1024));
    let refusal = ScriptedFault::new(401).path(INVITE).message(huge.clone());
    let reported = |s: &UserInvitationStatus| {
        ready(s).1 == "EndpointNotReady" && ready_message(s).contains("go away")
    };
    let inv = team_against(&mut h, refusal, "the refusal", reported).await;
    let status = inv.status.unwrap();
    assert!(ready_message(&status).len() <= 2048);
    assert!(serde_json::to_vec(&status).unwrap().len() < 16 * 1024);
    h.controller.take().unwrap().stop().await;

    // OrgInvitation: the endpoint check's token exchange refused with a huge message.
    h.cluster.put_secret("csp-token", TOKEN).await;
    let authorize = "/csp/gateway/am/api/auth/api-tokens/authorize";
    let refusal = ScriptedFault::new(400).path(authorize).message(huge);
    h.mock.api.add_fault(refusal.times(1000));
    let c = &h.cluster;
    c.org_endpoint("csp", &h.mock.url, "csp-token", ORG).await;
    h.start_controller();
    let c = &h.cluster;
    let rejected = c.endpoint_message("csp", "False", "CredentialsRejected");
    let message = rejected.await;
    assert!(message.contains("go away"), "{message}");
    assert!(message.len() <= 2048, "{} bytes", message.len());
    h.finish().await;
}

/// `timeoutSeconds` is bounded: a request timeout above 120 s is refused at admission (an
/// unanswered invite request blocks its users for two timeouts).
#[tokio::test]
async fn timeout_seconds_above_120_is_refused_at_admission() {
    let Some(c) = admission_cluster().await else {
        return;
    };
    let spec = |timeout: u32| {
        json!({"api": "UserInvite", "url": "https://wf.example.com",
               "credentials": {"secretRef": {"name": "t"}}, "timeoutSeconds": timeout})
    };
    let refused = admit::<InvitationEndpoint>(&c, "slow", spec(121)).await;
    let names_it = matches!(&refused, Err(message) if message.contains("timeoutSeconds"));
    assert!(names_it, "{refused:?}");
    let ok = admit::<InvitationEndpoint>(&c, "ok", spec(120)).await;
    ok.expect("120 s is allowed");
    let cluster: ClusterInvitationEndpoint = serde_json::from_value(json!({
        "apiVersion": "invite.operators.dev/v1alpha1", "kind": "ClusterInvitationEndpoint",
        "metadata": {"name": c.unique("slow"), "labels": c.labels()},
        "spec": spec(3600),
    }))
    .unwrap();
    let cluster_scoped = Api::<ClusterInvitationEndpoint>::all(c.client.clone());
    let refused = cluster_scoped
        .create(&PostParams::default(), &cluster)
        .await;
    let invalid = matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422);
    assert!(invalid, "{refused:?}");
    c.cleanup().await;
}

// -- Leadership ----------------------------------------------------------------------------------

/// A replica whose lease runs out while a reconcile waits for its lookup sends no invite
/// POST: the users go back to Pending, saying the replica no longer holds the lease.
#[tokio::test]
async fn a_replica_that_lost_its_lease_sends_no_invitation() {
    let h = Harness::user_invite().await;
    // The lookup takes longer than the lease has left.
    h.mock.api.set_latency(Duration::from_millis(1500));
    let leadership =
        Leadership::expiring_at(tokio::time::Instant::now() + Duration::from_millis(700));
    let (readiness, _) = tokio::sync::watch::channel(Readiness::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(controller::run(
        h.cluster.controller_client(),
        h.cluster.settings(),
        Metrics::new(),
        readiness,
        leadership.clone(),
        stop.clone(),
    ));
    h.cluster.abort_on_drop(task.abort_handle());
    let spec = users_spec("wavefront", &["a@example.com", "b@example.com"], &[]);
    h.cluster.create_invitation("team", spec).await;
    let without_the_lease = |s: &UserInvitationStatus| {
        s.users.len() == 2
            && s.users.iter().all(|u| {
                u.state == UserState::Pending && says(u, "no longer holds the leader lease")
            })
    };
    let back = "back to Pending without the lease";
    let inv = h.cluster.wait_status("team", back, without_the_lease).await;
    assert!(!leadership.is_valid());
    let journal = h.mock.api.journal();
    let lookup = journal
        .iter()
        .any(|e| e.path == "/api/v2/user/validateUsers");
    assert!(lookup, "the lookup went out: {journal:?}");
    let changing = journal.iter().any(is_changing);
    assert!(!changing, "a POST without the lease: {journal:?}");
    assert_eq!(ready(inv.status.as_ref().unwrap()).1, "Pending");
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    h.finish().await;
}

// -- Secure by default: a cluster endpoint without `allowed` grants plain membership only --------

/// A tenant asks for an admin permission, user group and role (UserInvite) and for the owner
/// role, a custom group and a service role (OrgInvitation) through cluster endpoints that have
/// no `allowed`: each is refused with NotAllowed naming the field and how to open it, and no
/// call that grants anything reaches either API. Plain membership goes through.
#[tokio::test]
async fn a_cluster_endpoint_without_allowed_grants_plain_membership_only() {
    let mut h = Harness::start().await;
    let (users, org) = users_and_org_endpoints(&h, Value::Null, Value::Null).await;
    h.start_controller();
    let refused = ask_for_more_than_membership(&h, &users, &org).await;
    for (name, message) in refused {
        assert!(
            message.contains("no spec.allowed") && message.contains("spec.allowed."),
            "{name}: the message says how the platform opens the field: {message}"
        );
    }
    let member = json!([{"name": "org_member"}]);
    let plain_user = ("plain-user", user_via(&users, "plain@example.com"));
    let plain_member = json!({"endpointRef": via(&org),
                              "orgInvitation": {"usernames": ["member@example.com"], "organizationRoles": member}});
    both_ready(&h, [plain_user, ("plain-member", plain_member)]).await;
    // Only the plain memberships were sent.
    let journal = h.mock.api.journal();
    let invites: Vec<String> = journal
        .iter()
        .filter(|e| e.method == "POST" && !e.is_token_exchange())
        .filter(|e| e.path != "/api/v2/user/validateUsers")
        .map(|e| format!("{} {:?}", e.path, e.body))
        .collect();
    assert_eq!(invites.len(), 2, "{invites:#?}");
    let plain = |i: &String| i.contains("plain@example.com") || i.contains("member@example.com");
    assert!(invites.iter().all(plain));
    let plain_user = h.mock.api.user("plain@example.com").unwrap();
    assert_eq!(plain_user["groups"], json!([]));
    h.finish().await;
}

/// Resources asking, through cluster endpoints without `allowed` (`users`, `org`), for what
/// grants more than membership, each refused naming the field; their refusals' messages.
async fn ask_for_more_than_membership(
    h: &Harness,
    users: &str,
    org: &str,
) -> Vec<(String, String)> {
    let member = json!([{"name": "org_member"}]);
    // [resource, the endpoint, what it asks for, the field its refusal names]
    let cases = json!([
        ["ask-groups", users, {"users": [{"emailAddress": "g@example.com", "groups": ["user_management"]}]}, "groups"],
        ["ask-usergroups", users, {"users": [{"emailAddress": "ug@example.com", "userGroups": ["admins"]}]}, "userGroups"],
        ["ask-roles", users, {"users": [{"emailAddress": "r@example.com", "roles": ["admin-role"]}]}, "roles"],
        ["org-owner", org, {"orgInvitation": {"usernames": ["org-owner@example.com"], "organizationRoles": [{"name": "org_owner"}]}}, "organizationRoles"],
        ["org-groups", org, {"orgInvitation": {"usernames": ["org-groups@example.com"], "organizationRoles": member, "customGroupsIds": ["admins"]}}, "customGroupsIds"],
        ["org-service", org, {"orgInvitation": {"usernames": ["org-service@example.com"], "organizationRoles": member,
                                                "serviceRolesDtos": [{"serviceDefinitionLink": "/paid/x", "serviceRoleNames": ["admin"]}]}}, "serviceDefinitionLinks"],
    ]);
    let spec =
        |_: &str, endpoint: &str, request| with(request, json!({"endpointRef": via(endpoint)}));
    refused_naming_their_fields(h, cases, spec).await
}

/// Creates a resource per row of `cases` (`[resource, endpoint, request, the field its refusal
/// names]`, its spec built by `spec`), then checks that each is refused (NotAllowed) naming its
/// field; returns the refusals' messages.
async fn refused_naming_their_fields(
    h: &Harness,
    cases: Value,
    spec: impl Fn(&str, &str, Value) -> Value,
) -> Vec<(String, String)> {
    let rows = cases.as_array().unwrap();
    let text = |v: &Value| v.as_str().unwrap().to_string();
    for row in rows {
        let (name, endpoint) = (text(&row[0]), text(&row[1]));
        let spec = spec(&name, &endpoint, row[2].clone());
        h.cluster.create_invitation(&name, spec).await;
    }
    let mut refusals = Vec::new();
    for row in rows {
        let (name, field) = (text(&row[0]), text(&row[3]));
        let message = h.cluster.wait_reason(&name, "NotAllowed").await;
        assert!(message.contains(&field), "{name}: {message}");
        refusals.push((name, message));
    }
    refusals
}

/// Upgrading to deny by default: resources that converged while an endpoint without `allowed`
/// still meant "anything" report NotAllowed once it means plain membership, and keep their
/// users: Enforce changes nothing, and deleting a `deletionPolicy: Delete` resource deletes or
/// revokes nothing.
#[tokio::test]
async fn resources_converged_before_deny_by_default_keep_their_users() {
    let mut h = Harness::start().await;
    // What "no allowed" permitted before: anything.
    let anything = json!({"groups": ["*"], "userGroups": ["*"], "roles": ["*"]});
    let (users, org) =
        users_and_org_endpoints(&h, anything, json!({"organizationRoles": ["*"]})).await;
    h.start_controller_resyncing(Duration::from_millis(200));
    let ops = json!({"emailAddress": "ops@example.com", "groups": ["user_management"]});
    let for_users = enforce_and_delete(via(&users), ops);
    let for_org = json!({"endpointRef": via(&org), "deletionPolicy": "Delete",
                          "orgInvitation": {"usernames": ["owner@example.com"],
                                            "organizationRoles": [{"name": "org_owner"}]}});
    both_ready(&h, [("users", for_users), ("org", for_org)]).await;
    let before = h.mock.api.journal().len();

    // The upgrade: the same endpoints, without `allowed`.
    cluster_endpoint_for(&h, "UserInvite", &users, Value::Null).await;
    cluster_endpoint_for(&h, "OrgInvitation", &org, Value::Null).await;
    let more_than_membership = [("users", "groups"), ("org", "organizationRoles")];
    assert_refused_keeping_entries(&h, 1, more_than_membership).await;
    resync_and_remove_changing_nothing(&h, &["users", "org"], before, "either API").await;
    assert_eq!(groups_of(&h.mock, "ops@example.com"), ["user_management"]);
    let owner = invitation_status(&h.mock, "owner@example.com");
    assert_eq!(owner.as_deref(), Some("AVAILABLE"));
    h.cluster.wait_event("users", "CleanupSkipped").await;
    h.finish().await;
}

/// Five resyncs, then `resources` removed: `h.mock` saw no changing call from `from` on.
async fn resync_and_remove_changing_nothing(
    h: &Harness,
    resources: &[&str],
    from: usize,
    api: &str,
) {
    let_resync(h, 5).await;
    for resource in resources {
        h.cluster.remove(resource).await;
    }
    assert_eq!(changes_since(&h.mock, from), Vec::<String>::new(), "{api}");
}

// -- Ownership is bound to the API and endpoint it was established on ----------------------------

/// A harness with the Secret `api-token` and a second mock API; each of `admins` exists on
/// both, holding `groups`.
async fn two_apis_with_admins(admins: &[&str], groups: &[&str]) -> (Harness, RunningMock) {
    let h = Harness::start().await;
    let other = start_mock(MockConfig::default()).await;
    h.cluster.put_secret("api-token", TOKEN).await;
    for mock in [&h.mock, &other] {
        for admin in admins {
            let user = json!({"identifier": admin, "groups": groups, "userGroups": []});
            mock.api.seed_user(user);
        }
    }
    (h, other)
}

/// The review's attack: a tenant adopts the organization's admin on an API it runs itself
/// (a namespaced endpoint always adopts), switches `spec.endpointRef` to the platform's
/// endpoint (adoption off) and deletes the resource. The platform's API sees no changing call:
/// ownership made on the tenant's API is worth nothing on the platform's.
#[tokio::test]
async fn ownership_adopted_on_a_tenants_api_is_worth_nothing_after_switching_endpoints() {
    let admin_groups = ["dashboard_management", "user_management"];
    let (mut h, tenant) = two_apis_with_admins(&[ADMIN], &admin_groups).await;
    let platform = h.cluster.unique("platform");
    cluster_endpoint_for(&h, "UserInvite", &platform, json!({})).await;
    let c = &h.cluster;
    c.user_invite_endpoint("mine", &tenant.url, "api-token")
        .await;
    h.start_controller_resyncing(Duration::from_millis(200));
    let c = &h.cluster;
    let mine = json!({"kind": "InvitationEndpoint", "name": "mine"});
    let spec = enforce_and_delete(mine, json!({"emailAddress": ADMIN}));
    c.create_invitation("takeover", spec).await;
    let on_the_tenants = "the admin adopted on the tenant's API";
    let adopted = first_owned(Some(Ownership::Adopted));
    let status = wait_for(&h, "takeover", on_the_tenants, adopted).await;
    assert_eq!(status.users[0].state, UserState::AlreadyMember);

    c.patch_spec("takeover", json!({"endpointRef": via(&platform)}))
        .await;
    let on_the_platform = |s: &UserInvitationStatus| {
        s.endpoint.as_ref().is_some_and(|e| e.name == platform)
            && s.users
                .first()
                .is_some_and(|u| u.state == UserState::AlreadyMember)
    };
    let moved = "the entries re-established on the platform";
    let status = wait_for(&h, "takeover", moved, on_the_platform).await;
    let ownership = status.users[0].ownership;
    assert_eq!(ownership, None, "owned on the platform's: {status:?}");
    c.wait_event("takeover", "EndpointChanged").await;
    resync_and_remove_changing_nothing(&h, &["takeover"], 0, "the platform's API").await;
    assert_eq!(groups_of(&h.mock, ADMIN), admin_groups);
    h.finish().await;
}

/// The platform edits a cluster endpoint's `url`, or deletes and recreates it: entries owned
/// before (here adopted, with `adoptExistingUsers`) own nothing afterwards, so neither Enforce
/// nor deleting the resource changes the user.
#[tokio::test]
async fn an_edited_or_recreated_cluster_endpoint_drops_ownership() {
    let groups = ["dashboard_management", "user_management"];
    const ROOT: &str = "root@example.com";
    let (mut h, other) = two_apis_with_admins(&[ADMIN, ROOT], &groups).await;
    let moved = h.cluster.unique("moved");
    let recreated = h.cluster.unique("recreated");
    let base = cluster_endpoint_spec(&h, "UserInvite", Value::Null);
    let spec = |url: &str, adopt: bool| {
        let allowed = json!({"adoptExistingUsers": adopt, "groups": ["*"]});
        with(base.clone(), json!({"url": url, "allowed": allowed}))
    };
    for name in [&moved, &recreated] {
        let adopting = spec(&other.url, true);
        h.cluster.cluster_endpoint(name, adopting).await;
    }
    h.start_controller_resyncing(Duration::from_millis(200));
    let c = &h.cluster;
    for (resource, endpoint, admin) in [("moved", &moved, ADMIN), ("recreated", &recreated, ROOT)] {
        let admin = json!({"emailAddress": admin, "groups": ["dashboard_management"]});
        let spec = enforce_and_delete(via(endpoint), admin);
        c.create_invitation(resource, spec).await;
        let adopted = first_owned(Some(Ownership::Adopted));
        c.wait_status(resource, "adopted", adopted).await;
    }
    // Enforce reached the adopted admin on the first API only.
    let journal = other.api.journal();
    let revoke = |e: &JournalEntry| e.method != "GET" && e.path.contains("/revoke");
    assert!(
        journal.iter().any(revoke),
        "adoption worked on the first API"
    );
    let before = h.mock.api.journal().len();

    // The platform points `moved` at its own API, and deletes and recreates `recreated`.
    // (Neither adopts any more: otherwise each would adopt the user again, rightly, as a new
    // adoption on the API it now reaches.)
    c.cluster_endpoint(&moved, spec(&h.mock.url, false)).await;
    let cluster_endpoints: Api<ClusterInvitationEndpoint> = Api::all(c.client.clone());
    let params = DeleteParams::default();
    cluster_endpoints.delete(&recreated, &params).await.unwrap();
    eventually("the cluster endpoint deleted", async || {
        let found = cluster_endpoints.get_opt(&recreated).await.unwrap();
        found.is_none()
    })
    .await;
    let not_adopting = spec(&other.url, false);
    c.cluster_endpoint(&recreated, not_adopting).await;
    let other_before = other.api.journal().len();
    let dropped = |s: &UserInvitationStatus| {
        let first = s.users.first();
        first.is_some_and(|u| u.ownership.is_none() && u.state == UserState::AlreadyMember)
    };
    for resource in ["moved", "recreated"] {
        c.wait_status(resource, "ownership dropped", dropped).await;
        c.wait_event(resource, "EndpointChanged").await;
    }
    resync_and_remove_changing_nothing(&h, &["moved", "recreated"], before, "the new API").await;
    let changes = changes_since(&other, other_before);
    assert_eq!(changes, Vec::<String>::new(), "the recreated one's API");
    assert_eq!(groups_of(&h.mock, ADMIN), groups);
    let kept = other.api.user(ADMIN).is_some();
    assert!(kept, "not deleted through the recreated endpoint");
    h.finish().await;
}

/// The review's second attack: a `deletionPolicy: Delete` resource whose invitation expired
/// is deleted after another team invited the same person. Only the invitation a resource
/// recorded as its own is ever revoked, so the other team's stays.
#[tokio::test]
async fn an_expired_invitations_owner_never_revokes_another_teams() {
    let mut h = Harness::org_invitation(MockConfig::default()).await;
    h.start_controller_resyncing(Duration::from_millis(200));
    let c = &h.cluster;
    let person = "shared@example.com";
    let spec = |delete: bool| {
        json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "csp"},
               "deletionPolicy": if delete { "Delete" } else { "Retain" },
               "orgInvitation": {"usernames": [person], "organizationRoles": [{"name": "org_member"}]}})
    };
    let reference = |inv: UserInvitation| inv.status.unwrap().users[0].identifier.clone();
    let first_reference = reference(c.create_ready("first", spec(true)).await).unwrap();
    h.mock.api.expire_invitations();
    let expired = |s: &UserInvitationStatus| {
        s.users
            .first()
            .is_some_and(|u| u.state == UserState::Expired)
    };
    c.wait_status("first", "expired", expired).await;
    // Another team invites the person again.
    let second_reference = reference(c.create_ready("second", spec(false)).await).unwrap();
    assert_ne!(first_reference, second_reference);
    let someone_elses = "the new invitation seen as someone else's";
    let not_its_own = first_owned(None);
    let first = c.wait_status("first", someone_elses, not_its_own).await;
    assert_eq!(reference(first).as_deref(), Some(second_reference.as_str()));
    c.remove("first").await;
    let revoked = org_revocations(&h.mock);
    assert!(
        revoked
            .iter()
            .all(|r| !r.contains(&second_reference) && !r.contains("revoke")),
        "the other team's invitation was revoked: {revoked:?}"
    );
    let status = invitation_status(&h.mock, person);
    assert_eq!(status.as_deref(), Some("AVAILABLE"));
    h.finish().await;
}

// -- Credentials a tenant cannot borrow ----------------------------------------------------------

/// Someone who may create InvitationEndpoints but not read Secrets points an endpoint at a
/// host of their own and at a Secret of the namespace that is not labelled for endpoints:
/// the endpoint is `SecretNotLabelled`, the resource `EndpointNotReady`, and no request
/// carries the Secret's value. Labelling the Secret (its owner's consent) makes it usable;
/// the platform can also turn the check off.
#[tokio::test]
async fn a_secret_without_the_credentials_label_is_never_sent() {
    let mut h = Harness::start().await;
    let theirs = start_mock(MockConfig::default()).await;
    let c = &h.cluster;
    c.put_unlabelled_secret("someone-elses-token", TOKEN).await;
    c.user_invite_endpoint("borrowed", &theirs.url, "someone-elses-token")
        .await;
    h.start_controller();
    let c = &h.cluster;
    let borrowed = |email: &str| {
        let endpoint = json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "borrowed"}});
        with(endpoint, json!({"users": [{"emailAddress": email}]}))
    };
    c.create_invitation("borrow", borrowed("x@example.com"))
        .await;
    let not_labelled = c.endpoint_message("borrowed", "False", "SecretNotLabelled");
    let message = not_labelled.await;
    let credentials_label = "invite.operators.dev/credentials";
    assert!(message.contains(credentials_label), "{message}");
    let message = c.wait_reason("borrow", "EndpointNotReady").await;
    assert!(message.contains("not labelled"));
    let_resync(&h, 3).await;
    let seen = theirs.api.journal();
    assert!(seen.is_empty(), "{seen:?}");

    // The Secret's owner labels it: now it may be used.
    c.put_secret("someone-elses-token", TOKEN).await;
    c.wait_ready("borrow").await;
    assert_eq!(theirs.api.invitations_sent_to("x@example.com"), 1);

    // The platform turns the check off: an unlabelled Secret works too.
    c.put_unlabelled_secret("someone-elses-token", TOKEN).await;
    restart_with(&mut h, |s| s.require_credentials_label = false).await;
    h.cluster
        .create_ready("unchecked", borrowed("y@example.com"))
        .await;
    h.finish().await;
}

/// Plain http to a loopback address (a sidecar of the operator's pod) is for cluster
/// endpoints only, unless the platform opts in with `--namespaced-endpoints-loopback-http`.
#[tokio::test]
async fn namespaced_endpoints_reach_loopback_only_when_the_platform_opts_in() {
    let (mut h, shared) = with_a_cluster_endpoint(|strict| {
        strict.endpoint_policy.namespaced_loopback_http = false;
    })
    .await;
    let c = &h.cluster;
    c.create_invitation("sidecar", user("s@example.com")).await;
    c.create_invitation("platform", user_via(&shared, "p@example.com"))
        .await;
    let message = c.wait_reason("sidecar", "NotAllowed").await;
    let opt_in = "--namespaced-endpoints-loopback-http";
    assert!(message.contains(opt_in), "{message}");
    c.wait_ready("platform").await;
    assert_eq!(h.mock.api.invitations_sent_to("s@example.com"), 0);

    restart_with(&mut h, |_| {}).await; // the suite's settings opt in
    h.cluster.wait_ready("sidecar").await;
    h.finish().await;
}

// -- One tenant cannot take the operator down ----------------------------------------------------

/// A tenant's tarpit: an API that answers every request just under the 1 s timeout and
/// whose member listing never ends, with 200 resources in the tenant's namespace. Another
/// namespace's resources still converge in their normal time: neither the tarpit's namespace
/// nor its endpoint holds more than half of the reconcile slots.
#[tokio::test]
async fn a_tarpit_endpoint_cannot_starve_another_namespace() {
    let mut h = Harness::user_invite().await;
    if !h.cluster.is_test_server() {
        eprintln!("skipped on a real cluster: one controller must watch every namespace");
        return h.finish().await;
    }
    let tarpit = start_mock(MockConfig {
        latency: Duration::from_millis(900),
        endless_members: true,
        ..MockConfig::default()
    })
    .await;
    let tenant = h.cluster.create_namespace("tarpit").await;
    // An OrgInvitation endpoint with a 1 s request timeout.
    let spec = Flavor::OrgInvitation.endpoint(&tarpit.url, 1, 1000);
    endpoint_in(&h.cluster, &tenant, "tarpit", spec).await;
    // One controller, one set of slots, for all.
    start_with(&mut h, |s| s.watch_namespaces.clear());
    let c = &h.cluster;
    for i in 0..200 {
        let spec = org_spec("tarpit", &[format!("t{i}@example.com")], "org_member");
        let metadata = json!({"name": format!("t{i}"), "namespace": tenant});
        c.create_invitation_with(metadata, spec).await;
    }
    // The tarpit holds its share of the slots.
    let metrics = &h.controller.as_ref().unwrap().metrics;
    let deferred = "invite_operator_reconciles_deferred_total";
    let held = "the tarpit's resources are held to their share";
    eventually(held, async || sum_metric(metrics, deferred) > 0).await;
    let started = std::time::Instant::now();
    let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    for name in &names {
        let spec = user(&format!("{name}@example.com"));
        c.create_invitation(name, spec).await;
    }
    for name in &names {
        c.wait_ready(name).await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "it waited {took:?}");
    drop(tarpit);
    h.finish().await;
}

/// A namespace's backlog beyond its share of the reconcile slots converges at the pace of the
/// slots, not of a retry: each resource put off is woken as soon as a slot of its share frees
/// (the fair share wakes waiters again only every 30 s, as a safety net).
#[tokio::test]
async fn resources_put_off_for_their_share_run_as_soon_as_a_slot_frees() {
    let mut h = Harness::user_invite().await;
    let names: Vec<String> = (0..8).map(|i| format!("b{i}")).collect();
    for name in &names {
        let spec = user(&format!("{name}@example.com"));
        h.cluster.create_invitation(name, spec).await;
    }
    // Two reconcile slots, one per namespace and endpoint: of the first two resources the
    // controller takes, one is put off.
    let started = std::time::Instant::now();
    start_with(&mut h, |s| {
        s.concurrency = 2;
        s.fair_share = 0.5;
    });
    for name in &names {
        h.cluster.wait_ready(name).await;
    }
    let took = started.elapsed();
    let metrics = &h.controller.as_ref().unwrap().metrics;
    let deferred = sum_metric(metrics, "invite_operator_reconciles_deferred_total");
    assert!(deferred > 0, "nothing was put off: the test shows nothing");
    assert!(
        took < Duration::from_secs(20),
        "it waited {took:?} (a retry, not a wake)"
    );
    h.finish().await;
}

/// A wake that finds nothing to run (the resource was deleted while it waited for its share)
/// takes no slot, so nothing it would have given back wakes the next resource: the fair share's
/// sweep does, once it comes round.
#[tokio::test]
async fn a_resource_deleted_while_it_waited_for_its_share_does_not_strand_the_next_one() {
    let mut h = Harness::user_invite().await;
    // The first resource's pass holds its namespace's only slot for seconds.
    let slow = start_mock(MockConfig {
        latency: Duration::from_secs(2),
        ..MockConfig::default()
    })
    .await;
    let ns = h.cluster.namespace.clone();
    let mut spec = Flavor::UserInvite.endpoint(&slow.url, 10, 100);
    spec["credentials"]["secretRef"]["name"] = json!("slow-token");
    endpoint_in(&h.cluster, &ns, "slow", spec).await;
    let started = std::time::Instant::now();
    start_with(&mut h, |s| {
        s.concurrency = 2;
        s.fair_share = 0.5;
        s.fair_share_sweep = Duration::from_millis(300);
    });
    let c = &h.cluster;
    c.create_invitation("a", users_spec("slow", &["a@example.com"], &[]))
        .await;
    let in_flight = async || !slow.api.journal().is_empty();
    eventually("a's pass to call its API", in_flight).await;
    let metrics = &h.controller.as_ref().unwrap().metrics;
    let deferred = || sum_metric(metrics, "invite_operator_reconciles_deferred_total");
    let before = deferred();
    // b, then c, wait for the namespace's slot, in that order.
    c.create_invitation("b", user("b@example.com")).await;
    eventually("b to be put off", async || deferred() > before).await;
    c.create_invitation("c", user("c@example.com")).await;
    eventually("c to be put off", async || deferred() > before + 1).await;
    c.delete("b").await;
    c.wait_gone("b").await;
    let a = c.invitations().get("a").await.unwrap();
    let a_ready = a.status.as_ref().is_some_and(is_ready);
    assert!(
        !a_ready,
        "a's pass ended before b was deleted: the test shows nothing"
    );
    // a's pass ends and wakes b, which is gone; c is woken by the sweep.
    c.wait_ready("a").await;
    c.wait_ready("c").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "c waited {took:?}");
    drop(slow);
    h.finish().await;
}

/// An organization whose member listing never ends, each answer `latency` late; starts the
/// controller with `limits` applied to its settings and returns the EndpointNotReady message of a
/// resource inviting x@example.com.
async fn endless_listing(
    latency: Duration,
    limits: impl FnOnce(&mut controller::Settings),
) -> (Harness, String) {
    let config = MockConfig {
        endless_members: true,
        latency,
        ..MockConfig::default()
    };
    let mut h = Harness::org_invitation(config).await;
    start_with(&mut h, limits);
    let spec = org_spec("csp", &["x@example.com"], "org_member");
    h.cluster.create_invitation("team", spec).await;
    let message = h.cluster.wait_reason("team", "EndpointNotReady").await;
    (h, message)
}

/// An organization whose member listing never ends: the read stops at the member budget, the
/// endpoint is `Ready=False` with reason `LimitExceeded` naming it, and the resource says so.
/// The listing is never read past the budget (so memory stays flat), whatever the API does.
#[tokio::test]
async fn an_endless_member_listing_stops_at_the_budget() {
    let (h, message) =
        endless_listing(Duration::ZERO, |s| s.lookup_limits.max_members = 2_000).await;
    assert!(message.contains("more than 2000 members"), "{message}");
    assert!(message.contains("--org-snapshot-max-members"), "{message}");
    let endpoint = h.cluster.endpoint_message("csp", "False", "LimitExceeded");
    let endpoint = endpoint.await;
    assert!(endpoint.contains("2000"), "{endpoint}");
    // Every read stops after the budget's pages (2000 / 200 + 1), and nothing is invited.
    let journal = h.mock.api.journal();
    let pages = journal.iter().filter(|e| e.path.ends_with("/users"));
    let pages = pages.count();
    let lookup = |e: &&JournalEntry| e.method == "GET" && e.path.ends_with("/invitations");
    let lookups = journal.iter().filter(lookup).count();
    let reads = pages.div_ceil(11).max(1);
    assert!(pages <= reads * 11, "{pages} pages");
    assert_eq!(lookups, 0, "the read never got past the members");
    assert_eq!(h.mock.api.invitations_sent_to("x@example.com"), 0);
    h.finish().await;
}

/// A lookup that takes longer than the deadline (every answer just under the 1 s timeout, and
/// a listing that never ends) is stopped at the deadline, with reason `LimitExceeded`. (The
/// member budget is lifted: the listing's first page would otherwise report the organization
/// larger than it, before the deadline.)
#[tokio::test]
async fn a_lookup_past_its_deadline_is_stopped() {
    let (h, message) = endless_listing(Duration::from_millis(800), |s| {
        s.lookup_limits.max_members = usize::MAX;
        s.lookup_limits.deadline = Duration::from_secs(1);
    })
    .await;
    assert!(message.contains("took longer than 1s"), "{message}");
    let c = &h.cluster;
    c.wait_endpoint("csp", "False", "LimitExceeded").await;
    h.finish().await;
}

// -- Several operators in one cluster ------------------------------------------------------------

/// The label that splits the endpoints of a test between controllers.
const SHARD: &str = "invite-e2e/shard";

/// Settings of a controller serving only the endpoints, of both kinds, labelled
/// `invite-e2e/shard=<shard>` (and the test's id, as every test's controllers).
fn shard_settings(cluster: &TestCluster, shard: &str) -> controller::Settings {
    let selector = format!("{},{SHARD}={shard}", cluster.selector());
    let mut settings = cluster.settings();
    settings.cluster_endpoint_selector = Some(selector.clone());
    settings.namespaced_endpoint_selector = Some(selector);
    settings
}

/// The labels of `shard`'s endpoints.
fn shard_labels(cluster: &TestCluster, shard: &str) -> Value {
    with(cluster.labels(), json!({SHARD: shard}))
}

/// Creates or updates the InvitationEndpoint `name` on the mock's UserInvite API (token in
/// Secret `api-token`), labelled for `shard`.
async fn shard_namespaced_endpoint(h: &Harness, name: &str, shard: &str) {
    let spec = Flavor::UserInvite.endpoint(&h.mock.url, 5, 100);
    let labels = shard_labels(&h.cluster, shard);
    h.cluster.apply_endpoint_labelled(name, spec, labels).await;
}

/// `shard`'s endpoints on the mock's UserInvite API: a ClusterInvitationEndpoint (its name is
/// returned) and the InvitationEndpoint `ns-<shard>`.
async fn shard_endpoints(h: &Harness, shard: &str) -> String {
    let c = &h.cluster;
    let name = c.unique(&format!("shard-{shard}"));
    let spec = cluster_endpoint_spec(h, "UserInvite", Value::Null);
    let labels = shard_labels(c, shard);
    c.cluster_endpoint_labelled(&name, spec, labels).await;
    shard_namespaced_endpoint(h, &format!("ns-{shard}"), shard).await;
    name
}

/// A UserInvitation spec: `email` (plain membership) through the endpoint `kind`/`name`,
/// `deletionPolicy: Delete`.
fn through(kind: &str, name: &str, email: &str) -> Value {
    json!({"endpointRef": {"kind": kind, "name": name}, "deletionPolicy": "Delete",
           "users": [{"emailAddress": email, "groups": [], "userGroups": []}]})
}

const CLUSTER: &str = "ClusterInvitationEndpoint";
const NAMESPACED: &str = "InvitationEndpoint";

/// Every Event of the test's namespace, with the name of the object it is about.
async fn namespace_events(cluster: &TestCluster) -> Vec<(String, String)> {
    let api = Api::<Event>::namespaced(cluster.client.clone(), &cluster.namespace);
    let events = api.list(&Default::default()).await.unwrap().items;
    let about = |e: Event| {
        let name = e.regarding.and_then(|r| r.name).unwrap_or_default();
        (name, e.reason.unwrap_or_default())
    };
    events.into_iter().map(about).collect()
}

/// Several operators in one cluster (issue 16): two controllers with disjoint endpoint
/// selectors serve one namespace. Every resource is served by exactly one of them, the one
/// selecting its endpoint (of either kind): only that one writes its status and finalizer (its
/// client's requests show it), publishes its events, invites its user, and on deletion removes
/// the user, exactly once. A resource naming an endpoint that exists for neither is left alone
/// by both: no status, no finalizer, no `EndpointNotFound` anywhere. Each endpoint's status is
/// written by its own controller only.
#[tokio::test]
async fn two_operators_with_disjoint_endpoint_selectors_never_serve_one_resource() {
    let h = Harness::start().await;
    let c = &h.cluster;
    c.put_secret("api-token", TOKEN).await;
    let cluster_endpoints = [
        ("a", shard_endpoints(&h, "a").await),
        ("b", shard_endpoints(&h, "b").await),
    ];
    let (a, log_a) = c.start_recorded_controller(shard_settings(c, "a"));
    let (b, log_b) = c.start_recorded_controller(shard_settings(c, "b"));
    a.wait_ready().await;
    b.wait_ready().await;
    let logs = [("a", &log_a), ("b", &log_b)];
    let writers = |resource: &str, name: &str| -> Vec<&str> {
        let wrote = logs
            .iter()
            .filter(|(_, log)| !log.writes_to(resource, name).is_empty());
        wrote.map(|(shard, _)| *shard).collect()
    };

    // Nobody's first (both controllers see them before anything else is Ready).
    let missing_cluster = c.unique("missing");
    let nobodys = [
        ("nowhere-cluster", CLUSTER, missing_cluster.as_str()),
        ("nowhere-ns", NAMESPACED, "missing"),
    ];
    for (name, kind, endpoint) in nobodys {
        let email = format!("{name}@example.com");
        c.create_invitation(name, through(kind, endpoint, &email))
            .await;
    }
    let served = one_resource_per_shard_kind_and_policy(&h, &cluster_endpoints).await;
    // Each served resource written by its own controller only, its user invited once; nobody's
    // resources written by neither.
    let assert_writes = || {
        for (name, email, shard, _) in &served {
            let wrote = writers("userinvitations", name);
            let both = [&log_a, &log_b].map(|log| log.writes_to("userinvitations", name));
            assert_eq!(wrote, vec![*shard], "{name}: a and b wrote {both:?}");
            assert_eq!(h.mock.api.invitations_sent_to(email), 1, "{email}");
        }
        for (name, ..) in nobodys {
            assert_eq!(writers("userinvitations", name), Vec::<&str>::new());
        }
    };
    for (name, ..) in &served {
        c.wait_ready(name).await;
    }
    for (shard, cluster_endpoint) in &cluster_endpoints {
        c.wait_cluster_endpoint_ready(cluster_endpoint).await;
        let namespaced = format!("ns-{shard}");
        c.wait_endpoint(&namespaced, "True", "CredentialsResolved")
            .await;
    }
    // Time for any pass of the wrong controller (a resource it leaves alone costs no call).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_writes();
    for (name, .., policy) in &served {
        let inv = c.invitations().get(name).await.unwrap();
        let has_finalizer = inv.finalizers().iter().any(|f| f == controller::FINALIZER);
        assert_eq!(has_finalizer, *policy == "Delete", "{name}");
    }
    for (name, ..) in nobodys {
        let inv = c.invitations().get(name).await.unwrap();
        assert_eq!(inv.status, None, "{name} is nobody's");
        assert_eq!(inv.finalizers(), <&[String]>::default(), "{name}");
    }
    for (shard, cluster_endpoint) in &cluster_endpoints {
        let wrote = writers("clusterinvitationendpoints", cluster_endpoint);
        assert_eq!(wrote, vec![*shard]);
        let wrote = writers("invitationendpoints", &format!("ns-{shard}"));
        assert_eq!(wrote, vec![*shard]);
    }

    let (before, identifiers) = delete_all(&h, &served, &nobodys).await;
    assert_removed_once(&h, before, identifiers);
    assert_writes();

    assert_events_by_shard(&h, &logs, &served, &nobodys).await;
    a.stop().await;
    b.stop().await;
    h.finish().await;
}

/// A served resource: its name, its person's address, the shard serving it, its deletion
/// policy.
type Served = (String, String, &'static str, &'static str);

/// Both kinds of endpoint, both policies, both shards: a resource each.
async fn one_resource_per_shard_kind_and_policy(
    h: &Harness,
    cluster_endpoints: &[(&'static str, String)],
) -> Vec<Served> {
    let mut served: Vec<Served> = Vec::new();
    for (shard, cluster_endpoint) in cluster_endpoints {
        let namespaced = format!("ns-{shard}");
        for (kind, endpoint, short) in [
            (CLUSTER, cluster_endpoint.as_str(), "cluster"),
            (NAMESPACED, namespaced.as_str(), "ns"),
        ] {
            for policy in ["Retain", "Delete"] {
                let name = format!("{short}-{}-{shard}", policy.to_lowercase());
                let email = format!("{name}@example.com");
                let spec = with(
                    through(kind, endpoint, &email),
                    json!({"deletionPolicy": policy}),
                );
                h.cluster.create_invitation(&name, spec).await;
                served.push((name, email, shard, policy));
            }
        }
    }
    served
}

/// Deletes every resource: the Delete resources remove each user once, through their own
/// controller; nobody's resources carry no finalizer and go at once. Returns where the journal
/// was before and the identifiers of the users to remove.
async fn delete_all(
    h: &Harness,
    served: &[Served],
    nobodys: &[(&str, &str, &str)],
) -> (usize, Vec<Option<String>>) {
    let c = &h.cluster;
    let before = h.mock.api.journal().len();
    let deleting: Vec<&Served> = served.iter().filter(|(.., p)| *p == "Delete").collect();
    let mut identifiers = Vec::new();
    for (name, email, ..) in &deleting {
        let inv = c.invitations().get(name).await.unwrap();
        let status = inv.status.unwrap();
        identifiers.push(entry(&status, email).identifier.clone());
        c.delete(name).await;
    }
    for (name, ..) in nobodys {
        c.delete(name).await;
        let gone = c.invitations().get_opt(name).await.unwrap().is_none();
        assert!(gone, "{name} had no finalizer");
    }
    for (name, ..) in deleting {
        c.wait_gone(name).await;
    }
    (before, identifiers)
}

/// Each user removed by exactly one DELETE since `before`.
fn assert_removed_once(h: &Harness, before: usize, identifiers: Vec<Option<String>>) {
    let deletes: Vec<String> = h.mock.api.journal()[before..]
        .iter()
        .filter(|e| e.method == "DELETE")
        .map(|e| e.path.replace("%40", "@"))
        .collect();
    assert_eq!(deletes.len(), 4, "{deletes:?}");
    for id in identifiers {
        let id = id.expect("the user's identifier");
        let suffix = format!("/{id}");
        let removed = deletes.iter().filter(|p| p.ends_with(&suffix)).count();
        assert_eq!(removed, 1, "{id}: {deletes:?}");
        assert!(h.mock.api.user(&id).is_none(), "{id} removed");
    }
}

/// Each controller published exactly the events about its own resources.
async fn assert_events_by_shard(
    h: &Harness,
    logs: &[(&str, &RequestLog); 2],
    served: &[Served],
    nobodys: &[(&str, &str, &str)],
) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = namespace_events(&h.cluster).await;
    let not_found = events.iter().any(|(_, r)| r == "EndpointNotFound");
    assert!(!not_found, "{events:?}");
    for (shard, log) in logs {
        let about_its_own = events
            .iter()
            .filter(|(about, _)| served.iter().any(|(n, _, s, _)| n == about && s == shard))
            .count();
        assert_eq!(about_its_own, log.events_created(), "{shard}: {events:?}");
    }
    let created: usize = logs.iter().map(|(_, log)| log.events_created()).sum();
    assert_eq!(events.len(), created, "{events:?}");
    for (name, ..) in nobodys {
        assert!(events.iter().all(|(about, _)| about != name), "{events:?}");
    }
}

/// A controller with endpoint selectors writes nothing to a resource whose endpoint it does
/// not serve: another controller's endpoint of either kind, or one that does not exist (the
/// default ClusterInvitationEndpoint included). No status, no `EndpointNotFound`, no finalizer
/// added, no finalizer released on deletion (no cleanup), no event, no API call; the other
/// controller's endpoints are not checked either. Once an endpoint is labelled for it, the
/// controller serves its resources.
#[tokio::test]
async fn a_controller_with_endpoint_selectors_leaves_resources_it_does_not_serve_alone() {
    let h = Harness::start().await;
    let c = &h.cluster;
    c.put_secret("api-token", TOKEN).await;
    let cluster_a = shard_endpoints(&h, "a").await;
    let cluster_b = shard_endpoints(&h, "b").await;
    let others = resources_on_other_endpoints(&h, &cluster_b).await;
    // One that shard b's controller serves, holding its finalizer, being deleted.
    let held = through(NAMESPACED, "ns-b", "x6@example.com");
    let metadata = json!({"name": "held-by-b", "finalizers": [controller::FINALIZER]});
    c.create_invitation_with(metadata, held).await;
    c.delete("held-by-b").await;
    let mut versions = std::collections::BTreeMap::new();
    for name in others.iter().copied().chain(["held-by-b"]) {
        let inv = c.invitations().get(name).await.unwrap();
        versions.insert(name, inv.metadata.resource_version.clone());
    }

    let (a, log) = c.start_recorded_controller(shard_settings(c, "a"));
    a.wait_ready().await;
    for (name, kind, endpoint) in [
        ("on-cluster-a", CLUSTER, cluster_a.as_str()),
        ("on-ns-a", NAMESPACED, "ns-a"),
    ] {
        let spec = through(kind, endpoint, &format!("{name}@example.com"));
        c.create_ready(name, spec).await;
    }
    c.wait_endpoint("ns-a", "True", "CredentialsResolved").await;
    c.wait_cluster_endpoint_ready(&cluster_a).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (name, version) in &versions {
        let inv = c.invitations().get(name).await.unwrap();
        let now = &inv.metadata.resource_version;
        assert_eq!(now, version, "{name} was written");
        assert_eq!(inv.status, None, "{name}");
        assert_eq!(log.writes_to("userinvitations", name), Vec::<String>::new());
        assert_eq!(c.events_of(name).await.len(), 0, "{name}");
    }
    for name in &others {
        let inv = c.invitations().get(name).await.unwrap();
        assert_eq!(inv.finalizers(), <&[String]>::default(), "{name}");
    }
    let held = c.invitations().get("held-by-b").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.finalizers(), [controller::FINALIZER], "no cleanup");
    let people: Vec<String> = (1..=6).map(|i| format!("x{i}@example.com")).collect();
    assert_sent(&h.mock, &people, 0);
    shard_b_endpoints_untouched(&h, &log, &cluster_b).await;
    // The platform hands shard b's namespaced endpoint to this controller: it serves its
    // resources from then on (and releases the deleted one, which owns nothing).
    shard_namespaced_endpoint(&h, "ns-b", "a").await;
    let inv = c.wait_ready("on-ns-b").await;
    assert_eq!(inv.finalizers(), [controller::FINALIZER]);
    c.wait_gone("held-by-b").await;
    assert_eq!(h.mock.api.invitations_sent_to("x2@example.com"), 1);
    for name in others.iter().filter(|name| **name != "on-ns-b") {
        let inv = c.invitations().get(name).await.unwrap();
        assert_eq!(inv.status, None, "{name}");
    }
    a.stop().await;
    h.finish().await;
}

/// Creates resources on shard b's endpoints, on missing ones and on the default one (none of
/// them served by shard a), each Delete for one person; returns their names.
async fn resources_on_other_endpoints(h: &Harness, cluster_b: &str) -> [&'static str; 5] {
    let missing = h.cluster.unique("missing");
    let others = [
        ("on-cluster-b", CLUSTER, cluster_b),
        ("on-ns-b", NAMESPACED, "ns-b"),
        ("on-missing-cluster", CLUSTER, &missing),
        ("on-missing-ns", NAMESPACED, "missing"),
    ];
    for (i, (name, kind, endpoint)) in others.into_iter().enumerate() {
        let spec = through(kind, endpoint, &format!("x{}@example.com", i + 1));
        h.cluster.create_invitation(name, spec).await;
    }
    let on_default = json!({"deletionPolicy": "Delete",
                            "users": [{"emailAddress": "x5@example.com", "groups": [], "userGroups": []}]});
    h.cluster.create_invitation("on-default", on_default).await;
    let [a, b, c, d] = others.map(|(name, ..)| name);
    [a, b, c, d, "on-default"]
}

/// Shard b's endpoints are neither checked nor written.
async fn shard_b_endpoints_untouched(h: &Harness, log: &RequestLog, cluster_b: &str) {
    let c = &h.cluster;
    let namespaced = Api::<InvitationEndpoint>::namespaced(c.client.clone(), &c.namespace);
    assert_eq!(namespaced.get("ns-b").await.unwrap().status, None);
    let cluster_scoped = Api::<ClusterInvitationEndpoint>::all(c.client.clone());
    assert_eq!(cluster_scoped.get(cluster_b).await.unwrap().status, None);
    let none = Vec::<String>::new();
    assert_eq!(log.writes_to("invitationendpoints", "ns-b"), none);
    assert_eq!(log.writes_to("clusterinvitationendpoints", cluster_b), none);
}
