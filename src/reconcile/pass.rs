//! One pass over one resource, as both the controller and the one-shot mode run it:
//! requested addresses → paused → resolve → plan context → sync. A [`Driver`] supplies what
//! differs: where the endpoint, namespace and Secret come from, whether invited users are
//! checked this time, and how the planned phases run (the controller holds the addresses and
//! updates its holder index around them; a dry run only plans).

use std::time::Duration;

use super::{
    StatusWriter, SyncReport, WriteError,
    plan::{self, Binding, Blocked, EndpointFacts, PlanContext, ReadyReason, Requested},
    resolve::{self, Resolved, Rules, Source},
};
use crate::{
    api::{
        IntentResource, Ownership, PAUSED_ANNOTATION, UserInvitation, UserInvitationStatus,
        UserState,
    },
    invite::intent::BatchIntent,
};

/// What a pass needs from whoever runs it.
pub trait Driver: Sync {
    /// Where endpoints, namespaces and Secrets come from.
    type Source: Source;
    /// Where the status is written.
    type Writer: StatusWriter;
    /// Why a pass failed.
    type Error: From<WriteError> + From<<Self::Source as Source>::Error> + Send;

    /// Where endpoints, namespaces and Secrets come from.
    fn source(&self) -> &Self::Source;

    /// What endpoints are held to.
    fn rules(&self) -> Rules<'_>;

    /// Whether the resource's endpoint is served here at all (endpoint selectors). A resource
    /// that is not is left as it is: nothing is written.
    fn serves(&self, _invitation: &UserInvitation) -> bool {
        true
    }

    /// Whether this pass also checks invited users for acceptance and expiry (asked once the
    /// endpoint is resolved).
    fn check_invited(&self) -> bool;

    /// The largest difference between two replicas' clocks that exactly-once tolerates.
    fn max_clock_skew(&self) -> Duration;

    /// The addresses the intent journal holds for this resource (by uid) whose outcome may
    /// not be in its status yet: each with the intent of its batch.
    fn journaled(&self, _invitation: &UserInvitation) -> Vec<(String, BatchIntent)> {
        Vec::new()
    }

    /// Runs the planned phases ([`super::sync`], or less).
    fn sync(
        &self,
        resolved: &Resolved,
        ctx: &mut PlanContext<'_>,
        writer: &mut Self::Writer,
    ) -> impl Future<Output = Result<SyncReport, Self::Error>> + Send;
}

/// How a pass ended.
pub enum Outcome {
    /// The resource's endpoint is not served here: nothing was written.
    NotServed,
    /// The resource cannot be worked on now; its status says why.
    Stopped(Box<Stopped>),
    /// The planned phases ran.
    Synced(Box<Synced>),
}

/// A pass that could not proceed.
pub struct Stopped {
    /// Why.
    pub blocked: Blocked,
    /// When to look again, when it is known (otherwise: paused waits for a change, anything
    /// else backs off).
    pub retry_in: Option<Duration>,
    /// The status written, when it changed.
    pub written: Option<UserInvitationStatus>,
    /// The reason of the Ready condition before the pass.
    pub was: Option<String>,
}

/// A pass that ran its phases.
pub struct Synced {
    /// What it did.
    pub report: SyncReport,
    /// The endpoint it ran against.
    pub resolved: Resolved,
    /// The entries were made through another endpoint or API and were dropped: where, and
    /// how many.
    pub started_over: Option<(String, usize)>,
}

