//! The pure core of the reconciler: from the spec, the previous status, what the API reports
//! and who else holds a person, decide which addresses to look up, whom to invite, what to
//! correct or remove, and the next status. No I/O: every branch is a unit test.
//!
//! Exactly-once rests on four rules applied here:
//! 1. an address is invited only when the API reports no user and no live invitation for it,
//!    and no other resource holds the person on the same API;
//! 2. an address about to be invited is recorded as `Inviting` (and written) before the call,
//!    with the time after which an unanswered request can no longer act (`settlesAt`);
//! 3. an address found `Inviting` is looked up again, never re-posted blindly, and not
//!    before it settled;
//! 4. an outcome the API may have acted on keeps the address `Inviting`.
//!
//! Tenancy rests on ownership ([`Ownership`]): a resource changes, deletes or revokes only what
//! it created or adopted, and adopts existing users only where the endpoint allows it.

mod binding;
mod decide;
mod outcome;
mod summary;
mod tenancy;

use std::{collections::BTreeMap, time::Duration};

use jiff::{SignedDuration, Timestamp};

pub use binding::{Binding, bind_to_endpoint};
pub use decide::{InvitePlan, addresses_to_claim, addresses_to_look_up, decide};
pub use outcome::{apply_outcomes, lookup_failed};
#[cfg(test)]
use summary::{MAX_CONDITION_BYTES, MAX_MESSAGE_BYTES, to_time, truncate_condition};
pub use summary::{
    Progress, READY, blocked_status, conditions, conditions_for, settle_wait, summarize,
    truncate_message,
};
pub use tenancy::{grant_drift, kept_entries, removals};

use crate::api::{
    AccessPolicy, AllowedGrants, ApiIdentity, DeletionPolicy, EndpointBinding, FailureReason,
    Ownership, UserInvitationSpec, UserInvitationStatus, UserState, UserStatus, address,
};

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
    /// The endpoint's credentials are missing or refused, or its settings are unusable.
    EndpointNotReady,
    /// The endpoint speaks the other API.
    EndpointMismatch,
    /// The endpoint does not allow this namespace or these grants.
    NotAllowed,
    /// The spec cannot be acted upon (entirely, or for some entries).
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

    /// What the reason asks of a reader beside Ready (kstatus): a failure a person must fix
    /// stalls; waiting for users or for an endpoint to appear is reconciling.
    pub fn progress(self) -> Progress {
        match self {
            ReadyReason::AllInvited => Progress::Done,
            ReadyReason::Pending | ReadyReason::EndpointNotFound => Progress::Reconciling,
            ReadyReason::PartiallyFailed
            | ReadyReason::Failed
            | ReadyReason::EndpointNotReady
            | ReadyReason::EndpointMismatch
            | ReadyReason::NotAllowed
            | ReadyReason::InvalidSpec => Progress::Stalled,
            ReadyReason::Paused => Progress::Paused,
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
    /// Whether a person must act ([`Progress::Stalled`]) or it may resolve by itself.
    pub progress: Progress,
}

impl Blocked {
    /// A new blocker, stalled or not as its reason says ([`ReadyReason::progress`]).
    pub fn new(reason: ReadyReason, message: impl Into<String>) -> Blocked {
        Blocked {
            reason,
            message: message.into(),
            progress: reason.progress(),
        }
    }

    /// A blocker that resolves without a person (something that is expected to appear, such
    /// as a Secret an external secret store writes): Reconciling, never Stalled.
    pub fn waiting(reason: ReadyReason, message: impl Into<String>) -> Blocked {
        Blocked {
            progress: Progress::Reconciling,
            ..Blocked::new(reason, message)
        }
    }
}

/// The addresses a spec requests, each as the person it names ([`address::person`]: case
/// folded), in spec order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    /// Each distinct valid address once, in spec order.
    pub addresses: Vec<String>,
    /// Entries that cannot be acted on, as written, with why: not a plain email address (see
    /// [`address`]), or a repeat of an earlier address (addresses are compared ignoring case).
    pub invalid: Vec<(String, String)>,
}

impl Requested {
    /// Whether `email` (a person, see [`address::person`]) is requested.
    pub fn contains(&self, email: &str) -> bool {
        self.addresses.iter().any(|a| a == email)
    }

    /// Whether the spec still names `email` (a person) in an entry it cannot act on: an address
    /// written in a form that is refused now (an object admitted before the rule) is not
    /// removed from the spec, so what this resource holds for it is never removed because of
    /// the refusal.
    pub fn names_invalidly(&self, email: &str) -> bool {
        self.invalid
            .iter()
            .any(|(written, _)| address::person(written) == email)
    }
}

