//! Unit tests of the planner: every (previous state × observation × holder) that matters.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::{
    api::{AccessPolicy, EndpointRef, FailureReason, OrgInvitationRequest, UserToCreate},
    invite::{ApiError, InviteOutcome, Lookup, Observed, UserGrants},
};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-11-22T10:00:00Z";

fn spec(emails: &[&str]) -> UserInvitationSpec {
    UserInvitationSpec {
        endpoint_ref: EndpointRef::default(),
        users: Some(
            emails
                .iter()
                .map(|e| UserToCreate {
                    email_address: e.to_string(),
                    groups: vec![],
                    user_groups: vec![],
                    roles: vec![],
                })
                .collect(),
        ),
        org_invitation: None,
        access_policy: Default::default(),
        deletion_policy: Default::default(),
        reinvite_expired: false,
    }
}

fn user(email: &str, state: UserState) -> UserStatus {
    entry(email, state)
}

fn owned(email: &str, state: UserState) -> UserStatus {
    UserStatus {
        ownership: Some(Ownership::Created),
        ..entry(email, state)
    }
}

fn status(users: Vec<UserStatus>, generation: i64) -> UserInvitationStatus {
    UserInvitationStatus {
        observed_generation: Some(generation),
        users,
        ..Default::default()
    }
}

fn emails(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn lookups(list: &[&str]) -> Vec<Lookup> {
    list.iter().map(|s| Lookup::email(*s)).collect()
}

fn obs(pairs: &[(&str, Observed)]) -> BTreeMap<String, Observed> {
    pairs
        .iter()
        .map(|(e, o)| (e.to_string(), o.clone()))
        .collect()
}

fn member(id: &str, accepted: bool) -> Observed {
    Observed::Member {
        identifier: id.into(),
        accepted,
        grants: None,
    }
}

/// What a planner context borrows.
struct Setup {
    requested: Requested,
    spec: UserInvitationSpec,
    previous: UserInvitationStatus,
}

impl Setup {
    fn new(addresses: &[&str], previous: UserInvitationStatus) -> Setup {
        let spec = spec(addresses);
        Setup {
            requested: requested_addresses(&spec).unwrap(),
            spec,
            previous,
        }
    }

    fn ctx(&self) -> PlanContext<'_> {
        PlanContext {
            requested: &self.requested,
            spec: &self.spec,
            previous: &self.previous,
            generation: 1,
            now: t(NOW),
            check_invited: false,
            api: ApiIdentity {
                url: "https://wf.example.com".into(),
                organization_id: None,
            },
            invitation_lifetime: SignedDuration::from_hours(24),
            settle: SettleWindow {
                request_timeout: Duration::from_secs(30),
                clock_skew: Duration::from_secs(15),
            },
            adoption: false,
            allowed: None,
            others: BTreeMap::new(),
        }
    }
}

#[test]
fn addresses_are_normalized_and_only_case_duplicates_are_marked_invalid() {
    let s = spec(&[
        " Alice@Example.com",
        "bob@example.com",
        "BOB@example.com",
        "not-an-email",
    ]);
    let r = requested_addresses(&s).unwrap();
    assert_eq!(
        r.addresses,
        emails(&["alice@example.com", "bob@example.com"])
    );
    assert_eq!(r.invalid.len(), 2);
    assert_eq!(r.invalid[0].0, "BOB@example.com");
    assert!(
        r.invalid[0].1.contains("bob@example.com"),
        "{}",
        r.invalid[0].1
    );
    assert_eq!(r.invalid[1].0, "not-an-email");
}

#[test]
fn exactly_one_of_users_and_org_invitation() {
    let mut both = spec(&["a@example.com"]);
    both.org_invitation = Some(OrgInvitationRequest {
        usernames: vec!["b@example.com".into()],
        organization_roles: vec![],
        org_role_names: vec![],
        service_roles_dtos: vec![],
        custom_roles: vec![],
        custom_groups_ids: vec![],
        invited_by: None,
        skip_notify: None,
        skip_notify_registration: None,
    });
    assert_eq!(
        requested_addresses(&both).unwrap_err().reason,
        ReadyReason::InvalidSpec
    );
    let mut org_only = both.clone();
    org_only.users = None;
    assert_eq!(
        requested_addresses(&org_only).unwrap().addresses,
        emails(&["b@example.com"])
    );
    let mut neither = both;
    neither.users = None;
    neither.org_invitation = None;
    assert_eq!(
        requested_addresses(&neither).unwrap_err().reason,
        ReadyReason::InvalidSpec
    );
}

