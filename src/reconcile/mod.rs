//! Reconciling one UserInvitation against its invite API.
//!
//! [`plan`] holds the pure decisions; this module executes them: look up, record the intent,
//! invite, record the outcome. It is shared by the controller and the one-shot `reconcile`
//! command, which differ only in where the status is written ([`StatusWriter`]).

pub mod plan;
pub mod resolve;

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use crate::{
    api::{UserInvitationSpec, UserInvitationStatus, UserState},
    invite::{ApiError, ErrorCategory, InviteApi},
};
use plan::{Blocked, PlanContext, ReadyReason};

/// Where a reconcile writes the status.
pub trait StatusWriter {
    /// Writes the whole status. Fails (e.g. with a conflict) if the resource changed since
    /// it was read; nothing may be sent to the API after a failed intent write.
    fn write(
        &mut self,
        status: &UserInvitationStatus,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// A failed status write.
#[derive(thiserror::Error, Debug)]
#[error("writing the status failed: {0}")]
pub struct WriteError(pub String);

/// Why a sync did not finish.
#[derive(thiserror::Error, Debug)]
pub enum SyncError {
    /// The API failed (the status says so where it matters).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The status could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl SyncError {
    /// What to do about it.
    pub fn category(&self) -> ErrorCategory {
        match self {
            SyncError::Api(e) => e.category(),
            SyncError::Write(_) => ErrorCategory::Transient,
        }
    }

    /// How long the API asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::Api(e) => e.retry_after(),
            SyncError::Write(_) => None,
        }
    }
}

/// What a sync did, for events and logs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncReport {
    /// The status after the sync.
    pub status: UserInvitationStatus,
    /// Addresses invited by this sync.
    pub invited: Vec<String>,
    /// Addresses the API refused, with its message.
    pub failed: Vec<(String, String)>,
    /// Users whose state changed, as (address, old state, new state).
    pub transitions: Vec<(String, Option<UserState>, UserState)>,
    /// Number of status writes made.
    pub writes: usize,
}

/// Inputs of one sync.
#[derive(Clone, Debug)]
pub struct SyncInput<'a> {
    /// The resource's spec.
    pub spec: &'a UserInvitationSpec,
    /// Normalized requested addresses, in spec order.
    pub requested: &'a [String],
    /// The status as last written.
    pub previous: &'a UserInvitationStatus,
    /// `metadata.generation`.
    pub generation: i64,
    /// Whether to check invited users for acceptance and expiry on this pass.
    pub check_invited: bool,
}

