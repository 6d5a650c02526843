//! The holes of issue 11 that are not about unknown outcomes (those are in
//! `unsettled.rs`):
//!
//! | test | point |
//! |---|---|
//! | `a_split_stopped_by_the_send_deadline_keeps_what_was_answered` | 2: users answered 202 stay `Invited` (owned), refused ones `Failed`, only unsent ones `Pending` |
//! | `a_shared_bad_role_fails_every_user_in_one_pass_without_looping` | 2: 500 usernames, one unknown role: every user `Failed` after a few calls, no backoff loop |
//! | `a_case_duplicate_never_costs_the_other_entries` | 5: Carol keeps her entry, `invitedAt` and guard; only the duplicate fails; Dave is invited once |
//! | `a_blocked_resource_keeps_its_entries_and_the_removals_it_owes` | 5: paused, endpoint missing, not allowed: nothing dropped; the removal is done once unblocked |
//! | `deleting_a_blocked_resource_says_what_was_left_behind` | 5: paused, not allowed, endpoint missing (with a case duplicate): `CleanupSkipped` names the users |
//! | `a_plus_address_is_another_person_*` | 6: `alice+ops@x.com` existing does not make `alice@x.com` a member |
//! | `a_redeemed_invitation_is_accepted_even_before_membership_shows` | 7: `REDEEMED` is `Accepted`, never `Revoked` |
//! | `membership_is_found_in_an_organization_of_25000` | 7: no cap on the member listing |
//! | `deleted_resources_leave_no_metric_series` | 11: the users gauge (per namespace) and the per-resource memory forget deleted resources |

use std::time::Duration;

use crate::common::{flavor::*, tenancy_kit::*, *};
use invite_operator::api::{FailureReason, Ownership, UserInvitationStatus, UserState};
use serde_json::{Value, json};

async fn set_paused(cluster: &TestCluster, name: &str, paused: bool) {
    let value = if paused { json!("true") } else { Value::Null };
    let key = "invite.operators.dev/paused";
    cluster.annotate(name, key, value).await;
}

// ------------------------------------------------------------------ point 2: the split path

#[tokio::test]
async fn a_split_stopped_by_the_send_deadline_keeps_what_was_answered() {
    // 2 requests/s and a 2 s timeout: the refused batch of 12 (one username may not get the
    // operator role) is split one call at a time, and the send deadline (one timeout after
    // the intent) stops the split after a few calls. A watcher records every status and what
    // the API had answered when it was read: nobody answered 202 is ever Pending.
    let flavor = Flavor::OrgInvitation;
    let mut h = flavor.harness(2, 2).await;
    start_with(&mut h, |s| s.retry_base_delay = Duration::from_secs(1));
    let mut usernames: Vec<String> = (0..11).map(|i| format!("ops{i}@vmware.com")).collect();
    usernames.insert(5, "outsider@example.com".to_string());
    let spec = org_spec(ENDPOINT, &usernames, "platform_operator");
    h.cluster.create_invitation("ops", spec).await;
    let mut stopped_by_the_deadline = false;
    let (poll, within) = (Duration::from_millis(20), Duration::from_secs(60));
    let final_status = eventually_every(poll, within, "PartiallyFailed", async || {
        // The journal first: whatever it shows answered was answered before the status read.
        let answered_202 = flavor.invites_answered(&h.mock.api.journal(), 202).concat();
        let Some(status) = h.cluster.invitations().get("ops").await.unwrap().status else {
            return Err("no status".to_string());
        };
        let pending = status
            .users
            .iter()
            .filter(|u| u.state == UserState::Pending);
        for u in pending {
            let email = &u.email_address;
            let answered = answered_202.contains(email);
            assert!(!answered, "{email}: answered 202, Pending: {status:#?}");
            stopped_by_the_deadline |= says(u, "not sent in time");
        }
        let reason = ready(&status).1;
        let done = reason == "PartiallyFailed";
        done.then_some(status).ok_or(reason)
    })
    .await;
    assert!(stopped_by_the_deadline, "the send deadline stopped a split");
    for u in usernames.iter().filter(|u| u.ends_with("@vmware.com")) {
        let e = entry(&final_status, u).unwrap();
        assert_eq!(e.state, UserState::Invited, "{e:?}");
        assert_eq!(e.ownership, Some(Ownership::Created), "{e:?}");
        assert_eq!(h.mock.api.invitations_sent_to(u), 1, "{u}");
    }
    let outsider = entry(&final_status, "outsider@example.com").unwrap();
    assert_eq!(outsider.state, UserState::Failed);
    assert_eq!(outsider.reason, Some(FailureReason::Rejected));
    h.finish().await;
}

