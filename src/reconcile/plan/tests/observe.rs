//! Addresses, lookups, settling, resync and OrgInvitation states.

use super::*;

#[test]
fn addresses_are_case_folded_and_case_duplicates_and_other_spellings_are_marked_invalid() {
    let s = spec(&[
        "Alice@Example.com",
        "bob@example.com",
        "BOB@example.com",
        "not-an-email",
        " carol@example.com",
    ]);
    let r = requested_addresses(&s).unwrap();
    assert_eq!(
        r.addresses,
        emails(&["alice@example.com", "bob@example.com"])
    );
    assert_eq!(r.invalid.len(), 3);
    assert_eq!(r.invalid[0].0, "BOB@example.com");
    assert!(
        r.invalid[0].1.contains("bob@example.com"),
        "{}",
        r.invalid[0].1
    );
    assert_eq!(r.invalid[1].0, "not-an-email");
    assert!(r.invalid[1].1.contains("has no @"), "{}", r.invalid[1].1);
    assert_eq!(r.invalid[2].0, " carol@example.com");
    assert!(r.invalid[2].1.contains("whitespace"), "{}", r.invalid[2].1);
}

/// One mailbox in another spelling, and the reason the entry's message gives.
const OTHER_SPELLINGS: &[(&str, &str)] = &[
    ("Dave <dave@example.com>", "whitespace"),
    ("Dave<dave@example.com>", "display name"),
    ("<dave@example.com>", "angle brackets"),
    ("dave@example.com(work)", "comment in parentheses"),
    ("(work)dave@example.com", "comment in parentheses"),
    ("\"dave\"@example.com", "quoted local part"),
    ("@relay.example.com:dave@example.com", "route"),
    (
        "dave%example.com@relay.example.com",
        "routes through another host",
    ),
    ("relay!dave@example.com", "routes through another host"),
    ("d\\ave@example.com", "backslash"),
    ("dave@example.com ", "whitespace"),
    (
        "dave.@example.com",
        "dot at the start or end of the local part",
    ),
    (
        ".dave@example.com",
        "dot at the start or end of the local part",
    ),
    ("da..ve@example.com", "two dots in a row"),
    ("dave@example.com.", "domain ending with a dot"),
    ("dave@example..com", "two dots in a row"),
    ("dave@localhost", "domain without a dot"),
    ("dave@[192.0.2.1]", "domain literal"),
    ("dave@192.0.2.1", "top-level domain"),
    ("dave@ex\u{e4}mple.com", "non-ASCII"),
    ("d\u{430}ve@example.com", "non-ASCII"),
    ("dave@example.com,erin@example.com", "more than one address"),
];

#[test]
fn every_other_spelling_of_a_mailbox_fails_alone_with_invalid_spec_and_a_clear_message() {
    for (written, reason) in OTHER_SPELLINGS {
        // Alone, and after the plain spelling of the same mailbox: the plain one is invited,
        // the other spelling is never taken for another person.
        for list in [vec![*written], vec!["dave@example.com", *written]] {
            let s = Setup::new(&list, Default::default());
            let c = s.ctx();
            assert_eq!(s.requested.invalid.len(), 1, "{written:?}");
            let (entry_written, why) = &s.requested.invalid[0];
            assert_eq!(entry_written, written);
            assert!(
                why.starts_with("not a plain email address") && why.contains(reason),
                "{written:?}: {why}"
            );
            let plain: Vec<&str> = list[..list.len() - 1].to_vec();
            assert_eq!(addresses_to_look_up(&c), lookups(&plain), "{written:?}");
            let observed = plain
                .iter()
                .map(|e| (*e, Observed::Absent))
                .collect::<Vec<_>>();
            let p = decide(&c, &obs(&observed));
            assert_eq!(p.to_invite, emails(&plain), "{written:?}");
            let failed = p.users.last().unwrap();
            assert_eq!(failed.email_address, *written);
            assert_eq!(failed.state, UserState::Failed);
            assert_eq!(failed.reason, Some(FailureReason::InvalidSpec));
            if plain.is_empty() {
                let summary = summarize(&c, p.users.clone(), None);
                assert_eq!(summary.conditions[0].reason, "InvalidSpec", "{written:?}");
                assert!(
                    summary.conditions[0].message.contains(reason),
                    "{written:?}: {}",
                    summary.conditions[0].message
                );
            }
        }
    }
}