#[test]
fn a_case_duplicate_fails_alone_and_keeps_every_other_entry() {
    // Carol was invited; Dave is added twice (two spellings): Carol's entry, her invitedAt
    // and everyone else survive, and only the second Dave fails.
    let mut carol = owned("carol@example.com", UserState::Invited);
    carol.invited_at = Some(t("2026-11-21T10:00:00Z"));
    let s = Setup::new(
        &["carol@example.com", "dave@example.com", "Dave@example.com"],
        status(vec![carol.clone()], 1),
    );
    let c = s.ctx();
    assert_eq!(addresses_to_observe(&c), lookups(&["dave@example.com"]));
    let p = plan(&c, &obs(&[("dave@example.com", Observed::Absent)]));
    assert_eq!(p.to_invite, emails(&["dave@example.com"]));
    assert_eq!(p.users[0], carol);
    assert_eq!(p.users[2].email_address, "Dave@example.com");
    assert_eq!(p.users[2].state, UserState::Failed);
    assert_eq!(p.users[2].reason, Some(FailureReason::InvalidSpec));
    let summary = summarize(&c, p.users.clone(), None);
    assert_eq!(summary.users.len(), 3);
    let blocked = blocked_status(
        &s.requested,
        &s.spec,
        &s.previous,
        1,
        t(NOW),
        &Blocked::new(ReadyReason::Paused, "paused"),
    );
    assert_eq!(blocked.users[0], carol);
    assert_eq!(blocked.users[2].reason, Some(FailureReason::InvalidSpec));
}

#[test]
fn new_users_are_observed_and_absent_ones_invited_as_this_resources_own() {
    let s = Setup::new(
        &["a@example.com", "b@example.com", "c@example.com"],
        Default::default(),
    );
    let c = s.ctx();
    assert_eq!(
        addresses_to_observe(&c),
        lookups(&["a@example.com", "b@example.com", "c@example.com"])
    );
    let p = plan(
        &c,
        &obs(&[
            ("a@example.com", Observed::Absent),
            ("b@example.com", member("b@example.com", true)),
            ("c@example.com", Observed::Absent),
        ]),
    );
    assert_eq!(p.to_invite, emails(&["a@example.com", "c@example.com"]));
    let states: Vec<_> = p.users.iter().map(|u| u.state).collect();
    assert_eq!(
        states,
        vec![
            UserState::Inviting,
            UserState::AlreadyMember,
            UserState::Inviting
        ]
    );
    assert_eq!(p.users[0].ownership, Some(Ownership::Created));
    // Someone who existed before is only observed (InviteOnly wants nothing more).
    assert_eq!(p.users[1].ownership, None);
    assert_eq!(p.users[1].message, None);
    assert_eq!(p.users[1].identifier.as_deref(), Some("b@example.com"));
}

#[test]
fn inviting_after_a_crash_is_looked_up_never_reposted_blindly() {
    let mut sent = owned("sent@example.com", UserState::Inviting);
    sent.invited_at = Some(t("2026-11-22T09:58:00Z"));
    sent.settles_at = Some(t("2026-11-22T09:59:15Z"));
    let mut unsent = owned("unsent@example.com", UserState::Inviting);
    unsent.settles_at = Some(t("2026-11-22T09:59:15Z"));
    let s = Setup::new(
        &["sent@example.com", "unsent@example.com"],
        status(vec![sent, unsent], 1),
    );
    let c = s.ctx();
    assert_eq!(
        addresses_to_observe(&c),
        lookups(&["sent@example.com", "unsent@example.com"])
    );
    let p = plan(
        &c,
        &obs(&[
            ("sent@example.com", member("sent@example.com", false)),
            ("unsent@example.com", Observed::Absent),
        ]),
    );
    assert_eq!(p.to_invite, emails(&["unsent@example.com"]));
    let sent = &p.users[0];
    assert_eq!(sent.state, UserState::Invited);
    assert_eq!(sent.ownership, Some(Ownership::Created));
    assert_eq!(sent.settles_at, None);
    assert_eq!(sent.expires_at, Some(t("2026-11-23T09:58:00Z")));
}

#[test]
fn an_unanswered_invite_is_not_looked_up_or_repeated_before_it_settles() {
    let mut crashed = owned("a@example.com", UserState::Inviting);
    crashed.invited_at = Some(t("2026-11-22T09:59:50Z"));
    crashed.settles_at = Some(t("2026-11-22T10:01:05Z"));
    let s = Setup::new(&["a@example.com"], status(vec![crashed], 1));
    let c = s.ctx();
    // Its request may still be in flight: not even looked up, and looked at again once settled.
    assert!(addresses_to_observe(&c).is_empty());
    let p = plan(&c, &BTreeMap::new());
    assert!(p.to_invite.is_empty());
    assert_eq!(settle_wait(&c, &p.users), Some(Duration::from_secs(65)));
    let later = PlanContext {
        now: t("2026-11-22T10:01:06Z"),
        ..s.ctx()
    };
    assert_eq!(addresses_to_observe(&later), lookups(&["a@example.com"]));
    assert_eq!(
        plan(&later, &obs(&[("a@example.com", Observed::Absent)])).to_invite,
        emails(&["a@example.com"])
    );
}

#[test]
fn the_settle_window_is_two_timeouts_plus_the_clock_skew_recorded_with_the_intent() {
    let window = SettleWindow {
        request_timeout: Duration::from_secs(30),
        clock_skew: Duration::from_secs(15),
    };
    assert_eq!(window.settles_at(t(NOW)), t("2026-11-22T10:01:15Z"));
}

