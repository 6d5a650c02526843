//! The status as a whole: counts, invited identifiers, the Ready condition, and the size
//! bounds that keep a status far below what etcd stores.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{Blocked, PlanContext, ReadyReason, Requested, decide::invalid_entries_of, entry};
use crate::api::{ApiFlavor, UserInvitationSpec, UserInvitationStatus, UserState, UserStatus};

/// Type of the readiness condition.
pub const READY: &str = "Ready";

/// Type of the kstatus condition present (True) while work is pending or in flight.
pub const RECONCILING: &str = "Reconciling";

/// Type of the kstatus condition present (True) while a person must act.
pub const STALLED: &str = "Stalled";

/// What a status tells a reader beside Ready, in kstatus terms (what Flux and Argo CD read):
/// `Reconciling` and `Stalled` are written only when True, never both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Ready: nothing left to do.
    Done,
    /// Work is pending or in flight, or the controller waits for something that appears by
    /// itself (Reconciling=True).
    Reconciling,
    /// A terminal state only a person can change (Stalled=True).
    Stalled,
    /// Deliberately not worked on (paused): neither condition.
    Paused,
}

/// The longest message kept per user (bytes); longer ones are truncated.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The most message bytes a status holds over all its users: with many users each message
/// gets a share, so 1000 users failing with long messages stay small.
const STATUS_MESSAGE_BUDGET: usize = 128 * 1024;

/// The longest condition message (bytes).
pub const MAX_CONDITION_BYTES: usize = 2048;

/// `message` cut to [`MAX_MESSAGE_BYTES`] at a character boundary, marked when cut.
pub fn truncate_message(message: &str) -> String {
    truncate_to(message, MAX_MESSAGE_BYTES)
}

/// A condition's `message` cut to [`MAX_CONDITION_BYTES`] (an API's error message can be
/// any size; a condition must stay small).
pub fn truncate_condition(message: &str) -> String {
    truncate_to(message, MAX_CONDITION_BYTES)
}

