//! Unknown outcomes are not settled (issue 11, points 1, 3 and 4).
//!
//! | test | what it proves |
//! |---|---|
//! | `acted_then_*` | an invite the API acted on but answered with 502, 504, 408, 503, a reset or a timeout keeps its users `Inviting` until `settlesAt`: nobody is looked up before it, each ends `Invited` (owned, `Created`) with one email; both flavours |
//! | `settled_answers_mark_only_their_own_users` | a 400 and a 429 (`Retry-After`) mark only the users of the request that got them, in a batch split where the other half succeeded; `Retry-After` is honoured |
//! | `an_unknown_half_keeps_only_its_own_users_inviting` | the same split with a 502 after the fact: only that half waits for its settle window |
//! | `two_spellings_of_one_url_are_one_api` | two endpoints spelling one URL differently share one in-flight guard: two resources naming one person send one email |
//! | `an_unsettled_person_waits_for_every_other_resource` | another resource does not invite a person whose request is unsettled until `settlesAt`, even when that request acts late |
//! | `a_removed_and_readded_person_waits_for_the_settle_window` | the same resource, after the person is removed and re-added |
//! | `a_shorter_endpoint_timeout_does_not_shorten_a_recorded_window` | `settlesAt` is recorded with the intent: lowering the endpoint's `timeoutSeconds` afterwards changes nothing |
//!
//! Endpoints use short timeouts (1–3 s), so settle windows (two timeouts, plus the second the
//! intent's time is rounded up by; `max_clock_skew` is 0 in tests) stay a few seconds.

use std::time::Duration;

use crate::common::{flavor::*, *};
use invite_mock::ScriptedFault;
use invite_operator::api::{Ownership, UserInvitation, UserInvitationStatus, UserState};
use jiff::Timestamp;

/// Waits until every address is `Inviting` with a `settlesAt`; returns the latest one.
async fn intent_settles_at(h: &Harness, name: &str, users: &[String]) -> Timestamp {
    let inv = h
        .cluster
        .wait_status(name, "the intent", |s| {
            users.iter().all(|u| {
                entry(s, u)
                    .is_some_and(|e| e.state == UserState::Inviting && e.settles_at.is_some())
            })
        })
        .await;
    users
        .iter()
        .filter_map(|u| entry(status_of(&inv), u)?.settles_at)
        .max()
        .expect("settlesAt")
}

/// An invite request the API acts on 5 s after it arrived, past the 3 s timeout.
fn late() -> ScriptedFault {
    ScriptedFault::late(Duration::from_secs(5))
}

/// A harness with a 3 s timeout whose invite requests meet `fault`, the controller started
/// and `name` created for `people`; returns it with the moment their request settles.
async fn unsettled(
    flavor: Flavor,
    fault: ScriptedFault,
    name: &str,
    people: &[String],
) -> (Harness, Timestamp) {
    unsettled_after(flavor, async |_: &Harness| {}, fault, name, people).await
}

/// [`unsettled`], with `prepare` run before the controller starts.
async fn unsettled_after(
    flavor: Flavor,
    prepare: impl AsyncFnOnce(&Harness),
    fault: ScriptedFault,
    name: &str,
    people: &[String],
) -> (Harness, Timestamp) {
    let mut h = flavor.harness(3, 100).await;
    prepare(&h).await;
    h.mock.api.add_fault(flavor.on_invite(fault));
    h.start_controller();
    h.cluster.create_invitation(name, flavor.spec(people)).await;
    let settles_at = intent_settles_at(&h, name, people).await;
    (h, settles_at)
}

/// Asserts that no lookup arrived after `first_post` and before `settles_at`.
fn assert_no_lookup_before(h: &Harness, flavor: Flavor, first_post: u64, settles_at: Timestamp) {
    let early: Vec<String> = h
        .mock
        .api
        .journal()
        .into_iter()
        .filter(|e| e.seq > first_post && flavor.is_lookup(e) && e.at < settles_at)
        .map(|e| format!("{} {} at {}", e.method, e.path, e.at))
        .collect();
    assert!(
        early.is_empty(),
        "looked up before the request settled at {settles_at}: {early:?}"
    );
}