/// Runs one pass over `invitation`, writing its status through `writer`.
pub async fn run<D: Driver>(
    driver: &D,
    invitation: &UserInvitation,
    writer: &mut D::Writer,
) -> Result<Outcome, D::Error> {
    let stop = Stop {
        invitation,
        retry_in: None,
    };
    let requested = match plan::requested_addresses(&invitation.spec) {
        Ok(requested) => requested,
        Err(blocked) => {
            // Nothing usable is requested: every entry stays as it is until the spec is fixed.
            let previous = invitation.status.clone().unwrap_or_default();
            let kept = plan::unusable_spec_keeps(&previous);
            return Ok(stop.write(&kept, blocked, writer).await?);
        }
    };
    if invitation.is_paused() {
        let message =
            format!("paused by the {PAUSED_ANNOTATION} annotation; no API calls are made");
        let blocked = Blocked::new(ReadyReason::Paused, message);
        return Ok(stop.write(&requested, blocked, writer).await?);
    }
    if !driver.serves(invitation) {
        // It left the driver's selection since the pass began (relabelled or deleted).
        return Ok(Outcome::NotServed);
    }
    let source = driver.source();
    let users = requested.addresses.len();
    let resolved = match resolve::resolve(source, driver.rules(), invitation, users).await? {
        Ok(resolved) => resolved,
        Err(blocked) => return Ok(stop.write(&requested, blocked, writer).await?),
    };
    let check_invited = driver.check_invited();
    let facts = EndpointFacts::of(
        &resolved.endpoint,
        resolved.api.as_ref(),
        resolved.identity.clone(),
        driver.max_clock_skew(),
    );
    let mut written = invitation.status.clone().unwrap_or_default();
    let journaled = overlay_journal(&mut written, &driver.journaled(invitation), &facts);
    let binding = plan::bind_to_endpoint(&written, &facts.api, &facts.endpoint, plan::now());
    let Some(previous) = binding.status() else {
        let Binding::Settling { until, previous } = &binding else {
            unreachable!("only a settling binding has no status to plan from");
        };
        return Ok(
            wait_for_previous_endpoint(stop, &requested, &facts, until, previous, writer).await?,
        );
    };
    let mut ctx = PlanContext::new(
        &requested,
        &invitation.spec,
        &previous,
        invitation.metadata.generation.unwrap_or(0),
        check_invited,
        facts,
    );
    ctx.resource = IntentResource {
        namespace: invitation.metadata.namespace.clone().unwrap_or_default(),
        name: invitation.metadata.name.clone().unwrap_or_default(),
        uid: invitation.metadata.uid.clone().unwrap_or_default(),
    };
    ctx.journaled = journaled;
    let report = driver.sync(&resolved, &mut ctx, writer).await?;
    let started_over = match binding {
        Binding::StartOver {
            dropped, entries, ..
        } => Some((dropped, entries)),
        _ => None,
    };
    Ok(Outcome::Synced(Box::new(Synced {
        report,
        resolved,
        started_over,
    })))
}

/// Treats each address the intent journal holds for the resource exactly like `Inviting` with
/// the journal's `settlesAt`, unless the status already records an outcome of that request
/// (an entry past `Pending` invited at or after the journal's intent) or it was made on
/// another API. Returns the addresses it made `Inviting`.
fn overlay_journal(
    status: &mut UserInvitationStatus,
    journaled: &[(String, BatchIntent)],
    facts: &EndpointFacts<'_>,
) -> Vec<String> {
    let mut overlaid = Vec::new();
    for (email, intent) in journaled {
        if intent.api != facts.api || status.api.as_ref().is_some_and(|api| *api != intent.api) {
            continue;
        }
        let entry = status.users.iter_mut().find(|u| u.email_address == *email);
        let recorded = entry.as_ref().is_some_and(|u| {
            u.state != UserState::Pending && u.invited_at.is_some_and(|t| t >= intent.invited_at)
        });
        if recorded {
            continue;
        }
        let mut next = plan::entry(email, UserState::Inviting);
        next.ownership = Some(Ownership::Created);
        next.invited_at = Some(intent.invited_at);
        next.settles_at = Some(intent.settles_at);
        next.message = Some(
            "an invite request of the intent journal may still act; looked up once it has settled"
                .into(),
        );
        match entry {
            Some(entry) => *entry = next,
            None => status.users.push(next),
        }
        if status.api.is_none() {
            status.api = Some(intent.api.clone());
            status.endpoint = Some(intent.endpoint.clone());
        }
        overlaid.push(email.clone());
    }
    overlaid
}

/// The resource's endpoint changed while an invite request sent through the previous one
/// may still act: it keeps its entries (holding those people on the previous API) and starts
/// over on the new endpoint once the request has settled.
async fn wait_for_previous_endpoint<W: StatusWriter>(
    mut stop: Stop<'_>,
    requested: &Requested,
    facts: &EndpointFacts<'_>,
    until: &jiff::Timestamp,
    previous: &str,
    writer: &mut W,
) -> Result<Outcome, WriteError> {
    let message = format!(
        "the resource now uses {} ({}); an invite request sent through {previous} may still act until {until}, so the users are looked up on the new endpoint after that",
        facts.endpoint, facts.api
    );
    let wait = Duration::try_from(until.duration_since(plan::now())).unwrap_or_default();
    stop.retry_in = Some(wait + Duration::from_millis(100));
    let blocked = Blocked::new(ReadyReason::Pending, message);
    stop.write(requested, blocked, writer).await
}

