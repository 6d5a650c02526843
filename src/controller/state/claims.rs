//! The registry of addresses being worked on, per API.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use tokio::sync::Notify;

use crate::api::{ApiIdentity, address};

/// The addresses each API is being worked on for: a resource looks a person up, invites or
/// removes them only while it holds their address, so two resources naming one person never
/// both see them absent and both invite. A resource waits for another only when both name the
/// same person (the claims are kept per person, [`address::person`]).
#[derive(Default)]
pub struct AddressClaims {
    held: Mutex<HashMap<ApiIdentity, HashSet<String>>>,
    released: Notify,
}

/// Held addresses; released when dropped.
pub struct Claim<'a> {
    claims: &'a AddressClaims,
    api: ApiIdentity,
    addresses: Vec<String>,
}

impl AddressClaims {
    /// Waits until none of `addresses` is held on `api`, then holds them all.
    pub async fn claim(&self, api: &ApiIdentity, addresses: Vec<String>) -> Claim<'_> {
        let mut addresses: Vec<String> = addresses.iter().map(|a| address::person(a)).collect();
        addresses.sort();
        addresses.dedup();
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut held = self.held.lock().expect("lock");
                let on_api = held.entry(api.clone()).or_default();
                if addresses.iter().all(|a| !on_api.contains(a)) {
                    on_api.extend(addresses.iter().cloned());
                    return Claim {
                        claims: self,
                        api: api.clone(),
                        addresses,
                    };
                }
            }
            released.await;
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        {
            let mut held = self.claims.held.lock().expect("lock");
            if let Some(on_api) = held.get_mut(&self.api) {
                for a in &self.addresses {
                    on_api.remove(a);
                }
                if on_api.is_empty() {
                    held.remove(&self.api);
                }
            }
        }
        self.claims.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn api(url: &str) -> ApiIdentity {
        ApiIdentity {
            url: url.into(),
            organization_id: None,
        }
    }

    #[tokio::test]
    async fn only_claims_naming_the_same_person_on_the_same_api_wait() {
        let claims = AddressClaims::default();
        let a = api("https://a");
        let first = claims.claim(&a, vec!["x@y.z".into(), "w@y.z".into()]).await;
        // Another person, or the same person on another API: no wait.
        let other = tokio::time::timeout(
            Duration::from_millis(50),
            claims.claim(&a, vec!["v@y.z".into()]),
        )
        .await;
        assert!(other.is_ok());
        let elsewhere = tokio::time::timeout(
            Duration::from_millis(50),
            claims.claim(&api("https://b"), vec!["x@y.z".into()]),
        )
        .await;
        assert!(elsewhere.is_ok());
        drop((other, elsewhere));
        // The same person waits until the first claim is released, in any spelling.
        let same = claims.claim(&a, vec!["X@Y.z".into()]);
        tokio::pin!(same);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), same.as_mut())
                .await
                .is_err()
        );
        drop(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), same)
                .await
                .is_ok()
        );
    }
}
