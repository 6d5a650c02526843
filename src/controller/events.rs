//! Events (`events.k8s.io/v1`) for what the controller did in the API and why a resource is
//! blocked. One recorder for the whole controller (it deduplicates repeats into series).

use kube::{
    Resource,
    runtime::events::{Event, EventType, Recorder},
};

use crate::{
    api::{ApiFlavor, UserInvitation},
    reconcile::{SyncReport, plan::truncate_message},
};

/// Publishes the controller's events.
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Events through `recorder`.
    pub fn new(recorder: Recorder) -> Events {
        Events { recorder }
    }

    /// Publishes one event about `invitation`. Failures are logged, never fatal.
    pub async fn publish(
        &self,
        invitation: &UserInvitation,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            // The API server refuses notes over 1 KiB.
            note: Some(truncate_message(&note)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &invitation.object_ref(&()))
            .await
        {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }

    /// The events of a pass: every change made in the API and every state reached.
    pub async fn pass(&self, invitation: &UserInvitation, flavor: ApiFlavor, report: &SyncReport) {
        for (email, changes) in &report.updated {
            let note = format!("Brought {email} to the spec: {changes}");
            self.publish(invitation, EventType::Normal, "Updated", "Enforce", note)
                .await;
        }
        for (email, done) in &report.removed {
            let note = match done {
                Some(done) => format!("{email} was removed from the spec: {done}"),
                None => format!("{email} was removed from the spec; nothing was left to remove"),
            };
            self.publish(
                invitation,
                EventType::Normal,
                removal_reason(flavor),
                "Delete",
                note,
            )
            .await;
        }
        if !report.invited.is_empty() {
            let note = format!("Invited {}", summarize_list(&report.invited));
            self.publish(invitation, EventType::Normal, "Invited", "Invite", note)
                .await;
        }
        for (email, message) in &report.failed {
            let note = format!("Inviting {email} failed: {message}");
            self.publish(
                invitation,
                EventType::Warning,
                "InviteFailed",
                "Invite",
                note,
            )
            .await;
        }
        for (email, _, state) in &report.transitions {
            if let Some(reason) = state.observed_event() {
                let note = format!("The invitation of {email} is now {state}");
                self.publish(invitation, EventType::Normal, reason, "Observe", note)
                    .await;
            }
        }
    }
}

/// The event reason of a removal in this API.
pub fn removal_reason(flavor: ApiFlavor) -> &'static str {
    match flavor {
        ApiFlavor::UserInvite => "Deleted",
        ApiFlavor::OrgInvitation => "Revoked",
    }
}

/// A list for a human sentence: the first ten items, then how many more.
pub fn summarize_list(items: &[String]) -> String {
    const SHOWN: usize = 10;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!(
            "{} and {} more",
            items[..SHOWN].join(", "),
            items.len() - SHOWN
        )
    }
}
