//! What the controller remembers per resource between passes: failures in a row (for the
//! backoff), when invited users were last checked and when the next slow resync is due, the
//! versions its own writes left behind (so a pass on an outdated copy is skipped), and the
//! users-by-state gauge. Everything is forgotten when the resource is deleted.
//!
//! The slow resync of a converged resource is kept here, one timestamp per resource, rather
//! than in kube-runtime's schedule of retries, whose entry (a reference to the resource of four
//! strings, kept twice, and a timer) took about 5 MiB at 10,000 resources.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    api::{UserInvitationStatus, UserState},
    telemetry::{Metrics, UserStateLabels},
};

/// One resource's entry; kept small, since every cached resource has one (at 10,000
/// resources each byte here is 16 kB with the map's spare room).
#[derive(Default)]
struct Remembered {
    failures: u32,
    /// Users by state, as last counted into the gauge.
    counted: [u32; UserState::ALL.len()],
    last_check: Option<Instant>,
    /// When the next slow resync is due (a converged resource waiting for nothing else).
    resync_at: Option<Instant>,
    /// Versions this controller wrote that a later write of its own replaced (mostly none).
    superseded: Box<[Box<str>]>,
}

/// Per-resource memory, keyed by `namespace/name`.
pub struct ResourceMemory {
    entries: Mutex<HashMap<Arc<str>, Remembered>>,
    metrics: Metrics,
    /// Serializes gauge updates, so a series is never removed while another resource adds to it.
    gauge: Mutex<()>,
}