/// The requested addresses. Every address must be a plain email address (see [`address`]:
/// display names, comments, quoted local parts, routes, whitespace, stray dots, non-ASCII and
/// the like name one mailbox in another spelling, so they are refused, as at admission), and
/// addresses that are the same person ([`address::person`]) are listed once: an entry that is
/// refused or repeats an earlier one is marked invalid (only that entry fails). Fails only when
/// the spec has no usable shape at all.
pub fn requested_addresses(spec: &UserInvitationSpec) -> Result<Requested, Blocked> {
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
    if raw.is_empty() {
        return Err(Blocked::new(
            ReadyReason::InvalidSpec,
            "no users are listed",
        ));
    }
    let mut requested = Requested::default();
    for written in raw {
        match address::parse(written) {
            Err(why) => {
                let why = format!(
                    "not a plain email address: it {why} (write only the address, like alice@example.com: one mailbox must not be listed in two spellings)"
                );
                requested.invalid.push((written.to_string(), why));
            }
            Ok(person) if requested.contains(&person) => {
                let why = format!(
                    "listed more than once: the same address as {person} (addresses are compared ignoring case)"
                );
                requested.invalid.push((written.to_string(), why));
            }
            Ok(person) => requested.addresses.push(person),
        }
    }
    Ok(requested)
}

/// What a spec with no usable shape (see [`requested_addresses`]) keeps: every entry of the
/// previous status, as it is (an invalid spec never loses status; removals owed under
/// deletionPolicy Delete and unsettled requests stay with their entries).
pub fn unusable_spec_keeps(previous: &UserInvitationStatus) -> Requested {
    let mut kept = Requested::default();
    for user in &previous.users {
        if user.reason == Some(FailureReason::InvalidSpec) {
            kept.invalid.push((
                user.email_address.clone(),
                user.message.clone().unwrap_or_default(),
            ));
        } else if !kept.contains(&user.email_address) {
            kept.addresses.push(user.email_address.clone());
        }
    }
    kept
}

/// How long an invite request whose answer was never seen may still act: it leaves within
/// one request timeout of the intent or not at all, and ends within one more; replicas'
/// clocks may differ by up to `clock_skew`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettleWindow {
    /// The endpoint's request timeout when the intent is recorded.
    pub request_timeout: Duration,
    /// The largest difference between two replicas' clocks that is tolerated.
    pub clock_skew: Duration,
}

impl SettleWindow {
    /// When a request recorded at `invited_at` has settled, on any replica's clock.
    pub fn settles_at(&self, invited_at: Timestamp) -> Timestamp {
        let window = self.request_timeout * 2 + self.clock_skew;
        invited_at
            .checked_add(SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX)
    }
}

/// Another resource holding a person on the same API (it invited or adopted them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherHolder {
    /// `namespace/name` of the UserInvitation.
    pub owner: String,
    /// The person's state there.
    pub state: UserState,
    /// For `Inviting`: when its request settles.
    pub settles_at: Option<Timestamp>,
}

/// Everything the planner needs besides the API's observations.
#[derive(Clone, Debug)]
pub struct PlanContext<'a> {
    /// The requested addresses.
    pub requested: &'a Requested,
    /// The resource's spec.
    pub spec: &'a UserInvitationSpec,
    /// The status as last written (default when none).
    pub previous: &'a UserInvitationStatus,
    /// `metadata.generation` of the resource.
    pub generation: i64,
    /// Current time.
    pub now: Timestamp,
    /// Whether this pass also checks invited users for acceptance and expiry.
    pub check_invited: bool,
    /// What the pass knows of the endpoint.
    pub facts: EndpointFacts<'a>,
    /// Persons other resources hold on the same API, by address.
    pub others: BTreeMap<String, OtherHolder>,
    /// The resource (namespace, name, uid), as an intent journal records it.
    pub resource: crate::api::IntentResource,
    /// Addresses whose `Inviting` entry in `previous` comes from the intent journal, not
    /// from the stored status: the pass writes the status even when it plans no change, so
    /// the intent is in the status before the journal lets it go.
    pub journaled: Vec<String>,
}

/// The inputs of [`PlanContext::new`] that depend on the endpoint.
#[derive(Clone, Debug)]
pub struct EndpointFacts<'a> {
    /// The API the endpoint reaches.
    pub api: ApiIdentity,
    /// The endpoint object (flavour, kind, name, uid).
    pub endpoint: EndpointBinding,
    /// Lifetime of an invitation of the endpoint's API.
    pub invitation_lifetime: SignedDuration,
    /// The settle window of new intents.
    pub settle: SettleWindow,
    /// Whether the endpoint allows adopting users that existed before.
    pub adoption: bool,
    /// The endpoint's `allowed` grants (`None`: unrestricted).
    pub allowed: Option<&'a AllowedGrants>,
}

