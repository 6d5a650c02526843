//! Who may change what: grant corrections (accessPolicy Enforce) reach only users this
//! resource owns and only the values `allowed` covers; removals (deletionPolicy Delete) reach
//! only owned users.

use std::collections::{BTreeMap, BTreeSet};

use super::{PlanContext, unsettled};
use crate::{
    api::{ANY_VALUE, AllowedGrants, UserState, UserStatus, address},
    invite::{Observed, UserGrants},
};

/// An owned user whose grants differ from the spec (accessPolicy Enforce).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantDrift {
    /// The requested address.
    pub email: String,
    /// The API's identifier of the user.
    pub identifier: String,
    /// What the user should end with: the spec's grants, plus whatever `allowed` does not
    /// cover left as it is.
    pub target: UserGrants,
    /// What the API reports.
    pub actual: UserGrants,
}

/// The owned users (invited, accepted or adopted) whose grants, as just observed, differ from
/// the spec within what `allowed` covers. Users about to be invited are not among them.
pub fn grant_drift(
    ctx: &PlanContext<'_>,
    users: &[UserStatus],
    observed: &BTreeMap<String, Observed>,
) -> Vec<GrantDrift> {
    if !ctx.enforce() {
        return Vec::new();
    }
    // The grants of each person as the planner requests them: the first plain spelling (see
    // `UserInvitationSpec::user`), never a later case variant's.
    let mut desired: BTreeMap<String, UserGrants> = BTreeMap::new();
    for user in ctx.spec.users.iter().flatten() {
        if let Ok(person) = address::parse(&user.email_address) {
            desired
                .entry(person)
                .or_insert_with(|| UserGrants::of(user));
        }
    }
    users
        .iter()
        .filter(|u| u.ownership.is_some() && u.state.is_invited())
        .filter_map(|u| {
            let Some(Observed::Member {
                identifier,
                grants: Some(actual),
                ..
            }) = observed.get(&u.email_address)
            else {
                return None;
            };
            let target = scoped_target(desired.get(&u.email_address)?, actual, ctx.facts.allowed);
            (&target != actual).then(|| GrantDrift {
                email: u.email_address.clone(),
                identifier: identifier.clone(),
                target,
                actual: actual.clone(),
            })
        })
        .collect()
}

/// The grants to bring a user to: `desired` for every value `allowed` covers; every value it
/// does not cover stays exactly as `actual` has it (neither granted nor revoked).
pub fn scoped_target(
    desired: &UserGrants,
    actual: &UserGrants,
    allowed: Option<&AllowedGrants>,
) -> UserGrants {
    let Some(allowed) = allowed else {
        return desired.clone();
    };
    UserGrants {
        groups: scope(&desired.groups, &actual.groups, &allowed.groups),
        user_groups: scope(
            &desired.user_groups,
            &actual.user_groups,
            &allowed.user_groups,
        ),
        roles: scope(&desired.roles, &actual.roles, &allowed.roles),
    }
}

fn scope(
    desired: &BTreeSet<String>,
    actual: &BTreeSet<String>,
    allowed: &[String],
) -> BTreeSet<String> {
    if allowed.iter().any(|a| a == ANY_VALUE) {
        return desired.clone();
    }
    let covered = |v: &String| allowed.contains(v);
    actual
        .iter()
        .filter(|v| !covered(v))
        .chain(desired.iter().filter(|v| covered(v)))
        .cloned()
        .collect()
}

/// Entries of users no longer requested whose external state this resource must remove now
/// (deletionPolicy Delete): only what it owns, and only once an unanswered invite request has
/// settled. A user the spec still names in a refused spelling (an object admitted before the
/// address rule) is not removed from the spec: it is kept, never removed because of the refusal.
pub fn removals(ctx: &PlanContext<'_>) -> Vec<UserStatus> {
    if !ctx.delete() {
        return Vec::new();
    }
    no_longer_requested(ctx)
        .filter(|u| !ctx.requested.names_invalidly(&u.email_address))
        .filter(|u| owes_removal(u) && !unsettled(u, ctx.now))
        .cloned()
        .collect()
}

/// Entries of users no longer requested that stay in the status: a removal still owed
/// (deletionPolicy Delete), or an invite request still settling (so nobody, this resource
/// included, invites the person again before it has).
pub fn kept_entries(
    requested: &super::Requested,
    spec: &crate::api::UserInvitationSpec,
    previous: &crate::api::UserInvitationStatus,
    now: jiff::Timestamp,
) -> Vec<UserStatus> {
    let delete = spec.deletion_policy == crate::api::DeletionPolicy::Delete;
    previous
        .users
        .iter()
        .filter(|u| !requested.contains(&u.email_address) && !is_invalid_entry(requested, u))
        .filter(|u| unsettled(u, now) || (delete && owes_removal(u)))
        .cloned()
        .collect()
}

fn is_invalid_entry(requested: &super::Requested, user: &UserStatus) -> bool {
    user.state == UserState::Failed
        && requested
            .invalid
            .iter()
            .any(|(written, _)| written == &user.email_address)
}

fn owes_removal(user: &UserStatus) -> bool {
    user.ownership.is_some() && user.state.has_something_to_remove()
}

fn no_longer_requested<'c>(ctx: &'c PlanContext<'_>) -> impl Iterator<Item = &'c UserStatus> {
    ctx.previous
        .users
        .iter()
        .filter(|u| !ctx.requested.contains(&u.email_address))
        .filter(|u| u.reason.is_none())
}