#[tokio::test]
async fn a_shared_bad_role_fails_every_user_in_one_pass_without_looping() {
    let flavor = Flavor::OrgInvitation;
    let h = flavor.running(5, 100).await;
    let usernames: Vec<String> = (0..500).map(|i| format!("u{i}@example.com")).collect();
    let spec = org_spec(ENDPOINT, &usernames, "no_such_role");
    h.cluster.create_invitation("many", spec).await;
    let inv = h.cluster.wait_for_reason("many", "Failed").await;
    let status = status_of(&inv);
    assert_eq!(status.failed, 500);
    for u in &usernames {
        let e = entry(status, u).unwrap();
        assert_eq!(e.state, UserState::Failed, "{e:?}");
        assert_eq!(e.reason, Some(FailureReason::Rejected));
        assert!(says(e, "no_such_role"), "{e:?}");
    }
    let posts = || flavor.invite_posts(&h.mock).len();
    let calls = posts();
    // Three batches of at most 200, each refused and probed twice: 9 calls, not hundreds.
    assert!(calls <= 9, "{calls} invite calls");
    let reconciles = h.controller.as_ref().unwrap().reconciles();
    let requests = h.mock.api.journal().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(posts(), calls, "no retry of a refusal");
    assert_eq!(h.mock.api.journal().len(), requests, "no API call at all");
    // A backoff loop would reconcile every 50–500 ms (the tests' retry delays).
    let more = h.controller.as_ref().unwrap().reconciles() - reconciles;
    assert!(more <= 3, "{more} more reconciles in 3 s: a backoff loop");
    h.finish().await;
}

// ------------------------------------------------------- point 5: invalid or blocked specs

#[tokio::test]
async fn a_case_duplicate_never_costs_the_other_entries() {
    let h = Flavor::UserInvite.running(5, 100).await;
    let c = &h.cluster;
    let carol = "carol@example.com";
    let spec = users_spec(ENDPOINT, &[carol], &[]);
    let inv = c.create_ready("team", spec.clone()).await;
    let before = entry(status_of(&inv), carol).unwrap().clone();
    assert_eq!(before.ownership, Some(Ownership::Created));
    // The reported case: Dave added twice, in two spellings.
    let twice = [carol, "Dave@example.com", "dave@example.com"];
    c.patch_spec("team", users_spec(ENDPOINT, &twice, &[]))
        .await;
    let dave_invited = |s: &UserInvitationStatus| {
        s.observed_generation == Some(2) && state(s, "dave@example.com") == Some(UserState::Invited)
    };
    let inv = c.wait_status("team", "Dave invited", dave_invited).await;
    let status = status_of(&inv);
    let kept = entry(status, carol);
    assert_eq!(kept, Some(&before), "Carol's entry is kept as it was");
    let invalid: Vec<_> = status
        .users
        .iter()
        .filter(|u| u.reason == Some(FailureReason::InvalidSpec))
        .collect();
    assert_eq!(invalid.len(), 1, "{status:#?}");
    assert_eq!(invalid[0].state, UserState::Failed);
    assert_eq!(ready(status).1, "InvalidSpec");
    assert_eq!(h.mock.api.invitations_sent_to("dave@example.com"), 1);
    assert_eq!(h.mock.api.invitations_sent_to(carol), 1);
    // Carol's guard holds: another resource naming her leaves her to this one.
    let other = c.create_ready("other", spec).await;
    let shown = entry(status_of(&other), carol).unwrap();
    assert_eq!(shown.ownership, None);
    assert!(says(shown, "team"), "{shown:?}");
    assert_eq!(h.mock.api.invitations_sent_to(carol), 1);
    h.finish().await;
}