fn truncate_to(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// Shares the message budget among the users.
fn fit_messages(users: &mut [UserStatus]) {
    let share = (STATUS_MESSAGE_BUDGET / users.len().max(1)).clamp(64, MAX_MESSAGE_BYTES);
    for user in users.iter_mut() {
        if let Some(m) = user.message.as_mut().filter(|m| m.len() > share) {
            *m = truncate_to(m, share);
        }
    }
}

/// Counts of the requested users by what they mean for Ready.
struct Counts {
    total: usize,
    done: usize,
    failed: usize,
    invalid: usize,
    waiting: usize,
    members: usize,
    left_alone: usize,
    elsewhere: usize,
}

fn counts(ctx: &PlanContext<'_>, requested: &[&UserStatus]) -> Counts {
    let count = |f: &dyn Fn(&UserStatus) -> bool| requested.iter().filter(|u| f(u)).count();
    let elsewhere =
        |u: &UserStatus| u.ownership.is_none() && ctx.others.contains_key(&u.email_address);
    Counts {
        total: requested.len(),
        done: count(&|u| u.state.is_invited()),
        failed: count(&|u| u.state == UserState::Failed),
        invalid: ctx.requested.invalid.len(),
        waiting: count(&|u| u.state.is_waiting()),
        members: count(&|u| u.state == UserState::AlreadyMember),
        left_alone: count(&|u| {
            u.state == UserState::AlreadyMember
                && u.ownership.is_none()
                && !elsewhere(u)
                && ctx.wants_adoption()
                && !ctx.facts.adoption
        }),
        elsewhere: count(&elsewhere),
    }
}

/// Builds the whole status from the user entries (requested ones, invalid ones, then kept
/// ones): counts, identifiers and the Ready condition. `problem` explains why `Pending` users
/// are waiting, if known.
pub fn summarize(
    ctx: &PlanContext<'_>,
    mut users: Vec<UserStatus>,
    problem: Option<&str>,
) -> UserInvitationStatus {
    fit_messages(&mut users);
    let is_requested = |u: &&UserStatus| {
        ctx.requested.contains(&u.email_address)
            || ctx
                .requested
                .invalid
                .iter()
                .any(|(w, _)| w == &u.email_address)
    };
    let listed: Vec<&UserStatus> = users.iter().filter(is_requested).collect();
    let c = counts(ctx, &listed);
    let (reason, message) = ready_reason(&c, &listed, problem);
    let invited_users = listed
        .iter()
        .filter(|u| u.state.is_invited())
        .map(|u| match (ctx.facts.endpoint.api, &u.identifier) {
            // A UserInvite user's identifier is the address the API knows them by; an
            // OrgInvitation identifier is an invitation reference or a user id, so the person
            // is listed by address.
            (ApiFlavor::UserInvite, Some(id)) => id.clone(),
            _ => u.email_address.clone(),
        })
        .collect();
    UserInvitationStatus {
        observed_generation: Some(ctx.generation),
        conditions: conditions(
            &ctx.previous.conditions,
            reason.progress(),
            reason.as_str(),
            message,
            ctx.generation,
            ctx.now,
        ),
        api: Some(ctx.facts.api.clone()),
        endpoint: Some(ctx.facts.endpoint.clone()),
        invited: c.done as u32,
        failed: c.failed as u32,
        invited_users,
        users,
    }
}

fn ready_reason(
    c: &Counts,
    listed: &[&UserStatus],
    problem: Option<&str>,
) -> (ReadyReason, String) {
    let mut m = format!("{} of {} users invited", c.done, c.total);
    if c.members > 0 {
        m.push_str(&format!(" ({} already members)", c.members));
    }
    let others = c.total - c.done - c.failed - c.waiting;
    if others > 0 {
        m.push_str(&format!("; {others} expired, revoked or deleted"));
    }
    if c.left_alone > 0 {
        m.push_str(&format!(
            "; {} existing users left alone: the endpoint does not allow adopting existing users, so accessPolicy Enforce and deletionPolicy Delete do not reach them",
            c.left_alone
        ));
    }
    if c.elsewhere > 0 {
        m.push_str(&format!(
            "; {} users are managed by other UserInvitations and left alone here",
            c.elsewhere
        ));
    }
    let first_failure = || {
        listed
            .iter()
            .find(|u| u.state == UserState::Failed)
            .map(|u| {
                format!(
                    "{}: {}",
                    u.email_address,
                    u.message.as_deref().unwrap_or("refused")
                )
            })
            .unwrap_or_default()
    };
    if c.waiting > 0 {
        m.push_str(&format!("; {} pending", c.waiting));
        if let Some(problem) = problem {
            m.push_str(": ");
            m.push_str(problem);
        }
        return (ReadyReason::Pending, truncate_to(&m, MAX_CONDITION_BYTES));
    }
    let reason = if c.invalid > 0 {
        ReadyReason::InvalidSpec
    } else if c.failed == 0 {
        ReadyReason::AllInvited
    } else if c.failed == c.total {
        ReadyReason::Failed
    } else {
        ReadyReason::PartiallyFailed
    };
    if c.failed > 0 {
        m.push_str(&format!(
            "; {} failed (first: {})",
            c.failed,
            first_failure()
        ));
    }
    (reason, truncate_to(&m, MAX_CONDITION_BYTES))
}

/// A status for a resource that cannot be worked on: every entry is kept (requested users
/// keep theirs, new ones are `Pending`, removed users whose removal is owed or whose invite
/// request is settling stay), and Ready is False with the blocker's reason.
pub fn blocked_status(
    requested: &Requested,
    spec: &UserInvitationSpec,
    previous: &UserInvitationStatus,
    generation: i64,
    now: Timestamp,
    blocked: &Blocked,
) -> UserInvitationStatus {
    let mut users: Vec<UserStatus> = requested
        .addresses
        .iter()
        .map(|email| {
            super::previous_entry(previous, email)
                .cloned()
                .unwrap_or_else(|| entry(email, UserState::Pending))
        })
        .collect();
    users.extend(invalid_entries_of(requested));
    users.extend(super::kept_entries(requested, spec, previous, now));
    fit_messages(&mut users);
    let listed = requested.addresses.len() + requested.invalid.len();
    let invited = users[..listed].iter().filter(|u| u.state.is_invited());
    let failed = users[..listed]
        .iter()
        .filter(|u| u.state == UserState::Failed)
        .count();
    UserInvitationStatus {
        observed_generation: Some(generation),
        conditions: conditions(
            &previous.conditions,
            blocked.progress,
            blocked.reason.as_str(),
            blocked.message.clone(),
            generation,
            now,
        ),
        api: previous.api.clone(),
        endpoint: previous.endpoint.clone(),
        invited_users: invited.clone().map(|u| u.email_address.clone()).collect(),
        invited: invited.count() as u32,
        failed: failed as u32,
        users,
    }
}

/// How long a pass that waited should wait before the next look: until the first of its own
/// unanswered requests settles, or until another resource holding a person it waits for is
/// likely done (its request settled, or a short while).
pub fn settle_wait(ctx: &PlanContext<'_>, users: &[UserStatus]) -> Option<std::time::Duration> {
    const WAIT_FOR_HOLDER: std::time::Duration = std::time::Duration::from_secs(5);
    let until = |t: Timestamp| std::time::Duration::try_from(t.duration_since(ctx.now)).ok();
    let own = users
        .iter()
        .filter(|u| super::unsettled(u, ctx.now))
        .filter_map(|u| until(u.settles_at?));
    let held = users
        .iter()
        .filter(|u| u.state == UserState::Pending && u.ownership.is_none())
        .filter_map(|u| ctx.others.get(&u.email_address))
        .map(|o| o.settles_at.and_then(until).unwrap_or(WAIT_FOR_HOLDER));
    own.chain(held).min()
}

/// The conditions of a status: `Ready` (True only when `progress` is [`Progress::Done`]),
/// then `Reconciling` or `Stalled` when True (kstatus: both absent otherwise), each with
/// `reason`, `message` (truncated to [`MAX_CONDITION_BYTES`]) and the generation it describes.
/// A condition's transition time changes only when its status does.
pub fn conditions(
    previous: &[Condition],
    progress: Progress,
    reason: &str,
    message: String,
    generation: i64,
    now: Timestamp,
) -> Vec<Condition> {
    let message = truncate_condition(&message);
    let condition = |type_: &str, status: bool| {
        let status = if status { "True" } else { "False" };
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| to_time(now));
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.clone(),
            observed_generation: Some(generation),
            last_transition_time,
        }
    };
    let mut all = vec![condition(READY, progress == Progress::Done)];
    match progress {
        Progress::Reconciling => all.push(condition(RECONCILING, true)),
        Progress::Stalled => all.push(condition(STALLED, true)),
        Progress::Done | Progress::Paused => {}
    }
    all
}

/// The conditions for a Ready `reason` ([`conditions`], stalled or not as the reason says).
pub fn conditions_for(
    previous: &UserInvitationStatus,
    reason: ReadyReason,
    message: String,
    generation: i64,
    now: Timestamp,
) -> Vec<Condition> {
    conditions(
        &previous.conditions,
        reason.progress(),
        reason.as_str(),
        message,
        generation,
        now,
    )
}

/// Converts to the Kubernetes time type (second precision, as the API server stores it).
pub fn to_time(t: Timestamp) -> Time {
    Time(super::to_seconds(t))
}
