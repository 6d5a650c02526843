//! The pure core of the reconciler: from the spec, the previous status and what the API
//! reports, decide which addresses to look up, whom to invite, and the next status.
//!
//! Exactly-once rests on three rules applied here:
//! 1. an address is invited only when the API reports no user and no live invitation for it;
//! 2. an address about to be invited is recorded as `Inviting` (and written) before the call;
//! 3. an address found `Inviting` is looked up again, never re-posted blindly.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::{
    api::{
        AccessPolicy, DeletionPolicy, UserInvitationSpec, UserInvitationStatus, UserState,
        UserStatus,
    },
    invite::{InviteResult, Observed, UserGrants},
};

/// Type of the readiness condition.
pub const READY: &str = "Ready";

/// Why a UserInvitation is (not) Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyReason {
    /// Every user is invited or a member.
    AllInvited,
    /// Some users are still waiting for an invitation (retrying).
    Pending,
    /// Some users failed, others did not.
    PartiallyFailed,
    /// Every user failed.
    Failed,
    /// The referenced endpoint does not exist.
    EndpointNotFound,
    /// The endpoint's credentials are missing or refused.
    EndpointNotReady,
    /// The endpoint speaks the other API.
    EndpointMismatch,
    /// The endpoint does not allow this namespace or these grants.
    NotAllowed,
    /// The spec cannot be acted upon.
    InvalidSpec,
    /// The paused annotation is set.
    Paused,
}

impl ReadyReason {
    /// The reason as written in the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyReason::AllInvited => "AllInvited",
            ReadyReason::Pending => "Pending",
            ReadyReason::PartiallyFailed => "PartiallyFailed",
            ReadyReason::Failed => "Failed",
            ReadyReason::EndpointNotFound => "EndpointNotFound",
            ReadyReason::EndpointNotReady => "EndpointNotReady",
            ReadyReason::EndpointMismatch => "EndpointMismatch",
            ReadyReason::NotAllowed => "NotAllowed",
            ReadyReason::InvalidSpec => "InvalidSpec",
            ReadyReason::Paused => "Paused",
        }
    }
}

/// A reason the resource cannot be worked on, with a human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// Condition reason.
    pub reason: ReadyReason,
    /// Human sentence, never containing secrets.
    pub message: String,
}

impl Blocked {
    /// A new blocker.
    pub fn new(reason: ReadyReason, message: impl Into<String>) -> Blocked {
        Blocked {
            reason,
            message: message.into(),
        }
    }
}

/// The requested addresses, normalized (trimmed, lowercased), in spec order.
///
/// Addresses that differ only in case are one person to the APIs; listing one twice makes
/// the spec invalid rather than silently merging the two entries.
pub fn requested_addresses(spec: &UserInvitationSpec) -> Result<Vec<String>, Blocked> {
    let raw: Vec<&str> = match (&spec.users, &spec.org_invitation) {
        (Some(users), None) => users.iter().map(|u| u.email_address.as_str()).collect(),
        (None, Some(org)) => org.usernames.iter().map(String::as_str).collect(),
        _ => {
            return Err(Blocked::new(
                ReadyReason::InvalidSpec,
                "exactly one of spec.users or spec.orgInvitation must be set",
            ));
        }
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for address in raw {
        let normalized = address.trim().to_ascii_lowercase();
        if !looks_like_email(&normalized) {
            return Err(Blocked::new(
                ReadyReason::InvalidSpec,
                format!("{address:?} is not an email address"),
            ));
        }
        if !seen.insert(normalized.clone()) {
            return Err(Blocked::new(
                ReadyReason::InvalidSpec,
                format!(
                    "{normalized} is listed more than once (addresses are compared ignoring case)"
                ),
            ));
        }
        out.push(normalized);
    }
    if out.is_empty() {
        return Err(Blocked::new(
            ReadyReason::InvalidSpec,
            "no users are listed",
        ));
    }
    Ok(out)
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// What the planner needs besides the API's observations.
#[derive(Clone, Debug)]
pub struct PlanContext<'a> {
    /// Normalized requested addresses, in spec order.
    pub requested: &'a [String],
    /// The status as last written (default when none).
    pub previous: &'a UserInvitationStatus,
    /// `metadata.generation` of the resource.
    pub generation: i64,
    /// Current time.
    pub now: DateTime<Utc>,
    /// `spec.reinviteExpired`.
    pub reinvite_expired: bool,
    /// Whether this pass should also check invited users for acceptance and expiry.
    pub check_invited: bool,
    /// Lifetime of an invitation of the endpoint's API.
    pub invitation_lifetime: Duration,
    /// `accessPolicy: Enforce`: settled users are looked up too (on resync or spec change) so
    /// their grants can be compared with the spec.
    pub enforce: bool,
    /// How long after `invitedAt` an invite request whose answer was never seen (the
    /// controller died, or the request timed out) may still be acted on by the API: requests
    /// leave within one request timeout of `invitedAt` and end within one more.
    /// Such an `Inviting` user found absent is invited again only after this has passed since
    /// `invitedAt`, so a request still in flight cannot add a second invitation.
    pub settle_time: Duration,
}

/// Message of `Inviting` entries whose invite request was answered (with a transient error),
/// so nothing is still in flight for them.
pub const ANSWERED: &str = "the API answered";

/// Whether an `Inviting` entry's request may still be in flight at the API.
pub fn unsettled(entry: &UserStatus, now: DateTime<Utc>, settle_time: Duration) -> bool {
    entry.state == UserState::Inviting
        && !entry
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with(ANSWERED))
        && entry.invited_at.is_some_and(|t| t + settle_time > now)
}