#[tokio::test]
async fn a_blocked_resource_keeps_its_entries_and_the_removals_it_owes() {
    let h = Flavor::UserInvite.running(5, 100).await;
    let c = &h.cluster;
    let (a, b, cc, d) = (
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    );
    let inv = c.create_ready("team", deleting(&[a, b, cc, d])).await;
    let invited = status_of(&inv).users.clone();
    let kept = |s: &UserInvitationStatus, dropped: &[&str]| {
        invited.iter().all(|u| {
            let now = entry(s, &u.email_address);
            now.is_some_and(|n| n.state == u.state && n.ownership == u.ownership)
                || (dropped.contains(&u.email_address.as_str()) && now.is_none())
        })
    };

    // Paused, and b removed: nothing is dropped, b's removal stays owed.
    set_paused(c, "team", true).await;
    c.wait_for_reason("team", "Paused").await;
    c.patch_spec("team", deleting(&[a, cc, d])).await;
    let inv = c.wait_generation("team", 2).await;
    assert!(kept(status_of(&inv), &[]), "{:#?}", inv.status);
    assert!(h.mock.api.user(b).is_some());

    // The endpoint gone, and c removed too: still nothing dropped.
    set_paused(c, "team", false).await;
    c.wait_status("team", "b removed", |s| entry(s, b).is_none())
        .await;
    assert!(h.mock.api.user(b).is_none(), "removed once unblocked");
    // (The spec names an endpoint that does not exist: an endpoint deleted and created
    // again would be another endpoint, on which nothing owned before is removed; see
    // tenancy.rs.)
    let missing = json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "missing"}});
    c.patch_spec("team", with(deleting(&[a, d]), missing)).await;
    let blocked = |s: &UserInvitationStatus| {
        s.observed_generation == Some(3) && ready(s).1 == "EndpointNotFound"
    };
    let inv = c
        .wait_status("team", "the change seen while blocked", blocked)
        .await;
    assert!(kept(status_of(&inv), &[b]), "{:#?}", inv.status);

    // Not allowed (a cluster endpoint that does not admit the namespace): still nothing dropped.
    let cluster_endpoint = c.unique("closed");
    cluster_endpoint_on_mock(&h, &cluster_endpoint, true).await;
    let closed =
        json!({"endpointRef": {"kind": "ClusterInvitationEndpoint", "name": cluster_endpoint}});
    c.patch_spec("team", with(deleting(&[a]), closed)).await;
    let inv = c.wait_for_reason("team", "NotAllowed").await;
    assert!(kept(status_of(&inv), &[b]), "{:#?}", inv.status);
    assert!(h.mock.api.user(cc).is_some());
    assert!(h.mock.api.user(d).is_some());

    // Back on the usable endpoint: c and d, no longer listed, are removed.
    let usable = json!({"endpointRef": {"kind": "InvitationEndpoint", "name": ENDPOINT}});
    c.patch_spec("team", usable).await;
    let inv = c.wait_ready("team").await;
    let emails = status_of(&inv)
        .users
        .iter()
        .map(|u| u.email_address.as_str());
    assert_eq!(emails.collect::<Vec<_>>(), vec![a]);
    assert!(h.mock.api.user(cc).is_none());
    assert!(h.mock.api.user(d).is_none());
    assert!(h.mock.api.user(a).is_some());
    h.finish().await;
}

/// A UserInvite spec of `emails` through [`ENDPOINT`], `deletionPolicy: Delete`.
fn deleting(emails: &[&str]) -> Value {
    let mut spec = users_spec(ENDPOINT, emails, &[]);
    spec["deletionPolicy"] = json!("Delete");
    spec
}

/// Creates or updates the UserInvite cluster endpoint `name` on the mock, with the test's
/// Secret; `closed`: admitting no namespace.
async fn cluster_endpoint_on_mock(h: &Harness, name: &str, closed: bool) {
    let mut spec = Flavor::UserInvite.endpoint(&h.mock.url, 5, 100);
    spec["credentials"]["secretRef"]["namespace"] = json!(h.cluster.namespace);
    if closed {
        spec["namespaceSelector"] = json!({"matchLabels": {"invite-e2e/never": "true"}});
    }
    h.cluster.cluster_endpoint(name, spec).await;
}

