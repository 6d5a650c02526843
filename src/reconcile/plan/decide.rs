//! Phases 1 and 2 of a pass: which addresses to look up, and what each address becomes given
//! what the API reports and who else holds the person.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::{OtherHolder, PlanContext, entry, unsettled};
use crate::{
    api::{FailureReason, Ownership, UserState, UserStatus},
    invite::{Lookup, Observed},
};

/// Phase 1: the addresses whose state in the API must be known before deciding, with the
/// identifiers already known.
pub fn addresses_to_look_up(ctx: &PlanContext<'_>) -> Vec<Lookup> {
    ctx.requested
        .addresses
        .iter()
        .filter_map(|email| {
            let previous = ctx.previous_entry(email);
            needs_lookup(ctx, previous).then(|| Lookup {
                email: email.clone(),
                identifier: previous.and_then(|p| p.identifier.clone()),
            })
        })
        .collect()
}

/// The addresses a pass works on and must hold meanwhile: those it looks up (it may invite
/// them) and those whose removal it owes.
pub fn addresses_to_claim(ctx: &PlanContext<'_>) -> Vec<String> {
    addresses_to_look_up(ctx)
        .into_iter()
        .map(|l| l.email)
        .chain(super::removals(ctx).into_iter().map(|u| u.email_address))
        .collect()
}

fn needs_lookup(ctx: &PlanContext<'_>, previous: Option<&UserStatus>) -> bool {
    let Some(entry) = previous else {
        return true;
    };
    match entry.state {
        UserState::Pending => true,
        UserState::Inviting => !unsettled(entry, ctx.now),
        UserState::Failed => ctx.spec_changed(),
        UserState::Expired => ctx.spec.reinvite_expired || ctx.check_invited,
        UserState::Invited => {
            ctx.check_invited
                || entry.expires_at.is_some_and(|t| t <= ctx.now)
                || (ctx.enforce() && ctx.spec_changed())
        }
        UserState::AlreadyMember | UserState::Accepted => {
            ctx.enforce() && entry.ownership.is_some() && (ctx.check_invited || ctx.spec_changed())
        }
        UserState::Revoked | UserState::Deleted => false,
    }
}

/// Phase 2 result: whom to invite, and the entries to record before inviting them.
#[derive(Clone, Debug, PartialEq)]
pub struct InvitePlan {
    /// Addresses to invite, in spec order.
    pub to_invite: Vec<String>,
    /// Those of them invited again (`reinviteExpired`): the API still shows the person or
    /// their expired invitation.
    pub resends: Vec<String>,
    /// One entry per requested address (with `Inviting` for those about to be invited), then
    /// the entries of invalid spec entries.
    pub users: Vec<UserStatus>,
}

/// Phase 2: decides every requested address from its previous entry, what the API reports
/// (where looked up) and who else holds the person.
pub fn decide(ctx: &PlanContext<'_>, observed: &BTreeMap<String, Observed>) -> InvitePlan {
    let mut to_invite = Vec::new();
    let mut resends = Vec::new();
    let mut users: Vec<UserStatus> = ctx
        .requested
        .addresses
        .iter()
        .map(|email| {
            let previous = ctx.previous_entry(email);
            match decide_one(ctx, email, previous, observed.get(email)) {
                Decision::Keep(entry) => entry,
                Decision::Invite { resend } => {
                    to_invite.push(email.clone());
                    if resend {
                        resends.push(email.clone());
                    }
                    let mut next = entry(email, UserState::Inviting);
                    next.ownership = Some(Ownership::Created);
                    next.invited_at = Some(ctx.now);
                    next
                }
            }
        })
        .collect();
    users.extend(invalid_entries_of(ctx.requested));
    InvitePlan {
        to_invite,
        resends,
        users,
    }
}

/// Entries for spec entries that cannot be acted on: `Failed` with reason InvalidSpec.
pub(super) fn invalid_entries_of(requested: &super::Requested) -> Vec<UserStatus> {
    requested
        .invalid
        .iter()
        .map(|(written, why)| {
            let mut e = entry(written, UserState::Failed);
            e.reason = Some(FailureReason::InvalidSpec);
            e.message = Some(why.clone());
            e
        })
        .collect()
}

enum Decision {
    Keep(UserStatus),
    /// Invite; `resend` when the API still shows the person or an earlier (expired)
    /// invitation, so finding them after a refused call proves nothing was sent.
    Invite {
        resend: bool,
    },
}

