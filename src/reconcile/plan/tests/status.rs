//! Summaries, conditions and the status a pass writes.

use super::*;

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
    assert_eq!(all.api, Some(c.facts.api.clone()));
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
    let all = conditions_for(
        &previous,
        ReadyReason::EndpointNotReady,
        huge.clone(),
        1,
        t("2026-01-01T00:00:00Z"),
    );
    for condition in &all {
        assert!(condition.message.len() <= MAX_CONDITION_BYTES);
        assert!(condition.message.starts_with("go away"));
    }
    assert_eq!(truncate_condition("short"), "short");
}

/// Passes over the one address `A`, each `(time on the day of NOW, its entry, the problem)`
/// planned with the status the one before it wrote: the status of each.
fn passes_over_a<const N: usize>(
    passes: [(&str, UserStatus, Option<&str>); N],
) -> [UserInvitationStatus; N] {
    let mut previous = UserInvitationStatus::default();
    passes.map(|(time, entry, problem)| {
        let s = Setup::new(&[A], previous.clone());
        let ctx = PlanContext {
            now: t(&format!("2026-11-22T{time}:00Z")),
            ..s.ctx()
        };
        previous = summarize(&ctx, vec![entry], problem);
        previous.clone()
    })
}

const A: &str = "a@example.com";

#[test]
fn transition_time_changes_only_with_the_condition_status() {
    use UserState::{Invited, Inviting, Pending};
    let [first, still_pending, ready] = passes_over_a([
        ("09:00", user(A, Inviting), None),
        ("09:30", user(A, Pending), Some("retrying")),
        ("10:00", owned(A, Invited), None),
    ]);
    assert_eq!(
        still_pending.conditions[0].last_transition_time,
        first.conditions[0].last_transition_time
    );
    assert_eq!(ready.conditions[0].last_transition_time, to_time(t(NOW)));
}

#[test]
fn a_pass_with_nothing_to_do_reproduces_the_status_exactly() {
    let s = Setup::new(&["a@example.com", "b@example.com"], Default::default());
    let c0 = s.ctx();
    let mut first = decide(
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
    assert!(addresses_to_look_up(&later).is_empty());
    let again = decide(&later, &BTreeMap::new());
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
    assert_eq!(addresses_to_look_up(&c), lookups(&["new@example.com"]));
    let p = decide(&c, &obs(&[("new@example.com", Observed::Absent)]));
    let order: Vec<_> = p.users.iter().map(|u| u.email_address.as_str()).collect();
    assert_eq!(order, vec!["new@example.com", "kept@example.com"]);
    assert!(s.kept().is_empty());
}

#[test]
fn a_blocked_status_keeps_every_entry_and_the_removals_still_owed() {
    let previous = status(
        vec![
            owned("a@example.com", UserState::Invited),
            owned("dropped@example.com", UserState::Invited),
        ],
        1,
    );
    let mut s = Setup::new(&["a@example.com", "b@example.com"], previous);
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
        let c = {
            let mut c = s.ctx();
            c.now = t(now);
            c.facts.settle = now_window;
            c
        };
        assert!(addresses_to_look_up(&c).is_empty(), "{now}");
        let p = decide(&c, &BTreeMap::new());
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
        let mut c2 = {
            let mut c = s2.ctx();
            c.now = t(now);
            c.facts.settle = now_window;
            c
        };
        c2.others.insert("a@example.com".into(), other);
        let p2 = decide(&c2, &obs(&[("a@example.com", Observed::Absent)]));
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
    let c = {
        let mut c = s.ctx();
        c.now = t("2026-11-22T10:01:15Z");
        c.facts.settle = now_window;
        c
    };
    assert_eq!(addresses_to_look_up(&c), lookups(&["a@example.com"]));
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
    let dave = invited_until("dave@example.com", "2026-11-23T00:00:00Z");
    let s = Setup::new(
        &["Dave@example.com", "dave@example.com"],
        status(vec![invalid, dave.clone()], 1),
    );
    let c = s.ctx();
    assert!(
        addresses_to_look_up(&c).is_empty(),
        "Dave is Invited, nothing to look up"
    );
    let p = decide(&c, &BTreeMap::new());
    assert_eq!(p.users[0], dave);
    assert_eq!(p.users[1].reason, Some(FailureReason::InvalidSpec));
}

/// The conditions as (type, status, reason, observedGeneration).
fn kstatus(status: &UserInvitationStatus) -> Vec<(&str, &str, &str, Option<i64>)> {
    status
        .conditions
        .iter()
        .map(|c| {
            (
                c.type_.as_str(),
                c.status.as_str(),
                c.reason.as_str(),
                c.observed_generation,
            )
        })
        .collect()
}

/// The conditions of a status whose Ready reason is `reason` ([`kstatus`]): Ready, True only
/// when AllInvited, and beside it `second` (Reconciling or Stalled) True, if any.
fn conditions<'a>(
    reason: &'a str,
    second: Option<&'a str>,
    generation: Option<i64>,
) -> Vec<(&'a str, &'a str, &'a str, Option<i64>)> {
    let ready = if reason == "AllInvited" {
        "True"
    } else {
        "False"
    };
    let mut expected = vec![("Ready", ready, reason, generation)];
    expected.extend(second.map(|type_| (type_, "True", reason, generation)));
    expected
}

