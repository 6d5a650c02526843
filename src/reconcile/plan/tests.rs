//! Unit tests of the planner: every (previous state × observation × holder) that matters.
//! This file holds the shared fixtures; the tests are in `tests/`.

use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::{
    api::{AccessPolicy, EndpointRef, FailureReason, OrgInvitationRequest, UserToCreate},
    invite::{ApiError, InviteOutcome, Lookup, Observed, UserGrants},
};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-11-22T10:00:00Z";

fn spec(emails: &[&str]) -> UserInvitationSpec {
    UserInvitationSpec {
        endpoint_ref: EndpointRef::default(),
        users: Some(
            emails
                .iter()
                .map(|e| UserToCreate {
                    email_address: e.to_string(),
                    groups: vec![],
                    user_groups: vec![],
                    roles: vec![],
                })
                .collect(),
        ),
        org_invitation: None,
        access_policy: Default::default(),
        deletion_policy: Default::default(),
        reinvite_expired: false,
    }
}

fn user(email: &str, state: UserState) -> UserStatus {
    entry(email, state)
}

fn owned(email: &str, state: UserState) -> UserStatus {
    UserStatus {
        ownership: Some(Ownership::Created),
        ..entry(email, state)
    }
}

/// An owned Invited entry whose invitation expires at `expires_at`.
fn invited_until(email: &str, expires_at: &str) -> UserStatus {
    UserStatus {
        expires_at: Some(t(expires_at)),
        ..owned(email, UserState::Invited)
    }
}

fn status(users: Vec<UserStatus>, generation: i64) -> UserInvitationStatus {
    UserInvitationStatus {
        observed_generation: Some(generation),
        users,
        ..Default::default()
    }
}

fn emails(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The addresses of status entries, in order.
fn addresses_of(entries: Vec<UserStatus>) -> Vec<String> {
    entries.into_iter().map(|u| u.email_address).collect()
}

fn lookups(list: &[&str]) -> Vec<Lookup> {
    list.iter().map(|s| Lookup::email(*s)).collect()
}

fn obs(pairs: &[(&str, Observed)]) -> BTreeMap<String, Observed> {
    pairs
        .iter()
        .map(|(e, o)| (e.to_string(), o.clone()))
        .collect()
}

fn member(id: &str, accepted: bool) -> Observed {
    Observed::Member {
        identifier: id.into(),
        accepted,
        grants: None,
    }
}

/// What a planner context borrows.
struct Setup {
    requested: Requested,
    spec: UserInvitationSpec,
    previous: UserInvitationStatus,
}

impl Setup {
    fn new(addresses: &[&str], previous: UserInvitationStatus) -> Setup {
        let spec = spec(addresses);
        Setup {
            requested: requested_addresses(&spec).unwrap(),
            spec,
            previous,
        }
    }

    /// The entries kept beside the requested addresses, now.
    fn kept(&self) -> Vec<UserStatus> {
        kept_entries(&self.requested, &self.spec, &self.previous, t(NOW))
    }

    fn ctx(&self) -> PlanContext<'_> {
        let facts = EndpointFacts::for_tests(false);
        PlanContext {
            now: t(NOW),
            ..PlanContext::new(&self.requested, &self.spec, &self.previous, 1, false, facts)
        }
    }
}

mod observe;
mod ownership;
mod status;