/// Asserts that the users are `Invited`, owned (`Created`) and got one email each.
fn assert_owned_and_invited_once(h: &Harness, status: &UserInvitationStatus, users: &[String]) {
    for u in users {
        let e = entry(status, u).unwrap_or_else(|| panic!("no entry for {u}: {status:#?}"));
        assert_eq!(e.state, UserState::Invited, "{u}: {status:#?}");
        assert_eq!(e.ownership, Some(Ownership::Created), "{u}: {status:#?}");
        assert_eq!(e.settles_at, None, "{u}");
        assert_eq!(h.mock.api.invitations_sent_to(u), 1, "one email to {u}");
    }
}

/// The invite call acts, then fails with `fault`: the users stay `Inviting` until their
/// request settled, are then found, and end invited once, owned by the resource.
async fn acted_then(flavor: Flavor, fault: ScriptedFault) {
    let mut h = flavor.harness(1, 100).await;
    h.mock
        .api
        .add_fault(flavor.on_invite(fault.after_effect(true)));
    h.start_controller();
    let users = addresses("acted", 2);
    h.cluster
        .create_invitation("team", flavor.spec(&users))
        .await;
    let settles_at = intent_settles_at(&h, "team", &users).await;
    let inv = h.cluster.wait_ready("team").await;
    assert_owned_and_invited_once(&h, status_of(&inv), &users);
    let posts = flavor.invite_posts(&h.mock);
    assert_eq!(posts.len(), 1, "found, never posted again: {posts:#?}");
    assert!(posts[0].performed, "the fault acted");
    assert_no_lookup_before(&h, flavor, posts[0].seq, settles_at);
    h.finish().await;
}

macro_rules! acted_then {
    ($($name:ident: $flavor:expr, $fault:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            acted_then($flavor, $fault).await;
        }
    )*};
}

acted_then! {
    acted_then_502_userinvite: Flavor::UserInvite, ScriptedFault::new(502);
    acted_then_502_orginvitation: Flavor::OrgInvitation, ScriptedFault::new(502);
    acted_then_504_userinvite: Flavor::UserInvite, ScriptedFault::new(504);
    acted_then_504_orginvitation: Flavor::OrgInvitation, ScriptedFault::new(504);
    acted_then_408_userinvite: Flavor::UserInvite, ScriptedFault::new(408);
    acted_then_408_orginvitation: Flavor::OrgInvitation, ScriptedFault::new(408);
    acted_then_503_userinvite: Flavor::UserInvite, ScriptedFault::new(503);
    acted_then_503_orginvitation: Flavor::OrgInvitation, ScriptedFault::new(503);
    acted_then_reset_userinvite: Flavor::UserInvite, ScriptedFault::reset();
    acted_then_reset_orginvitation: Flavor::OrgInvitation, ScriptedFault::reset();
    acted_then_timeout_userinvite: Flavor::UserInvite, ScriptedFault::timeout();
    acted_then_timeout_orginvitation: Flavor::OrgInvitation, ScriptedFault::timeout();
}

/// The split scenario's people: a and b invited first; c meets the fault; bad asks for a
/// permission the API refuses.
const A: &str = "a@example.com";
const B: &str = "b@example.com";
const C: &str = "c@example.com";
const BAD: &str = "bad@example.com";

/// A, B and C, and BAD with a permission the API refuses.
fn split_spec() -> serde_json::Value {
    let mut spec = users_spec(ENDPOINT, &[A, B, C], &[]);
    spec["users"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "emailAddress": BAD, "groups": ["no_such_permission"], "userGroups": []
        }));
    spec
}