impl PlanContext<'_> {
    fn previous_entry(&self, email: &str) -> Option<&UserStatus> {
        self.previous
            .users
            .iter()
            .find(|u| u.email_address.eq_ignore_ascii_case(email))
    }

    fn spec_changed(&self) -> bool {
        self.previous.observed_generation != Some(self.generation)
    }
}

/// Phase 1: the addresses whose state in the API must be known before deciding.
pub fn addresses_to_observe(ctx: &PlanContext<'_>) -> Vec<String> {
    ctx.requested
        .iter()
        .filter(|email| match ctx.previous_entry(email) {
            None => true,
            Some(entry) => match entry.state {
                UserState::Pending | UserState::Inviting => true,
                UserState::Failed => ctx.spec_changed(),
                UserState::Expired => ctx.reinvite_expired || ctx.check_invited,
                UserState::Invited => {
                    ctx.check_invited
                        || entry.expires_at.is_some_and(|t| t <= ctx.now)
                        || (ctx.enforce && ctx.spec_changed())
                }
                UserState::AlreadyMember | UserState::Accepted => {
                    ctx.enforce && (ctx.check_invited || ctx.spec_changed())
                }
                UserState::Revoked | UserState::Deleted => false,
            },
        })
        .cloned()
        .collect()
}

/// Phase 2 result: whom to invite, and the status to record before inviting them.
#[derive(Clone, Debug, PartialEq)]
pub struct InvitePlan {
    /// Addresses to invite, in spec order.
    pub to_invite: Vec<String>,
    /// One entry per requested address, with `Inviting` for those about to be invited.
    pub users: Vec<UserStatus>,
}

/// Phase 2: decides every requested address from its previous entry and, where looked up,
/// what the API reports.
pub fn plan(ctx: &PlanContext<'_>, observed: &BTreeMap<String, Observed>) -> InvitePlan {
    let mut to_invite = Vec::new();
    let users = ctx
        .requested
        .iter()
        .map(|email| {
            let previous = ctx.previous_entry(email);
            match decide(ctx, email, previous, observed.get(email)) {
                Decision::Keep(entry) => entry,
                Decision::Invite => {
                    to_invite.push(email.clone());
                    UserStatus {
                        email_address: email.clone(),
                        identifier: None,
                        state: UserState::Inviting,
                        invited_at: Some(ctx.now),
                        expires_at: None,
                        message: None,
                    }
                }
            }
        })
        .collect();
    InvitePlan { to_invite, users }
}

enum Decision {
    Keep(UserStatus),
    Invite,
}

fn entry(email: &str, state: UserState) -> UserStatus {
    UserStatus {
        email_address: email.to_string(),
        identifier: None,
        state,
        invited_at: None,
        expires_at: None,
        message: None,
    }
}