fn decide_one(
    ctx: &PlanContext<'_>,
    email: &str,
    previous: Option<&UserStatus>,
    observed: Option<&Observed>,
) -> Decision {
    let prev = || {
        previous
            .cloned()
            .unwrap_or_else(|| entry(email, UserState::Pending))
    };
    let Some(observed) = observed else {
        return Decision::Keep(prev());
    };
    // An expired invitation keeps no claim on the person once someone else holds them.
    let owned = previous.is_some_and(|p| p.ownership.is_some() && p.state != UserState::Expired);
    if !owned && let Some(other) = ctx.others.get(email) {
        return Decision::Keep(held_elsewhere(ctx, prev(), observed, other));
    }
    if previous.is_some_and(|p| unsettled(p, ctx.now))
        && matches!(
            observed,
            Observed::Absent | Observed::RevokedInvitation { .. }
        )
    {
        let mut next = prev();
        next.message =
            Some("waiting for an earlier invite request to settle before looking again".into());
        return Decision::Keep(next);
    }
    match observed {
        Observed::Member {
            identifier,
            accepted,
            ..
        } => found_member(ctx, prev(), identifier, *accepted),
        Observed::RedeemedInvitation { reference } => {
            let next = prev();
            if invitation_of_another(ctx, &next, reference, None) {
                return Decision::Keep(not_ours(
                    next,
                    UserState::Accepted,
                    reference,
                    "accepted an invitation this resource did not send; left alone",
                ));
            }
            found_member(ctx, next, reference, true)
        }
        Observed::PendingInvitation {
            reference,
            expires_at,
            invited_at,
        } => found_invitation(ctx, prev(), reference, *expires_at, *invited_at),
        Observed::RevokedInvitation { reference } => found_revoked(ctx, prev(), reference),
        Observed::Absent => found_nothing(ctx, prev()),
    }
}

fn expired(ctx: &PlanContext<'_>, at: Option<Timestamp>) -> bool {
    at.is_some_and(|t| t <= ctx.now)
}

/// The person exists (a member, or the invitation was redeemed).
fn found_member(
    ctx: &PlanContext<'_>,
    mut next: UserStatus,
    identifier: &str,
    accepted: bool,
) -> Decision {
    use UserState::*;
    next.identifier = Some(identifier.to_string());
    match next.state {
        Pending | Failed => {
            next = entry(&next.email_address, AlreadyMember);
            next.identifier = Some(identifier.to_string());
            next.ownership = ctx.ownership_of_existing();
            next.message = ctx.left_alone_message();
        }
        Expired if accepted => {
            // The invitation had expired: whoever let the person in since, it was not
            // (provably) this resource, so it owns nothing any more.
            next.state = Accepted;
            next.ownership = None;
            next.settles_at = None;
            next.message = Some(
                "joined after this resource's invitation expired (someone else may have invited them); left alone".into(),
            );
        }
        Inviting | Invited | Expired => {
            next.settles_at = None;
            if accepted {
                next.state = Accepted;
                next.message = None;
            } else if next.state == Inviting {
                next.state = Invited;
                next.message = None;
                next.expires_at = next.invited_at.map(|t| t + ctx.facts.invitation_lifetime);
            } else if expired(ctx, next.expires_at)
                && let Some(again) = expire(ctx, &mut next, true)
            {
                return again;
            }
        }
        AlreadyMember | Accepted | Revoked | Deleted => {}
    }
    Decision::Keep(next)
}

fn found_invitation(
    ctx: &PlanContext<'_>,
    mut next: UserStatus,
    reference: &str,
    expires_at: Option<Timestamp>,
    invited_at: Option<Timestamp>,
) -> Decision {
    use UserState::*;
    let live = !expired(ctx, expires_at);
    let another = invitation_of_another(ctx, &next, reference, invited_at);
    match next.state {
        Pending | Failed => {
            if !live {
                return Decision::Invite { resend: true };
            }
            next = entry(&next.email_address, Invited);
            next.message = Some(
                "an invitation was already pending (not sent by this resource); it is left alone"
                    .into(),
            );
        }
        Inviting | Invited | Expired if another && live => {
            return Decision::Keep(not_ours(
                next,
                Invited,
                reference,
                "invited by someone else (not by this resource); left alone",
            ));
        }
        Inviting if another => {
            // Only an expired invitation of someone else: this resource's request made none.
            let mut pending = entry(&next.email_address, Pending);
            pending.message = Some("no invitation of this resource was found".into());
            return Decision::Keep(pending);
        }
        Invited | Expired if another => {
            // Someone else's invitation, expired too; this resource's own is gone.
            return expire(ctx, &mut next, true).unwrap_or(Decision::Keep(next));
        }
        Inviting => {
            next.state = Invited;
            next.settles_at = None;
            next.message = None;
        }
        Invited | Expired => {
            if !live && let Some(again) = expire(ctx, &mut next, true) {
                return again;
            }
        }
        AlreadyMember | Accepted | Revoked | Deleted => return Decision::Keep(next),
    }
    next.identifier = Some(reference.to_string());
    next.invited_at = next.invited_at.or(invited_at);
    next.expires_at = expires_at.or(next.expires_at);
    Decision::Keep(next)
}

