//! Unit tests of the planner: every (previous state × observation) that matters.

use super::*;
use crate::api::{EndpointRef, OrgInvitationRequest, UserToCreate};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
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
    UserStatus {
        email_address: email.into(),
        identifier: None,
        state,
        invited_at: None,
        expires_at: None,
        message: None,
    }
}

fn status(users: Vec<UserStatus>, generation: i64) -> UserInvitationStatus {
    UserInvitationStatus {
        observed_generation: Some(generation),
        users,
        ..Default::default()
    }
}

fn ctx<'a>(requested: &'a [String], previous: &'a UserInvitationStatus) -> PlanContext<'a> {
    PlanContext {
        requested,
        previous,
        generation: 1,
        now: t(NOW),
        reinvite_expired: false,
        check_invited: false,
        invitation_lifetime: Duration::hours(24),
        enforce: false,
        settle_time: Duration::seconds(30),
    }
}

fn emails(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
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

#[test]
fn addresses_are_normalized_and_case_duplicates_refused() {
    let s = spec(&[" Alice@Example.com", "bob@example.com"]);
    assert_eq!(
        requested_addresses(&s).unwrap(),
        emails(&["alice@example.com", "bob@example.com"])
    );
    let dup = spec(&["a@example.com", "A@EXAMPLE.com"]);
    let err = requested_addresses(&dup).unwrap_err();
    assert_eq!(err.reason, ReadyReason::InvalidSpec);
    assert!(err.message.contains("a@example.com"), "{}", err.message);
    let bad = spec(&["not-an-email"]);
    assert_eq!(
        requested_addresses(&bad).unwrap_err().reason,
        ReadyReason::InvalidSpec
    );
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
        requested_addresses(&org_only).unwrap(),
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
fn new_users_are_observed_and_absent_ones_invited_with_intent_recorded() {
    let requested = emails(&["a@example.com", "b@example.com", "c@example.com"]);
    let previous = UserInvitationStatus::default();
    let c = ctx(&requested, &previous);
    assert_eq!(addresses_to_observe(&c), requested);
    let plan = plan(
        &c,
        &obs(&[
            ("a@example.com", Observed::Absent),
            ("b@example.com", member("b@example.com", true)),
            ("c@example.com", Observed::Absent),
        ]),
    );
    assert_eq!(plan.to_invite, emails(&["a@example.com", "c@example.com"]));
    let states: Vec<_> = plan.users.iter().map(|u| u.state).collect();
    assert_eq!(
        states,
        vec![
            UserState::Inviting,
            UserState::AlreadyMember,
            UserState::Inviting
        ]
    );
    assert_eq!(plan.users[0].invited_at, Some(t(NOW)));
    assert_eq!(plan.users[1].identifier.as_deref(), Some("b@example.com"));
}

#[test]
fn inviting_after_a_crash_is_looked_up_never_reposted_blindly() {
    let requested = emails(&["sent@example.com", "unsent@example.com"]);
    let mut sent = user("sent@example.com", UserState::Inviting);
    sent.invited_at = Some(t("2026-11-22T09:59:00Z"));
    let previous = status(
        vec![sent, user("unsent@example.com", UserState::Inviting)],
        1,
    );
    let c = ctx(&requested, &previous);
    assert_eq!(addresses_to_observe(&c), requested);
    let plan = plan(
        &c,
        &obs(&[
            ("sent@example.com", member("sent+acme@example.com", false)),
            ("unsent@example.com", Observed::Absent),
        ]),
    );
    assert_eq!(plan.to_invite, emails(&["unsent@example.com"]));
    let sent = &plan.users[0];
    assert_eq!(sent.state, UserState::Invited);
    assert_eq!(sent.identifier.as_deref(), Some("sent+acme@example.com"));
    assert_eq!(sent.expires_at, Some(t("2026-11-23T09:59:00Z")));
}

#[test]
fn an_unanswered_invite_is_not_repeated_until_it_must_have_settled() {
    let requested = emails(&["a@example.com", "b@example.com"]);
    let mut crashed = user("a@example.com", UserState::Inviting);
    crashed.invited_at = Some(t("2026-11-22T09:59:50Z"));
    let mut answered = user("b@example.com", UserState::Inviting);
    answered.invited_at = Some(t("2026-11-22T09:59:50Z"));
    mark_answered(std::slice::from_mut(&mut answered), "503");
    let previous = status(vec![crashed, answered], 1);
    let c = ctx(&requested, &previous);
    let observed = obs(&[
        ("a@example.com", Observed::Absent),
        ("b@example.com", Observed::Absent),
    ]);
    let p = plan(&c, &observed);
    // a's request may still be in flight (10 s of a 30 s timeout): wait; b's was answered.
    assert_eq!(p.to_invite, emails(&["b@example.com"]));
    assert_eq!(p.users[0].state, UserState::Inviting);
    assert_eq!(
        settle_wait(&p.users, c.now, c.settle_time),
        Some(std::time::Duration::from_secs(20))
    );
    let later = PlanContext {
        now: t("2026-11-22T10:00:21Z"),
        ..ctx(&requested, &previous)
    };
    assert_eq!(plan(&later, &observed).to_invite, requested);
}

#[test]
fn settled_users_are_not_looked_up_on_an_ordinary_pass() {
    let requested = emails(&[
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ]);
    let mut invited = user("a@example.com", UserState::Invited);
    invited.expires_at = Some(t("2026-11-23T00:00:00Z"));
    let previous = status(
        vec![
            invited,
            user("b@example.com", UserState::AlreadyMember),
            user("c@example.com", UserState::Accepted),
            user("d@example.com", UserState::Failed),
        ],
        1,
    );
    let c = ctx(&requested, &previous);
    assert!(addresses_to_observe(&c).is_empty());
    let plan = plan(&c, &BTreeMap::new());
    assert!(plan.to_invite.is_empty());
    assert_eq!(plan.users, previous.users);
}

#[test]
fn failed_users_are_retried_only_when_the_spec_changes() {
    let requested = emails(&["f@example.com"]);
    let previous = status(vec![user("f@example.com", UserState::Failed)], 1);
    let same = ctx(&requested, &previous);
    assert!(addresses_to_observe(&same).is_empty());
    let changed = PlanContext {
        generation: 2,
        ..ctx(&requested, &previous)
    };
    assert_eq!(addresses_to_observe(&changed), requested);
    let plan = plan(&changed, &obs(&[("f@example.com", Observed::Absent)]));
    assert_eq!(plan.to_invite, requested);
}

#[test]
fn resync_observes_acceptance_and_expiry() {
    let requested = emails(&["ok@example.com", "late@example.com"]);
    let mut ok = user("ok@example.com", UserState::Invited);
    ok.expires_at = Some(t("2026-11-23T00:00:00Z"));
    let mut late = user("late@example.com", UserState::Invited);
    late.expires_at = Some(t("2026-11-22T09:00:00Z"));
    let previous = status(vec![ok, late], 1);
    // An expired invitation is looked at even without a resync.
    assert_eq!(
        addresses_to_observe(&ctx(&requested, &previous)),
        emails(&["late@example.com"])
    );
    let c = PlanContext {
        check_invited: true,
        ..ctx(&requested, &previous)
    };
    assert_eq!(addresses_to_observe(&c), requested);
    let observed = obs(&[
        ("ok@example.com", member("ok@example.com", true)),
        ("late@example.com", member("late@example.com", false)),
    ]);
    let p = plan(&c, &observed);
    assert!(p.to_invite.is_empty());
    assert_eq!(p.users[0].state, UserState::Accepted);
    assert_eq!(p.users[1].state, UserState::Expired);
    let reinvite = PlanContext {
        reinvite_expired: true,
        ..c
    };
    let p = plan(&reinvite, &observed);
    assert_eq!(p.to_invite, emails(&["late@example.com"]));
}

#[test]
fn pending_invitations_of_the_org_api() {
    let requested = emails(&["p@example.com", "x@example.com", "r@example.com"]);
    let mut r = user("r@example.com", UserState::Invited);
    r.expires_at = Some(t("2026-11-29T00:00:00Z"));
    let previous = status(vec![r], 1);
    let c = PlanContext {
        check_invited: true,
        ..ctx(&requested, &previous)
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
        ]),
    );
    // A live invitation someone else sent is not sent again; an expired one is replaced.
    assert_eq!(p.to_invite, emails(&["x@example.com"]));
    assert_eq!(p.users[0].state, UserState::Invited);
    assert_eq!(p.users[0].identifier.as_deref(), Some("/inv/1"));
    assert!(
        p.users[0]
            .message
            .as_deref()
            .unwrap()
            .contains("already pending")
    );
    assert_eq!(p.users[2].state, UserState::Revoked);
}

