//! The API clients of the endpoints (built once, rebuilt when an endpoint's settings or token
//! change, shared by every resource using the endpoint so their calls coalesce) and the
//! Secrets holding their tokens.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::time::Instant;

use crate::{
    api::AnyEndpoint,
    invite::{
        ApiToken, ConnectError, SharedApi,
        client::{ClientSettings, build_client},
        coalesce::CoalescedApi,
        intent::IntentJournal,
    },
    reconcile::resolve::{SecretLocation, read_token},
};

/// The clients and token Secrets of the endpoints.
#[derive(Default)]
pub struct EndpointClients {
    clients: Mutex<HashMap<String, (u64, SharedApi)>>,
    secrets: Mutex<HashMap<SecretLocation, (Secret, Instant)>>,
    /// Where the clients record the intents of coalesced batches.
    journal: Option<Arc<dyn IntentJournal>>,
}

impl EndpointClients {
    /// Clients recording the intents of coalesced batches of several resources in `journal`.
    pub fn with_journal(journal: Arc<dyn IntentJournal>) -> EndpointClients {
        EndpointClients {
            journal: Some(journal),
            ..EndpointClients::default()
        }
    }

    /// The Secret holding an endpoint's token: read with `get` (never a list or watch of
    /// Secrets), then reused for `ttl` or until [`EndpointClients::forget_secret`]. Only a
    /// Secret that holds the token is kept: a missing one is read again at the next use.
    pub async fn secret(
        &self,
        client: &Client,
        location: &SecretLocation,
        ttl: Duration,
    ) -> Result<Option<Secret>, kube::Error> {
        let cached = self
            .secrets
            .lock()
            .expect("lock")
            .get(location)
            .filter(|(_, read_at)| read_at.elapsed() < ttl)
            .map(|(secret, _)| secret.clone());
        if cached.is_some() {
            return Ok(cached);
        }
        let secret = Api::<Secret>::namespaced(client.clone(), &location.namespace)
            .get_opt(&location.name)
            .await?;
        let mut secrets = self.secrets.lock().expect("lock");
        match &secret {
            Some(s) if read_token(Some(s), location).is_ok() => {
                secrets.insert(location.clone(), (s.clone(), Instant::now()));
            }
            _ => {
                secrets.remove(location);
            }
        }
        Ok(secret)
    }

    /// Forgets the Secret of a token the API refused, so the next use reads it again.
    pub fn forget_secret(&self, location: &SecretLocation) {
        self.secrets.lock().expect("lock").remove(location);
    }

    /// The coalescing client of an endpoint, rebuilt when its settings or token change.
    pub fn client_for(
        &self,
        endpoint: &AnyEndpoint,
        token: ApiToken,
        settings: &ClientSettings,
    ) -> Result<SharedApi, ConnectError> {
        let key = endpoint.key();
        let fingerprint = fingerprint(endpoint, &token, settings);
        let mut clients = self.clients.lock().expect("lock");
        if let Some((fp, api)) = clients.get(&key)
            && *fp == fingerprint
        {
            return Ok(api.clone());
        }
        let api: SharedApi = Arc::new(CoalescedApi::with_journal(
            build_client(endpoint, token, settings)?,
            settings.batch,
            self.journal.clone(),
        ));
        clients.insert(key, (fingerprint, api.clone()));
        Ok(api)
    }
}

fn fingerprint(endpoint: &AnyEndpoint, token: &ApiToken, settings: &ClientSettings) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(endpoint.connection())
        .unwrap_or_default()
        .hash(&mut h);
    token.hash(&mut h);
    settings.batch.hash(&mut h);
    settings.read_attempts.hash(&mut h);
    settings.limits.hash(&mut h);
    h.finish()
}