/// Whether an invitation the API reports (`reference`, sent at `sent_at`) is provably not the
/// one this resource's entry records: it has another reference, or (while the reference is
/// not known yet) was sent outside the window of this resource's request.
fn invitation_of_another(
    ctx: &PlanContext<'_>,
    entry: &UserStatus,
    reference: &str,
    sent_at: Option<Timestamp>,
) -> bool {
    if entry.ownership != Some(Ownership::Created) {
        return false;
    }
    match entry.identifier.as_deref() {
        Some(recorded) if is_reference(recorded) => recorded != reference,
        _ => match (entry.invited_at, sent_at) {
            (Some(ours), Some(sent)) => {
                // The API's clock is not ours, and `invitedAt` is rounded up to the second:
                // only an invitation sent well outside this resource's request is another's.
                let slack = jiff::SignedDuration::try_from(ctx.facts.settle.clock_skew)
                    .unwrap_or(jiff::SignedDuration::ZERO)
                    + API_CLOCK_SLACK;
                sent < ours - slack || sent > ctx.facts.settle.settles_at(ours) + slack
            }
            _ => false,
        },
    }
}

/// How far an API's timestamps may be from this replica's clock when telling whether an
/// invitation was sent by this resource's request.
const API_CLOCK_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Whether an identifier is an invitation's reference link (OrgInvitation), not a user id.
pub(super) fn is_reference(identifier: &str) -> bool {
    identifier.starts_with('/')
}

/// An invitation that expired: invited again (`resend`: a new invitation replaces the old
/// one) when the spec asks for it (`reinviteExpired`); otherwise the entry is `Expired`.
fn expire(ctx: &PlanContext<'_>, next: &mut UserStatus, resend: bool) -> Option<Decision> {
    if ctx.spec.reinvite_expired {
        return Some(Decision::Invite { resend });
    }
    next.state = UserState::Expired;
    None
}

/// The entry of a person whose invitation or membership this resource did not make: reported
/// in `state`, owned no more.
fn not_ours(mut next: UserStatus, state: UserState, reference: &str, why: &str) -> UserStatus {
    next.state = state;
    next.ownership = None;
    next.identifier = Some(reference.to_string());
    next.settles_at = None;
    next.reason = None;
    next.message = Some(why.to_string());
    next
}

fn found_revoked(ctx: &PlanContext<'_>, mut next: UserStatus, reference: &str) -> Decision {
    use UserState::*;
    match next.state {
        Invited => {
            next.state = Revoked;
            next.identifier = Some(reference.to_string());
            Decision::Keep(next)
        }
        Pending | Inviting | Failed => Decision::Invite { resend: false },
        Expired if ctx.spec.reinvite_expired => Decision::Invite { resend: false },
        Expired | AlreadyMember | Accepted | Revoked | Deleted => Decision::Keep(next),
    }
}

fn found_nothing(ctx: &PlanContext<'_>, mut next: UserStatus) -> Decision {
    use UserState::*;
    match next.state {
        Pending | Inviting | Failed => Decision::Invite { resend: false },
        Expired if ctx.spec.reinvite_expired => Decision::Invite { resend: false },
        Invited if expired(ctx, next.expires_at) => {
            expire(ctx, &mut next, false).unwrap_or(Decision::Keep(next))
        }
        Invited => {
            next.state = Revoked;
            next.message = Some("the invitation no longer exists in the API".into());
            Decision::Keep(next)
        }
        AlreadyMember | Accepted => {
            next.state = Deleted;
            next.message = Some("the user no longer exists in the API".into());
            Decision::Keep(next)
        }
        Expired | Revoked | Deleted => Decision::Keep(next),
    }
}

/// Another resource holds the person: report what the API says and name the holder; never
/// invite, adopt or change them.
fn held_elsewhere(
    ctx: &PlanContext<'_>,
    mut next: UserStatus,
    observed: &Observed,
    other: &OtherHolder,
) -> UserStatus {
    next.ownership = None;
    next.settles_at = None;
    next.reason = None;
    let owner = &other.owner;
    match observed {
        Observed::Member {
            identifier,
            accepted,
            ..
        } => {
            next.identifier = Some(identifier.clone());
            next.state = match next.state {
                UserState::Inviting | UserState::Invited | UserState::Expired if *accepted => {
                    UserState::Accepted
                }
                UserState::Accepted => UserState::Accepted,
                _ => UserState::AlreadyMember,
            };
            next.message = Some(format!(
                "managed by UserInvitation {owner}; left alone here"
            ));
        }
        Observed::RedeemedInvitation { reference } => {
            next.identifier = Some(reference.clone());
            next.state = UserState::Accepted;
            next.message = Some(format!(
                "invited by UserInvitation {owner}; left alone here"
            ));
        }
        Observed::PendingInvitation {
            reference,
            expires_at,
            invited_at,
        } => {
            next.identifier = Some(reference.clone());
            next.state = UserState::Invited;
            next.invited_at = *invited_at;
            next.expires_at = *expires_at;
            next.message = Some(format!(
                "invited by UserInvitation {owner}; no invitation was sent by this resource"
            ));
        }
        Observed::Absent | Observed::RevokedInvitation { .. } => {
            next.state = UserState::Pending;
            next.invited_at = None;
            let until = other
                .settles_at
                .filter(|t| *t > ctx.now)
                .map(|t| format!(" (its request settles at {t})"))
                .unwrap_or_default();
            next.message = Some(format!(
                "UserInvitation {owner} holds this person ({}{until}); waiting for it",
                other.state
            ));
        }
    }
    next
}
