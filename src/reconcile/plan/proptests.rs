//! Property tests of the planner: whatever the previous status, the API's answers and the
//! other holders, a pass keeps an entry for every requested address, never invites an address
//! the API reports or one whose request (here or elsewhere) may still act, and a status stays
//! within its size budget.

use std::collections::BTreeMap;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::{
    api::{EndpointRef, UserToCreate},
    invite::Observed,
};

const NOW: i64 = 1_795_341_600; // 2026-11-22T10:00:00Z

fn at(offset: i64) -> Timestamp {
    Timestamp::from_second(NOW + offset).unwrap()
}

/// Addresses from a small pool, in any case (so that repeats and case variants occur).
fn address() -> impl Strategy<Value = String> {
    (0..6u8, any::<bool>()).prop_map(|(i, upper)| {
        let a = format!("user{i}@example.com");
        if upper { a.to_uppercase() } else { a }
    })
}

fn state() -> impl Strategy<Value = UserState> {
    prop::sample::select(UserState::ALL.to_vec())
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    prop::option::of((-300i64..300).prop_map(at))
}

fn previous_entry() -> impl Strategy<Value = UserStatus> {
    (
        (0..6u8).prop_map(|i| format!("user{i}@example.com")),
        state(),
        prop::option::of(prop::sample::select(vec![
            Ownership::Created,
            Ownership::Adopted,
        ])),
        timestamp(),
        timestamp(),
        timestamp(),
    )
        .prop_map(
            |(email, state, ownership, invited_at, settles_at, expires_at)| UserStatus {
                ownership,
                invited_at,
                settles_at,
                expires_at,
                ..entry(&email, state)
            },
        )
}

fn observed() -> impl Strategy<Value = Observed> {
    prop_oneof![
        Just(Observed::Absent),
        any::<bool>().prop_map(|accepted| Observed::Member {
            identifier: "id".into(),
            accepted,
            grants: None,
        }),
        (timestamp(), timestamp()).prop_map(|(expires_at, invited_at)| {
            Observed::PendingInvitation {
                reference: "/inv".into(),
                expires_at,
                invited_at,
            }
        }),
        Just(Observed::RedeemedInvitation {
            reference: "/inv".into()
        }),
        Just(Observed::RevokedInvitation {
            reference: "/inv".into()
        }),
    ]
}

fn holder() -> impl Strategy<Value = OtherHolder> {
    (state(), timestamp()).prop_map(|(state, settles_at)| OtherHolder {
        owner: "other/resource".into(),
        state,
        settles_at,
    })
}

#[derive(Debug, Clone)]
struct Case {
    spec: UserInvitationSpec,
    previous: UserInvitationStatus,
    observed: BTreeMap<String, Observed>,
    others: BTreeMap<String, OtherHolder>,
    generation: i64,
    check_invited: bool,
    adoption: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(address(), 1..8),
        prop::collection::vec(previous_entry(), 0..8),
        prop::collection::btree_map(
            (0..6u8).prop_map(|i| format!("user{i}@example.com")),
            observed(),
            0..6,
        ),
        prop::collection::btree_map(
            (0..6u8).prop_map(|i| format!("user{i}@example.com")),
            holder(),
            0..3,
        ),
        (
            1..3i64,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(emails, users, observed, others, (generation, check, adoption, enforce, delete))| {
                let spec = UserInvitationSpec {
                    endpoint_ref: EndpointRef::default(),
                    users: Some(
                        emails
                            .iter()
                            .map(|e| UserToCreate {
                                email_address: e.clone(),
                                groups: vec![],
                                user_groups: vec![],
                                roles: vec![],
                            })
                            .collect(),
                    ),
                    org_invitation: None,
                    access_policy: if enforce {
                        crate::api::AccessPolicy::Enforce
                    } else {
                        Default::default()
                    },
                    deletion_policy: if delete {
                        crate::api::DeletionPolicy::Delete
                    } else {
                        Default::default()
                    },
                    reinvite_expired: false,
                };
                // One entry per address, as statuses have.
                let mut seen = std::collections::BTreeSet::new();
                let users = users
                    .into_iter()
                    .filter(|u| seen.insert(u.email_address.clone()))
                    .collect();
                Case {
                    spec,
                    previous: UserInvitationStatus {
                        observed_generation: Some(1),
                        users,
                        ..Default::default()
                    },
                    observed,
                    others,
                    generation,
                    check_invited: check,
                    adoption,
                }
            },
        )
}

fn context<'a>(case: &'a Case, requested: &'a Requested) -> PlanContext<'a> {
    let facts = EndpointFacts::for_tests(case.adoption);
    PlanContext {
        now: at(0),
        others: case.others.clone(),
        ..PlanContext::new(
            requested,
            &case.spec,
            &case.previous,
            case.generation,
            case.check_invited,
            facts,
        )
    }
}