#[test]
fn settled_users_are_not_looked_up_on_an_ordinary_pass() {
    let mut invited = owned("a@example.com", UserState::Invited);
    invited.expires_at = Some(t("2026-11-23T00:00:00Z"));
    let s = Setup::new(
        &[
            "a@example.com",
            "b@example.com",
            "c@example.com",
            "d@example.com",
        ],
        status(
            vec![
                invited,
                user("b@example.com", UserState::AlreadyMember),
                owned("c@example.com", UserState::Accepted),
                user("d@example.com", UserState::Failed),
            ],
            1,
        ),
    );
    let c = s.ctx();
    assert!(addresses_to_observe(&c).is_empty());
    let p = plan(&c, &BTreeMap::new());
    assert!(p.to_invite.is_empty());
    assert_eq!(p.users, s.previous.users);
}

#[test]
fn failed_users_are_retried_only_when_the_spec_changes() {
    let s = Setup::new(
        &["f@example.com"],
        status(vec![user("f@example.com", UserState::Failed)], 1),
    );
    assert!(addresses_to_observe(&s.ctx()).is_empty());
    let changed = PlanContext {
        generation: 2,
        ..s.ctx()
    };
    assert_eq!(addresses_to_observe(&changed), lookups(&["f@example.com"]));
    let p = plan(&changed, &obs(&[("f@example.com", Observed::Absent)]));
    assert_eq!(p.to_invite, emails(&["f@example.com"]));
}

#[test]
fn resync_observes_acceptance_and_expiry() {
    let mut ok = owned("ok@example.com", UserState::Invited);
    ok.expires_at = Some(t("2026-11-23T00:00:00Z"));
    let mut late = owned("late@example.com", UserState::Invited);
    late.expires_at = Some(t("2026-11-22T09:00:00Z"));
    let mut s = Setup::new(
        &["ok@example.com", "late@example.com"],
        status(vec![ok, late], 1),
    );
    // An expired invitation is looked at even without a resync.
    assert_eq!(
        addresses_to_observe(&s.ctx()),
        lookups(&["late@example.com"])
    );
    let c = PlanContext {
        check_invited: true,
        ..s.ctx()
    };
    assert_eq!(
        addresses_to_observe(&c),
        lookups(&["ok@example.com", "late@example.com"])
    );
    let observed = obs(&[
        ("ok@example.com", member("ok@example.com", true)),
        ("late@example.com", member("late@example.com", false)),
    ]);
    let p = plan(&c, &observed);
    assert!(p.to_invite.is_empty());
    assert_eq!(p.users[0].state, UserState::Accepted);
    assert_eq!(p.users[1].state, UserState::Expired);
    s.spec.reinvite_expired = true;
    let reinvite = PlanContext {
        check_invited: true,
        ..s.ctx()
    };
    assert_eq!(
        plan(&reinvite, &observed).to_invite,
        emails(&["late@example.com"])
    );
}

#[test]
fn org_invitations_pending_redeemed_and_revoked() {
    let mut r = owned("r@example.com", UserState::Invited);
    r.expires_at = Some(t("2026-11-29T00:00:00Z"));
    let mut acc = owned("acc@example.com", UserState::Invited);
    acc.expires_at = Some(t("2026-11-29T00:00:00Z"));
    let s = Setup::new(
        &[
            "p@example.com",
            "x@example.com",
            "r@example.com",
            "acc@example.com",
        ],
        status(vec![r, acc], 1),
    );
    let c = PlanContext {
        check_invited: true,
        ..s.ctx()
    };
    let p = plan(
        &c,
        &obs(&[
            (
                "p@example.com",
                Observed::PendingInvitation {
                    reference: "/inv/1".into(),
                    expires_at: Some(t("2026-11-25T00:00:00Z")),
                    invited_at: Some(t("2026-11-18T00:00:00Z")),
                },
            ),
            (
                "x@example.com",
                Observed::PendingInvitation {
                    reference: "/inv/2".into(),
                    expires_at: Some(t("2026-11-20T00:00:00Z")),
                    invited_at: None,
                },
            ),
            (
                "r@example.com",
                Observed::RevokedInvitation {
                    reference: "/inv/3".into(),
                },
            ),
            (
                "acc@example.com",
                Observed::RedeemedInvitation {
                    reference: "/inv/4".into(),
                },
            ),
        ]),
    );
    // A live invitation someone else sent is not sent again, and not owned; an expired one
    // is replaced.
    assert_eq!(p.to_invite, emails(&["x@example.com"]));
    assert_eq!(p.users[0].state, UserState::Invited);
    assert_eq!(p.users[0].ownership, None);
    assert_eq!(p.users[0].identifier.as_deref(), Some("/inv/1"));
    assert!(
        p.users[0]
            .message
            .as_deref()
            .unwrap()
            .contains("not sent by this resource")
    );
    assert_eq!(p.users[2].state, UserState::Revoked);
    // REDEEMED means accepted, never revoked.
    assert_eq!(p.users[3].state, UserState::Accepted);
}