/// A UserInvite harness with this timeout whose first invite call (the whole batch) is refused
/// as the API itself would (bad's permission), and whose call for the half carrying c meets
/// `c_half`. Creates the split resource `team`; waits until A and B are Invited, C and BAD in
/// `then`.
async fn split_team(
    timeout_seconds: u64,
    c_half: ScriptedFault,
    then: UserState,
) -> (Harness, UserInvitation) {
    let flavor = Flavor::UserInvite;
    let mut h = flavor.harness(timeout_seconds, 100).await;
    let first_batch = ScriptedFault::new(400).body_contains("\"a@example.com\"");
    h.mock.api.add_fault(flavor.on_invite(first_batch));
    h.mock
        .api
        .add_fault(flavor.on_invite(c_half.body_contains("\"c@example.com\"")));
    h.start_controller();
    h.cluster.create_invitation("team", split_spec()).await;
    let inv = h
        .cluster
        .wait_status(
            "team",
            &format!("a and b invited, c and bad {then:?}"),
            |s| {
                state(s, A) == Some(UserState::Invited)
                    && state(s, B) == Some(UserState::Invited)
                    && state(s, C) == Some(then)
                    && state(s, BAD) == Some(then)
            },
        )
        .await;
    (h, inv)
}

#[tokio::test]
async fn settled_answers_mark_only_their_own_users() {
    // [a, b, c, bad]: the whole batch is refused (400 for bad's permission) and halved;
    // [a, b] is invited; [c, bad] gets a 429 with Retry-After: c and bad go back to Pending,
    // a and b stay Invited. On the retry [c, bad] is refused again and halved: c is invited,
    // bad alone fails with the API's message.
    let (a, b, c, bad) = (A, B, C, BAD);
    let throttle = ScriptedFault::new(429).retry_after(1);
    let (h, inv) = split_team(5, throttle, UserState::Pending).await;
    let throttled = entry(status_of(&inv), c).unwrap();
    assert!(
        throttled
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("429"),
        "{throttled:?}"
    );
    assert_eq!(throttled.ownership, None, "nothing was done for c");
    let inv = h.cluster.wait_for_reason("team", "PartiallyFailed").await;
    let status = status_of(&inv);
    assert_owned_and_invited_once(&h, status, &[a.into(), b.into(), c.into()]);
    let refused = entry(status, bad).unwrap();
    assert_eq!(refused.state, UserState::Failed);
    assert_eq!(
        refused.reason,
        Some(invite_operator::api::FailureReason::Rejected)
    );
    assert!(
        refused
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("no_such_permission"),
        "{refused:?}"
    );
    assert_eq!(h.mock.api.invitations_sent_to(bad), 0);
    assert!(
        h.mock.retry_after_violations().is_empty(),
        "Retry-After honoured: {:#?}",
        h.mock.retry_after_violations()
    );
    h.finish().await;
}

#[tokio::test]
async fn an_unknown_half_keeps_only_its_own_users_inviting() {
    // As above, but [c, bad] gets a 502 after the API handled it: c and bad wait for their
    // settle window (looked up only after it) while a and b are Invited at once.
    let (a, b, c, bad) = (A, B, C, BAD);
    let handled = ScriptedFault::new(502).after_effect(true);
    let (h, inv) = split_team(1, handled, UserState::Inviting).await;
    let flavor = Flavor::UserInvite;
    let settles_at = entry(status_of(&inv), c).unwrap().settles_at.unwrap();
    let inv = h.cluster.wait_for_reason("team", "PartiallyFailed").await;
    let status = status_of(&inv);
    assert_owned_and_invited_once(&h, status, &[a.into(), b.into(), c.into()]);
    assert_eq!(state(status, bad), Some(UserState::Failed));
    let unknown = flavor
        .invite_posts(&h.mock)
        .into_iter()
        .find(|e| e.status == 502)
        .expect("the 502");
    // After the 502 nothing about c or bad is asked before their window ends.
    let early: Vec<String> = h
        .mock
        .api
        .journal()
        .into_iter()
        .filter(|e| e.seq > unknown.seq && e.at < settles_at)
        .filter(|e| e.body.to_string().contains(c) || e.body.to_string().contains(bad))
        .map(|e| format!("{} {} {} at {}", e.method, e.path, e.body, e.at))
        .collect();
    assert!(early.is_empty(), "before {settles_at}: {early:?}");
    h.finish().await;
}