/// Whether the API reports the person (a member, a live invitation, a redeemed one).
fn reported(observed: Option<&Observed>) -> bool {
    match observed {
        Some(Observed::Member { .. } | Observed::RedeemedInvitation { .. }) => true,
        Some(Observed::PendingInvitation { expires_at, .. }) => {
            expires_at.is_none_or(|t| t > at(0))
        }
        Some(Observed::Absent | Observed::RevokedInvitation { .. }) | None => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_pass_keeps_every_requested_address_and_invites_only_who_may_be(case in case()) {
        let requested = requested_addresses(&case.spec).unwrap();
        let ctx = context(&case, &requested);
        // What a pass looks up is what it observes; the rest is not reported.
        let looked_up: BTreeMap<String, Observed> = addresses_to_look_up(&ctx)
            .into_iter()
            .map(|l| {
                let o = case.observed.get(&l.email).cloned().unwrap_or(Observed::Absent);
                (l.email, o)
            })
            .collect();
        let p = decide(&ctx, &looked_up);
        // One entry per requested address, in order, then one per invalid entry.
        let emails: Vec<&str> = p.users.iter().map(|u| u.email_address.as_str()).collect();
        let mut expected: Vec<&str> = requested.addresses.iter().map(String::as_str).collect();
        expected.extend(requested.invalid.iter().map(|(w, _)| w.as_str()));
        prop_assert_eq!(emails, expected);
        for email in &p.to_invite {
            let previous = case.previous.users.iter().find(|u| &u.email_address == email);
            // Never one the API reports.
            prop_assert!(!reported(looked_up.get(email)), "{} is reported", email);
            // Never one that was not looked up in this pass.
            prop_assert!(looked_up.contains_key(email));
            // Never one whose own request may still act.
            prop_assert!(!previous.is_some_and(|u| unsettled(u, ctx.now)));
            // Never one another resource holds, unless this resource owns them.
            prop_assert!(
                previous.is_some_and(|u| u.ownership.is_some()) || !case.others.contains_key(email),
                "{} is held elsewhere", email
            );
            // Recorded as this resource's own intent.
            let e = p.users.iter().find(|u| &u.email_address == email).unwrap();
            prop_assert_eq!(e.state, UserState::Inviting);
            prop_assert_eq!(e.ownership, Some(Ownership::Created));
        }
        // An unsettled entry of a requested address is kept as it was.
        for u in &case.previous.users {
            if requested.contains(&u.email_address) && unsettled(u, ctx.now) {
                let now = p.users.iter().find(|e| e.email_address == u.email_address).unwrap();
                prop_assert_eq!(now.state, UserState::Inviting);
                prop_assert_eq!(now.settles_at, u.settles_at);
            }
        }
        // Entries of addresses no longer requested stay while unsettled or owed a removal.
        let kept = kept_entries(&requested, &case.spec, &case.previous, ctx.now);
        for u in &case.previous.users {
            if !requested.contains(&u.email_address) && unsettled(u, ctx.now) {
                prop_assert!(kept.contains(u));
            }
        }
        // The summary keeps every entry and stays within its bounds.
        let mut users = p.users.clone();
        users.extend(kept);
        let n = users.len();
        let status = summarize(&ctx, users, Some("a problem"));
        prop_assert_eq!(status.users.len(), n);
        prop_assert!(status.conditions[0].message.len() <= 2048);
    }

    #[test]
    fn a_blocked_pass_keeps_every_entry(case in case()) {
        let requested = requested_addresses(&case.spec).unwrap();
        let st = blocked_status(
            &requested,
            &case.spec,
            &case.previous,
            case.generation,
            at(0),
            &Blocked::new(ReadyReason::Paused, "paused"),
        );
        for address in &requested.addresses {
            let before = case.previous.users.iter().find(|u| &u.email_address == address);
            let after = st.users.iter().find(|u| &u.email_address == address);
            prop_assert!(after.is_some());
            if let Some(before) = before {
                prop_assert_eq!(Some(before), after);
            }
        }
        for u in &case.previous.users {
            let owed = case.spec.deletion_policy == crate::api::DeletionPolicy::Delete
                && u.ownership.is_some()
                && u.state.has_something_to_remove();
            if owed || unsettled(u, at(0)) {
                prop_assert!(st.users.contains(u), "{:?} dropped", u);
            }
        }
    }

    #[test]
    fn a_status_stays_within_its_message_budget(
        count in 1usize..1000,
        lengths in prop::collection::vec(0usize..5000, 1..50),
    ) {
        let users: Vec<UserStatus> = (0..count)
            .map(|i| {
                let mut u = entry(&format!("u{i}@example.com"), UserState::Failed);
                u.message = Some("é".repeat(lengths[i % lengths.len()] / 2));
                u
            })
            .collect();
        let spec = UserInvitationSpec {
            endpoint_ref: EndpointRef::default(),
            users: Some(users.iter().map(|u| UserToCreate {
                email_address: u.email_address.clone(),
                groups: vec![],
                user_groups: vec![],
                roles: vec![],
            }).collect()),
            org_invitation: None,
            access_policy: Default::default(),
            deletion_policy: Default::default(),
            reinvite_expired: false,
        };
        let case = Case {
            spec,
            previous: Default::default(),
            observed: BTreeMap::new(),
            others: BTreeMap::new(),
            generation: 1,
            check_invited: false,
            adoption: false,
        };
        let requested = requested_addresses(&case.spec).unwrap();
        let status = summarize(&context(&case, &requested), users, Some(&"x".repeat(10_000)));
        let total: usize = status.users.iter().filter_map(|u| u.message.as_ref()).map(String::len).sum();
        prop_assert!(status.users.iter().all(|u| u.message.as_ref().is_none_or(|m| m.len() <= MAX_MESSAGE_BYTES)));
        prop_assert!(total <= 128 * 1024, "{} bytes of messages", total);
        prop_assert!(status.conditions[0].message.len() <= 2048);
    }
}
