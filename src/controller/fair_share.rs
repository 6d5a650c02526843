//! The fair share of reconcile slots: no namespace and no endpoint holds more than a share of
//! them, so one tenant's slow or hostile API (answering just under the timeout, paging
//! forever) cannot starve the others.
//!
//! A reconcile over its share is put off: it gives its slot back to the controller at once
//! (waiting in it would let one tenant fill every slot) and joins the share's queue. Each slot
//! the share frees wakes the next resource of its queue, so a backlog of 10,000 resources in
//! one namespace is put off about once each, not every few hundred milliseconds (which kept a
//! core busy re-scheduling resources that could not run yet). A put-off resource has no retry
//! of its own (at 10,000 waiting resources the controller's schedule of retries took 5 MiB);
//! instead, every [`SAFETY_NET`], [`FairShare::wake_idle`] wakes waiters of any share with
//! free slots, for a wake that found nothing to run (a resource deleted while it waited).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc::UnboundedSender;

/// How often waiters of shares with free slots are woken again ([`FairShare::wake_idle`]).
pub const SAFETY_NET: Duration = Duration::from_secs(30);

/// Counts reconciles in flight per namespace and per endpoint, and queues those put off.
/// `T` names a resource to wake (the controller's `Wake`).
pub struct FairShare<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    limit: usize,
    state: Mutex<State<T>>,
}

struct State<T> {
    in_flight: HashMap<Arc<str>, usize>,
    waiting: HashMap<Arc<str>, VecDeque<Waiter<T>>>,
}

/// A resource put off for a share, and where to send it once a slot of that share is free.
struct Waiter<T> {
    resource: T,
    wake: UnboundedSender<T>,
}

/// Which share a reconcile was put off for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// Its namespace holds its share.
    Namespace,
    /// Its endpoint holds its share.
    Endpoint,
}

impl Over {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Over::Namespace => "namespace",
            Over::Endpoint => "endpoint",
        }
    }
}

/// A reconcile's place in both shares; given back when dropped (waking the next resource put
/// off for either share).
pub struct Slot<T> {
    shared: Arc<Shared<T>>,
    keys: [Arc<str>; 2],
}

impl<T> FairShare<T> {
    /// Shares of `share` (0 < share ≤ 1) of `slots` reconcile slots, at least one each.
    pub fn new(slots: usize, share: f64) -> FairShare<T> {
        let limit = ((slots as f64) * share.clamp(0.0, 1.0)).floor() as usize;
        FairShare {
            shared: Arc::new(Shared {
                limit: limit.max(1),
                state: Mutex::new(State {
                    in_flight: HashMap::new(),
                    waiting: HashMap::new(),
                }),
            }),
        }
    }

    /// A slot for a reconcile of `namespace` through `endpoint`, unless either holds its share:
    /// then `resource` waits in that share's queue until one of its slots is given back, and
    /// is sent to `wake`.
    pub fn enter(
        &self,
        namespace: &str,
        endpoint: &str,
        resource: T,
        wake: &UnboundedSender<T>,
    ) -> Result<Slot<T>, Over> {
        let keys: [Arc<str>; 2] = [
            Arc::from(format!("namespace {namespace}")),
            Arc::from(format!("endpoint {endpoint}")),
        ];
        let mut state = self.shared.state.lock().expect("lock");
        for (key, over) in keys.iter().zip([Over::Namespace, Over::Endpoint]) {
            if state.in_flight.get(key).copied().unwrap_or(0) >= self.shared.limit {
                let waiter = Waiter {
                    resource,
                    wake: wake.clone(),
                };
                state
                    .waiting
                    .entry(key.clone())
                    .or_default()
                    .push_back(waiter);
                return Err(over);
            }
        }
        for key in &keys {
            *state.in_flight.entry(key.clone()).or_default() += 1;
        }
        Ok(Slot {
            shared: self.shared.clone(),
            keys,
        })
    }

    /// Wakes, in every share with free slots, as many waiters as it has free slots: the
    /// safety net for a wake that found nothing to run (a resource deleted while it waited
    /// takes no slot, so nothing it would have given back wakes the next one).
    pub fn wake_idle(&self) {
        let mut state = self.shared.state.lock().expect("lock");
        let keys: Vec<Arc<str>> = state.waiting.keys().cloned().collect();
        for key in keys {
            let held = state.in_flight.get(&key).copied().unwrap_or(0);
            for _ in held..self.shared.limit {
                state.wake_next(&key);
            }
        }
    }
}