fn decide(
    ctx: &PlanContext<'_>,
    email: &str,
    previous: Option<&UserStatus>,
    observed: Option<&Observed>,
) -> Decision {
    use UserState::*;
    let prev_state = previous.map(|p| p.state);
    let Some(observed) = observed else {
        return Decision::Keep(
            previous
                .cloned()
                .unwrap_or_else(|| entry(email, UserState::Pending)),
        );
    };
    let prev = || previous.cloned().unwrap_or_else(|| entry(email, Pending));
    let expired = |at: Option<DateTime<Utc>>| at.is_some_and(|t| t <= ctx.now);
    match observed {
        Observed::Member {
            identifier,
            accepted,
            ..
        } => {
            let mut next = prev();
            next.identifier = Some(identifier.clone());
            match prev_state {
                None | Some(Pending) | Some(Failed) => {
                    next.state = AlreadyMember;
                    next.message = None;
                    next.invited_at = None;
                    next.expires_at = None;
                }
                Some(Inviting) | Some(Invited) | Some(Expired) => {
                    if *accepted {
                        next.state = Accepted;
                        next.message = None;
                    } else if prev_state == Some(Inviting) {
                        next.state = Invited;
                        next.expires_at = next.invited_at.map(|t| t + ctx.invitation_lifetime);
                    } else if expired(next.expires_at) {
                        if ctx.reinvite_expired {
                            return Decision::Invite;
                        }
                        next.state = Expired;
                    }
                }
                Some(AlreadyMember) | Some(Accepted) | Some(Revoked) | Some(Deleted) => {}
            }
            Decision::Keep(next)
        }
        Observed::PendingInvitation {
            reference,
            expires_at,
            invited_at,
        } => {
            let live = !expired(*expires_at);
            let mut next = prev();
            match prev_state {
                None | Some(Pending) | Some(Failed) | Some(Inviting) => {
                    if !live && prev_state != Some(Inviting) {
                        return Decision::Invite;
                    }
                    if prev_state != Some(Inviting) {
                        next.message =
                            Some("an invitation was already pending; none was sent".into());
                    } else {
                        next.message = None;
                    }
                    next.state = Invited;
                }
                Some(Invited) | Some(Expired) => {
                    if !live {
                        if ctx.reinvite_expired {
                            return Decision::Invite;
                        }
                        next.state = Expired;
                    }
                }
                Some(AlreadyMember) | Some(Accepted) | Some(Revoked) | Some(Deleted) => {
                    return Decision::Keep(next);
                }
            }
            next.identifier = Some(reference.clone());
            next.invited_at = next.invited_at.or(*invited_at);
            next.expires_at = expires_at.or(next.expires_at);
            Decision::Keep(next)
        }
        Observed::Absent | Observed::RevokedInvitation { .. }
            if previous.is_some_and(|p| unsettled(p, ctx.now, ctx.settle_time)) =>
        {
            let mut next = prev();
            next.message =
                Some("waiting for an earlier invite request to settle before looking again".into());
            Decision::Keep(next)
        }
        Observed::RevokedInvitation { reference } => match prev_state {
            Some(Invited) => {
                let mut next = prev();
                next.state = Revoked;
                next.identifier = Some(reference.clone());
                Decision::Keep(next)
            }
            None | Some(Pending) | Some(Inviting) | Some(Failed) => Decision::Invite,
            Some(Expired) if ctx.reinvite_expired => Decision::Invite,
            _ => Decision::Keep(prev()),
        },
        Observed::Absent => match prev_state {
            None | Some(Pending) | Some(Inviting) | Some(Failed) => Decision::Invite,
            Some(Expired) if ctx.reinvite_expired => Decision::Invite,
            Some(Invited) => {
                let mut next = prev();
                if expired(next.expires_at) {
                    if ctx.reinvite_expired {
                        return Decision::Invite;
                    }
                    next.state = Expired;
                } else {
                    next.state = Revoked;
                    next.message = Some("the invitation no longer exists in the API".into());
                }
                Decision::Keep(next)
            }
            _ => Decision::Keep(prev()),
        },
    }
}

/// An existing user whose grants differ from the spec (accessPolicy Enforce).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantDrift {
    /// The requested address.
    pub email: String,
    /// The API's identifier of the user.
    pub identifier: String,
    /// What the spec asks for.
    pub desired: UserGrants,
    /// What the API reports.
    pub actual: UserGrants,
}