#[test]
fn a_vanished_member_is_deleted_not_reinvited() {
    let s = Setup::new(
        &["m@example.com"],
        status(vec![owned("m@example.com", UserState::Accepted)], 1),
    );
    let mut spec = s.spec.clone();
    spec.access_policy = AccessPolicy::Enforce;
    let c = PlanContext {
        spec: &spec,
        check_invited: true,
        ..s.ctx()
    };
    assert_eq!(addresses_to_observe(&c), lookups(&["m@example.com"]));
    let p = plan(&c, &obs(&[("m@example.com", Observed::Absent)]));
    assert!(p.to_invite.is_empty());
    assert_eq!(p.users[0].state, UserState::Deleted);
}

fn outcome_users(addresses: &[&str]) -> Vec<UserStatus> {
    addresses
        .iter()
        .map(|a| UserStatus {
            invited_at: Some(t(NOW)),
            settles_at: Some(t("2026-11-22T10:01:15Z")),
            ..owned(a, UserState::Inviting)
        })
        .collect()
}

#[test]
fn outcomes_decide_each_users_state() {
    let s = Setup::new(&["a@x.com"], Default::default());
    let c = s.ctx();
    let mut users = outcome_users(&[
        "a@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com", "f@x.com",
    ]);
    let outcomes: BTreeMap<String, InviteOutcome> = [
        (
            "a@x.com",
            InviteOutcome::Invited {
                identifier: "a@x.com".into(),
                expires_at: None,
                warning: Some("Invalid user groups found and ignored [g]".into()),
            },
        ),
        (
            "b@x.com",
            InviteOutcome::Rejected {
                message: "Invalid permission".into(),
            },
        ),
        (
            "c@x.com",
            InviteOutcome::AlreadyMember {
                identifier: "c@x.com".into(),
            },
        ),
        (
            "d@x.com",
            InviteOutcome::NotDone(ApiError::from_status(
                "invite users",
                429,
                "slow down".into(),
                None,
            )),
        ),
        (
            "e@x.com",
            InviteOutcome::Unknown(ApiError::from_status(
                "invite users",
                504,
                "gateway".into(),
                None,
            )),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    apply_outcomes(&c, &mut users, &outcomes);
    assert_eq!(
        (users[0].state, users[0].ownership),
        (UserState::Invited, Some(Ownership::Created))
    );
    assert_eq!(users[0].expires_at, Some(t("2026-11-23T10:00:00Z")));
    assert_eq!(users[0].settles_at, None);
    assert!(users[0].message.as_deref().unwrap().contains("ignored"));
    assert_eq!(
        (users[1].state, users[1].reason),
        (UserState::Failed, Some(FailureReason::Rejected))
    );
    assert_eq!(users[1].message.as_deref(), Some("Invalid permission"));
    assert_eq!(
        (users[2].state, users[2].ownership),
        (UserState::AlreadyMember, None)
    );
    // 429 proves nothing was done: back to Pending, retried.
    assert_eq!(
        (users[3].state, users[3].invited_at, users[3].ownership),
        (UserState::Pending, None, None)
    );
    // 504 may have acted: still Inviting, still ours, and settling.
    assert_eq!(users[4].state, UserState::Inviting);
    assert_eq!(users[4].settles_at, Some(t("2026-11-22T10:01:15Z")));
    // No outcome at all is treated like an unknown one.
    assert_eq!(users[5].state, UserState::Inviting);
}

#[test]
fn existing_users_are_adopted_only_where_the_endpoint_allows_it_and_the_policy_wants_it() {
    let mut s = Setup::new(&["admin@example.com"], Default::default());
    s.spec.access_policy = AccessPolicy::Enforce;
    let found = obs(&[("admin@example.com", member("admin@example.com", true))]);
    let p = plan(&s.ctx(), &found);
    assert_eq!(p.users[0].state, UserState::AlreadyMember);
    assert_eq!(p.users[0].ownership, None);
    assert!(
        p.users[0]
            .message
            .as_deref()
            .unwrap()
            .contains("left alone")
    );
    let summary = summarize(&s.ctx(), p.users, None);
    assert!(
        summary.conditions[0]
            .message
            .contains("1 existing users left alone"),
        "{}",
        summary.conditions[0].message
    );
    let adopting = PlanContext {
        adoption: true,
        ..s.ctx()
    };
    let p = plan(&adopting, &found);
    assert_eq!(p.users[0].ownership, Some(Ownership::Adopted));
    assert_eq!(p.users[0].message, None);
    // InviteOnly never adopts, even where allowed.
    s.spec.access_policy = AccessPolicy::InviteOnly;
    let invite_only = PlanContext {
        adoption: true,
        ..s.ctx()
    };
    assert_eq!(plan(&invite_only, &found).users[0].ownership, None);
}

#[test]
fn a_person_held_by_another_resource_is_shown_with_the_holder_and_never_invited_or_adopted() {
    let mut s = Setup::new(&["x@example.com"], Default::default());
    s.spec.access_policy = AccessPolicy::Enforce;
    let holder = OtherHolder {
        owner: "team-a/first".into(),
        state: UserState::Invited,
        settles_at: None,
    };
    let mut c = PlanContext {
        adoption: true,
        ..s.ctx()
    };
    c.others.insert("x@example.com".into(), holder.clone());
    let p = plan(
        &c,
        &obs(&[("x@example.com", member("x@example.com", false))]),
    );
    assert_eq!(
        (p.users[0].state, p.users[0].ownership),
        (UserState::AlreadyMember, None)
    );
    assert!(
        p.users[0]
            .message
            .as_deref()
            .unwrap()
            .contains("team-a/first")
    );
    // Its invite request is in flight: absent for now, but nobody else invites.
    c.others.insert(
        "x@example.com".into(),
        OtherHolder {
            state: UserState::Inviting,
            settles_at: Some(t("2026-11-22T10:01:00Z")),
            ..holder
        },
    );
    let p = plan(&c, &obs(&[("x@example.com", Observed::Absent)]));
    assert!(p.to_invite.is_empty());
    assert_eq!(p.users[0].state, UserState::Pending);
    assert_eq!(settle_wait(&c, &p.users), Some(Duration::from_secs(60)));
    // Nothing to enforce on a person held elsewhere.
    let grants = UserGrants::default();
    let observed = obs(&[(
        "x@example.com",
        Observed::Member {
            identifier: "x@example.com".into(),
            accepted: true,
            grants: Some(grants),
        },
    )]);
    assert!(grant_drift(&c, &p.users, &observed).is_empty());
}

#[test]
fn enforce_corrects_only_owned_users_and_only_within_allowed() {
    let mut s = Setup::new(
        &["own@example.com", "seen@example.com"],
        status(
            vec![
                owned("own@example.com", UserState::Invited),
                user("seen@example.com", UserState::AlreadyMember),
            ],
            1,
        ),
    );
    s.spec.access_policy = AccessPolicy::Enforce;
    for u in s.spec.users.as_mut().unwrap() {
        u.groups = vec!["dashboard_management".into()];
    }
    let actual = UserGrants {
        groups: ["admin".to_string(), "alerts_management".to_string()].into(),
        ..Default::default()
    };
    let observed: BTreeMap<String, Observed> = ["own@example.com", "seen@example.com"]
        .iter()
        .map(|e| {
            (
                e.to_string(),
                Observed::Member {
                    identifier: e.to_string(),
                    accepted: true,
                    grants: Some(actual.clone()),
                },
            )
        })
        .collect();
    let allowed: crate::api::AllowedGrants = serde_json::from_value(
        serde_json::json!({"groups": ["dashboard_management", "alerts_management"]}),
    )
    .unwrap();
    let c = PlanContext {
        allowed: Some(&allowed),
        ..s.ctx()
    };
    let users = s.previous.users.clone();
    let drift = grant_drift(&c, &users, &observed);
    assert_eq!(drift.len(), 1, "only the owned user is corrected");
    // `admin` is outside allowed: neither granted nor revoked; alerts_management is revoked.
    assert_eq!(
        drift[0].target.groups,
        ["admin".to_string(), "dashboard_management".to_string()].into()
    );
}

#[test]
fn removals_reach_only_owned_users_and_wait_for_a_settling_request() {
    let mut settling = owned("settling@example.com", UserState::Inviting);
    settling.settles_at = Some(t("2026-11-22T10:01:00Z"));
    let mut s = Setup::new(
        &["kept@example.com"],
        status(
            vec![
                owned("gone@example.com", UserState::Invited),
                user("foreign@example.com", UserState::Invited),
                user("existing@example.com", UserState::AlreadyMember),
                UserStatus {
                    ownership: Some(Ownership::Adopted),
                    ..user("adopted@example.com", UserState::AlreadyMember)
                },
                settling,
                owned("kept@example.com", UserState::Invited),
            ],
            1,
        ),
    );
    s.spec.deletion_policy = crate::api::DeletionPolicy::Delete;
    let c = s.ctx();
    let removed: Vec<_> = removals(&c).into_iter().map(|u| u.email_address).collect();
    assert_eq!(
        removed,
        emails(&["gone@example.com", "adopted@example.com"])
    );
    let kept: Vec<_> = kept_entries(&s.requested, &s.spec, &s.previous, t(NOW))
        .into_iter()
        .map(|u| u.email_address)
        .collect();
    assert_eq!(
        kept,
        emails(&[
            "gone@example.com",
            "adopted@example.com",
            "settling@example.com"
        ])
    );
    // Retain owes no removal, but a settling request is still kept (so re-adding the person
    // does not invite them again before it settles).
    s.spec.deletion_policy = crate::api::DeletionPolicy::Retain;
    assert!(removals(&s.ctx()).is_empty());
    let kept: Vec<_> = kept_entries(&s.requested, &s.spec, &s.previous, t(NOW))
        .into_iter()
        .map(|u| u.email_address)
        .collect();
    assert_eq!(kept, emails(&["settling@example.com"]));
}

#[test]
fn a_readded_person_waits_for_their_earlier_request_to_settle() {
    let mut settling = owned("back@example.com", UserState::Inviting);
    settling.settles_at = Some(t("2026-11-22T10:01:00Z"));
    let s = Setup::new(&["back@example.com"], status(vec![settling], 1));
    let c = s.ctx();
    assert!(addresses_to_observe(&c).is_empty());
    assert!(plan(&c, &BTreeMap::new()).to_invite.is_empty());
}

#[test]
fn summary_counts_and_ready_reasons() {
    let s = Setup::new(
        &[
            "a@example.com",
            "b@example.com",
            "f@example.com",
            "p@example.com",
        ],
        Default::default(),
    );
    let c = s.ctx();
    let mut a = owned("a@example.com", UserState::Invited);
    a.identifier = Some("a+x@example.com".into());
    let all = summarize(
        &c,
        vec![a.clone(), user("b@example.com", UserState::AlreadyMember)],
        None,
    );
    assert_eq!(all.invited, 2);
    assert_eq!(all.invited_users, vec!["a+x@example.com", "b@example.com"]);
    assert_eq!(all.api, Some(c.api.clone()));
    let cond = &all.conditions[0];
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "AllInvited")
    );
    assert_eq!(cond.message, "2 of 2 users invited (1 already members)");

    let mut f = user("f@example.com", UserState::Failed);
    f.message = Some("bad group".into());
    let partial = summarize(&c, vec![a.clone(), f.clone()], None);
    assert_eq!(partial.conditions[0].reason, "PartiallyFailed");
    assert!(
        partial.conditions[0]
            .message
            .contains("f@example.com: bad group")
    );
    assert_eq!(summarize(&c, vec![f], None).conditions[0].reason, "Failed");
    let pending = summarize(
        &c,
        vec![a, user("p@example.com", UserState::Inviting)],
        Some("the API is unavailable (503)"),
    );
    assert_eq!(pending.conditions[0].reason, "Pending");
    assert!(
        pending.conditions[0]
            .message
            .ends_with("the API is unavailable (503)")
    );
}