#[tokio::test]
async fn deleting_a_blocked_resource_says_what_was_left_behind() {
    let h = Flavor::UserInvite.running(5, 100).await;
    let c = &h.cluster;
    // One resource per way of being blocked.
    let blocked = [
        ("paused", "p@example.com"),
        ("invalid", "i@example.com"),
        ("closed", "c@example.com"),
    ];
    let closed = c.unique("closed");
    cluster_endpoint_on_mock(&h, &closed, false).await;
    for (name, email) in blocked {
        let mut spec = deleting(&[email]);
        if name == "closed" {
            spec["endpointRef"] = json!({"kind": "ClusterInvitationEndpoint", "name": closed});
        }
        c.create_ready(name, spec).await;
    }
    set_paused(c, "paused", true).await;
    c.wait_for_reason("paused", "Paused").await;
    let twice = ["i@example.com", "I@example.com"];
    c.patch_spec("invalid", deleting(&twice)).await;
    c.wait_for_reason("invalid", "InvalidSpec").await;
    cluster_endpoint_on_mock(&h, &closed, true).await;
    c.wait_for_reason("closed", "NotAllowed").await;
    // The invalid one's endpoint goes too.
    let mut invalid = deleting(&twice);
    invalid["endpointRef"]["name"] = json!("gone");
    c.patch_spec("invalid", invalid).await;
    c.wait_for_reason("invalid", "EndpointNotFound").await;
    for (name, email) in blocked {
        c.remove(name).await;
        let note = c.wait_event(name, "CleanupSkipped").await.pop().unwrap();
        assert!(note.contains(email), "{name}: {note}");
        assert!(h.mock.api.user(email).is_some(), "{email} left behind");
    }
    h.finish().await;
}

// ---------------------------------------------------------------------- point 6: identity

/// `alice+ops@x.com` existing does not make `alice@x.com` a member; `Bob@X.com` is `bob@x.com`.
async fn a_plus_address_is_another_person(flavor: Flavor) {
    let mut h = flavor.harness(5, 100).await;
    let existing = ["alice+ops@x.com", "Bob@X.com"];
    let people = ["alice@x.com", "bob@x.com"];
    let spec = match flavor {
        Flavor::UserInvite => {
            for id in existing {
                let user = json!({"identifier": id, "groups": [], "userGroups": []});
                h.mock.api.seed_user(user);
            }
            users_spec(ENDPOINT, &people, &[])
        }
        Flavor::OrgInvitation => {
            for id in existing {
                h.mock.api.seed_org_member(id);
            }
            org_spec(ENDPOINT, &people, "org_member")
        }
    };
    h.start_controller();
    let inv = h.cluster.create_ready("team", spec).await;
    let status = status_of(&inv);
    let alice = entry(status, "alice@x.com").unwrap();
    let invited = (UserState::Invited, Some(Ownership::Created));
    assert_eq!((alice.state, alice.ownership), invited);
    assert_eq!(h.mock.api.invitations_sent_to("alice@x.com"), 1);
    // Matched ignoring case only.
    assert_eq!(state(status, "bob@x.com"), Some(UserState::AlreadyMember));
    assert_eq!(h.mock.api.invitations_sent_to("bob@x.com"), 0);
    h.finish().await;
}

per_flavor!(
    a_plus_address_is_another_person() =>
    a_plus_address_is_another_person_userinvite,
    a_plus_address_is_another_person_orginvitation
);

// ------------------------------------------------------------ point 7: org acceptance

#[tokio::test]
async fn a_redeemed_invitation_is_accepted_even_before_membership_shows() {
    let mut h = Flavor::OrgInvitation.harness(5, 100).await;
    h.start_controller_resyncing(Duration::from_secs(1));
    let c = &h.cluster;
    let (shown, not_yet) = ("shown@example.com", "notyet@example.com");
    c.create_ready("team", org_spec(ENDPOINT, &[shown, not_yet], "org_member"))
        .await;
    assert!(h.mock.api.redeem_invitation(shown));
    assert!(h.mock.api.redeem_invitation(not_yet));
    // The second person redeemed, but the organization does not list them (yet).
    assert!(h.mock.api.remove_org_member(not_yet));
    let both = [shown.into(), not_yet.into()];
    let accepted = |s: &UserInvitationStatus| all_in(s, &both, UserState::Accepted);
    let inv = c.wait_status("team", "both accepted", accepted).await;
    // And it stays so: never Revoked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = c.invitations().get("team").await.unwrap();
    assert_eq!(later.status, inv.status);
    h.finish().await;
}