impl ResourceMemory {
    /// Empty memory feeding `metrics`.
    pub fn new(metrics: Metrics) -> ResourceMemory {
        ResourceMemory {
            entries: Mutex::default(),
            metrics,
            gauge: Mutex::default(),
        }
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Remembered) -> T) -> T {
        let mut entries = self.entries.lock().expect("lock");
        if !entries.contains_key(key) {
            entries.insert(Arc::from(key), Remembered::default());
        }
        f(entries.get_mut(key).expect("inserted"))
    }

    /// Counts one more failure in a row; returns how many.
    pub fn failed(&self, key: &str) -> u32 {
        self.with(key, |r| {
            r.failures += 1;
            r.failures
        })
    }

    /// The run of failures ended.
    pub fn succeeded(&self, key: &str) {
        self.with(key, |r| r.failures = 0);
    }

    /// Whether invited users are due for a check (acceptance, expiry); marks them checked.
    pub fn check_due(&self, key: &str, interval: Duration) -> bool {
        self.with(key, |r| {
            let due = r.last_check.is_none_or(|t| t.elapsed() >= interval);
            if due {
                r.last_check = Some(Instant::now());
            }
            due
        })
    }

    /// Schedules the slow resync of a converged resource at `at`.
    pub fn resync_at(&self, key: &str, at: Instant) {
        self.with(key, |r| r.resync_at = Some(at));
    }

    /// A pass runs: it schedules what comes next itself.
    pub fn resync_unscheduled(&self, key: &str) {
        if let Some(r) = self.entries.lock().expect("lock").get_mut(key) {
            r.resync_at = None;
        }
    }

    /// The resources of `scope` (a namespace, or all) whose slow resync is due at `now`,
    /// as `namespace/name`, each taken off the schedule.
    pub fn due_resyncs(&self, scope: Option<&str>, now: Instant) -> Vec<Arc<str>> {
        let mut entries = self.entries.lock().expect("lock");
        let in_scope =
            |key: &str| scope.is_none_or(|ns| key.split_once('/').is_some_and(|(n, _)| n == ns));
        entries
            .iter_mut()
            .filter(|(key, r)| r.resync_at.is_some_and(|at| at <= now) && in_scope(key))
            .map(|(key, r)| {
                r.resync_at = None;
                key.clone()
            })
            .collect()
    }

    /// The check did not happen after all (the pass failed): due again next time.
    pub fn check_missed(&self, key: &str) {
        self.with(key, |r| r.last_check = None);
    }

    /// Records the versions a pass's writes produced; all but the last are outdated.
    pub fn wrote(&self, key: &str, versions: &[String]) {
        if versions.is_empty() {
            return;
        }
        self.with(key, |r| {
            r.superseded = versions[..versions.len() - 1]
                .iter()
                .map(|v| Box::from(v.as_str()))
                .collect();
        });
    }

    /// Whether `version` is a copy this controller already replaced by a later write (the
    /// cache has not caught up yet). A copy that is not has caught up (the cache only moves
    /// forward), so the replaced versions are forgotten then.
    pub fn is_outdated(&self, key: &str, version: &str) -> bool {
        let mut entries = self.entries.lock().expect("lock");
        let Some(r) = entries.get_mut(key) else {
            return false;
        };
        let outdated = r.superseded.iter().any(|v| v.as_ref() == version);
        if !outdated && !r.superseded.is_empty() {
            r.superseded = Box::default();
        }
        outdated
    }

    /// Counts the users of a status into the users-by-state gauge.
    pub fn count_users(&self, key: &str, namespace: &str, status: &UserInvitationStatus) {
        let mut now = [0u32; UserState::ALL.len()];
        for user in &status.users {
            if let Some(i) = UserState::ALL.iter().position(|s| *s == user.state) {
                now[i] = now[i].saturating_add(1);
            }
        }
        let before = self.with(key, |r| std::mem::replace(&mut r.counted, now));
        self.adjust_gauge(namespace, &before, &now);
    }

    fn adjust_gauge(&self, namespace: &str, before: &[u32], now: &[u32]) {
        let _serialized = self.gauge.lock().expect("lock");
        for (i, state) in UserState::ALL.iter().enumerate() {
            let delta = i64::from(now[i]) - i64::from(before[i]);
            if delta == 0 {
                continue;
            }
            let labels = UserStateLabels {
                namespace: namespace.to_string(),
                state: crate::telemetry::snake_case(&state.to_string()),
            };
            let value = self.metrics.users.get_or_create(&labels).inc_by(delta) + delta;
            if value == 0 {
                // No user of the namespace is in this state any more: no series.
                self.metrics.users.remove(&labels);
            }
        }
    }

    /// Forgets a deleted resource (and takes its users out of the gauge).
    pub fn forget(&self, key: &str) {
        let removed = self.entries.lock().expect("lock").remove(key);
        if let Some(r) = removed {
            let namespace = key.split_once('/').map_or("", |(ns, _)| ns);
            self.adjust_gauge(namespace, &r.counted, &[0; UserState::ALL.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_is_due_once_in_its_scope_unless_a_pass_ran_meanwhile() {
        let memory = ResourceMemory::new(Metrics::new());
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        memory.resync_at("a/one", now);
        memory.resync_at("a/two", later);
        memory.resync_at("b/three", now);
        memory.resync_at("a/ran", now);
        memory.resync_unscheduled("a/ran");
        let keys = |due: Vec<Arc<str>>| {
            let mut keys: Vec<String> = due.iter().map(|k| k.to_string()).collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(memory.due_resyncs(Some("a"), now)), ["a/one"]);
        assert!(memory.due_resyncs(Some("a"), now).is_empty(), "taken off");
        assert_eq!(keys(memory.due_resyncs(None, later)), ["a/two", "b/three"]);
        memory.resync_at("a/one", now);
        memory.forget("a/one");
        assert!(memory.due_resyncs(None, later).is_empty(), "forgotten");
    }

    #[test]
    fn a_deleted_resource_leaves_no_trace() {
        let metrics = Metrics::new();
        let memory = ResourceMemory::new(metrics.clone());
        let status = UserInvitationStatus {
            users: vec![crate::reconcile::plan::entry("a@b.c", UserState::Invited)],
            ..Default::default()
        };
        memory.count_users("ns/x", "ns", &status);
        memory.failed("ns/x");
        memory.wrote("ns/x", &["1".into(), "2".into()]);
        assert!(memory.is_outdated("ns/x", "1"));
        assert!(!memory.is_outdated("ns/x", "2"));
        assert!(
            metrics
                .encode()
                .contains(r#"invite_operator_users{namespace="ns",state="invited"} 1"#)
        );
        memory.forget("ns/x");
        assert!(memory.entries.lock().unwrap().is_empty());
        assert!(
            !metrics
                .encode()
                .contains(r#"invite_operator_users{namespace="ns""#)
        );
    }

    #[test]
    fn copies_older_than_the_last_write_wait_until_the_cache_caught_up() {
        let memory = ResourceMemory::new(Metrics::new());
        // A pass read version 1, wrote 2 (its intent) and 3 (the outcome).
        memory.wrote("ns/x", &["1".into(), "2".into(), "3".into()]);
        assert!(
            memory.is_outdated("ns/x", "1"),
            "the copy the pass started from"
        );
        assert!(memory.is_outdated("ns/x", "2"), "its intent");
        assert!(!memory.is_outdated("ns/x", "3"), "its last write");
        // The cache delivered the last write: nothing is remembered any more.
        assert!(memory.entries.lock().unwrap()["ns/x"].superseded.is_empty());
    }
}