#[test]
fn plus_addresses_and_case_variants_are_plain() {
    // `dave+ops` is another person; `DAVE@EXAMPLE.COM` is Dave again (a duplicate).
    let s = Setup::new(
        &[
            "dave@example.com",
            "dave+ops@example.com",
            "DAVE@EXAMPLE.COM",
            "o'brien@example.co.uk",
            "x@xn--exmple-cua.com",
        ],
        Default::default(),
    );
    assert_eq!(
        s.requested.addresses,
        emails(&[
            "dave@example.com",
            "dave+ops@example.com",
            "o'brien@example.co.uk",
            "x@xn--exmple-cua.com"
        ])
    );
    assert_eq!(s.requested.invalid.len(), 1);
    assert!(s.requested.invalid[0].1.contains("listed more than once"));
}

#[test]
fn an_address_refused_now_that_was_invited_before_is_kept_and_never_removed() {
    // An object admitted before the rule: `Erin@Example.com.` was invited (its entry spelled
    // as the old normalization wrote it). It is now refused, but the spec still names it, so
    // deletionPolicy Delete does not remove Erin because of the refusal; Frank, whom the spec
    // no longer names, is removed.
    let erin = owned("erin@example.com.", UserState::Invited);
    let frank = owned("frank@example.com", UserState::Invited);
    let mut s = Setup::new(&["Erin@Example.com."], status(vec![erin.clone(), frank], 1));
    s.spec.deletion_policy = crate::api::DeletionPolicy::Delete;
    let c = s.ctx();
    assert!(s.requested.names_invalidly("erin@example.com."));
    let removed = addresses_of(removals(&c));
    assert_eq!(removed, emails(&["frank@example.com"]));
    assert_eq!(addresses_to_claim(&c), emails(&["frank@example.com"]));
    let kept = s.kept();
    assert!(kept.contains(&erin), "{kept:?}");
    let p = decide(&c, &BTreeMap::new());
    assert!(p.to_invite.is_empty());
    assert_eq!(p.users.len(), 1);
    assert_eq!(p.users[0].email_address, "Erin@Example.com.");
    assert_eq!(p.users[0].reason, Some(FailureReason::InvalidSpec));
    // Once the spec drops the refused spelling, Erin is no longer named: removed as usual.
    let s = Setup {
        spec: UserInvitationSpec {
            deletion_policy: crate::api::DeletionPolicy::Delete,
            ..spec(&["grace@example.com"])
        },
        ..Setup::new(&["grace@example.com"], status(vec![erin], 1))
    };
    let removed = addresses_of(removals(&s.ctx()));
    assert_eq!(removed, emails(&["erin@example.com."]));
}