#[tokio::test]
async fn two_spellings_of_one_url_are_one_api() {
    // OrgInvitation: the mock sends a second invitation to a pending person, so a race between
    // the two resources would show as two emails. A slow API widens the race window.
    let flavor = Flavor::OrgInvitation;
    let mut h = flavor.harness(5, 100).await;
    flavor
        .apply_endpoint(&h.cluster, "api-slash", &format!("{}/", h.mock.url), 5, 100)
        .await;
    h.mock.api.set_latency(Duration::from_millis(300));
    h.start_controller();
    let shared = "shared@example.com".to_string();
    let mut first = flavor.spec(&[shared.clone(), "one@example.com".into()]);
    let mut second = flavor.spec(&[shared.clone(), "two@example.com".into()]);
    first["endpointRef"]["name"] = ENDPOINT.into();
    second["endpointRef"]["name"] = "api-slash".into();
    let (a, b) = tokio::join!(
        h.cluster.create_invitation("first", first),
        h.cluster.create_invitation("second", second)
    );
    drop((a, b));
    let first = h.cluster.wait_ready("first").await;
    let second = h.cluster.wait_ready("second").await;
    assert_eq!(
        status_of(&first).api,
        status_of(&second).api,
        "one API identity"
    );
    assert_eq!(
        h.mock.api.invitations_sent_to(&shared),
        1,
        "one email for the shared person"
    );
    let owners: Vec<_> = [&first, &second]
        .iter()
        .filter(|inv| entry(status_of(inv), &shared).unwrap().ownership.is_some())
        .map(|inv| inv.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(owners.len(), 1, "one owner: {owners:?}");
    for inv in [&first, &second] {
        let e = entry(status_of(inv), &shared).unwrap();
        if e.ownership.is_none() {
            let owner = format!("{}/{}", h.cluster.namespace, owners[0]);
            assert!(
                e.message.as_deref().unwrap_or_default().contains(&owner),
                "names the owner: {e:?}"
            );
        }
    }
    h.finish().await;
}

#[tokio::test]
async fn an_unsettled_person_waits_for_every_other_resource() {
    // The first resource's invite request is slow: the controller gives up after its 3 s
    // timeout, the API acts at 5 s (within the window of two timeouts). A second resource naming the person must not invite them
    // before the first one's request settled (if it did, the late request would send a second
    // email).
    let flavor = Flavor::OrgInvitation;
    let person = "held@example.com".to_string();
    let (h, settles_at) = unsettled(flavor, late(), "first", std::slice::from_ref(&person)).await;
    h.cluster
        .create_invitation(
            "second",
            flavor.spec(&[person.clone(), "other@example.com".into()]),
        )
        .await;
    let second = h
        .cluster
        .wait_status(
            "second",
            "the other user invited, the person left to first",
            |s| {
                entry(s, &person).is_some_and(|e| {
                    e.ownership.is_none()
                        && matches!(e.state, UserState::Pending | UserState::Invited)
                }) && state(s, "other@example.com") == Some(UserState::Invited)
            },
        )
        .await;
    let waiting = entry(status_of(&second), &person).unwrap();
    assert!(
        waiting
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("first"),
        "{waiting:?}"
    );
    let first = h.cluster.wait_ready("first").await;
    assert_owned_and_invited_once(&h, status_of(&first), std::slice::from_ref(&person));
    let second = h.cluster.wait_ready("second").await;
    let shown = entry(status_of(&second), &person).unwrap();
    assert_eq!(shown.ownership, None, "{shown:?}");
    let posts = flavor.invite_posts_for(&h.mock, &person);
    assert_eq!(posts.len(), 1, "one invite request: {posts:#?}");
    assert!(posts[0].at < settles_at, "sent before the window ended");
    h.finish().await;
}

#[tokio::test]
async fn a_removed_and_readded_person_waits_for_the_settle_window() {
    let flavor = Flavor::OrgInvitation;
    // The invite request is slow: the controller gives up after its 3 s timeout, the API acts
    // at 5 s. Removing and re-adding p meanwhile must not invite p again (the late request
    // would make that a second email).
    let (p, q) = ("p@example.com".to_string(), "q@example.com".to_string());
    let (h, settles_at) = unsettled(flavor, late(), "team", &[p.clone(), q.clone()]).await;
    // Removed while its request is unsettled: the entry stays.
    h.cluster
        .patch_spec(
            "team",
            serde_json::json!({"orgInvitation": {"usernames": [q]}}),
        )
        .await;
    let inv = h.cluster.wait_generation("team", 2).await;
    let kept = entry(status_of(&inv), &p).expect("the unsettled entry is kept");
    assert_eq!(kept.state, UserState::Inviting);
    assert_eq!(kept.settles_at, Some(settles_at));
    h.cluster
        .patch_spec(
            "team",
            serde_json::json!({"orgInvitation": {"usernames": [p, q]}}),
        )
        .await;
    let inv = h.cluster.wait_ready("team").await;
    assert_owned_and_invited_once(&h, status_of(&inv), &[p.clone(), q.clone()]);
    let posts = flavor.invite_posts(&h.mock);
    assert_eq!(posts.len(), 1, "never posted again: {posts:#?}");
    assert!(
        h.mock
            .api
            .journal()
            .iter()
            .filter(|e| e.seq > posts[0].seq && flavor.is_lookup(e))
            .all(|e| e.at >= settles_at),
        "looked up only after {settles_at}"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_shorter_endpoint_timeout_does_not_shorten_a_recorded_window() {
    // The invite request is never answered; its window is recorded with a 3 s timeout
    // (settlesAt = invitedAt + 6 s). Lowering the endpoint's timeout to 1 s afterwards must not
    // bring the next look forward.
    let flavor = Flavor::UserInvite;
    let x = vec!["x@example.com".to_string()];
    let (h, settles_at) = unsettled(flavor, ScriptedFault::timeout(), "team", &x).await;
    let invited_at = {
        let inv = h.cluster.invitations().get("team").await.unwrap();
        entry(status_of(&inv), &x[0]).unwrap().invited_at.unwrap()
    };
    assert_eq!(
        settles_at,
        invited_at + jiff::SignedDuration::from_secs(6),
        "two timeouts of 3 s"
    );
    flavor
        .apply_endpoint(&h.cluster, ENDPOINT, &h.mock.url, 1, 100)
        .await;
    // Until the window ends the entry keeps its recorded settlesAt.
    while Timestamp::now() < settles_at {
        let inv = h.cluster.invitations().get("team").await.unwrap();
        let e = entry(status_of(&inv), &x[0]).unwrap();
        if e.state == UserState::Inviting && e.invited_at == Some(invited_at) {
            assert_eq!(e.settles_at, Some(settles_at), "{e:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let inv = h.cluster.wait_ready("team").await;
    assert_owned_and_invited_once(&h, status_of(&inv), &x);
    let posts = flavor.invite_posts(&h.mock);
    assert_eq!(
        posts.len(),
        2,
        "the unanswered request, then one after the window"
    );
    assert!(posts[1].at >= settles_at, "{} < {settles_at}", posts[1].at);
    assert_no_lookup_before(&h, flavor, posts[0].seq, settles_at);
    h.finish().await;
}

/// A resource deleted while its invite request may still act (here the API acts at 5 s, after
/// the 3 s timeout), then created again with the same name: the new one waits until the
/// request settled instead of inviting the person a second time. Both flavours.
async fn deleted_and_recreated_while_unsettled(flavor: Flavor) {
    let person = "held@example.com".to_string();
    let spec = flavor.spec(std::slice::from_ref(&person));
    let (h, settles_at) = unsettled(flavor, late(), "team", std::slice::from_ref(&person)).await;
    let api = h.cluster.invitations();
    api.delete("team", &Default::default()).await.unwrap();
    while api.get_opt("team").await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.cluster.create_invitation("team", spec).await;
    let waiting = h
        .cluster
        .wait_status("team", "the person held by the deleted resource", |s| {
            entry(s, &person).is_some_and(|e| e.state == UserState::Pending)
        })
        .await;
    let message = entry(status_of(&waiting), &person).unwrap().message.clone();
    assert!(
        message.as_deref().unwrap_or_default().contains("(deleted)"),
        "{message:?}"
    );
    h.cluster.wait_ready("team").await;
    let posts = flavor.invite_posts_for(&h.mock, &person);
    assert_eq!(posts.len(), 1, "one invite request: {posts:#?}");
    assert_eq!(h.mock.api.invitations_sent_to(&person), 1);
    assert!(posts[0].at < settles_at);
    h.finish().await;
}

per_flavor!(
    deleted_and_recreated_while_unsettled() =>
    a_deleted_and_recreated_resource_waits_for_its_unsettled_request_userinvite,
    a_deleted_and_recreated_resource_waits_for_its_unsettled_request_orginvitation
);

/// `spec.endpointRef` switched to another endpoint while an invite request sent through the
/// first may still act (the API acts at 5 s, after the 3 s timeout): the resource keeps its
/// entries and waits for the request to settle, then starts over on the new endpoint (event
/// `EndpointChanged`) and finds the person instead of inviting them again. Both flavours.
async fn switched_while_unsettled(flavor: Flavor) {
    let person = "moved@example.com".to_string();
    let spec = flavor.spec(std::slice::from_ref(&person));
    let other = async |h: &Harness| {
        flavor
            .apply_endpoint(&h.cluster, "other", &h.mock.url, 3, 100)
            .await
    };
    let (h, settles_at) =
        unsettled_after(flavor, other, late(), "team", std::slice::from_ref(&person)).await;
    let mut moved = spec;
    moved["endpointRef"] = serde_json::json!({"kind": "InvitationEndpoint", "name": "other"});
    h.cluster.patch_spec("team", moved).await;
    let waiting = h.cluster.wait_generation("team", 2).await;
    let status = status_of(&waiting);
    assert!(
        ready(status).1 == "Pending" && ready(status).0 == "False",
        "{status:#?}"
    );
    assert_eq!(
        entry(status, &person).map(|e| e.state),
        Some(UserState::Inviting),
        "the entry is kept while its request may act"
    );
    let done = h.cluster.wait_ready("team").await;
    let status = status_of(&done);
    assert_eq!(
        status.endpoint.as_ref().map(|e| e.name.as_str()),
        Some("other")
    );
    let posts = flavor.invite_posts_for(&h.mock, &person);
    assert_eq!(posts.len(), 1, "one invite request: {posts:#?}");
    assert_eq!(h.mock.api.invitations_sent_to(&person), 1);
    assert_no_lookup_before(&h, flavor, posts[0].seq, settles_at);
    h.cluster.wait_event("team", "EndpointChanged").await;
    h.finish().await;
}

per_flavor!(
    switched_while_unsettled() =>
    an_endpoint_switch_waits_for_a_request_sent_through_the_old_one_userinvite,
    an_endpoint_switch_waits_for_a_request_sent_through_the_old_one_orginvitation
);