impl<'a> EndpointFacts<'a> {
    /// The facts of a resolved endpoint, its client and the API it reaches; new intents
    /// settle after two request timeouts plus `clock_skew`.
    pub fn of(
        endpoint: &'a crate::api::AnyEndpoint,
        api: &dyn crate::invite::InviteApi,
        identity: ApiIdentity,
        clock_skew: Duration,
    ) -> EndpointFacts<'a> {
        EndpointFacts {
            api: identity,
            endpoint: endpoint.binding(),
            invitation_lifetime: api.invitation_lifetime(),
            settle: SettleWindow {
                request_timeout: api.request_timeout(),
                clock_skew,
            },
            adoption: endpoint.allows_adoption(),
            allowed: endpoint.allowed(),
        }
    }
}

#[cfg(test)]
impl EndpointFacts<'static> {
    /// The endpoint the unit tests plan against: a UserInvite API, invitations that live a
    /// day, 30 s request timeouts and 15 s of clock skew, no `allowed`.
    pub(crate) fn for_tests(adoption: bool) -> EndpointFacts<'static> {
        EndpointFacts {
            api: ApiIdentity {
                url: "https://wf.example.com".into(),
                organization_id: None,
            },
            endpoint: EndpointBinding {
                api: crate::api::ApiFlavor::UserInvite,
                kind: crate::api::EndpointKind::ClusterInvitationEndpoint,
                name: "default".into(),
                uid: Some("uid-1".into()),
            },
            invitation_lifetime: SignedDuration::from_hours(24),
            settle: SettleWindow {
                request_timeout: std::time::Duration::from_secs(30),
                clock_skew: std::time::Duration::from_secs(15),
            },
            adoption,
            allowed: None,
        }
    }
}

impl<'a> PlanContext<'a> {
    /// The context of one pass (the one constructor, shared by the controller and the one-shot
    /// mode). `others` is filled in once the pass holds its addresses.
    pub fn new(
        requested: &'a Requested,
        spec: &'a UserInvitationSpec,
        previous: &'a UserInvitationStatus,
        generation: i64,
        check_invited: bool,
        facts: EndpointFacts<'a>,
    ) -> PlanContext<'a> {
        PlanContext {
            requested,
            spec,
            previous,
            generation,
            now: now(),
            check_invited,
            facts,
            others: BTreeMap::new(),
            resource: crate::api::IntentResource::default(),
            journaled: Vec::new(),
        }
    }

    fn previous_entry(&self, email: &str) -> Option<&UserStatus> {
        previous_entry(self.previous, email)
    }

    fn spec_changed(&self) -> bool {
        self.previous.observed_generation != Some(self.generation)
    }

    fn enforce(&self) -> bool {
        self.spec.access_policy == AccessPolicy::Enforce
    }

    fn delete(&self) -> bool {
        self.spec.deletion_policy == DeletionPolicy::Delete
    }

    /// Whether this resource wants to manage existing users (Enforce or Delete) …
    fn wants_adoption(&self) -> bool {
        self.enforce() || self.delete()
    }

    /// … and the ownership an existing user gets here.
    fn ownership_of_existing(&self) -> Option<Ownership> {
        (self.wants_adoption() && self.facts.adoption).then_some(Ownership::Adopted)
    }
}

/// The current time, at the second precision the status keeps.
pub fn now() -> Timestamp {
    to_seconds(Timestamp::now())
}

/// `t` truncated to the second.
pub fn to_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The previous entry of a requested address (never the entry of an invalid spec entry that
/// happens to be spelled like it).
pub fn previous_entry<'s>(
    previous: &'s UserInvitationStatus,
    email: &str,
) -> Option<&'s UserStatus> {
    previous
        .users
        .iter()
        .find(|u| u.email_address == email && u.reason != Some(FailureReason::InvalidSpec))
}

/// A fresh entry.
pub fn entry(email: &str, state: UserState) -> UserStatus {
    UserStatus {
        email_address: email.to_string(),
        identifier: None,
        state,
        ownership: None,
        reason: None,
        invited_at: None,
        settles_at: None,
        expires_at: None,
        message: None,
    }
}

/// Whether an `Inviting` entry's request may still be in flight at the API.
pub fn unsettled(entry: &UserStatus, now: Timestamp) -> bool {
    entry.state == UserState::Inviting && entry.settles_at.is_some_and(|t| t > now)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
