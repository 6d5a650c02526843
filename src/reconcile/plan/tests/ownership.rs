//! Outcomes, adoption, holders, enforcement and removals.

use super::*;

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
    let p = decide(&s.ctx(), &found);
    assert_eq!(p.users[0].state, UserState::AlreadyMember);
    assert_eq!(p.users[0].ownership, None);
    let message = p.users[0].message.as_deref().unwrap_or_default();
    assert!(message.contains("left alone"), "{message}");
    let summary = summarize(&s.ctx(), p.users, None);
    assert!(
        summary.conditions[0]
            .message
            .contains("1 existing users left alone"),
        "{}",
        summary.conditions[0].message
    );
    let adopting = {
        let mut c = s.ctx();
        c.facts.adoption = true;
        c
    };
    let p = decide(&adopting, &found);
    assert_eq!(p.users[0].ownership, Some(Ownership::Adopted));
    assert_eq!(p.users[0].message, None);
    // InviteOnly never adopts, even where allowed.
    s.spec.access_policy = AccessPolicy::InviteOnly;
    let invite_only = {
        let mut c = s.ctx();
        c.facts.adoption = true;
        c
    };
    assert_eq!(decide(&invite_only, &found).users[0].ownership, None);
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
    let mut c = {
        let mut c = s.ctx();
        c.facts.adoption = true;
        c
    };
    c.others.insert("x@example.com".into(), holder.clone());
    let p = decide(
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
    let p = decide(&c, &obs(&[("x@example.com", Observed::Absent)]));
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
    let c = {
        let mut c = s.ctx();
        c.facts.allowed = Some(&allowed);
        c
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
fn the_grants_of_a_person_are_those_of_their_first_plain_spelling() {
    // `Own@example.com` repeats the person and ` own@example.com` is not plain: neither entry's
    // grants are the person's, wherever it is listed.
    let mut s = Setup::new(
        &[" own@example.com", "own@example.com", "Own@example.com"],
        status(vec![owned("own@example.com", UserState::Invited)], 1),
    );
    s.spec.access_policy = AccessPolicy::Enforce;
    let users = s.spec.users.as_mut().unwrap();
    users[0].groups = vec!["admin".into()];
    users[1].groups = vec!["dashboard_management".into()];
    users[2].groups = vec!["alerts_management".into()];
    assert_eq!(
        s.spec.user("own@example.com").unwrap().groups,
        ["dashboard_management"]
    );
    let observed = obs(&[(
        "own@example.com",
        Observed::Member {
            identifier: "own@example.com".into(),
            accepted: true,
            grants: Some(UserGrants::default()),
        },
    )]);
    let users = s.previous.users.clone();
    let drift = grant_drift(&s.ctx(), &users, &observed);
    assert_eq!(drift.len(), 1);
    assert_eq!(
        drift[0].target.groups,
        ["dashboard_management".to_string()].into()
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
    let removed = addresses_of(removals(&c));
    assert_eq!(
        removed,
        emails(&["gone@example.com", "adopted@example.com"])
    );
    let kept = addresses_of(s.kept());
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
    let kept = addresses_of(s.kept());
    assert_eq!(kept, emails(&["settling@example.com"]));
}

#[test]
fn a_readded_person_waits_for_their_earlier_request_to_settle() {
    let mut settling = owned("back@example.com", UserState::Inviting);
    settling.settles_at = Some(t("2026-11-22T10:01:00Z"));
    let s = Setup::new(&["back@example.com"], status(vec![settling], 1));
    let c = s.ctx();
    assert!(addresses_to_look_up(&c).is_empty());
    assert!(decide(&c, &BTreeMap::new()).to_invite.is_empty());
}

/// An OrgInvitation entry this resource created, with the reference of its invitation.
fn created_invitation(email: &str, state: UserState, reference: &str) -> UserStatus {
    UserStatus {
        identifier: Some(reference.into()),
        invited_at: Some(t("2026-11-10T10:00:00Z")),
        expires_at: Some(t("2026-11-17T10:00:00Z")),
        ..owned(email, state)
    }
}

fn pending(reference: &str, sent: &str, expires: &str) -> Observed {
    Observed::PendingInvitation {
        reference: reference.into(),
        invited_at: Some(t(sent)),
        expires_at: Some(t(expires)),
    }
}

#[test]
fn an_expired_invitation_owns_nothing_once_someone_else_invited_or_admitted_the_person() {
    let ours = "/orgs/o/invitations/1";
    let theirs = "/orgs/o/invitations/2";
    let expired = created_invitation("a@x.com", UserState::Expired, ours);
    let s = Setup::new(&["a@x.com"], status(vec![expired.clone()], 1));
    let mut c = s.ctx();
    c.check_invited = true;
    // Someone else invited the person again: reported, owned no more.
    let again = pending(theirs, "2026-11-21T10:00:00Z", "2026-11-28T10:00:00Z");
    let decided = decide(&c, &obs(&[("a@x.com", again)]));
    let a = &decided.users[0];
    assert_eq!((a.state, a.ownership), (UserState::Invited, None), "{a:?}");
    assert_eq!(a.identifier.as_deref(), Some(theirs));
    assert!(decided.to_invite.is_empty());
    // Someone else let them in (a member, or another invitation redeemed).
    for observed in [
        member("user-1", true),
        Observed::RedeemedInvitation {
            reference: theirs.into(),
        },
    ] {
        let decided = decide(&c, &obs(&[("a@x.com", observed.clone())]));
        let a = &decided.users[0];
        assert_eq!(
            (a.state, a.ownership),
            (UserState::Accepted, None),
            "{observed:?}"
        );
    }
    // Our own expired invitation, still listed: still ours, still Expired.
    let own = pending(ours, "2026-11-10T10:00:00Z", "2026-11-17T10:00:00Z");
    let decided = decide(&c, &obs(&[("a@x.com", own)]));
    assert_eq!(decided.users[0], expired);
    // A user who exists but never logged in (UserInvite): still ours.
    let decided = decide(&c, &obs(&[("a@x.com", member("a@x.com", false))]));
    assert_eq!(
        (decided.users[0].state, decided.users[0].ownership),
        (UserState::Expired, Some(Ownership::Created))
    );
    // Another resource holds the person now: its holder is named, nothing is owned here.
    c.others.insert(
        "a@x.com".into(),
        OtherHolder {
            owner: "team-b/other".into(),
            state: UserState::Invited,
            settles_at: None,
        },
    );
    let again = pending(theirs, "2026-11-21T10:00:00Z", "2026-11-28T10:00:00Z");
    let decided = decide(&c, &obs(&[("a@x.com", again)]));
    let a = &decided.users[0];
    assert_eq!(a.ownership, None, "{a:?}");
    assert!(
        a.message.as_deref().unwrap().contains("team-b/other"),
        "{a:?}"
    );
}

#[test]
fn an_invited_entry_never_takes_over_another_invitations_reference() {
    let ours = "/orgs/o/invitations/1";
    let theirs = "/orgs/o/invitations/2";
    let invited = created_invitation("a@x.com", UserState::Invited, ours);
    let s = Setup::new(&["a@x.com"], status(vec![invited], 1));
    let mut c = s.ctx();
    c.check_invited = true;
    c.now = t("2026-11-12T10:00:00Z");
    let other = pending(theirs, "2026-11-11T10:00:00Z", "2026-11-18T10:00:00Z");
    let a = decide(&c, &obs(&[("a@x.com", other)])).users.remove(0);
    assert_eq!((a.state, a.ownership), (UserState::Invited, None), "{a:?}");
    assert_eq!(a.identifier.as_deref(), Some(theirs));

    // While the reference is not known yet, the invitation's time tells: one sent within the
    // window of this resource's request is its own, one sent long before is not.
    let mut unknown = created_invitation("a@x.com", UserState::Inviting, "a@x.com");
    unknown.invited_at = Some(t("2026-11-10T10:00:00Z"));
    let s = Setup::new(&["a@x.com"], status(vec![unknown], 1));
    let mut c = s.ctx();
    c.now = t("2026-11-10T11:00:00Z");
    let own = pending(ours, "2026-11-10T10:00:03Z", "2026-11-17T10:00:00Z");
    let a = decide(&c, &obs(&[("a@x.com", own)])).users.remove(0);
    assert_eq!(
        (a.state, a.ownership),
        (UserState::Invited, Some(Ownership::Created))
    );
    assert_eq!(a.identifier.as_deref(), Some(ours));
    let old = pending(theirs, "2026-11-09T10:00:00Z", "2026-11-16T10:00:00Z");
    let a = decide(&c, &obs(&[("a@x.com", old)])).users.remove(0);
    assert_eq!((a.state, a.ownership), (UserState::Invited, None), "{a:?}");
}
