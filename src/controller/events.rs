//! Events (`events.k8s.io/v1`) for what the controller did in the API and why a resource is
//! blocked. One publisher for the whole controller; a repeat of the same event about the same
//! object within six minutes is counted into the first one's series, as client-go does.
//!
//! kube-runtime's `Recorder` would do the same, but it keeps every event it published (the
//! whole object) for six minutes, scans all of them on every publish, and keys its series by
//! the object's resourceVersion, which changes with every status write. Here a series costs a
//! name and a count, and the cache is pruned once a minute.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::events::v1::{Event as K8sEvent, EventSeries},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::EventType,
};
use serde_json::json;

use crate::{
    api::{ApiFlavor, UserInvitation},
    reconcile::{SyncReport, plan::truncate_message},
};

/// How long a repeat joins the series of the first event (client-go's and kube-runtime's).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// How often expired series are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Publishes the controller's events.
pub struct Events {
    client: Client,
    controller: String,
    /// The replica (pod) reporting.
    instance: String,
    series: Mutex<SeriesCache>,
}

/// The series of recent events, by a hash of what makes two events the same.
struct SeriesCache {
    entries: HashMap<u64, Series>,
    pruned: Instant,
}

/// One published event and how often it happened.
struct Series {
    name: Box<str>,
    count: i32,
    last: Instant,
}

/// What one event says.
struct Note<'a> {
    type_: EventType,
    reason: &'a str,
    action: &'a str,
    note: String,
}

impl Events {
    /// Events created through `client`, reported by `controller` from `instance` (the pod).
    pub fn new(client: Client, controller: &str, instance: &str) -> Events {
        Events {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            series: Mutex::new(SeriesCache {
                entries: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
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
        let event = Note {
            type_,
            reason,
            action,
            // The API server refuses notes over 1 KiB.
            note: truncate_message(&note),
        };
        if let Err(error) = self.send(invitation, &event).await {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }

    async fn send(&self, invitation: &UserInvitation, event: &Note<'_>) -> kube::Result<()> {
        let namespace = invitation.namespace().unwrap_or_else(|| "default".into());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let key = series_key(invitation, event);
        if let Some((name, count)) = self.repeat(key) {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(Timestamp::now()),
            };
            let patch = json!({ "series": series });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // The event is gone (deleted, or expired under a short server-side event TTL):
                // start a new one.
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(error) => return Err(error),
            }
        }
        let created = api
            .create(&PostParams::default(), &self.new_event(invitation, event))
            .await?;
        self.remember(key, created.name_any());
        Ok(())
    }

    /// The name and next count of an unexpired series of this event, counted.
    fn repeat(&self, key: u64) -> Option<(String, i32)> {
        let now = Instant::now();
        let mut cache = self.series.lock().expect("lock");
        if now.duration_since(cache.pruned) >= PRUNE_EVERY {
            cache
                .entries
                .retain(|_, s| now.duration_since(s.last) < SERIES_TTL);
            cache.pruned = now;
        }
        let series = cache
            .entries
            .get_mut(&key)
            .filter(|s| now.duration_since(s.last) < SERIES_TTL)?;
        series.count += 1;
        series.last = now;
        Some((series.name.to_string(), series.count))
    }

    fn remember(&self, key: u64, name: String) {
        let series = Series {
            name: name.into(),
            count: 1,
            last: Instant::now(),
        };
        self.series
            .lock()
            .expect("lock")
            .entries
            .insert(key, series);
    }

    fn new_event(&self, invitation: &UserInvitation, event: &Note<'_>) -> K8sEvent {
        let now = Timestamp::now();
        let regarding = invitation.object_ref(&());
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    invitation.name_any(),
                    now.as_nanosecond()
                )),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(event.action.to_string()),
            reason: Some(event.reason.to_string()),
            note: Some(event.note.clone()),
            type_: Some(type_name(event.type_).to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
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
        for (email, holder) in &report.left_alone {
            let note = format!(
                "{email} is held by UserInvitation {holder} now: this resource changes and removes nothing of theirs"
            );
            self.publish(
                invitation,
                EventType::Normal,
                "LeftAlone",
                "Reconcile",
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

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What makes two events the same: the object (by uid), type, reason, action and note.
fn series_key(invitation: &UserInvitation, event: &Note<'_>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    invitation.metadata.uid.hash(&mut hasher);
    invitation.metadata.namespace.hash(&mut hasher);
    invitation.metadata.name.hash(&mut hasher);
    type_name(event.type_).hash(&mut hasher);
    event.reason.hash(&mut hasher);
    event.action.hash(&mut hasher);
    event.note.hash(&mut hasher);
    hasher.finish()
}
