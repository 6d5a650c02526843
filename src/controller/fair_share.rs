//! The fair share of reconcile slots: no namespace and no endpoint holds more than a share of
//! them, so one tenant's slow or hostile API (answering just under the timeout, paging
//! forever) cannot starve the others. A reconcile over its share is put off for a moment
//! (it gives its slot back to the controller instead of waiting in it).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// Counts reconciles in flight per namespace and per endpoint.
pub struct FairShare {
    limit: usize,
    in_flight: Mutex<HashMap<Arc<str>, usize>>,
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

/// A reconcile's place in both shares; given back when dropped.
pub struct Slot<'a> {
    share: &'a FairShare,
    keys: [Arc<str>; 2],
}

impl FairShare {
    /// Shares of `share` (0 < share ≤ 1) of `slots` reconcile slots, at least one each.
    pub fn new(slots: usize, share: f64) -> FairShare {
        let limit = ((slots as f64) * share.clamp(0.0, 1.0)).floor() as usize;
        FairShare {
            limit: limit.max(1),
            in_flight: Mutex::default(),
        }
    }

    /// A slot for a reconcile of `namespace` through `endpoint`, unless either holds its share.
    pub fn enter(&self, namespace: &str, endpoint: &str) -> Result<Slot<'_>, Over> {
        let keys: [Arc<str>; 2] = [
            Arc::from(format!("namespace {namespace}")),
            Arc::from(format!("endpoint {endpoint}")),
        ];
        let mut in_flight = self.in_flight.lock().expect("lock");
        for (key, over) in keys.iter().zip([Over::Namespace, Over::Endpoint]) {
            if in_flight.get(key).copied().unwrap_or(0) >= self.limit {
                return Err(over);
            }
        }
        for key in &keys {
            *in_flight.entry(key.clone()).or_default() += 1;
        }
        Ok(Slot { share: self, keys })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.share.in_flight.lock().expect("lock");
        for key in &self.keys {
            if let Some(n) = in_flight.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    in_flight.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_or_an_endpoint_holds_at_most_its_share() {
        let share = FairShare::new(8, 0.5);
        assert_eq!(share.limit, 4);
        let held: Vec<_> = (0..4).map(|_| share.enter("a", "slow").unwrap()).collect();
        assert_eq!(share.enter("a", "fast").err(), Some(Over::Namespace));
        assert_eq!(share.enter("b", "slow").err(), Some(Over::Endpoint));
        let other = share
            .enter("b", "fast")
            .expect("another namespace and endpoint");
        drop(held);
        assert!(share.enter("a", "slow").is_ok());
        drop(other);
        assert!(share.in_flight.lock().unwrap().is_empty());
        // Never less than one slot, whatever the share.
        assert_eq!(FairShare::new(1, 0.5).limit, 1);
        assert_eq!(FairShare::new(10, 1.0).limit, 10);
    }
}