#[test]
fn a_status_with_a_thousand_long_failures_stays_small() {
    let addresses: Vec<String> = (0..1000).map(|i| format!("user{i}@example.com")).collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let s = Setup::new(&refs, Default::default());
    let c = s.ctx();
    let long = "x".repeat(64 * 1024);
    let users = addresses
        .iter()
        .map(|a| UserStatus {
            message: Some(truncate_message(&long)),
            reason: Some(FailureReason::Rejected),
            ..user(a, UserState::Failed)
        })
        .collect();
    let summary = summarize(&c, users, None);
    let size = serde_json::to_vec(&summary).unwrap().len();
    assert!(size < 400 * 1024, "{size} bytes");
    assert!(truncate_message(&long).len() <= MAX_MESSAGE_BYTES);
}

#[test]
fn a_huge_api_message_never_lands_whole_in_the_condition() {
    let huge = format!("go away {}", "é".repeat(1024 * 1024));
    let previous = UserInvitationStatus::default();
    let condition = ready_condition(
        &previous,
        false,
        ReadyReason::EndpointNotReady,
        huge.clone(),
        1,
        t("2026-01-01T00:00:00Z"),
    );
    assert!(condition.message.len() <= MAX_CONDITION_BYTES);
    assert!(condition.message.starts_with("go away"));
    assert_eq!(truncate_condition("short"), "short");
}