#[test]
fn results_are_applied_and_missing_ones_stay_inviting() {
    let mut users = vec![
        user("a@example.com", UserState::Inviting),
        user("b@example.com", UserState::Inviting),
        user("c@example.com", UserState::Inviting),
        user("d@example.com", UserState::Inviting),
    ];
    users[0].invited_at = Some(t(NOW));
    let results: BTreeMap<String, InviteResult> = [
        (
            "a@example.com".to_string(),
            InviteResult::Invited {
                identifier: "a+x@example.com".into(),
                expires_at: None,
                warning: Some("Invalid user groups found and ignored [g]".into()),
            },
        ),
        (
            "b@example.com".to_string(),
            InviteResult::Rejected {
                message: "Invalid permission".into(),
            },
        ),
        (
            "c@example.com".to_string(),
            InviteResult::AlreadyMember {
                identifier: "c@example.com".into(),
            },
        ),
    ]
    .into_iter()
    .collect();
    apply_results(&mut users, &results, Duration::hours(24), t(NOW));
    assert_eq!(users[0].state, UserState::Invited);
    assert_eq!(users[0].expires_at, Some(t("2026-11-23T10:00:00Z")));
    assert!(users[0].message.as_deref().unwrap().contains("ignored"));
    assert_eq!(users[1].state, UserState::Failed);
    assert_eq!(users[1].message.as_deref(), Some("Invalid permission"));
    assert_eq!(users[2].state, UserState::AlreadyMember);
    assert_eq!(users[3].state, UserState::Inviting);
}