/// The users (invited, accepted or adopted) whose grants, as just observed, differ from
/// `desired` (by address). Users about to be invited are not among them.
pub fn grant_drift(
    users: &[UserStatus],
    observed: &BTreeMap<String, Observed>,
    desired: &BTreeMap<String, UserGrants>,
) -> Vec<GrantDrift> {
    users
        .iter()
        .filter(|u| {
            matches!(
                u.state,
                UserState::Invited | UserState::Accepted | UserState::AlreadyMember
            )
        })
        .filter_map(|u| {
            let Some(Observed::Member {
                identifier,
                grants: Some(actual),
                ..
            }) = observed.get(&u.email_address)
            else {
                return None;
            };
            let wanted = desired.get(&u.email_address)?;
            (wanted != actual).then(|| GrantDrift {
                email: u.email_address.clone(),
                identifier: identifier.clone(),
                desired: wanted.clone(),
                actual: actual.clone(),
            })
        })
        .collect()
}

/// Entries of users no longer in the spec whose external state must be removed first
/// (deletionPolicy Delete); every other entry of a removed user is simply dropped.
///
/// Delete removes what the resource created (invited, accepted, expired invitations, and an
/// `Inviting` one that may have been sent). A user who existed before (`AlreadyMember`) is
/// removed only under accessPolicy Enforce, where the resource adopted and managed them.
pub fn removals(
    previous: &UserInvitationStatus,
    requested: &[String],
    deletion: DeletionPolicy,
    access: AccessPolicy,
) -> Vec<UserStatus> {
    if deletion != DeletionPolicy::Delete {
        return Vec::new();
    }
    previous
        .users
        .iter()
        .filter(|u| !requested.contains(&u.email_address))
        .filter(|u| removable(u.state, access))
        .cloned()
        .collect()
}

/// Whether deletionPolicy Delete removes a user in this state.
pub fn removable(state: UserState, access: AccessPolicy) -> bool {
    match state {
        UserState::Invited | UserState::Accepted | UserState::Expired | UserState::Inviting => true,
        UserState::AlreadyMember => access == AccessPolicy::Enforce,
        UserState::Pending | UserState::Failed | UserState::Revoked | UserState::Deleted => false,
    }
}

/// Applies the results of an invite call to the entries recorded before it. Addresses without
/// a result stay `Inviting` (they are looked up on the next pass).
pub fn apply_results(
    users: &mut [UserStatus],
    results: &BTreeMap<String, InviteResult>,
    lifetime: Duration,
    now: DateTime<Utc>,
) {
    for user in users.iter_mut() {
        let Some(result) = results.get(&user.email_address) else {
            continue;
        };
        match result {
            InviteResult::Invited {
                identifier,
                expires_at,
                warning,
            } => {
                let invited_at = user.invited_at.unwrap_or(now);
                user.state = UserState::Invited;
                user.identifier = Some(identifier.clone());
                user.invited_at = Some(invited_at);
                user.expires_at = Some(expires_at.unwrap_or(invited_at + lifetime));
                user.message = warning.clone();
            }
            InviteResult::AlreadyMember { identifier } => {
                user.state = UserState::AlreadyMember;
                user.identifier = Some(identifier.clone());
                user.invited_at = None;
                user.expires_at = None;
                user.message = None;
            }
            InviteResult::Rejected { message } => {
                user.state = UserState::Failed;
                user.invited_at = None;
                user.expires_at = None;
                user.message = Some(message.clone());
            }
        }
    }
}

/// Marks `Inviting` entries whose invite request was answered with a transient error: the
/// outcome is known to be settled at the API, so the next pass may look them up and retry at
/// once.
pub fn mark_answered(users: &mut [UserStatus], answer: &str) {
    for user in users.iter_mut().filter(|u| u.state == UserState::Inviting) {
        user.message = Some(format!("{ANSWERED}: {answer}"));
    }
}

/// When the next pass should run for `Inviting` entries still settling, if any.
pub fn settle_wait(
    users: &[UserStatus],
    now: DateTime<Utc>,
    settle_time: Duration,
) -> Option<std::time::Duration> {
    users
        .iter()
        .filter(|u| unsettled(u, now, settle_time))
        .filter_map(|u| (u.invited_at? + settle_time - now).to_std().ok())
        .min()
}

/// Puts addresses that were about to be invited back to `Pending` (the call was refused as a
/// whole, so nothing was sent), with the reason.
pub fn revert_inviting(users: &mut [UserStatus], message: &str) {
    for user in users.iter_mut().filter(|u| u.state == UserState::Inviting) {
        user.state = UserState::Pending;
        user.invited_at = None;
        user.message = Some(message.to_string());
    }
}