#[test]
fn transition_time_changes_only_with_the_condition_status() {
    let s = Setup::new(&["a@example.com"], Default::default());
    let first = summarize(
        &PlanContext {
            now: t("2026-11-22T09:00:00Z"),
            ..s.ctx()
        },
        vec![user("a@example.com", UserState::Inviting)],
        None,
    );
    let s2 = Setup::new(&["a@example.com"], first.clone());
    let still_pending = summarize(
        &PlanContext {
            now: t("2026-11-22T09:30:00Z"),
            ..s2.ctx()
        },
        vec![user("a@example.com", UserState::Pending)],
        Some("retrying"),
    );
    assert_eq!(
        still_pending.conditions[0].last_transition_time,
        first.conditions[0].last_transition_time
    );
    let s3 = Setup::new(&["a@example.com"], still_pending);
    let ready = summarize(
        &s3.ctx(),
        vec![owned("a@example.com", UserState::Invited)],
        None,
    );
    assert_eq!(ready.conditions[0].last_transition_time, to_time(t(NOW)));
}

#[test]
fn a_pass_with_nothing_to_do_reproduces_the_status_exactly() {
    let s = Setup::new(&["a@example.com", "b@example.com"], Default::default());
    let c0 = s.ctx();
    let mut first = plan(
        &c0,
        &obs(&[
            ("a@example.com", Observed::Absent),
            ("b@example.com", member("b@example.com", false)),
        ]),
    );
    let outcomes = [(
        "a@example.com".to_string(),
        InviteOutcome::Invited {
            identifier: "a@example.com".into(),
            expires_at: None,
            warning: None,
        },
    )]
    .into_iter()
    .collect();
    apply_outcomes(&c0, &mut first.users, &outcomes);
    let written = summarize(&c0, first.users, None);
    // An hour later, nothing changed: no lookups, no invitations, an identical status.
    let s2 = Setup::new(&["a@example.com", "b@example.com"], written.clone());
    let later = PlanContext {
        now: t("2026-11-22T11:00:00Z"),
        ..s2.ctx()
    };
    assert!(addresses_to_observe(&later).is_empty());
    let again = plan(&later, &BTreeMap::new());
    assert!(again.to_invite.is_empty());
    assert_eq!(summarize(&later, again.users, None), written);
}

