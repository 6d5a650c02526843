//! What the API's answers mean for each user: the outcomes of an invite call, and a lookup
//! that failed.

use std::collections::BTreeMap;

use super::{Blocked, PlanContext, ReadyReason, blocked_status, truncate_message};
use crate::{
    api::{FailureReason, Ownership, UserInvitationStatus, UserState, UserStatus},
    invite::{ApiError, ErrorCategory, InviteOutcome, Lookup},
};

/// Applies the outcomes of an invite call to the entries recorded before it. An address
/// without an outcome is treated as one whose request may have been acted on.
pub fn apply_outcomes(
    ctx: &PlanContext<'_>,
    users: &mut [UserStatus],
    outcomes: &BTreeMap<String, InviteOutcome>,
) {
    for user in users.iter_mut().filter(|u| u.state == UserState::Inviting) {
        match outcomes.get(&user.email_address) {
            Some(outcome) => apply(ctx, user, outcome),
            None => apply(
                ctx,
                user,
                &InviteOutcome::Unknown(ApiError::NoAnswer {
                    operation: "invite users",
                    status: None,
                    message: "the API's answer did not mention this user".into(),
                    retry_after: None,
                }),
            ),
        }
    }
}

fn apply(ctx: &PlanContext<'_>, user: &mut UserStatus, outcome: &InviteOutcome) {
    match outcome {
        InviteOutcome::Invited {
            identifier,
            expires_at,
            warning,
        } => {
            let invited_at = user.invited_at.unwrap_or(ctx.now);
            user.state = UserState::Invited;
            user.ownership = Some(Ownership::Created);
            user.identifier = Some(identifier.clone());
            user.invited_at = Some(invited_at);
            user.settles_at = None;
            user.expires_at =
                Some(expires_at.unwrap_or(invited_at + ctx.facts.invitation_lifetime));
            user.message = warning.as_deref().map(truncate_message);
        }
        InviteOutcome::AlreadyMember { identifier } => {
            let email = user.email_address.clone();
            *user = super::entry(&email, UserState::AlreadyMember);
            user.identifier = Some(identifier.clone());
            user.ownership = ctx.ownership_of_existing();
            user.message = ctx.left_alone_message();
        }
        InviteOutcome::Rejected { message } => {
            let email = user.email_address.clone();
            *user = super::entry(&email, UserState::Failed);
            user.reason = Some(FailureReason::Rejected);
            user.message = Some(truncate_message(message));
        }
        InviteOutcome::NotDone(error) => {
            let email = user.email_address.clone();
            *user = super::entry(&email, UserState::Pending);
            user.message = Some(truncate_message(&error.to_string()));
        }
        InviteOutcome::Unknown(error) => {
            // Still Inviting, still ours: looked up again once the request has settled.
            user.message = Some(truncate_message(&format!(
                "{error}; the API may have acted, so this user is looked up again once the request has settled"
            )));
        }
    }
}

/// The status to show when a lookup failed, if it should be shown: when some looked-up user
/// is undecided (new, `Pending`, `Inviting`), or when the endpoint refuses us. A failed
/// acceptance check of settled users changes nothing.
pub fn lookup_failed(
    ctx: &PlanContext<'_>,
    looked_up: &[Lookup],
    error: &ApiError,
) -> Option<UserInvitationStatus> {
    let undecided = looked_up.iter().any(|lookup| {
        ctx.previous_entry(&lookup.email)
            .is_none_or(|u| u.state.is_waiting())
    });
    let reason = match error.category() {
        ErrorCategory::Transient if undecided => ReadyReason::Pending,
        ErrorCategory::Transient => return None,
        ErrorCategory::Configuration | ErrorCategory::Permanent => ReadyReason::EndpointNotReady,
    };
    let mut status = blocked_status(
        ctx.requested,
        ctx.spec,
        ctx.previous,
        ctx.generation,
        ctx.now,
        &Blocked::new(reason, error.to_string()),
    );
    status.api = Some(ctx.facts.api.clone());
    status.endpoint = Some(ctx.facts.endpoint.clone());
    Some(status)
}

impl PlanContext<'_> {
    /// The message of an existing user this resource may not manage although it wants to.
    pub(super) fn left_alone_message(&self) -> Option<String> {
        (self.wants_adoption() && !self.facts.adoption).then(|| {
            "existed before; left alone: the endpoint does not allow adopting existing users".into()
        })
    }
}