impl<T> State<T> {
    /// Sends the next resource waiting for `key`, if any (skipping those whose controller is
    /// gone).
    fn wake_next(&mut self, key: &Arc<str>) {
        let Some(queue) = self.waiting.get_mut(key) else {
            return;
        };
        while let Some(waiter) = queue.pop_front() {
            if waiter.wake.send(waiter.resource).is_ok() {
                break;
            }
        }
        if queue.is_empty() {
            self.waiting.remove(key);
        }
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().expect("lock");
        for key in &self.keys {
            if let Some(n) = state.in_flight.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    state.in_flight.remove(key);
                }
            }
            state.wake_next(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    #[test]
    fn a_namespace_or_an_endpoint_holds_at_most_its_share() {
        let (wake, _woken) = mpsc::unbounded_channel();
        let share = FairShare::new(8, 0.5);
        assert_eq!(share.shared.limit, 4);
        let held: Vec<_> = (0..4)
            .map(|i| share.enter("a", "slow", i, &wake).unwrap())
            .collect();
        assert_eq!(
            share.enter("a", "fast", 10, &wake).err(),
            Some(Over::Namespace)
        );
        assert_eq!(
            share.enter("b", "slow", 11, &wake).err(),
            Some(Over::Endpoint)
        );
        let other = share
            .enter("b", "fast", 12, &wake)
            .expect("another namespace and endpoint");
        drop(held);
        assert!(share.enter("a", "slow", 13, &wake).is_ok());
        drop(other);
        let state = share.shared.state.lock().unwrap();
        assert!(state.in_flight.is_empty() && state.waiting.is_empty());
        drop(state);
        // Never less than one slot, whatever the share.
        assert_eq!(FairShare::<()>::new(1, 0.5).shared.limit, 1);
        assert_eq!(FairShare::<()>::new(10, 1.0).shared.limit, 10);
    }

    #[test]
    fn each_slot_given_back_wakes_the_next_resource_put_off_for_that_share() {
        let (wake, mut woken) = mpsc::unbounded_channel();
        let share = FairShare::new(4, 0.5);
        let mut held: VecDeque<_> = (0..2)
            .map(|i| share.enter("busy", &format!("e{i}"), i, &wake).unwrap())
            .collect();
        // A backlog of the busy namespace is put off once each, in order; nothing is woken
        // while no slot frees.
        for r in 2..6 {
            assert_eq!(
                share.enter("busy", "e9", r, &wake).err(),
                Some(Over::Namespace)
            );
        }
        assert!(woken.try_recv().is_err());
        // Another namespace is not held up by the backlog.
        let quiet = share.enter("quiet", "e8", 100, &wake).expect("own share");
        drop(quiet);
        assert!(
            woken.try_recv().is_err(),
            "no one waits for the quiet share"
        );
        // One slot given back wakes exactly one waiter, the first.
        drop(held.pop_front());
        assert_eq!(woken.try_recv().ok(), Some(2));
        assert!(woken.try_recv().is_err());
        held.push_back(
            share
                .enter("busy", "e9", 2, &wake)
                .expect("the woken one runs"),
        );
        drop(held.pop_front());
        assert_eq!(woken.try_recv().ok(), Some(3));
        // A woken resource that finds the share full again (another took the slot) queues
        // again and is woken by the next slot given back.
        held.push_back(share.enter("busy", "e7", 50, &wake).unwrap());
        assert!(share.enter("busy", "e9", 3, &wake).is_err());
        drop(held.pop_front());
        assert_eq!(woken.try_recv().ok(), Some(4));
        // A waiter whose controller is gone is skipped.
        let (gone, closed) = mpsc::unbounded_channel();
        drop(closed);
        drop(held.pop_front());
        assert_eq!(woken.try_recv().ok(), Some(5));
        held.push_back(share.enter("busy", "e1", 60, &wake).unwrap());
        held.push_back(share.enter("busy", "e2", 61, &wake).unwrap());
        assert!(share.enter("busy", "e3", 70, &gone).is_err());
        assert!(share.enter("busy", "e3", 71, &wake).is_err());
        drop(held.pop_front());
        assert_eq!(woken.try_recv().ok(), Some(3));
        drop(held.pop_front());
        assert_eq!(woken.try_recv().ok(), Some(71), "70's controller is gone");
        assert!(held.is_empty());
        let state = share.shared.state.lock().unwrap();
        assert!(state.in_flight.is_empty(), "{:?}", state.in_flight);
        assert!(
            state
                .waiting
                .get("namespace busy")
                .is_none_or(VecDeque::is_empty)
        );
    }

    #[test]
    fn the_safety_net_wakes_waiters_of_shares_with_free_slots_only() {
        let (wake, mut woken) = mpsc::unbounded_channel();
        let share = FairShare::new(4, 0.5);
        let busy: Vec<_> = (0..2)
            .map(|i| share.enter("busy", "e", i, &wake).unwrap())
            .collect();
        for r in 10..13 {
            assert!(share.enter("busy", "e", r, &wake).is_err());
        }
        // Nothing to do while the share is full.
        share.wake_idle();
        assert!(woken.try_recv().is_err());
        // One slot given back wakes 10; if 10 was deleted meanwhile, nothing takes the slot and
        // the safety net wakes as many waiters as slots are free.
        drop(busy);
        assert_eq!(woken.try_recv().ok(), Some(10));
        assert_eq!(
            woken.try_recv().ok(),
            Some(11),
            "the second slot given back"
        );
        share.wake_idle();
        assert_eq!(woken.try_recv().ok(), Some(12));
        assert!(woken.try_recv().is_err());
        share.wake_idle();
        assert!(woken.try_recv().is_err(), "no one waits any more");
    }
}