#[test]
fn exactly_one_of_users_and_org_invitation() {
    let mut both = spec(&["a@example.com"]);
    both.org_invitation = Some(Box::new(OrgInvitationRequest {
        usernames: vec!["b@example.com".into()],
        organization_roles: vec![],
        org_role_names: vec![],
        service_roles_dtos: vec![],
        custom_roles: vec![],
        custom_groups_ids: vec![],
        invited_by: None,
        skip_notify: None,
        skip_notify_registration: None,
    }));
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
    assert_eq!(addresses_to_look_up(&c), lookups(&["dave@example.com"]));
    let p = decide(&c, &obs(&[("dave@example.com", Observed::Absent)]));
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
        addresses_to_look_up(&c),
        lookups(&["a@example.com", "b@example.com", "c@example.com"])
    );
    let p = decide(
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
        addresses_to_look_up(&c),
        lookups(&["sent@example.com", "unsent@example.com"])
    );
    let p = decide(
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
    assert!(addresses_to_look_up(&c).is_empty());
    let p = decide(&c, &BTreeMap::new());
    assert!(p.to_invite.is_empty());
    assert_eq!(settle_wait(&c, &p.users), Some(Duration::from_secs(65)));
    let later = PlanContext {
        now: t("2026-11-22T10:01:06Z"),
        ..s.ctx()
    };
    assert_eq!(addresses_to_look_up(&later), lookups(&["a@example.com"]));
    assert_eq!(
        decide(&later, &obs(&[("a@example.com", Observed::Absent)])).to_invite,
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
    let s = Setup::new(
        &[
            "a@example.com",
            "b@example.com",
            "c@example.com",
            "d@example.com",
        ],
        status(
            vec![
                invited_until("a@example.com", "2026-11-23T00:00:00Z"),
                user("b@example.com", UserState::AlreadyMember),
                owned("c@example.com", UserState::Accepted),
                user("d@example.com", UserState::Failed),
            ],
            1,
        ),
    );
    let c = s.ctx();
    assert!(addresses_to_look_up(&c).is_empty());
    let p = decide(&c, &BTreeMap::new());
    assert!(p.to_invite.is_empty());
    assert_eq!(p.users, s.previous.users);
}

#[test]
fn failed_users_are_retried_only_when_the_spec_changes() {
    let s = Setup::new(
        &["f@example.com"],
        status(vec![user("f@example.com", UserState::Failed)], 1),
    );
    assert!(addresses_to_look_up(&s.ctx()).is_empty());
    let changed = PlanContext {
        generation: 2,
        ..s.ctx()
    };
    assert_eq!(addresses_to_look_up(&changed), lookups(&["f@example.com"]));
    let p = decide(&changed, &obs(&[("f@example.com", Observed::Absent)]));
    assert_eq!(p.to_invite, emails(&["f@example.com"]));
}

#[test]
fn resync_observes_acceptance_and_expiry() {
    let ok = invited_until("ok@example.com", "2026-11-23T00:00:00Z");
    let late = invited_until("late@example.com", "2026-11-22T09:00:00Z");
    let mut s = Setup::new(
        &["ok@example.com", "late@example.com"],
        status(vec![ok, late], 1),
    );
    // An expired invitation is looked at even without a resync.
    assert_eq!(
        addresses_to_look_up(&s.ctx()),
        lookups(&["late@example.com"])
    );
    let c = PlanContext {
        check_invited: true,
        ..s.ctx()
    };
    assert_eq!(
        addresses_to_look_up(&c),
        lookups(&["ok@example.com", "late@example.com"])
    );
    let observed = obs(&[
        ("ok@example.com", member("ok@example.com", true)),
        ("late@example.com", member("late@example.com", false)),
    ]);
    let p = decide(&c, &observed);
    assert!(p.to_invite.is_empty());
    assert_eq!(p.users[0].state, UserState::Accepted);
    assert_eq!(p.users[1].state, UserState::Expired);
    s.spec.reinvite_expired = true;
    let reinvite = PlanContext {
        check_invited: true,
        ..s.ctx()
    };
    assert_eq!(
        decide(&reinvite, &observed).to_invite,
        emails(&["late@example.com"])
    );
}

#[test]
fn org_invitations_pending_redeemed_and_revoked() {
    let r = invited_until("r@example.com", "2026-11-29T00:00:00Z");
    let acc = invited_until("acc@example.com", "2026-11-29T00:00:00Z");
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
    let p = decide(
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
    assert_eq!(addresses_to_look_up(&c), lookups(&["m@example.com"]));
    let p = decide(&c, &obs(&[("m@example.com", Observed::Absent)]));
    assert!(p.to_invite.is_empty());
    assert_eq!(p.users[0].state, UserState::Deleted);
}
