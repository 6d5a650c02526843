//! Table tests of the executor's phases against a scripted API: every branch an API answer can
//! take (not sent, transient and settled, transient and unknown, configuration, permanent,
//! partial), and what is written when.

use std::{collections::BTreeMap, time::Duration};

use super::{
    Change, StatusWriter, WriteError,
    plan::{self, EndpointFacts, PlanContext},
    sync,
};
use crate::{
    api::{
        AccessPolicy, DeletionPolicy, FailureReason, Ownership, UserInvitationSpec,
        UserInvitationStatus, UserState, UserStatus,
    },
    invite::{
        ApiError, InviteOutcome, NotSentReason, Observed, UserGrants,
        scripted::{ScriptedApi, invited},
    },
};

/// Records the statuses written; the `fail_write`th write (1-based) fails with a conflict.
#[derive(Default)]
struct Writes {
    written: Vec<UserInvitationStatus>,
    fail_write: Option<usize>,
}

impl StatusWriter for Writes {
    async fn write(&mut self, status: &UserInvitationStatus) -> Result<(), WriteError> {
        if self.fail_write == Some(self.written.len() + 1) {
            return Err(WriteError::Conflict);
        }
        self.written.push(status.clone());
        Ok(())
    }
}

fn error(status: u16) -> ApiError {
    ApiError::from_status("invite users", status, format!("answered {status}"), None)
}

fn spec(emails: &[&str]) -> UserInvitationSpec {
    serde_json::from_value(serde_json::json!({
        "users": emails.iter().map(|e| serde_json::json!({"emailAddress": e, "groups": ["g"], "userGroups": []})).collect::<Vec<_>>()
    }))
    .unwrap()
}

fn state(status: &UserInvitationStatus, email: &str) -> UserState {
    status
        .users
        .iter()
        .find(|u| u.email_address == email)
        .unwrap()
        .state
}

async fn pass(
    api: &ScriptedApi,
    spec: &UserInvitationSpec,
    previous: &UserInvitationStatus,
    writes: &mut Writes,
) -> Result<super::SyncReport, WriteError> {
    let requested = plan::requested_addresses(spec).unwrap();
    let facts = EndpointFacts::for_tests(true);
    let ctx = PlanContext::new(&requested, spec, previous, 1, false, facts);
    sync(api, &ctx, &super::NoOtherHolders, writes).await
}