/// Builds the whole status from the user entries: counts, identifiers and the Ready condition.
/// `problem` explains why `Pending` users are waiting (a transient error), if known.
pub fn summarize(
    users: Vec<UserStatus>,
    previous: &UserInvitationStatus,
    generation: i64,
    now: DateTime<Utc>,
    problem: Option<&str>,
) -> UserInvitationStatus {
    let count = |states: &[UserState]| users.iter().filter(|u| states.contains(&u.state)).count();
    let done = count(&[
        UserState::Invited,
        UserState::Accepted,
        UserState::AlreadyMember,
    ]);
    let failed = count(&[UserState::Failed]);
    let waiting = count(&[UserState::Pending, UserState::Inviting]);
    let members = count(&[UserState::AlreadyMember]);
    let total = users.len();
    let (reason, message) = if waiting > 0 {
        let mut m = format!("{done} of {total} users invited, {waiting} pending");
        if let Some(problem) = problem {
            m.push_str(": ");
            m.push_str(problem);
        }
        (ReadyReason::Pending, m)
    } else if failed > 0 {
        let first = users
            .iter()
            .find(|u| u.state == UserState::Failed)
            .expect("failed > 0");
        let detail = format!(
            "{}: {}",
            first.email_address,
            first.message.as_deref().unwrap_or("refused")
        );
        if failed == total {
            (
                ReadyReason::Failed,
                format!("all {total} users failed (first: {detail})"),
            )
        } else {
            (
                ReadyReason::PartiallyFailed,
                format!("{failed} of {total} users failed (first: {detail}); {done} invited"),
            )
        }
    } else {
        let mut m = format!("{done} of {total} users invited");
        let others = total - done;
        if members > 0 {
            m.push_str(&format!(" ({members} already members)"));
        }
        if others > 0 {
            m.push_str(&format!("; {others} expired, revoked or deleted"));
        }
        (ReadyReason::AllInvited, m)
    };
    let invited_users = users
        .iter()
        .filter(|u| {
            matches!(
                u.state,
                UserState::Invited | UserState::Accepted | UserState::AlreadyMember
            )
        })
        .map(|u| match &u.identifier {
            // OrgInvitation identifiers are invitation references; list the person instead.
            Some(id) if id.contains('@') && !id.contains('/') => id.clone(),
            _ => u.email_address.clone(),
        })
        .collect();
    let ready = reason == ReadyReason::AllInvited;
    UserInvitationStatus {
        observed_generation: Some(generation),
        conditions: vec![ready_condition(
            previous, ready, reason, message, generation, now,
        )],
        users,
        invited_users,
        invited: done as u32,
        failed: failed as u32,
    }
}

/// A status for a resource that cannot be worked on: the users keep their entries (new ones
/// are `Pending`) and Ready is False with the blocker's reason.
pub fn blocked_status(
    requested: &[String],
    previous: &UserInvitationStatus,
    generation: i64,
    now: DateTime<Utc>,
    blocked: &Blocked,
) -> UserInvitationStatus {
    let users: Vec<UserStatus> = requested
        .iter()
        .map(|email| {
            previous
                .users
                .iter()
                .find(|u| u.email_address.eq_ignore_ascii_case(email))
                .cloned()
                .unwrap_or_else(|| entry(email, UserState::Pending))
        })
        .collect();
    let mut status = summarize(users, previous, generation, now, None);
    status.conditions = vec![ready_condition(
        previous,
        false,
        blocked.reason,
        blocked.message.clone(),
        generation,
        now,
    )];
    status
}

/// The Ready condition; its transition time changes only when its status does.
pub fn ready_condition(
    previous: &UserInvitationStatus,
    ready: bool,
    reason: ReadyReason,
    message: String,
    generation: i64,
    now: DateTime<Utc>,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = previous
        .conditions
        .iter()
        .find(|c| c.type_ == READY && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| to_time(now));
    Condition {
        type_: READY.to_string(),
        status: status.to_string(),
        reason: reason.as_str().to_string(),
        message,
        observed_generation: Some(generation),
        last_transition_time,
    }
}

/// Converts to the Kubernetes time type (second precision, as the API server stores it).
pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