#[tokio::test]
async fn membership_is_found_in_an_organization_of_25000() {
    let mut h = Flavor::OrgInvitation.harness(30, 100).await;
    let members: Vec<String> = (0..25_000)
        .map(|i| format!("m{i}@big.example.com"))
        .collect();
    assert_eq!(h.mock.api.seed_org_members(&members), 25_000);
    h.start_controller();
    let last = members.last().unwrap().as_str();
    let spec = org_spec(ENDPOINT, &[last, "new@example.com"], "org_member");
    let inv = h.cluster.create_ready("team", spec).await;
    let status = status_of(&inv);
    assert_eq!(state(status, last), Some(UserState::AlreadyMember));
    assert_eq!(h.mock.api.invitations_sent_to(last), 0);
    assert_eq!(state(status, "new@example.com"), Some(UserState::Invited));
    h.finish().await;
}

// ------------------------------------------------------------------ point 11: housekeeping

fn users_series(metrics: &invite_operator::telemetry::Metrics, namespace: &str) -> Vec<String> {
    let series = format!("invite_operator_users{{namespace=\"{namespace}\"");
    let text = metrics.encode();
    let lines = text.lines().filter(|l| l.starts_with(&series));
    lines.map(str::to_string).collect()
}

#[tokio::test]
async fn deleted_resources_leave_no_metric_series() {
    let flavor = Flavor::UserInvite;
    let mut h = flavor.harness(5, 100).await;
    let other = h.cluster.create_namespace("b").await;
    // The namespace `other` gets its own endpoint and Secret.
    let endpoint = flavor.endpoint(&h.mock.url, 5, 100);
    endpoint_in(&h.cluster, &other, ENDPOINT, endpoint).await;
    start_with(&mut h, |s| s.watch_namespaces.push(other.clone()));
    let c = &h.cluster;
    let ns = c.namespace.clone();
    let names = ["r0", "r1", "r2"];
    for (i, name) in names.iter().enumerate() {
        let people = [format!("r{i}@example.com"), format!("s{i}@example.com")];
        let mut spec = users_spec(ENDPOINT, &people, &[]);
        if i == 0 {
            spec["deletionPolicy"] = json!("Delete");
        }
        c.create_invitation(name, spec).await;
    }
    let kept = json!({"name": "kept", "namespace": other});
    let spec = users_spec(ENDPOINT, &["k@example.com"], &[]);
    c.create_invitation_with(kept, spec).await;
    for name in names {
        c.wait_ready(name).await;
    }
    let metrics = h.controller.as_ref().unwrap().metrics.clone();
    let one = |ns: &str, n: u32| {
        let series = format!("invite_operator_users{{namespace=\"{ns}\",state=\"invited\"}}");
        vec![format!("{series} {n}")]
    };
    eventually("one series per namespace and state", async || {
        let series = users_series(&metrics, &ns) == one(&ns, 6)
            && users_series(&metrics, &other) == one(&other, 1);
        series.then_some(()).ok_or_else(|| metrics.encode())
    })
    .await;
    for name in names {
        c.delete(name).await;
    }
    for name in names {
        c.wait_gone(name).await;
    }
    eventually("the deleted resources' series are gone", async || {
        let gone = users_series(&metrics, &ns).is_empty();
        gone.then_some(()).ok_or_else(|| metrics.encode())
    })
    .await;
    assert_eq!(users_series(&metrics, &other), one(&other, 1));
    // Endpoints have a readiness series each (few, and gone with the endpoint: metrics.rs);
    // UserInvitations never have one.
    let text = metrics.encode();
    let readiness = "invite_operator_endpoint_ready{";
    let mut lines = text.lines().filter(|l| !l.starts_with(readiness));
    let per_resource = lines.any(|l| l.contains("name=\""));
    assert!(!per_resource, "no series is labelled per resource");
    h.finish().await;
}