#[tokio::test]
async fn each_invite_outcome_leads_to_its_state_and_the_intent_is_written_first() {
    let all = [
        "ok@x.com",
        "bad@x.com",
        "busy@x.com",
        "lost@x.com",
        "late@x.com",
        "none@x.com",
    ];
    let api = ScriptedApi {
        invite: [
            ("ok@x.com", invited("ok@x.com")),
            (
                "bad@x.com",
                InviteOutcome::Rejected {
                    message: "no such group g".into(),
                },
            ),
            ("busy@x.com", InviteOutcome::NotDone(error(429))),
            ("lost@x.com", InviteOutcome::Unknown(error(504))),
            (
                "late@x.com",
                InviteOutcome::NotDone(ApiError::NotSent {
                    operation: "invite users",
                    reason: NotSentReason::Deadline,
                }),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        ..Default::default()
    };
    let spec = spec(&all);
    let mut writes = Writes::default();
    let report = pass(&api, &spec, &Default::default(), &mut writes)
        .await
        .unwrap();
    assert_eq!(
        api.calls(),
        vec![
            format!("look up {}", all.join(",")),
            format!("invite {}", all.join(","))
        ]
    );
    // The intent: everyone Inviting, ours, with when their request settles.
    assert_eq!(writes.written.len(), 2);
    let intent = &writes.written[0];
    assert!(intent.users.iter().all(|u| u.state == UserState::Inviting
        && u.ownership == Some(Ownership::Created)
        && u.settles_at.is_some()));
    let status = &writes.written[1];
    assert_eq!(state(status, "ok@x.com"), UserState::Invited);
    assert_eq!(state(status, "bad@x.com"), UserState::Failed);
    // 429 and not sent: nothing was done, so retried.
    assert_eq!(state(status, "busy@x.com"), UserState::Pending);
    assert_eq!(state(status, "late@x.com"), UserState::Pending);
    // 504, and no outcome at all: the API may have acted, so they settle first.
    assert_eq!(state(status, "lost@x.com"), UserState::Inviting);
    assert_eq!(state(status, "none@x.com"), UserState::Inviting);
    assert_eq!(
        report.changes[0],
        Change::Invited(vec!["ok@x.com".to_string()])
    );
    let failed = |c: &&Change| matches!(c, Change::InviteFailed { .. });
    assert_eq!(report.changes.iter().filter(failed).count(), 1);
    assert!(
        report.problem.is_some(),
        "the retryable ones make the pass retry"
    );
    let settle = report
        .next_look
        .expect("a look once the unknown requests settle");
    assert!(
        settle > Duration::from_secs(60) && settle <= Duration::from_secs(76),
        "{settle:?}"
    );
    assert_eq!(status.conditions[0].reason, "Pending");
}

#[tokio::test]
async fn a_refused_token_blocks_the_resource_and_sends_nothing_else() {
    let api = ScriptedApi {
        invite: [("a@x.com".to_string(), InviteOutcome::NotDone(error(401)))].into(),
        ..Default::default()
    };
    let mut writes = Writes::default();
    let report = pass(&api, &spec(&["a@x.com"]), &Default::default(), &mut writes)
        .await
        .unwrap();
    let status = writes.written.last().unwrap();
    assert_eq!(state(status, "a@x.com"), UserState::Pending);
    assert_eq!(status.conditions[0].reason, "EndpointNotReady");
    assert_eq!(
        report.problem.unwrap().category(),
        crate::invite::ErrorCategory::Configuration
    );
}

#[tokio::test]
async fn a_failed_intent_write_sends_no_invitation() {
    let api = ScriptedApi::default();
    let mut writes = Writes {
        fail_write: Some(1),
        ..Default::default()
    };
    let result = pass(&api, &spec(&["a@x.com"]), &Default::default(), &mut writes).await;
    assert!(matches!(result, Err(WriteError::Conflict)));
    assert_eq!(api.calls(), vec!["look up a@x.com".to_string()]);
}

#[tokio::test]
async fn a_failed_lookup_shows_pending_users_and_invites_nobody() {
    let api = ScriptedApi {
        look_up: Some(Err(error(503))),
        ..Default::default()
    };
    let mut writes = Writes::default();
    let report = pass(&api, &spec(&["a@x.com"]), &Default::default(), &mut writes)
        .await
        .unwrap();
    assert_eq!(api.calls(), vec!["look up a@x.com".to_string()]);
    assert_eq!(writes.written.len(), 1);
    assert_eq!(writes.written[0].conditions[0].reason, "Pending");
    assert!(report.problem.is_some());
}

/// A resource owning a@x.com (in its spec, accessPolicy Enforce) and gone@x.com (removed from
/// it, deletionPolicy Delete), and what the API says of a@x.com: a member without grants.
fn owed() -> (UserInvitationStatus, UserInvitationSpec, Observed) {
    let owned = |email: &str, state| UserStatus {
        ownership: Some(Ownership::Created),
        identifier: Some(email.into()),
        ..plan::entry(email, state)
    };
    let previous = UserInvitationStatus {
        observed_generation: Some(0),
        users: vec![
            owned("a@x.com", UserState::Invited),
            owned("gone@x.com", UserState::Invited),
        ],
        ..Default::default()
    };
    let mut spec = spec(&["a@x.com"]);
    spec.access_policy = AccessPolicy::Enforce;
    spec.deletion_policy = DeletionPolicy::Delete;
    let member = Observed::Member {
        identifier: "a@x.com".into(),
        accepted: true,
        grants: Some(UserGrants::default()),
    };
    (previous, spec, member)
}

#[tokio::test]
async fn enforce_and_remove_failures_keep_what_is_owed() {
    let (previous, spec, member) = owed();
    // A permanent refusal of the correction is shown on the user; the removal still runs.
    let api = ScriptedApi {
        look_up: Some(Ok([("a@x.com".to_string(), member.clone())].into())),
        enforce: Some(error(400)),
        ..Default::default()
    };
    let mut writes = Writes::default();
    let report = pass(&api, &spec, &previous, &mut writes).await.unwrap();
    assert_eq!(
        api.calls(),
        vec!["look up a@x.com", "enforce a@x.com", "remove gone@x.com"]
    );
    let status = writes.written.last().unwrap();
    assert!(
        status.users[0]
            .message
            .as_deref()
            .unwrap()
            .contains("could not apply")
    );
    assert_eq!(status.users.len(), 1, "the removed user's entry is gone");
    let removed = |c: &&Change| matches!(c, Change::Removed { .. });
    assert_eq!(report.changes.iter().filter(removed).count(), 1);
    // A transient failure stops the pass before the removal, which stays owed.
    let api = ScriptedApi {
        look_up: Some(Ok([("a@x.com".to_string(), member)].into())),
        enforce: Some(error(502)),
        ..Default::default()
    };
    let mut writes = Writes::default();
    let report = pass(&api, &spec, &previous, &mut writes).await.unwrap();
    assert_eq!(api.calls(), vec!["look up a@x.com", "enforce a@x.com"]);
    let status = writes.written.last().unwrap();
    assert_eq!(
        status
            .users
            .iter()
            .map(|u| u.email_address.as_str())
            .collect::<Vec<_>>(),
        vec!["a@x.com", "gone@x.com"]
    );
    assert!(report.problem.is_some());
    // A failed removal keeps the entry, with why.
    let api = ScriptedApi {
        look_up: Some(Ok(BTreeMap::new())),
        remove: Some(error(500)),
        ..Default::default()
    };
    let mut writes = Writes::default();
    pass(&api, &spec, &previous, &mut writes).await.unwrap();
    let kept = writes
        .written
        .last()
        .unwrap()
        .users
        .iter()
        .find(|u| u.email_address == "gone@x.com")
        .unwrap()
        .clone();
    assert!(kept.message.unwrap().starts_with("removal pending"));
}

/// Holders that claim every person for another resource.
struct HeldByOther;

impl super::Holders for HeldByOther {
    fn other_holder(&self, _email: &str) -> Option<String> {
        Some("team-b/other".into())
    }
}

#[tokio::test]
async fn a_person_held_elsewhere_at_call_time_is_neither_corrected_nor_removed() {
    let (previous, spec, member) = owed();
    let api = ScriptedApi {
        look_up: Some(Ok([("a@x.com".to_string(), member)].into())),
        ..Default::default()
    };
    let requested = plan::requested_addresses(&spec).unwrap();
    let ctx = PlanContext::new(
        &requested,
        &spec,
        &previous,
        1,
        false,
        EndpointFacts::for_tests(true),
    );
    // Planned with nobody else holding them; held elsewhere by the time of the calls.
    let mut writes = Writes::default();
    let report = sync(&api, &ctx, &HeldByOther, &mut writes).await.unwrap();
    assert_eq!(api.calls(), vec!["look up a@x.com"], "no change was made");
    let left_alone = |c: &&Change| matches!(c, Change::LeftAlone { .. });
    assert_eq!(
        report.changes.iter().filter(left_alone).count(),
        2,
        "{report:?}"
    );
    let status = writes.written.last().unwrap();
    assert_eq!(status.users.len(), 1, "the removal is no longer owed");
    assert_eq!(status.users[0].ownership, None);
    let message = status.users[0].message.as_deref().unwrap_or_default();
    assert!(message.contains("team-b/other"), "{message}");
}

#[tokio::test]
async fn an_invalid_entry_fails_alone_and_the_others_are_invited() {
    let api = ScriptedApi {
        invite: [("a@x.com".to_string(), invited("a@x.com"))].into(),
        ..Default::default()
    };
    let mut writes = Writes::default();
    pass(
        &api,
        &spec(&["a@x.com", "A@X.com"]),
        &Default::default(),
        &mut writes,
    )
    .await
    .unwrap();
    let status = writes.written.last().unwrap();
    assert_eq!(state(status, "a@x.com"), UserState::Invited);
    let dup = status
        .users
        .iter()
        .find(|u| u.email_address == "A@X.com")
        .unwrap();
    assert_eq!(
        (dup.state, dup.reason),
        (UserState::Failed, Some(FailureReason::InvalidSpec))
    );
    assert_eq!(status.conditions[0].reason, "InvalidSpec");
}

#[tokio::test]
async fn identifiers_are_read_back_after_the_outcome_is_written_and_written_only_if_they_differ() {
    let member = |id: &str| Observed::Member {
        identifier: id.into(),
        accepted: false,
        grants: None,
    };
    for (tenant_id, writes_expected) in [("a+tenant@x.com", 3), ("a@x.com", 2)] {
        let api = ScriptedApi {
            invite: [("a@x.com".to_string(), invited("a@x.com"))].into(),
            read_back: Some([("a@x.com".to_string(), member(tenant_id))].into()),
            ..Default::default()
        };
        let mut writes = Writes::default();
        pass(&api, &spec(&["a@x.com"]), &Default::default(), &mut writes)
            .await
            .unwrap();
        assert_eq!(
            api.calls(),
            ["look up a@x.com", "invite a@x.com", "look up a@x.com"],
            "{tenant_id}"
        );
        // The intent, then the outcome (Ready, the address standing in for the identifier)
        // before the read-back, then the identifier the API knows the person by if it differs.
        assert_eq!(writes.written.len(), writes_expected, "{tenant_id}");
        let outcome = &writes.written[1];
        assert_eq!(outcome.conditions[0].status, "True", "{tenant_id}");
        assert_eq!(outcome.users[0].identifier.as_deref(), Some("a@x.com"));
        let last = writes.written.last().unwrap();
        assert_eq!(last.users[0].identifier.as_deref(), Some(tenant_id));
        assert_eq!(last.users[0].state, UserState::Invited);
    }
}
