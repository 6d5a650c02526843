//! Ownership is bound to the API and the endpoint it was established on: a status records
//! both (`status.api`, `status.endpoint`), and a pass whose resolved endpoint differs starts
//! over on the new one, never removing, revoking or enforcing anything because of what was
//! owned on the old one.

use std::borrow::Cow;

use jiff::Timestamp;

use super::unsettled;
use crate::api::{ApiIdentity, EndpointBinding, UserInvitationStatus};

/// What the entries of a status are worth on the endpoint a pass resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Binding<'a> {
    /// The entries were established on this endpoint and API: planned as they are.
    Same(&'a UserInvitationStatus),
    /// They were established elsewhere (another endpoint, an edited URL or organization, a
    /// recreated endpoint): the pass plans from `fresh`, a status without them, and nothing
    /// is removed, revoked or enforced because of them. `dropped` names the previous
    /// endpoint and API, for the event.
    StartOver {
        /// The status to plan from: conditions kept, no entries.
        fresh: Box<UserInvitationStatus>,
        /// Where the dropped entries were established.
        dropped: String,
        /// How many entries were dropped.
        entries: usize,
    },
    /// They were established elsewhere, and an invite request sent there may still act until
    /// `until`: the resource keeps them (so nobody invites those people on that API
    /// meanwhile) and starts over once it has settled.
    Settling {
        /// When the last unsettled request has settled.
        until: Timestamp,
        /// Where the entries were established.
        previous: String,
    },
}

impl Binding<'_> {
    /// The status to plan from (`None` while an old request settles).
    pub fn status(&self) -> Option<Cow<'_, UserInvitationStatus>> {
        match self {
            Binding::Same(previous) => Some(Cow::Borrowed(previous)),
            Binding::StartOver { fresh, .. } => Some(Cow::Borrowed(fresh)),
            Binding::Settling { .. } => None,
        }
    }
}

/// Compares where `previous`'s entries were established with the endpoint a pass resolved.
///
/// A status written before endpoints were recorded (`api` but no `endpoint`) is bound to the
/// resolved endpoint when the API is the same: the API is what the entries were made on.
pub fn bind_to_endpoint<'a>(
    previous: &'a UserInvitationStatus,
    api: &ApiIdentity,
    endpoint: &EndpointBinding,
    now: Timestamp,
) -> Binding<'a> {
    let same = match (&previous.api, &previous.endpoint) {
        (Some(a), Some(e)) => a == api && e == endpoint,
        (Some(a), None) => a == api,
        (None, _) => !previous
            .users
            .iter()
            .any(|u| u.ownership.is_some() || u.identifier.is_some()),
    };
    if same {
        return Binding::Same(previous);
    }
    let was = describe(previous);
    if let Some(until) = previous
        .users
        .iter()
        .filter(|u| unsettled(u, now))
        .filter_map(|u| u.settles_at)
        .max()
    {
        return Binding::Settling {
            until,
            previous: was,
        };
    }
    Binding::StartOver {
        fresh: Box::new(UserInvitationStatus {
            observed_generation: previous.observed_generation,
            conditions: previous.conditions.clone(),
            ..UserInvitationStatus::default()
        }),
        dropped: was,
        entries: previous.users.len(),
    }
}

