//! Reconciling one UserInvitation against its invite API.
//!
//! [`plan`] holds the pure decisions; this module executes them: look up, record the intent,
//! invite, record the outcome. It is shared by the controller and the one-shot `reconcile`
//! command, which differ only in where the status is written ([`StatusWriter`]).

pub mod plan;
pub mod resolve;

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};

use crate::{
    api::{AccessPolicy, UserInvitationSpec, UserInvitationStatus, UserState},
    invite::{ApiError, ErrorCategory, InviteApi, InviteResult, UserGrants},
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
#[error("writing the status failed: {message}")]
pub struct WriteError {
    /// Why, as the API said it.
    pub message: String,
    /// The write's guard failed: the resource changed since it was read. Not an error: its
    /// new version is reconciled instead.
    pub conflict: bool,
}

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

    /// Whether a status write lost a race with another change of the resource.
    pub fn is_conflict(&self) -> bool {
        matches!(self, SyncError::Write(w) if w.conflict)
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
    /// Users whose grants were corrected (accessPolicy Enforce), with what changed.
    pub updated: Vec<(String, String)>,
    /// Users removed from the spec whose external state was removed (deletionPolicy
    /// Delete), with what was done.
    pub removed: Vec<(String, Option<String>)>,
    /// Users whose state changed, as (address, old state, new state).
    pub transitions: Vec<(String, Option<UserState>, UserState)>,
    /// Number of status writes made.
    pub writes: usize,
    /// When to look again at users whose earlier invite request may still be in flight.
    pub settle_after: Option<Duration>,
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
    /// The endpoint's request timeout: how long an unanswered invite request may still act.
    pub settle_time: Duration,
}

/// `t` rounded up to the whole second.
fn ceil_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = t.trunc_subsecs(0);
    if floor == t {
        t
    } else {
        floor + chrono::Duration::seconds(1)
    }
}

