//! Tests of the holder index: who holds whom, deletions and relists, journal holds, and the
//! index's compact form (several holders of one person, APIs no entry names).

use super::*;
use crate::api::{Ownership, UserStatus};

fn status(api: &str, users: &[(&str, UserState, Option<Ownership>)]) -> UserInvitationStatus {
    UserInvitationStatus {
        api: Some(ApiIdentity {
            url: api.into(),
            organization_id: None,
        }),
        users: users
            .iter()
            .map(|(e, s, o)| UserStatus {
                ownership: *o,
                ..crate::reconcile::plan::entry(e, *s)
            })
            .collect(),
        ..Default::default()
    }
}

fn api(url: &str) -> ApiIdentity {
    ApiIdentity {
        url: url.into(),
        organization_id: None,
    }
}

#[test]
fn only_owned_held_persons_on_the_same_api_are_reported() {
    let index = HolderIndex::default();
    index.update(
        "team-a/first",
        Some(&status(
            "https://wf",
            &[
                ("x@y.z", UserState::Invited, Some(Ownership::Created)),
                ("seen@y.z", UserState::AlreadyMember, None),
                ("failed@y.z", UserState::Failed, None),
            ],
        )),
    );
    let asked = ["x@y.z".to_string(), "seen@y.z".into(), "failed@y.z".into()];
    let others = index.others(&api("https://wf"), "team-b/second", &asked);
    assert_eq!(others.keys().collect::<Vec<_>>(), vec!["x@y.z"]);
    assert_eq!(others["x@y.z"].owner, "team-a/first");
    assert!(
        index
            .others(&api("https://wf"), "team-a/first", &asked)
            .is_empty()
    );
    assert!(
        index
            .others(&api("https://other"), "team-b/second", &asked)
            .is_empty()
    );
    index.update("team-a/first", Some(&status("https://wf", &[])));
    assert!(
        index
            .others(&api("https://wf"), "team-b/second", &asked)
            .is_empty()
    );
}

#[test]
fn a_deleted_resource_holds_the_people_of_its_unsettled_requests_until_they_settle() {
    let index = HolderIndex::default();
    let mut held = status(
        "https://wf",
        &[
            (
                "inviting@y.z",
                UserState::Inviting,
                Some(Ownership::Created),
            ),
            ("settled@y.z", UserState::Inviting, Some(Ownership::Created)),
            ("invited@y.z", UserState::Invited, Some(Ownership::Created)),
        ],
    );
    let now = Timestamp::now();
    held.users[0].settles_at = Some(now + jiff::SignedDuration::from_secs(60));
    held.users[1].settles_at = Some(now - jiff::SignedDuration::from_secs(1));
    index.update("a/one", Some(&held));
    index.remove("a/one");
    let asked = [
        "inviting@y.z".to_string(),
        "settled@y.z".into(),
        "invited@y.z".into(),
    ];
    // Also for a resource recreated with the same name.
    let others = index.others(&api("https://wf"), "a/one", &asked);
    assert_eq!(others.keys().collect::<Vec<_>>(), vec!["inviting@y.z"]);
    assert_eq!(others["inviting@y.z"].owner, "a/one (deleted)");
    assert_eq!(others["inviting@y.z"].state, UserState::Inviting);
    assert_eq!(others["inviting@y.z"].settles_at, held.users[0].settles_at);
    // A relist that no longer lists a resource does the same.
    held.users[0].settles_at = Some(now + jiff::SignedDuration::from_secs(90));
    index.update("b/two", Some(&held));
    let scope = Some("b".to_string());
    index.relist_started(&scope);
    index.relist_done(&scope);
    assert_eq!(
        index.others(&api("https://wf"), "c/three", &asked)["inviting@y.z"].owner,
        "b/two (deleted)"
    );
}

#[test]
fn a_person_is_held_whatever_the_spelling_of_the_entry_or_the_question() {
    // The index keys by the person (`address::person`): an entry written in another case
    // (an older status) still holds the person asked for in any case.
    let index = HolderIndex::default();
    index.update(
        "team-a/first",
        Some(&status(
            "https://wf",
            &[("X@Y.z", UserState::Invited, Some(Ownership::Created))],
        )),
    );
    let asked = ["x@y.Z".to_string(), "x+ops@y.z".into()];
    let others = index.others(&api("https://wf"), "team-b/second", &asked);
    assert_eq!(others.keys().collect::<Vec<_>>(), vec!["x@y.Z"]);
}

