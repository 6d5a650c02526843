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

use crate::common::tenancy_kit::says;
use crate::common::{flavor::*, *};
use invite_mock::ScriptedFault;
use invite_operator::api::{
    FailureReason, Ownership, UserInvitation, UserInvitationStatus, UserState, UserStatus,
};
use jiff::Timestamp;
use serde_json::json;

/// Waits until every address is `Inviting` with a `settlesAt`; returns the latest one.
async fn intent_settles_at(h: &Harness, name: &str, users: &[String]) -> Timestamp {
    let intent = |s: &UserInvitationStatus| {
        let inviting = |e: &UserStatus| e.state == UserState::Inviting && e.settles_at.is_some();
        users.iter().all(|u| entry(s, u).is_some_and(inviting))
    };
    let inv = h.cluster.wait_status(name, "the intent", intent).await;
    let status = status_of(&inv);
    let settles_at = users.iter().filter_map(|u| entry(status, u)?.settles_at);
    settles_at.max().expect("settlesAt")
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
    let journal = h.mock.api.journal();
    let early: Vec<String> = journal
        .into_iter()
        .filter(|e| e.seq > first_post && flavor.is_lookup(e) && e.at < settles_at)
        .map(|e| format!("{} {} at {}", e.method, e.path, e.at))
        .collect();
    let before = format!("looked up before the request settled at {settles_at}");
    assert!(early.is_empty(), "{before}: {early:?}");
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
    let acting = flavor.on_invite(fault.after_effect(true));
    h.mock.api.add_fault(acting);
    h.start_controller();
    let users = addresses("acted", 2);
    let spec = flavor.spec(&users);
    h.cluster.create_invitation("team", spec).await;
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

/// A UserInvite harness with this timeout whose first invite call (the whole batch) is refused
/// as the API itself would (bad's permission), and whose call for the half carrying c meets
/// `c_half`. Creates the split resource `team` (A, B and C, and BAD with a permission the API
/// refuses); waits until A and B are Invited, C and BAD in `then`.
async fn split_team(
    timeout_seconds: u64,
    c_half: ScriptedFault,
    then: UserState,
) -> (Harness, UserInvitation) {
    let flavor = Flavor::UserInvite;
    let mut h = flavor.harness(timeout_seconds, 100).await;
    let first_batch = ScriptedFault::new(400).body_contains("\"a@example.com\"");
    h.mock.api.add_fault(flavor.on_invite(first_batch));
    let c_half = c_half.body_contains("\"c@example.com\"");
    h.mock.api.add_fault(flavor.on_invite(c_half));
    h.start_controller();
    let mut spec = users_spec(ENDPOINT, &[A, B, C], &[]);
    let bad = json!({"emailAddress": BAD, "groups": ["no_such_permission"], "userGroups": []});
    spec["users"].as_array_mut().unwrap().push(bad);
    h.cluster.create_invitation("team", spec).await;
    let split = |s: &UserInvitationStatus| {
        let invited = Some(UserState::Invited);
        state(s, A) == invited
            && state(s, B) == invited
            && state(s, C) == Some(then)
            && state(s, BAD) == Some(then)
    };
    let what = format!("a and b invited, c and bad {then:?}");
    let inv = h.cluster.wait_status("team", &what, split).await;
    (h, inv)
}

#[tokio::test]
async fn settled_answers_mark_only_their_own_users() {
    // [a, b, c, bad]: the whole batch is refused (400 for bad's permission) and halved;
    // [a, b] is invited; [c, bad] gets a 429 with Retry-After: c and bad go back to Pending,
    // a and b stay Invited. On the retry [c, bad] is refused again and halved: c is invited,
    // bad alone fails with the API's message.
    let throttle = ScriptedFault::new(429).retry_after(1);
    let (h, inv) = split_team(5, throttle, UserState::Pending).await;
    let throttled = entry(status_of(&inv), C).unwrap();
    assert!(says(throttled, "429"), "{throttled:?}");
    assert_eq!(throttled.ownership, None, "nothing was done for c");
    let inv = h.cluster.wait_for_reason("team", "PartiallyFailed").await;
    let status = status_of(&inv);
    assert_owned_and_invited_once(&h, status, &[A.into(), B.into(), C.into()]);
    let refused = entry(status, BAD).unwrap();
    assert_eq!(refused.state, UserState::Failed);
    assert_eq!(refused.reason, Some(FailureReason::Rejected));
    assert!(says(refused, "no_such_permission"), "{refused:?}");
    assert_eq!(h.mock.api.invitations_sent_to(BAD), 0);
    let violations = h.mock.retry_after_violations();
    assert!(violations.is_empty(), "Retry-After: {violations:#?}");
    h.finish().await;
}

#[tokio::test]
async fn an_unknown_half_keeps_only_its_own_users_inviting() {
    // As above, but [c, bad] gets a 502 after the API handled it: c and bad wait for their
    // settle window (looked up only after it) while a and b are Invited at once.
    let handled = ScriptedFault::new(502).after_effect(true);
    let (h, inv) = split_team(1, handled, UserState::Inviting).await;
    let settles_at = entry(status_of(&inv), C).unwrap().settles_at.unwrap();
    let inv = h.cluster.wait_for_reason("team", "PartiallyFailed").await;
    let status = status_of(&inv);
    assert_owned_and_invited_once(&h, status, &[A.into(), B.into(), C.into()]);
    assert_eq!(state(status, BAD), Some(UserState::Failed));
    let posts = Flavor::UserInvite.invite_posts(&h.mock);
    let unknown = posts
        .into_iter()
        .find(|e| e.status == 502)
        .expect("the 502");
    // After the 502 nothing about c or bad is asked before their window ends.
    let journal = h.mock.api.journal();
    let early: Vec<String> = journal
        .into_iter()
        .filter(|e| e.seq > unknown.seq && e.at < settles_at)
        .filter(|e| e.body.to_string().contains(C) || e.body.to_string().contains(BAD))
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
    let (c, slash) = (&h.cluster, format!("{}/", h.mock.url));
    flavor.apply_endpoint(c, "api-slash", &slash, 5, 100).await;
    h.mock.api.set_latency(Duration::from_millis(300));
    h.start_controller();
    let c = &h.cluster;
    let shared = "shared@example.com".to_string();
    let mut first = flavor.spec(&[shared.clone(), "one@example.com".into()]);
    let mut second = flavor.spec(&[shared.clone(), "two@example.com".into()]);
    first["endpointRef"]["name"] = ENDPOINT.into();
    second["endpointRef"]["name"] = "api-slash".into();
    let both = [("first", first), ("second", second)].map(|(n, s)| c.create_invitation(n, s));
    futures::future::join_all(both).await;
    let first = c.wait_ready("first").await;
    let second = c.wait_ready("second").await;
    let (first_api, second_api) = (&status_of(&first).api, &status_of(&second).api);
    assert_eq!(first_api, second_api, "one API identity");
    let emails = h.mock.api.invitations_sent_to(&shared);
    assert_eq!(emails, 1, "one email for the shared person");
    let owners: Vec<_> = [&first, &second]
        .iter()
        .filter(|inv| entry(status_of(inv), &shared).unwrap().ownership.is_some())
        .map(|inv| inv.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(owners.len(), 1, "one owner: {owners:?}");
    let owner = format!("{}/{}", c.namespace, owners[0]);
    for inv in [&first, &second] {
        let e = entry(status_of(inv), &shared).unwrap();
        if e.ownership.is_none() {
            assert!(says(e, &owner), "names the owner: {e:?}");
        }
    }
    h.finish().await;
}

#[tokio::test]
async fn an_unsettled_person_waits_for_every_other_resource() {
    // The first resource's invite request is slow: the controller gives up after its 3 s
    // timeout, the API acts at 5 s (within the window of two timeouts). A second resource
    // naming the person must not invite them before the first one's request settled (if it
    // did, the late request would send a second email).
    let flavor = Flavor::OrgInvitation;
    let person = "held@example.com".to_string();
    let (h, settles_at) = unsettled(flavor, late(), "first", std::slice::from_ref(&person)).await;
    let c = &h.cluster;
    let spec = flavor.spec(&[person.clone(), "other@example.com".into()]);
    c.create_invitation("second", spec).await;
    let left_to_first = |s: &UserInvitationStatus| {
        entry(s, &person).is_some_and(|e| {
            e.ownership.is_none() && matches!(e.state, UserState::Pending | UserState::Invited)
        }) && state(s, "other@example.com") == Some(UserState::Invited)
    };
    let what = "the other user invited, the person left to first";
    let second = c.wait_status("second", what, left_to_first).await;
    let waiting = entry(status_of(&second), &person).unwrap();
    assert!(says(waiting, "first"), "{waiting:?}");
    let first = c.wait_ready("first").await;
    assert_owned_and_invited_once(&h, status_of(&first), std::slice::from_ref(&person));
    let second = c.wait_ready("second").await;
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
    let c = &h.cluster;
    // Removed while its request is unsettled: the entry stays.
    c.patch_spec("team", json!({"orgInvitation": {"usernames": [q]}}))
        .await;
    let inv = c.wait_generation("team", 2).await;
    let kept = entry(status_of(&inv), &p).expect("the unsettled entry is kept");
    assert_eq!(kept.state, UserState::Inviting);
    assert_eq!(kept.settles_at, Some(settles_at));
    c.patch_spec("team", json!({"orgInvitation": {"usernames": [p, q]}}))
        .await;
    let inv = c.wait_ready("team").await;
    assert_owned_and_invited_once(&h, status_of(&inv), &[p.clone(), q.clone()]);
    let posts = flavor.invite_posts(&h.mock);
    assert_eq!(posts.len(), 1, "never posted again: {posts:#?}");
    assert_no_lookup_before(&h, flavor, posts[0].seq, settles_at);
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
    let c = &h.cluster;
    let inv = c.invitations().get("team").await.unwrap();
    let invited_at = entry(status_of(&inv), &x[0]).unwrap().invited_at.unwrap();
    let window = invited_at + jiff::SignedDuration::from_secs(6);
    assert_eq!(settles_at, window, "two timeouts of 3 s");
    flavor
        .apply_endpoint(c, ENDPOINT, &h.mock.url, 1, 100)
        .await;
    // Until the window ends the entry keeps its recorded settlesAt.
    while Timestamp::now() < settles_at {
        let inv = c.invitations().get("team").await.unwrap();
        let e = entry(status_of(&inv), &x[0]).unwrap();
        if e.state == UserState::Inviting && e.invited_at == Some(invited_at) {
            assert_eq!(e.settles_at, Some(settles_at), "{e:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let inv = c.wait_ready("team").await;
    assert_owned_and_invited_once(&h, status_of(&inv), &x);
    let posts = flavor.invite_posts(&h.mock);
    let two = "the unanswered request, then one after the window";
    assert_eq!(posts.len(), 2, "{two}");
    assert!(posts[1].at >= settles_at, "{} < {settles_at}", posts[1].at);
    assert_no_lookup_before(&h, flavor, posts[0].seq, settles_at);
    h.finish().await;
}

/// A resource deleted while its invite request may still act (here the API acts at 5 s, after
/// the 3 s timeout), then created again with the same name: the new one waits until the
/// request settled instead of inviting the person a second time. Both flavours.
async fn deleted_and_recreated_while_unsettled(flavor: Flavor) {
    let person = "held@example.com".to_string();
    let people = std::slice::from_ref(&person);
    let (h, settles_at) = unsettled(flavor, late(), "team", people).await;
    let c = &h.cluster;
    c.delete("team").await;
    while c.invitations().get_opt("team").await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.create_invitation("team", flavor.spec(people)).await;
    let held =
        |s: &UserInvitationStatus| entry(s, &person).is_some_and(|e| e.state == UserState::Pending);
    let waiting = c
        .wait_status("team", "the person held by the deleted resource", held)
        .await;
    let waiting = entry(status_of(&waiting), &person).unwrap();
    assert!(says(waiting, "(deleted)"), "{:?}", waiting.message);
    c.wait_ready("team").await;
    assert_one_invite_request(&h, flavor, &person);
    assert!(flavor.invite_posts_for(&h.mock, &person)[0].at < settles_at);
    h.finish().await;
}

/// One invite request for `person`, and one email.
fn assert_one_invite_request(h: &Harness, flavor: Flavor, person: &str) {
    let posts = flavor.invite_posts_for(&h.mock, person);
    assert_eq!(posts.len(), 1, "one invite request: {posts:#?}");
    assert_eq!(h.mock.api.invitations_sent_to(person), 1);
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
    let people = std::slice::from_ref(&person);
    let other = async |h: &Harness| {
        flavor
            .apply_endpoint(&h.cluster, "other", &h.mock.url, 3, 100)
            .await
    };
    let (h, settles_at) = unsettled_after(flavor, other, late(), "team", people).await;
    let c = &h.cluster;
    let moved = json!({"endpointRef": {"kind": "InvitationEndpoint", "name": "other"}});
    c.patch_spec("team", with(flavor.spec(people), moved)).await;
    let waiting = c.wait_generation("team", 2).await;
    let status = status_of(&waiting);
    let pending = ("False".into(), "Pending".into());
    assert_eq!(ready(status), pending, "{status:#?}");
    let kept = entry(status, &person).map(|e| e.state);
    // The entry is kept while its request may act.
    assert_eq!(kept, Some(UserState::Inviting));
    let done = c.wait_ready("team").await;
    let endpoint = status_of(&done).endpoint.as_ref().map(|e| e.name.as_str());
    assert_eq!(endpoint, Some("other"));
    assert_one_invite_request(&h, flavor, &person);
    let posts = flavor.invite_posts_for(&h.mock, &person);
    assert_no_lookup_before(&h, flavor, posts[0].seq, settles_at);
    c.wait_event("team", "EndpointChanged").await;
    h.finish().await;
}

per_flavor!(
    switched_while_unsettled() =>
    an_endpoint_switch_waits_for_a_request_sent_through_the_old_one_userinvite,
    an_endpoint_switch_waits_for_a_request_sent_through_the_old_one_orginvitation
);
