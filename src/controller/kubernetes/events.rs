//! Events (`events.k8s.io/v1`) for what the controller did in the API and why a resource is
//! blocked. One publisher for the whole controller; a repeat of the same event about the same
//! object within six minutes is counted into the first one's series, as client-go does.
//!
//! Events are best effort: a pass hands them to a bounded queue and goes on (an event never
//! delays a status write); a publisher task sends them, one at a time, and only while no
//! status write of the controller is in flight ([`StatusWrites`]): during a rollout the API
//! server's time goes to the statuses first, and the events follow once they are written.
//! When the queue is full an event is dropped and counted
//! (`invite_operator_events_dropped_total`).
//!
//! kube-runtime's `Recorder` would do the same, but it keeps every event it published (the
//! whole object) for six minutes, scans all of them on every publish, and keys its series by
//! the object's resourceVersion, which changes with every status write. Here a series costs a
//! name and a count, and the cache is pruned once a minute.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event as K8sEvent, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::EventType,
};
use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use tokio::sync::mpsc;

use super::status_writes::StatusWrites;
use crate::{
    api::{ApiFlavor, UserInvitation},
    reconcile::{Change, SyncReport, plan::truncate_message},
};

/// How long a repeat joins the series of the first event (client-go's and kube-runtime's).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// How often expired series are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Events waiting to be published, at most.
const QUEUE: usize = 1024;

/// Events sent at once by the publisher task: one, so events take little of the API server
/// (a rollout writes one event per resource, as many as status writes). What a burst leaves
/// queued follows shortly after.
const IN_FLIGHT: usize = 1;

/// Hands the controller's events to the publisher task.
pub struct Events {
    queue: mpsc::Sender<Pending>,
    dropped: Counter,
    status_writes: StatusWrites,
}

/// Sends queued events (the publisher task's side).
struct Publisher {
    client: Client,
    controller: String,
    /// The replica (pod) reporting.
    instance: String,
    series: Mutex<SeriesCache>,
    status_writes: StatusWrites,
}

/// One event waiting to be published.
struct Pending {
    /// The object it is about.
    regarding: ObjectReference,
    /// What makes two events the same ([`series_key`]).
    key: u64,
    event: Note,
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
struct Note {
    type_: EventType,
    reason: String,
    action: String,
    note: String,
}

impl Events {
    /// Events created through `client`, reported by `controller` from `instance` (the pod);
    /// `dropped` counts those a full queue refused. Starts the publisher task on the current
    /// tokio runtime; it ends when this is dropped and the queue is empty.
    pub fn new(client: Client, controller: &str, instance: &str, dropped: Counter) -> Events {
        Events::with_capacity(client, controller, instance, dropped, QUEUE)
    }

    fn with_capacity(
        client: Client,
        controller: &str,
        instance: &str,
        dropped: Counter,
        capacity: usize,
    ) -> Events {
        let (queue, pending) = mpsc::channel(capacity);
        let status_writes = StatusWrites::default();
        let publisher = Arc::new(Publisher {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            series: Mutex::new(SeriesCache {
                entries: HashMap::new(),
                pruned: Instant::now(),
            }),
            status_writes: status_writes.clone(),
        });
        tokio::spawn(publisher.run(pending));
        Events {
            queue,
            dropped,
            status_writes,
        }
    }

    /// The count of status writes in flight that events make way for: every status write of
    /// the controller holds a `StatusWriteInFlight` of it while it is sent.
    pub fn status_writes(&self) -> &StatusWrites {
        &self.status_writes
    }

    /// Queues one event about `invitation`, without waiting for it to be published; a full
    /// queue drops it (counted). Failures to publish are logged, never fatal.
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
            reason: reason.to_string(),
            action: action.to_string(),
            // The API server refuses notes over 1 KiB.
            note: truncate_message(&note),
        };
        let pending = Pending {
            regarding: invitation.object_ref(&()),
            key: series_key(invitation, &event),
            event,
        };
        if self.queue.try_send(pending).is_err() {
            self.dropped.inc();
            tracing::debug!(reason, "event queue full: event dropped");
        }
    }
}

impl Publisher {
    /// Publishes queued events, one at a time and each once no status write is in flight,
    /// until the queue is closed and empty.
    async fn run(self: Arc<Self>, mut pending: mpsc::Receiver<Pending>) {
        futures::stream::poll_fn(|cx| pending.poll_recv(cx))
            .for_each_concurrent(IN_FLIGHT, |p| {
                let publisher = self.clone();
                async move {
                    publisher.status_writes.none_in_flight().await;
                    if let Err(error) = publisher.send(&p).await {
                        let reason = p.event.reason.as_str();
                        tracing::warn!(%error, reason, "cannot publish event");
                    }
                }
            })
            .await;
    }

    async fn send(&self, pending: &Pending) -> kube::Result<()> {
        let namespace = pending
            .regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let key = pending.key;
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
            .create(&PostParams::default(), &self.new_event(pending))
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

    fn new_event(&self, pending: &Pending) -> K8sEvent {
        let now = Timestamp::now();
        let (regarding, event) = (pending.regarding.clone(), &pending.event);
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or_default(),
                    now.as_nanosecond()
                )),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: Some(event.note.clone()),
            type_: Some(type_name(event.type_).to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        }
    }
}