#[test]
fn summary_counts_and_ready_reasons() {
    let prev = UserInvitationStatus::default();
    let now = t(NOW);
    let mut a = user("a@example.com", UserState::Invited);
    a.identifier = Some("a+x@example.com".into());
    let all = summarize(
        vec![a.clone(), user("b@example.com", UserState::AlreadyMember)],
        &prev,
        3,
        now,
        None,
    );
    assert_eq!(all.invited, 2);
    assert_eq!(all.failed, 0);
    assert_eq!(all.invited_users, vec!["a+x@example.com", "b@example.com"]);
    assert_eq!(all.observed_generation, Some(3));
    let c = &all.conditions[0];
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "AllInvited")
    );
    assert_eq!(c.message, "2 of 2 users invited (1 already members)");

    let mut f = user("f@example.com", UserState::Failed);
    f.message = Some("bad group".into());
    let partial = summarize(vec![a.clone(), f.clone()], &prev, 1, now, None);
    assert_eq!(partial.conditions[0].reason, "PartiallyFailed");
    assert!(
        partial.conditions[0]
            .message
            .contains("f@example.com: bad group")
    );
    assert_eq!(partial.failed, 1);
    let failed = summarize(vec![f], &prev, 1, now, None);
    assert_eq!(failed.conditions[0].reason, "Failed");
    let pending = summarize(
        vec![a, user("p@example.com", UserState::Inviting)],
        &prev,
        1,
        now,
        Some("the API is unavailable (503)"),
    );
    assert_eq!(pending.conditions[0].reason, "Pending");
    assert_eq!(pending.conditions[0].status, "False");
    assert!(
        pending.conditions[0]
            .message
            .ends_with("the API is unavailable (503)")
    );
}