/// The current time, at the second precision the status keeps.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// Brings the API and the status in line with the spec for a resource whose endpoint and
/// credentials resolved. Writes the status only when it changes; writes `Inviting` before
/// any invite call.
///
/// Phases: look up → decide → (record intent → invite) → correct drift (Enforce) → remove
/// users no longer listed (Delete) → record the outcome.
pub async fn sync_users<A: InviteApi, W: StatusWriter>(
    api: &A,
    input: SyncInput<'_>,
    writer: &mut W,
) -> Result<SyncReport, SyncError> {
    let now = now();
    let lifetime = api.invitation_lifetime();
    let spec = input.spec;
    let ctx = PlanContext {
        requested: input.requested,
        previous: input.previous,
        generation: input.generation,
        now,
        reinvite_expired: spec.reinvite_expired,
        check_invited: input.check_invited,
        invitation_lifetime: lifetime,
        enforce: spec.access_policy == AccessPolicy::Enforce,
        // A request leaves within settle_time of invitedAt and is answered or abandoned
        // within settle_time (the request timeout) after that.
        settle_time: chrono::Duration::from_std(input.settle_time * 2)
            .unwrap_or(chrono::Duration::MAX),
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
                    let mut status = plan::blocked_status(
                        input.requested,
                        input.previous,
                        input.generation,
                        now,
                        &Blocked::new(reason, error.to_string()),
                    );
                    keep_pending_removals(&mut status, &input);
                    write_if_changed(writer, input.previous, &status, &mut report).await?;
                }
                return Err(error.into());
            }
        }
    };
    let decided = plan::plan(&ctx, &observed);
    let mut users = decided.users;
    let mut written = input.previous.clone();
    let mut problem: Option<ApiError> = None;
    let mut blocked: Option<ReadyReason> = None;

    if !decided.to_invite.is_empty() {
        // Record the intent before the call: a crash from here on finds `Inviting` and looks
        // the users up instead of inviting them again. `invitedAt` is stamped now (rounded up
        // to the second it is stored at) and the invite requests must leave within
        // `settle_time` of it, so an unanswered request has settled by `invitedAt + 2 ×
        // settle_time` (see `PlanContext::settle_time`).
        let stamped = std::time::Instant::now();
        let invited_at = ceil_to_second(Utc::now());
        for user in users.iter_mut().filter(|u| u.state == UserState::Inviting) {
            user.invited_at = Some(invited_at);
        }
        let send_by = stamped + input.settle_time;
        let mut intent = plan::summarize(
            users.clone(),
            input.previous,
            input.generation,
            now,
            Some("sending invitations"),
        );
        keep_pending_removals(&mut intent, &input);
        writer.write(&intent).await?;
        report.writes += 1;
        written = intent;

        match api.invite(spec, &decided.to_invite, send_by).await {
            Ok(results) => {
                plan::apply_results(&mut users, &results, lifetime, now);
                for (email, result) in &results {
                    match result {
                        InviteResult::Invited { .. } => report.invited.push(email.clone()),
                        InviteResult::Rejected { message } => {
                            report.failed.push((email.clone(), message.clone()))
                        }
                        InviteResult::AlreadyMember { .. } => {}
                    }
                }
            }
            Err(error @ ApiError::NotSent { .. }) => {
                // Nothing left: retry soon, with a new intent.
                plan::revert_inviting(&mut users, &error.to_string());
                problem = Some(error);
            }
            Err(error) => match error.category() {
                // Unknown outcome: the users stay `Inviting` and are looked up next time; with
                // an answer (5xx, 429) nothing is left in flight, so that can be soon.
                ErrorCategory::Transient => {
                    if let Some(code) = error.status() {
                        plan::mark_answered(&mut users, &code.to_string());
                    }
                    problem = Some(error);
                }
                // Refused as a whole, so nothing was sent.
                ErrorCategory::Configuration => {
                    plan::revert_inviting(&mut users, &error.to_string());
                    blocked = Some(ReadyReason::EndpointNotReady);
                    problem = Some(error);
                }
                ErrorCategory::Permanent => {
                    let message = error.to_string();
                    let results = decided
                        .to_invite
                        .iter()
                        .map(|e| {
                            (
                                e.clone(),
                                InviteResult::Rejected {
                                    message: message.clone(),
                                },
                            )
                        })
                        .collect();
                    plan::apply_results(&mut users, &results, lifetime, now);
                    for email in &decided.to_invite {
                        report.failed.push((email.clone(), message.clone()));
                    }
                }
            },
        }
    }

    // accessPolicy Enforce: bring existing users' grants to the spec.
    if ctx.enforce && problem.is_none() {
        let desired: BTreeMap<String, UserGrants> = spec
            .users
            .iter()
            .flatten()
            .map(|u| {
                (
                    u.email_address.trim().to_ascii_lowercase(),
                    UserGrants::of(u),
                )
            })
            .collect();
        for drift in plan::grant_drift(&users, &observed, &desired) {
            match api
                .enforce(&drift.identifier, &drift.desired, &drift.actual)
                .await
            {
                Ok(changes) if !changes.is_empty() => {
                    report
                        .updated
                        .push((drift.email.clone(), changes.join(", ")));
                }
                Ok(_) => {}
                Err(error) => {
                    if let Some(user) = users.iter_mut().find(|u| u.email_address == drift.email) {
                        user.message = Some(format!("could not apply the spec's grants: {error}"));
                    }
                    if error.category() != ErrorCategory::Permanent {
                        problem = Some(error);
                        break;
                    }
                }
            }
        }
    }

    // deletionPolicy Delete: remove what was created for users no longer listed.
    let mut pending_removals = Vec::new();
    for entry in plan::removals(
        input.previous,
        input.requested,
        spec.deletion_policy,
        spec.access_policy,
    ) {
        if problem.is_some() {
            pending_removals.push(entry);
            continue;
        }
        match api
            .remove(&entry.email_address, entry.identifier.as_deref())
            .await
        {
            Ok(done) => report.removed.push((entry.email_address.clone(), done)),
            Err(error) => {
                let mut entry = entry;
                entry.message = Some(format!("removal pending: {error}"));
                pending_removals.push(entry);
                problem = Some(error);
            }
        }
    }

    let problem_text = problem.as_ref().map(ToString::to_string);
    let mut status = plan::summarize(
        users,
        input.previous,
        input.generation,
        now,
        problem_text.as_deref(),
    );
    if let (Some(reason), Some(text)) = (blocked, &problem_text) {
        status.conditions = vec![plan::ready_condition(
            input.previous,
            false,
            reason,
            text.clone(),
            input.generation,
            now,
        )];
    }
    status.users.extend(pending_removals);
    report.settle_after = plan::settle_wait(&status.users, now, ctx.settle_time);
    finish(&mut report, input.previous, &status);
    write_if_changed(writer, &written, &status, &mut report).await?;
    match problem {
        Some(error) if error.category() != ErrorCategory::Permanent => Err(error.into()),
        _ => Ok(report),
    }
}

/// Keeps the entries of removed users whose external state must still be removed (they sit
/// after the requested users), when a pass ends before removing them.
fn keep_pending_removals(status: &mut UserInvitationStatus, input: &SyncInput<'_>) {
    status.users.extend(plan::removals(
        input.previous,
        input.requested,
        input.spec.deletion_policy,
        input.spec.access_policy,
    ));
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