#[test]
fn removed_users_leave_the_status_and_new_ones_are_added_in_spec_order() {
    let s = Setup::new(
        &["new@example.com", "kept@example.com"],
        status(
            vec![
                owned("gone@example.com", UserState::Invited),
                user("kept@example.com", UserState::AlreadyMember),
            ],
            1,
        ),
    );
    let c = PlanContext {
        generation: 2,
        ..s.ctx()
    };
    assert_eq!(addresses_to_observe(&c), lookups(&["new@example.com"]));
    let p = plan(&c, &obs(&[("new@example.com", Observed::Absent)]));
    let order: Vec<_> = p.users.iter().map(|u| u.email_address.as_str()).collect();
    assert_eq!(order, vec!["new@example.com", "kept@example.com"]);
    assert!(kept_entries(&s.requested, &s.spec, &s.previous, t(NOW)).is_empty());
}

#[test]
fn a_blocked_status_keeps_every_entry_and_the_removals_still_owed() {
    let mut s = Setup::new(
        &["a@example.com", "b@example.com"],
        status(
            vec![
                owned("a@example.com", UserState::Invited),
                owned("dropped@example.com", UserState::Invited),
            ],
            1,
        ),
    );
    s.spec.deletion_policy = crate::api::DeletionPolicy::Delete;
    let blocked = Blocked::new(
        ReadyReason::EndpointNotFound,
        "ClusterInvitationEndpoint \"x\" not found",
    );
    let st = blocked_status(&s.requested, &s.spec, &s.previous, 2, t(NOW), &blocked);
    let entries: Vec<_> = st
        .users
        .iter()
        .map(|u| (u.email_address.as_str(), u.state))
        .collect();
    assert_eq!(
        entries,
        vec![
            ("a@example.com", UserState::Invited),
            ("b@example.com", UserState::Pending),
            ("dropped@example.com", UserState::Invited),
        ]
    );
    assert_eq!(st.conditions[0].reason, "EndpointNotFound");
    assert_eq!(st.observed_generation, Some(2));
    assert_eq!(st.invited, 1);
}

#[test]
fn configuration_refusals_put_inviting_users_back_to_pending() {
    let mut users = vec![
        owned("a@example.com", UserState::Inviting),
        owned("b@example.com", UserState::Invited),
    ];
    revert_inviting(&mut users, "401 unauthorized");
    assert_eq!(users[0].state, UserState::Pending);
    assert_eq!(users[0].ownership, None);
    assert_eq!(users[0].message.as_deref(), Some("401 unauthorized"));
    assert_eq!(users[1].state, UserState::Invited);
}

#[test]
fn a_failed_lookup_is_shown_only_when_it_matters() {
    let s = Setup::new(&["new@example.com"], Default::default());
    let c = s.ctx();
    let unavailable = ApiError::from_status("validate users", 503, "busy".into(), None);
    let shown = lookup_failed(&c, &lookups(&["new@example.com"]), &unavailable).unwrap();
    assert_eq!(shown.conditions[0].reason, "Pending");
    let refused = ApiError::from_status("validate users", 401, "bad token".into(), None);
    assert_eq!(
        lookup_failed(&c, &lookups(&["new@example.com"]), &refused)
            .unwrap()
            .conditions[0]
            .reason,
        "EndpointNotReady"
    );
    let s2 = Setup::new(
        &["done@example.com"],
        status(vec![owned("done@example.com", UserState::Invited)], 1),
    );
    assert_eq!(
        lookup_failed(&s2.ctx(), &lookups(&["done@example.com"]), &unavailable),
        None
    );
}