#[test]
fn every_holder_of_a_person_is_kept_and_released_on_its_own() {
    let index = HolderIndex::default();
    let wf = api("https://wf");
    let held = status(
        "https://wf",
        &[("x@y.z", UserState::Invited, Some(Ownership::Created))],
    );
    for resource in ["b/two", "a/one", "b/two"] {
        index.update(resource, Some(&held));
    }
    let asked = ["x@y.z".to_string()];
    assert_eq!(index.others(&wf, "c/three", &asked)["x@y.z"].owner, "a/one");
    assert_eq!(index.others(&wf, "a/one", &asked)["x@y.z"].owner, "b/two");
    index.remove("a/one");
    assert_eq!(index.others(&wf, "c/three", &asked)["x@y.z"].owner, "b/two");
    // b/two was recorded twice: once released, nobody holds the person.
    index.update("b/two", Some(&status("https://wf", &[])));
    assert!(index.others(&wf, "c/three", &asked).is_empty());
}

#[test]
fn apis_no_entry_names_any_more_are_not_kept() {
    let index = HolderIndex::default();
    let entry = [("x@y.z", UserState::Invited, Some(Ownership::Created))];
    for i in 0..100 {
        let url = format!("https://wf-{i}");
        index.update("a/one", Some(&status(&url, &entry)));
    }
    let kept = index.index.lock().unwrap().apis.len();
    assert!(kept <= 10, "{kept} APIs kept for one in use");
    let others = index.others(&api("https://wf-99"), "b/two", &["x@y.z".into()]);
    assert_eq!(others["x@y.z"].owner, "a/one");
}

#[test]
fn a_relist_forgets_what_was_not_listed_again() {
    let index = HolderIndex::default();
    let held = status(
        "https://wf",
        &[("x@y.z", UserState::Invited, Some(Ownership::Created))],
    );
    index.update("a/one", Some(&held));
    index.update("b/two", Some(&held));
    let scope = Some("a".to_string());
    index.relist_started(&scope);
    assert_eq!(index.relist_done(&scope), vec!["a/one".to_string()]);
    let others = index.others(&api("https://wf"), "c/three", &["x@y.z".into()]);
    assert_eq!(others["x@y.z"].owner, "b/two");
}

#[test]
fn journal_entries_hold_their_people_until_recorded_then_deleted_ones_until_they_settle() {
    let index = HolderIndex::default();
    let wf = api("https://wf");
    let until = Timestamp::now() + jiff::SignedDuration::from_secs(60);
    index.hold_journaled(&wf, "a/one", "X@y.z", until);
    let others = index.others(&wf, "b/two", &["x@y.z".into()]);
    assert_eq!(others["x@y.z"].owner, "a/one");
    assert_eq!(others["x@y.z"].state, UserState::Inviting);
    assert_eq!(others["x@y.z"].settles_at, Some(until));
    assert!(
        index.others(&wf, "a/one", &["x@y.z".into()]).is_empty(),
        "not a holder other than itself"
    );
    assert!(
        index
            .others(&api("https://other"), "b/two", &["x@y.z".into()])
            .is_empty(),
        "only on the same API"
    );
    index.release_journaled("a/one", "x@y.z");
    assert!(index.others(&wf, "b/two", &["x@y.z".into()]).is_empty());
    // A resource gone with its request unsettled: held until it settles.
    index.hold_deleted(&wf, "a/one", "x@y.z", until);
    let others = index.others(&wf, "b/two", &["x@y.z".into()]);
    assert_eq!(others["x@y.z"].owner, "a/one (deleted)");
    index.hold_deleted(&wf, "a/one", "w@y.z", Timestamp::now());
    assert!(
        index.others(&wf, "b/two", &["w@y.z".into()]).is_empty(),
        "a settled request holds nobody"
    );
}