/// `ClusterInvitationEndpoint "a" (https://x)`, or what is known of it.
fn describe(status: &UserInvitationStatus) -> String {
    match (&status.endpoint, &status.api) {
        (Some(e), Some(a)) => format!("{e} ({a})"),
        (None, Some(a)) => a.to_string(),
        (Some(e), None) => e.to_string(),
        (None, None) => "an unknown endpoint".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::{
        api::{ApiFlavor, EndpointKind, Ownership, UserState},
        reconcile::plan::entry,
    };

    fn api(url: &str) -> ApiIdentity {
        ApiIdentity {
            url: url.into(),
            organization_id: None,
        }
    }

    fn endpoint(kind: EndpointKind, name: &str, uid: &str) -> EndpointBinding {
        EndpointBinding {
            api: ApiFlavor::UserInvite,
            kind,
            name: name.into(),
            uid: Some(uid.into()),
        }
    }

    fn owned(state: UserState) -> crate::api::UserStatus {
        let mut e = entry("admin@example.com", state);
        e.ownership = Some(Ownership::Adopted);
        e.identifier = Some("admin@example.com".into());
        e
    }

    fn status(
        on: (&str, EndpointBinding),
        users: Vec<crate::api::UserStatus>,
    ) -> UserInvitationStatus {
        UserInvitationStatus {
            api: Some(api(on.0)),
            endpoint: Some(on.1),
            users,
            observed_generation: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn the_same_endpoint_and_api_keep_ownership() {
        let platform = endpoint(EndpointKind::ClusterInvitationEndpoint, "default", "u1");
        let previous = status(
            ("https://wf", platform.clone()),
            vec![owned(UserState::AlreadyMember)],
        );
        let now = Timestamp::now();
        assert_eq!(
            bind_to_endpoint(&previous, &api("https://wf"), &platform, now),
            Binding::Same(&previous)
        );
    }

    #[test]
    fn another_endpoint_url_organization_or_uid_starts_over() {
        let tenant = endpoint(EndpointKind::InvitationEndpoint, "mine", "t1");
        let platform = endpoint(EndpointKind::ClusterInvitationEndpoint, "default", "u1");
        let recreated = endpoint(EndpointKind::ClusterInvitationEndpoint, "default", "u2");
        let now = Timestamp::now();
        let adopted = status(
            ("https://tenant", tenant.clone()),
            vec![owned(UserState::AlreadyMember)],
        );
        let on_platform = status(
            ("https://wf", platform.clone()),
            vec![owned(UserState::Invited)],
        );
        let org = ApiIdentity {
            url: "https://wf".into(),
            organization_id: Some("other".into()),
        };
        for (previous, to_api, to_endpoint) in [
            (&adopted, api("https://wf"), &platform),
            (&adopted, api("https://tenant"), &platform),
            (&on_platform, api("https://wf.example"), &platform),
            (&on_platform, org, &platform),
            (&on_platform, api("https://wf"), &recreated),
        ] {
            match bind_to_endpoint(previous, &to_api, to_endpoint, now) {
                Binding::StartOver {
                    fresh,
                    entries,
                    dropped,
                } => {
                    assert!(fresh.users.is_empty());
                    assert_eq!(fresh.observed_generation, Some(3));
                    assert_eq!(entries, 1);
                    assert!(dropped.contains("https://"), "{dropped}");
                }
                other => panic!("{to_api} {to_endpoint}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_unsettled_request_on_the_old_endpoint_is_waited_for() {
        let tenant = endpoint(EndpointKind::InvitationEndpoint, "mine", "t1");
        let platform = endpoint(EndpointKind::ClusterInvitationEndpoint, "default", "u1");
        let now = Timestamp::now();
        let mut inviting = owned(UserState::Inviting);
        inviting.settles_at = Some(now + SignedDuration::from_secs(60));
        let previous = status(("https://tenant", tenant), vec![inviting]);
        assert!(matches!(
            bind_to_endpoint(&previous, &api("https://wf"), &platform, now),
            Binding::Settling { until, .. } if until == now + SignedDuration::from_secs(60)
        ));
        let later = now + SignedDuration::from_secs(61);
        assert!(matches!(
            bind_to_endpoint(&previous, &api("https://wf"), &platform, later),
            Binding::StartOver { .. }
        ));
    }

    #[test]
    fn a_status_from_before_endpoints_were_recorded_is_bound_by_its_api() {
        let platform = endpoint(EndpointKind::ClusterInvitationEndpoint, "default", "u1");
        let mut legacy = status(
            ("https://wf", platform.clone()),
            vec![owned(UserState::Invited)],
        );
        legacy.endpoint = None;
        let now = Timestamp::now();
        assert!(matches!(
            bind_to_endpoint(&legacy, &api("https://wf"), &platform, now),
            Binding::Same(_)
        ));
        assert!(matches!(
            bind_to_endpoint(&legacy, &api("https://other"), &platform, now),
            Binding::StartOver { .. }
        ));
        // No API recorded: only a status that owns nothing is taken as it is.
        let mut unbound = legacy.clone();
        unbound.api = None;
        assert!(matches!(
            bind_to_endpoint(&unbound, &api("https://wf"), &platform, now),
            Binding::StartOver { .. }
        ));
        let fresh = UserInvitationStatus {
            users: vec![entry("a@example.com", UserState::Pending)],
            ..Default::default()
        };
        assert!(matches!(
            bind_to_endpoint(&fresh, &api("https://wf"), &platform, now),
            Binding::Same(_)
        ));
    }
}