/// A pass that cannot proceed.
struct Stop<'a> {
    invitation: &'a UserInvitation,
    retry_in: Option<Duration>,
}

impl Stop<'_> {
    /// Shows why the resource cannot be worked on, keeping every status entry it has; writes
    /// only when that changes the status.
    async fn write<W: StatusWriter>(
        self,
        requested: &Requested,
        blocked: Blocked,
        writer: &mut W,
    ) -> Result<Outcome, WriteError> {
        let invitation = self.invitation;
        let previous = invitation.status.clone().unwrap_or_default();
        let status = plan::blocked_status(
            requested,
            &invitation.spec,
            &previous,
            invitation.metadata.generation.unwrap_or(0),
            plan::now(),
            &blocked,
        );
        let written = if status != previous {
            writer.write(&status).await?;
            Some(status)
        } else {
            None
        };
        let was = previous
            .conditions
            .iter()
            .find(|c| c.type_ == plan::READY)
            .map(|c| c.reason.clone());
        Ok(Outcome::Stopped(Box::new(Stopped {
            blocked,
            retry_in: self.retry_in,
            written,
            was,
        })))
    }
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::api::{ApiIdentity, UserStatus};

    fn intent(facts: &EndpointFacts<'_>, invited_at: Timestamp) -> BatchIntent {
        BatchIntent {
            resource: IntentResource::default(),
            api: facts.api.clone(),
            endpoint: facts.endpoint.clone(),
            invited_at,
            settles_at: invited_at + SignedDuration::from_secs(75),
        }
    }

    fn with(email: &str, state: UserState, invited_at: Option<Timestamp>) -> UserStatus {
        UserStatus {
            invited_at,
            ..plan::entry(email, state)
        }
    }

    #[test]
    fn a_journaled_address_without_a_recorded_outcome_is_inviting_until_it_settles() {
        let facts = EndpointFacts::for_tests(false);
        let at: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let earlier = at - SignedDuration::from_hours(1);
        let mut status = UserInvitationStatus {
            users: vec![
                with("pending@x.com", UserState::Pending, None),
                with("invited@x.com", UserState::Invited, Some(at)),
                with("stale@x.com", UserState::Invited, Some(earlier)),
            ],
            ..Default::default()
        };
        let journaled: Vec<_> = ["new@x.com", "pending@x.com", "invited@x.com", "stale@x.com"]
            .iter()
            .map(|e| (e.to_string(), intent(&facts, at)))
            .collect();
        let overlaid = overlay_journal(&mut status, &journaled, &facts);
        assert_eq!(
            overlaid,
            ["new@x.com", "pending@x.com", "stale@x.com"],
            "an outcome recorded since the intent is kept"
        );
        for email in &overlaid {
            let entry = status
                .users
                .iter()
                .find(|u| u.email_address == *email)
                .unwrap();
            assert_eq!(entry.state, UserState::Inviting, "{email}");
            assert_eq!(entry.ownership, Some(Ownership::Created), "{email}");
            assert_eq!(entry.invited_at, Some(at));
            assert_eq!(entry.settles_at, Some(at + SignedDuration::from_secs(75)));
        }
        assert_eq!(
            status.api.as_ref(),
            Some(&facts.api),
            "bound to the journal's API"
        );
        assert_eq!(status.endpoint.as_ref(), Some(&facts.endpoint));
    }

    #[test]
    fn a_journaled_address_of_another_api_is_left_to_the_binding() {
        let facts = EndpointFacts::for_tests(false);
        let at: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let mut other = intent(&facts, at);
        other.api = ApiIdentity {
            url: "https://other.example.com".into(),
            organization_id: None,
        };
        let mut status = UserInvitationStatus::default();
        let overlaid = overlay_journal(&mut status, &[("a@x.com".into(), other)], &facts);
        assert!(overlaid.is_empty());
        assert!(status.users.is_empty());
    }
}