#[test]
fn the_recorded_window_holds_whatever_the_endpoint_and_the_clocks_say_now() {
    // Replica A recorded the intent at 10:00:00 with a 30 s timeout and 15 s of tolerated
    // skew: the request settles at 10:01:15 on any replica's clock.
    let recorded = SettleWindow {
        request_timeout: Duration::from_secs(30),
        clock_skew: Duration::from_secs(15),
    };
    let mut inviting = owned("a@example.com", UserState::Inviting);
    inviting.invited_at = Some(t("2026-11-22T10:00:00Z"));
    inviting.settles_at = Some(recorded.settles_at(t("2026-11-22T10:00:00Z")));
    assert_eq!(inviting.settles_at, Some(t("2026-11-22T10:01:15Z")));
    let mut s = Setup::new(&["a@example.com"], status(vec![inviting.clone()], 1));
    // Replica B: the endpoint's timeout is now 1 s and its clock runs up to 15 s ahead of A's.
    // Neither brings the next look forward: 10:00:03 would be settled under the new timeout,
    // 10:01:14 is A's 10:00:59.
    let now_window = SettleWindow {
        request_timeout: Duration::from_secs(1),
        clock_skew: Duration::ZERO,
    };
    for now in ["2026-11-22T10:00:03Z", "2026-11-22T10:01:14Z"] {
        let c = PlanContext {
            now: t(now),
            settle: now_window,
            ..s.ctx()
        };
        assert!(addresses_to_observe(&c).is_empty(), "{now}");
        let p = plan(&c, &BTreeMap::new());
        assert!(p.to_invite.is_empty(), "{now}");
        assert_eq!(p.users[0], inviting, "{now}: the entry is kept as recorded");
        assert_eq!(
            settle_wait(&c, &p.users),
            Some(Duration::try_from(t("2026-11-22T10:01:15Z").duration_since(t(now))).unwrap())
        );
        // Removed meanwhile: the entry (and its guard) stays.
        let removed = Requested::default();
        assert_eq!(
            kept_entries(&removed, &s.spec, &s.previous, t(now)),
            vec![inviting.clone()]
        );
        // Another resource naming the person waits for the same moment.
        let other = OtherHolder {
            owner: "team-a/first".into(),
            state: UserState::Inviting,
            settles_at: inviting.settles_at,
        };
        let s2 = Setup::new(&["a@example.com"], Default::default());
        let mut c2 = PlanContext {
            now: t(now),
            settle: now_window,
            ..s2.ctx()
        };
        c2.others.insert("a@example.com".into(), other);
        let p2 = plan(&c2, &obs(&[("a@example.com", Observed::Absent)]));
        assert!(p2.to_invite.is_empty(), "{now}");
        assert_eq!(p2.users[0].state, UserState::Pending);
        assert!(
            p2.users[0]
                .message
                .as_deref()
                .unwrap()
                .contains("2026-11-22T10:01:15Z"),
            "{:?}",
            p2.users[0].message
        );
    }
    // Once settled (on the reading replica's clock) the person is looked up again.
    s.previous.users[0].message = None;
    let c = PlanContext {
        now: t("2026-11-22T10:01:15Z"),
        settle: now_window,
        ..s.ctx()
    };
    assert_eq!(addresses_to_observe(&c), lookups(&["a@example.com"]));
}

#[test]
fn a_new_intent_records_its_window_from_the_timeout_of_the_moment() {
    // The window of a new intent uses the endpoint's timeout when it is recorded.
    for (timeout, skew, settles) in [
        (1, 0, "2026-11-22T10:00:02Z"),
        (30, 15, "2026-11-22T10:01:15Z"),
        (120, 15, "2026-11-22T10:04:15Z"),
    ] {
        let w = SettleWindow {
            request_timeout: Duration::from_secs(timeout),
            clock_skew: Duration::from_secs(skew),
        };
        assert_eq!(w.settles_at(t(NOW)), t(settles));
    }
}

#[test]
fn a_spec_with_no_usable_shape_keeps_every_entry() {
    let mut dup = user("Dup@example.com", UserState::Failed);
    dup.reason = Some(FailureReason::InvalidSpec);
    dup.message = Some("listed more than once".into());
    let mut settling = owned("settling@example.com", UserState::Inviting);
    settling.settles_at = Some(t("2026-11-22T10:05:00Z"));
    let previous = status(
        vec![
            owned("a@example.com", UserState::Invited),
            user("member@example.com", UserState::AlreadyMember),
            settling,
            dup,
        ],
        1,
    );
    let mut neither = spec(&["a@example.com"]);
    neither.users = None;
    neither.deletion_policy = crate::api::DeletionPolicy::Retain;
    assert!(requested_addresses(&neither).is_err());
    let kept = unusable_spec_keeps(&previous);
    let st = blocked_status(
        &kept,
        &neither,
        &previous,
        2,
        t(NOW),
        &Blocked::new(ReadyReason::InvalidSpec, "exactly one of …"),
    );
    assert_eq!(st.users, previous.users);
    assert_eq!(st.conditions[0].reason, "InvalidSpec");
}

#[test]
fn an_invalid_entry_spelled_like_a_requested_address_is_never_taken_for_it() {
    // `Dave@example.com` first, then `dave@example.com`: the second is the duplicate, and its
    // entry is spelled exactly like the first's normalized address.
    let invalid = UserStatus {
        reason: Some(FailureReason::InvalidSpec),
        ..user("dave@example.com", UserState::Failed)
    };
    let mut dave = owned("dave@example.com", UserState::Invited);
    dave.expires_at = Some(t("2026-11-23T00:00:00Z"));
    let s = Setup::new(
        &["Dave@example.com", "dave@example.com"],
        status(vec![invalid, dave.clone()], 1),
    );
    let c = s.ctx();
    assert!(
        addresses_to_observe(&c).is_empty(),
        "Dave is Invited, nothing to look up"
    );
    let p = plan(&c, &BTreeMap::new());
    assert_eq!(p.users[0], dave);
    assert_eq!(p.users[1].reason, Some(FailureReason::InvalidSpec));
}
