//! Calls coalesced per endpoint: the lookups and invitations of many resources sharing an
//! endpoint go out as a few batched calls; a refused user fails no other resource's users;
//! OrgInvitation reads the organization once per window; the controller's own status writes
//! cause no call at all. (Crash tests with batches in flight are in `exactly_once.rs`.)

use std::time::Duration;

use crate::common::{flavor::*, *};
use invite_mock::{JournalEntry, MockConfig};
use invite_operator::api::UserState;
use serde_json::{Value, json};

/// `h` with its controller started, batching ([`TestCluster::batching_settings`]).
fn batched(mut h: Harness) -> Harness {
    h.start_controller_with(h.cluster.batching_settings());
    h
}

fn count(journal: &[JournalEntry], method: &str, path: &str) -> usize {
    let matching = journal
        .iter()
        .filter(|e| e.method == method && e.path == path);
    matching.count()
}

/// Creates the resources together, each with `spec(name, users)`.
async fn create_all(
    h: &Harness,
    all: &[(String, Vec<String>)],
    spec: impl Fn(&str, &[String]) -> Value,
) {
    let create = all
        .iter()
        .map(|(name, users)| h.cluster.create_invitation(name, spec(name, users)));
    futures::future::join_all(create).await;
}

/// Each address of `all` got one invitation.
fn assert_each_invited_once(h: &Harness, all: &[(String, Vec<String>)]) {
    for u in all.iter().flat_map(|(_, users)| users) {
        assert_eq!(h.mock.api.invitations_sent_to(u), 1, "{u}");
    }
}

#[tokio::test]
async fn lookups_and_invitations_of_many_resources_go_out_as_few_calls() {
    let h = batched(Harness::user_invite().await);
    let all = resources(20, 2);
    create_all(&h, &all, |_, users| users_spec("wavefront", users, &[])).await;
    for (name, _) in &all {
        h.cluster.wait_ready(name).await;
    }
    let journal = h.mock.api.journal();
    let flavor = Flavor::UserInvite;
    let posts = journal.iter().filter(|e| flavor.is_invite_post(e));
    let posts: Vec<Vec<String>> = posts.map(|e| flavor.invited_in(e)).collect();
    let calls = posts.len();
    assert!(calls < 5, "{calls} invite calls for 20 resources");
    let spanning = posts.iter().any(|p| spans(p, &all));
    assert!(spanning, "no invite call spans resources");
    let lookups = count(&journal, "POST", "/api/v2/user/validateUsers");
    // One lookup per batch before, one read-back per invite call after.
    assert!(lookups < 10, "{lookups} lookup calls for 20 resources");
    assert_each_invited_once(&h, &all);
    h.finish().await;
}

#[tokio::test]
async fn a_refused_user_fails_no_other_resources_users() {
    let h = batched(Harness::user_invite().await);
    let all = resources(6, 2);
    create_all(&h, &all, |name, users| {
        let mut spec = users_spec("wavefront", users, &[]);
        // r03's first user asks for a permission the API does not know.
        if name == "r03" {
            spec["users"][0]["groups"] = json!(["no_such_permission"]);
        }
        spec
    })
    .await;
    for (name, users) in &all {
        if name == "r03" {
            let inv = h.cluster.wait_for_reason(name, "PartiallyFailed").await;
            assert_eq!(state_of(&inv, &users[0]), UserState::Failed);
            assert_eq!(state_of(&inv, &users[1]), UserState::Invited);
        } else {
            let inv = h.cluster.wait_ready(name).await;
            for u in users {
                assert_eq!(state_of(&inv, u), UserState::Invited, "{name}: {u}");
            }
        }
    }
    let journal = h.mock.api.journal();
    let posts = count(&journal, "POST", "/api/v2/user/invite");
    // Halving isolates the one refused user: about 2·log2(12) calls, not one per user.
    assert!(posts <= 10, "{posts} invite calls");
    h.finish().await;
}

#[tokio::test]
async fn the_organization_is_read_once_per_window_not_once_per_resource() {
    // Members over several pages of the listing.
    let (h, _) = organization_rollout(12).await;
    let journal = h.mock.api.journal();
    let invitations = format!("/csp/gateway/am/api/orgs/{ORG}/invitations");
    let users = format!("/csp/gateway/am/api/v2/orgs/{ORG}/users");
    let member_pages = count(&journal, "GET", &users);
    let listings = count(&journal, "GET", &invitations);
    let posts = count(&journal, "POST", &invitations);
    // A snapshot = 3 member pages + 1 invitation listing: at most one for the first lookup
    // (it goes out at once on a quiet endpoint), one for the lookups that collected behind it,
    // and one after each invite call; never one per resource.
    assert!(posts < 4, "{posts} invite calls for 12 resources");
    let per_call = format!("{listings} invitation listings for {posts} invite calls");
    assert!(listings <= posts + 3, "{per_call}");
    let few_pages = member_pages <= 3 * (posts + 3);
    assert!(few_pages, "{member_pages} member pages");
    h.finish().await;
}

#[tokio::test]
async fn the_operators_own_status_writes_cause_no_api_calls() {
    let h = Harness::user_invite_running().await;
    // Started and synced first, so that the endpoint watch's initial listing cannot race the
    // creation: the creation is then the only reason for a pass.
    h.controller.as_ref().expect("running").wait_ready().await;
    let users = addresses("own", 3);
    let spec = users_spec("wavefront", &users, &[]);
    h.cluster.create_ready("team", spec).await;
    // The pass wrote the intent and the outcome (deletionPolicy Retain: no finalizer either),
    // then read the identifiers back. Neither write is a reason for another pass, so no pass
    // may look the users up again: counted once the pass ended, and a pass caused by a write
    // would come within milliseconds.
    let controller = h.controller.as_ref().expect("running");
    eventually("the pass to end", async || controller.reconciles() >= 1).await;
    let calls = h.mock.api.journal().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = h.mock.api.journal().len();
    assert_eq!(after, calls, "API calls after the last write");
    assert_eq!(controller.reconciles(), 1, "passes for one creation");
    h.finish().await;
}

/// A rollout of 50 resources × 2 usernames into an organization of 450 members (three pages
/// of the listing): membership is read once, the cheaper way, and never again because of the
/// operator's own invitations; every address gets one invitation.
#[tokio::test]
async fn a_rollout_reads_the_members_once_whatever_it_invites() {
    let (h, all) = organization_rollout(50).await;
    let calls = h.mock.api.calls_by_operation();
    let of = |op: &str| calls.get(op).copied().unwrap_or(0);
    assert!(of("invite users") >= 1, "{calls:?}");
    // Either the listing (3 pages), or its first page, fewer searches than it has pages, and
    // then the listing: never a listing per invite call.
    assert!(of("list members") <= 4, "{calls:?}");
    assert!(of("search members") <= 2, "{calls:?}");
    assert_each_invited_once(&h, &all);
    h.finish().await;
}

/// An organization of 450 members (three pages of the listing) and `n` resources of two
/// usernames each, created at once and Ready; the harness and the resources.
async fn organization_rollout(n: usize) -> (Harness, Vec<(String, Vec<String>)>) {
    let h = Harness::org_invitation(MockConfig::default()).await;
    h.mock.api.seed_org_members(addresses("member", 450));
    let h = batched(h);
    let all = resources(n, 2);
    create_all(&h, &all, |_, users| org_spec("csp", users, "org_member")).await;
    for (name, _) in &all {
        h.cluster.wait_ready(name).await;
    }
    (h, all)
}