#[test]
fn kstatus_reconciling_while_work_is_pending_stalled_when_a_person_must_act() {
    let s = Setup::new(&["a@example.com", "b@example.com"], Default::default());
    let c = s.ctx();
    let g = Some(c.generation);
    let summary = |a: UserState, b: UserState| {
        summarize(
            &c,
            vec![owned("a@example.com", a), owned("b@example.com", b)],
            None,
        )
    };
    use UserState::*;
    let cases = [
        (Invited, AlreadyMember, "AllInvited", None),
        (Invited, Pending, "Pending", Some("Reconciling")),
        (Invited, Inviting, "Pending", Some("Reconciling")),
        (Invited, Failed, "PartiallyFailed", Some("Stalled")),
        (Failed, Failed, "Failed", Some("Stalled")),
    ];
    for (a, b, reason, second) in cases {
        let expected = conditions(reason, second, g);
        assert_eq!(kstatus(&summary(a, b)), expected, "{a:?}, {b:?}");
    }
}

#[test]
fn kstatus_of_blocked_resources_follows_whether_they_resolve_by_themselves() {
    let s = Setup::new(&["a@example.com"], Default::default());
    let blocked = |b: Blocked| blocked_status(&s.requested, &s.spec, &s.previous, 3, t(NOW), &b);
    let cases = [
        (Blocked::new(ReadyReason::Paused, "paused"), None),
        (
            Blocked::new(ReadyReason::EndpointNotFound, "not found"),
            Some("Reconciling"),
        ),
        (
            Blocked::waiting(ReadyReason::EndpointNotReady, "no Secret yet"),
            Some("Reconciling"),
        ),
        (
            Blocked::new(ReadyReason::EndpointNotReady, "token refused"),
            Some("Stalled"),
        ),
        (
            Blocked::new(ReadyReason::EndpointMismatch, "other API"),
            Some("Stalled"),
        ),
        (Blocked::new(ReadyReason::NotAllowed, "no"), Some("Stalled")),
        (
            Blocked::new(ReadyReason::InvalidSpec, "bad"),
            Some("Stalled"),
        ),
    ];
    for (b, second) in cases {
        let expected = conditions(b.reason.as_str(), second, Some(3));
        assert_eq!(kstatus(&blocked(b.clone())), expected, "{b:?}");
    }
}

#[test]
fn stalled_keeps_its_transition_time_and_goes_away_when_ready() {
    use UserState::{Failed, Invited};
    let [failed, again, ready] = passes_over_a([
        ("09:00", owned(A, Failed), None),
        ("10:00", owned(A, Failed), None),
        ("10:00", owned(A, Invited), None),
    ]);
    assert_eq!(again, failed, "nothing changed: nothing to write");
    assert_eq!(
        kstatus(&ready),
        vec![("Ready", "True", "AllInvited", Some(1))]
    );
    assert_eq!(ready.conditions[0].last_transition_time, to_time(t(NOW)));
}