impl Events {
    /// The events of a pass: one per change made in the API and per state reached that has
    /// an event, in the order they happened.
    pub async fn pass(&self, invitation: &UserInvitation, flavor: ApiFlavor, report: &SyncReport) {
        for change in &report.changes {
            if let Some((type_, reason, action, note)) = event_of(change, flavor) {
                self.publish(invitation, type_, reason, action, note).await;
            }
        }
    }
}

/// The event of a change: type, reason, action and note (`None`: a state without an event).
fn event_of(
    change: &Change,
    flavor: ApiFlavor,
) -> Option<(EventType, &'static str, &'static str, String)> {
    use EventType::{Normal, Warning};
    Some(match change {
        Change::Updated { email, changes } => {
            let note = format!("Brought {email} to the spec: {changes}");
            (Normal, "Updated", "Enforce", note)
        }
        Change::Removed { email, done } => {
            let note = match done {
                Some(done) => format!("{email} was removed from the spec: {done}"),
                None => format!("{email} was removed from the spec; nothing was left to remove"),
            };
            (Normal, removal_reason(flavor), "Delete", note)
        }
        Change::LeftAlone { email, holder } => {
            let note = format!(
                "{email} is held by UserInvitation {holder} now: this resource changes and removes nothing of theirs"
            );
            (Normal, "LeftAlone", "Reconcile", note)
        }
        Change::Invited(emails) => {
            let note = format!("Invited {}", summarize_list(emails));
            (Normal, "Invited", "Invite", note)
        }
        Change::InviteFailed { email, message } => {
            let note = format!("Inviting {email} failed: {message}");
            (Warning, "InviteFailed", "Invite", note)
        }
        Change::Reached { email, state } => {
            let reason = state.observed_event()?;
            let note = format!("The invitation of {email} is now {state}");
            (Normal, reason, "Observe", note)
        }
    })
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
fn series_key(invitation: &UserInvitation, event: &Note) -> u64 {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use kube::client::Body;

    use super::*;

    fn invitation(name: &str) -> UserInvitation {
        serde_json::from_value(json!({
            "apiVersion": "invite.operators.dev/v1alpha1", "kind": "UserInvitation",
            "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}")},
            "spec": {"users": []},
        }))
        .unwrap()
    }

    /// A client whose requests never get an answer.
    fn unanswered() -> Client {
        let service = tower::service_fn(|_: http::Request<Body>| {
            futures::future::pending::<Result<http::Response<Body>, std::convert::Infallible>>()
        });
        Client::new(service, "default")
    }

    #[tokio::test]
    async fn a_pass_never_waits_for_its_events_and_a_full_queue_drops_and_counts() {
        let dropped = Counter::default();
        let events = Events::with_capacity(unanswered(), "test", "pod-0", dropped.clone(), 2);
        let queued = async {
            for i in 0..20 {
                let note = format!("event {i}");
                events
                    .publish(
                        &invitation("a"),
                        EventType::Normal,
                        "Invited",
                        "Invite",
                        note,
                    )
                    .await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), queued)
            .await
            .expect("publishing waits for no API answer");
        // Nothing yielded to the publisher meanwhile: two queued, the rest dropped.
        assert_eq!(dropped.get(), 18);
    }

    /// Events over a client that answers every event creation and counts it.
    fn counted_events() -> (Events, Arc<AtomicUsize>) {
        let created = Arc::new(AtomicUsize::new(0));
        let counter = created.clone();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let counter = counter.clone();
            async move {
                assert_eq!(request.method(), http::Method::POST);
                let body = request.into_body().collect().await.unwrap().to_bytes();
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(201)
                        .body(Body::from(body.to_vec()))
                        .unwrap(),
                )
            }
        });
        let events = Events::new(
            Client::new(service, "default"),
            "test",
            "pod-0",
            Counter::default(),
        );
        (events, created)
    }

    async fn publish_about(events: &Events, name: &str) {
        let note = format!("about {name}");
        let invitation = invitation(name);
        events
            .publish(&invitation, EventType::Normal, "Invited", "Invite", note)
            .await;
    }

    async fn wait_created(created: &AtomicUsize, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while created.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("events created");
    }

    #[tokio::test]
    async fn queued_events_are_published() {
        let (events, created) = counted_events();
        for name in ["a", "b", "c"] {
            publish_about(&events, name).await;
        }
        wait_created(&created, 3).await;
    }

    #[tokio::test]
    async fn events_wait_while_a_status_write_is_in_flight() {
        let (events, created) = counted_events();
        let writing = events.status_writes().start();
        let also_writing = events.status_writes().start();
        publish_about(&events, "a").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            created.load(Ordering::SeqCst),
            0,
            "sent during a status write"
        );
        drop(writing);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            created.load(Ordering::SeqCst),
            0,
            "sent during a status write"
        );
        drop(also_writing);
        wait_created(&created, 1).await;
    }
}