/// The current time, at the second precision the status keeps.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// Brings the API and the status in line with the spec for a resource whose endpoint and
/// credentials resolved. Writes the status only when it changes; writes `Inviting` before
/// any invite call.
pub async fn sync_users<A: InviteApi, W: StatusWriter>(
    api: &A,
    input: SyncInput<'_>,
    writer: &mut W,
) -> Result<SyncReport, SyncError> {
    let now = now();
    let lifetime = api.invitation_lifetime();
    let ctx = PlanContext {
        requested: input.requested,
        previous: input.previous,
        generation: input.generation,
        now,
        reinvite_expired: input.spec.reinvite_expired,
        check_invited: input.check_invited,
        invitation_lifetime: lifetime,
    };
    let mut report = SyncReport::default();
    let to_observe = plan::addresses_to_observe(&ctx);
    let observed = if to_observe.is_empty() {
        Default::default()
    } else {
        match api.observe(&to_observe).await {
            Ok(observed) => observed,
            Err(error) => {
                // Show the problem when it matters: users nobody has decided on yet, or an
                // endpoint that refuses us. A failed acceptance check of settled users
                // changes nothing.
                let undecided = to_observe.iter().any(|email| {
                    input
                        .previous
                        .users
                        .iter()
                        .find(|u| &u.email_address == email)
                        .is_none_or(|u| matches!(u.state, UserState::Pending | UserState::Inviting))
                });
                if undecided || error.category() != ErrorCategory::Transient {
                    // A refused lookup is the endpoint's problem (credentials, organization,
                    // URL); an unavailable API only delays.
                    let reason = match error.category() {
                        ErrorCategory::Transient => ReadyReason::Pending,
                        _ => ReadyReason::EndpointNotReady,
                    };
                    let status = plan::blocked_status(
                        input.requested,
                        input.previous,
                        input.generation,
                        now,
                        &Blocked::new(reason, error.to_string()),
                    );
                    write_if_changed(writer, input.previous, &status, &mut report).await?;
                }
                return Err(error.into());
            }
        }
    };
    let decided = plan::plan(&ctx, &observed);
    if decided.to_invite.is_empty() {
        let status = plan::summarize(decided.users, input.previous, input.generation, now, None);
        finish(&mut report, input.previous, &status);
        write_if_changed(writer, input.previous, &status, &mut report).await?;
        return Ok(report);
    }

    // Record the intent before the call: a crash from here on finds `Inviting` and looks the
    // users up instead of inviting them again.
    let intent = plan::summarize(
        decided.users.clone(),
        input.previous,
        input.generation,
        now,
        Some("sending invitations"),
    );
    writer.write(&intent).await?;
    report.writes += 1;

    let mut users = decided.users;
    let outcome = api.invite(input.spec, &decided.to_invite).await;
    let (status, error) = match outcome {
        Ok(results) => {
            plan::apply_results(&mut users, &results, lifetime, now);
            for (email, result) in &results {
                match result {
                    crate::invite::InviteResult::Invited { .. } => {
                        report.invited.push(email.clone())
                    }
                    crate::invite::InviteResult::Rejected { message } => {
                        report.failed.push((email.clone(), message.clone()))
                    }
                    crate::invite::InviteResult::AlreadyMember { .. } => {}
                }
            }
            (
                plan::summarize(users, input.previous, input.generation, now, None),
                None,
            )
        }
        Err(error) => match error.category() {
            ErrorCategory::Transient => (
                plan::summarize(
                    users,
                    input.previous,
                    input.generation,
                    now,
                    Some(&error.to_string()),
                ),
                Some(error),
            ),
            ErrorCategory::Configuration => {
                plan::revert_inviting(&mut users, &error.to_string());
                let mut status =
                    plan::summarize(users, input.previous, input.generation, now, None);
                status.conditions = vec![plan::ready_condition(
                    input.previous,
                    false,
                    ReadyReason::EndpointNotReady,
                    error.to_string(),
                    input.generation,
                    now,
                )];
                (status, Some(error))
            }
            ErrorCategory::Permanent => {
                let message = error.to_string();
                let results = decided
                    .to_invite
                    .iter()
                    .map(|e| {
                        (
                            e.clone(),
                            crate::invite::InviteResult::Rejected {
                                message: message.clone(),
                            },
                        )
                    })
                    .collect();
                plan::apply_results(&mut users, &results, lifetime, now);
                for email in &decided.to_invite {
                    report.failed.push((email.clone(), message.clone()));
                }
                (
                    plan::summarize(users, input.previous, input.generation, now, None),
                    None,
                )
            }
        },
    };
    finish(&mut report, input.previous, &status);
    write_if_changed(writer, &intent, &status, &mut report).await?;
    match error {
        Some(error) => Err(error.into()),
        None => Ok(report),
    }
}

fn finish(report: &mut SyncReport, previous: &UserInvitationStatus, status: &UserInvitationStatus) {
    for user in &status.users {
        let before = previous
            .users
            .iter()
            .find(|u| u.email_address == user.email_address)
            .map(|u| u.state);
        if before != Some(user.state) {
            report
                .transitions
                .push((user.email_address.clone(), before, user.state));
        }
    }
    report.status = status.clone();
}

async fn write_if_changed<W: StatusWriter>(
    writer: &mut W,
    current: &UserInvitationStatus,
    next: &UserInvitationStatus,
    report: &mut SyncReport,
) -> Result<(), WriteError> {
    report.status = next.clone();
    if current == next {
        return Ok(());
    }
    writer.write(next).await?;
    report.writes += 1;
    Ok(())
}