#[test]
fn transition_time_changes_only_with_the_condition_status() {
    let first = summarize(
        vec![user("a@example.com", UserState::Inviting)],
        &UserInvitationStatus::default(),
        1,
        t("2026-11-22T09:00:00Z"),
        None,
    );
    let still_pending = summarize(
        vec![user("a@example.com", UserState::Pending)],
        &first,
        1,
        t("2026-11-22T09:30:00Z"),
        Some("retrying"),
    );
    assert_eq!(
        still_pending.conditions[0].last_transition_time,
        first.conditions[0].last_transition_time
    );
    let ready = summarize(
        vec![user("a@example.com", UserState::Invited)],
        &still_pending,
        1,
        t(NOW),
        None,
    );
    assert_eq!(ready.conditions[0].last_transition_time, to_time(t(NOW)));
}

#[test]
fn a_pass_with_nothing_to_do_reproduces_the_status_exactly() {
    let requested = emails(&["a@example.com", "b@example.com"]);
    let empty = UserInvitationStatus::default();
    let c0 = ctx(&requested, &empty);
    let mut first = plan(
        &c0,
        &obs(&[
            ("a@example.com", Observed::Absent),
            ("b@example.com", member("b@example.com", false)),
        ]),
    );
    let results = [(
        "a@example.com".to_string(),
        InviteResult::Invited {
            identifier: "a@example.com".into(),
            expires_at: None,
            warning: None,
        },
    )]
    .into_iter()
    .collect();
    apply_results(&mut first.users, &results, Duration::hours(24), t(NOW));
    let written = summarize(
        first.users,
        &UserInvitationStatus::default(),
        1,
        t(NOW),
        None,
    );
    // An hour later, nothing changed: no lookups, no invitations, an identical status.
    let later = PlanContext {
        now: t("2026-11-22T11:00:00Z"),
        ..ctx(&requested, &written)
    };
    assert!(addresses_to_observe(&later).is_empty());
    let again = plan(&later, &BTreeMap::new());
    assert!(again.to_invite.is_empty());
    let rewritten = summarize(again.users, &written, 1, later.now, None);
    assert_eq!(rewritten, written);
}

#[test]
fn removed_users_leave_the_status_and_new_ones_are_added_in_spec_order() {
    let previous = status(
        vec![
            user("gone@example.com", UserState::Invited),
            user("kept@example.com", UserState::AlreadyMember),
        ],
        1,
    );
    let requested = emails(&["new@example.com", "kept@example.com"]);
    let c = PlanContext {
        generation: 2,
        ..ctx(&requested, &previous)
    };
    assert_eq!(addresses_to_observe(&c), emails(&["new@example.com"]));
    let p = plan(&c, &obs(&[("new@example.com", Observed::Absent)]));
    assert_eq!(p.to_invite, emails(&["new@example.com"]));
    let order: Vec<_> = p.users.iter().map(|u| u.email_address.as_str()).collect();
    assert_eq!(order, vec!["new@example.com", "kept@example.com"]);
}

#[test]
fn blocked_status_keeps_known_users_and_lists_new_ones_as_pending() {
    let previous = status(vec![user("a@example.com", UserState::Invited)], 1);
    let requested = emails(&["a@example.com", "b@example.com"]);
    let blocked = Blocked::new(
        ReadyReason::EndpointNotFound,
        "ClusterInvitationEndpoint \"x\" not found",
    );
    let s = blocked_status(&requested, &previous, 2, t(NOW), &blocked);
    assert_eq!(s.users[0].state, UserState::Invited);
    assert_eq!(s.users[1].state, UserState::Pending);
    assert_eq!(s.conditions[0].reason, "EndpointNotFound");
    assert_eq!(s.conditions[0].status, "False");
    assert_eq!(s.observed_generation, Some(2));
}

#[test]
fn configuration_refusals_put_inviting_users_back_to_pending() {
    let mut users = vec![
        user("a@example.com", UserState::Inviting),
        user("b@example.com", UserState::Invited),
    ];
    revert_inviting(&mut users, "401 unauthorized");
    assert_eq!(users[0].state, UserState::Pending);
    assert_eq!(users[0].message.as_deref(), Some("401 unauthorized"));
    assert_eq!(users[1].state, UserState::Invited);
}
