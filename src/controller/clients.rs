//! The API clients of the endpoints (built once, rebuilt when an endpoint's settings or token
//! change, shared by every resource using the endpoint so their calls coalesce), the tokens
//! read from Secrets, and the registry of addresses being worked on.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::{sync::Notify, time::Instant};

use crate::{
    api::{AnyEndpoint, ApiIdentity, address},
    invite::{
        self, ApiToken, ConnectError, SharedApi, Transport, TransportSettings,
        coalesce::{BatchSettings, CoalescedApi},
        transport::MayAct,
    },
    reconcile::{plan::Blocked, resolve},
    telemetry::ApiCallRecorder,
};

/// What a client is built with besides the endpoint and its token.
#[derive(Clone)]
pub struct ClientSettings {
    /// Records calls into the metrics.
    pub recorder: ApiCallRecorder,
    /// Attempts for idempotent reads.
    pub read_attempts: u32,
    /// Budgets of one lookup.
    pub limits: invite::LookupLimits,
    /// How calls are coalesced.
    pub batch: BatchSettings,
    /// Asked before every call that changes data.
    pub may_act: MayAct,
}

/// The label a Secret must carry before a namespaced InvitationEndpoint may use it.
pub const CREDENTIALS_LABEL: &str = "invite.operators.dev/credentials";

/// An endpoint's token, or why there is none.
pub enum Credentials {
    /// The token.
    Token(ApiToken),
    /// The Secret or its key is missing.
    Missing(Blocked),
    /// The Secret is not labelled for use by namespaced endpoints ([`CREDENTIALS_LABEL`]):
    /// its value is never sent anywhere.
    NotLabelled(Blocked),
}

/// The clients and tokens of the endpoints.
#[derive(Default)]
pub struct EndpointClients {
    clients: Mutex<HashMap<String, (u64, SharedApi)>>,
    tokens: Mutex<HashMap<resolve::SecretLocation, CachedToken>>,
}

/// A token read from a Secret: when, and whether the Secret carried [`CREDENTIALS_LABEL`].
struct CachedToken {
    token: ApiToken,
    read_at: Instant,
    labelled: bool,
}

impl EndpointClients {
    /// The endpoint's token: read with `get` (never a list or watch of Secrets), then reused
    /// for `ttl` or until [`EndpointClients::forget_token`]. With `require_label` (a
    /// namespaced endpoint), only from a Secret labelled [`CREDENTIALS_LABEL`]`=true`: someone
    /// who may create endpoints but not read Secrets cannot have the operator send an
    /// unlabelled Secret to a host of their choice.
    pub async fn token(
        &self,
        client: &Client,
        location: &resolve::SecretLocation,
        ttl: Duration,
        require_label: bool,
    ) -> Result<Credentials, kube::Error> {
        let cached = self
            .tokens
            .lock()
            .expect("lock")
            .get(location)
            .filter(|c| c.read_at.elapsed() < ttl)
            .map(|c| (c.token.clone(), c.labelled));
        let (token, labelled) = match cached {
            Some(hit) => hit,
            None => {
                let secret = Api::<Secret>::namespaced(client.clone(), &location.namespace)
                    .get_opt(&location.name)
                    .await?;
                let labelled = secret.as_ref().is_some_and(|s| {
                    s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(CREDENTIALS_LABEL))
                        .is_some_and(|v| v == "true")
                });
                let mut tokens = self.tokens.lock().expect("lock");
                match resolve::read_token(secret.as_ref(), location) {
                    Ok(token) => {
                        let entry = CachedToken {
                            token: token.clone(),
                            read_at: Instant::now(),
                            labelled,
                        };
                        tokens.insert(location.clone(), entry);
                        (token, labelled)
                    }
                    Err(blocked) => {
                        tokens.remove(location);
                        return Ok(Credentials::Missing(blocked));
                    }
                }
            }
        };
        if require_label && !labelled {
            return Ok(Credentials::NotLabelled(Blocked::new(
                crate::reconcile::plan::ReadyReason::EndpointNotReady,
                format!(
                    "Secret {}/{} is not labelled {CREDENTIALS_LABEL}=true: a namespaced InvitationEndpoint may only use Secrets labelled for it (SecretNotLabelled)",
                    location.namespace, location.name
                ),
            )));
        }
        Ok(Credentials::Token(token))
    }

    /// Forgets a token the API refused, so the next use reads the Secret again.
    pub fn forget_token(&self, location: &resolve::SecretLocation) {
        self.tokens.lock().expect("lock").remove(location);
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
        let api: SharedApi = Arc::new(CoalescedApi::new(
            build_client(endpoint, token, settings)?,
            settings.batch,
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

/// Builds the (uncoalesced) client of an endpoint.
pub fn build_client(
    endpoint: &AnyEndpoint,
    token: ApiToken,
    settings: &ClientSettings,
) -> Result<SharedApi, ConnectError> {
    let connection = endpoint.connection();
    let transport = Transport::new(
        endpoint.key(),
        TransportSettings {
            timeout: Duration::from_secs(u64::from(connection.timeout_seconds.clamp(1, 120))),
            requests_per_second: connection.requests_per_second,
            ca_bundle: connection.ca_bundle.clone(),
            read_attempts: settings.read_attempts,
            limits: settings.limits,
            ..TransportSettings::default()
        },
        settings.recorder.clone(),
    )?
    .with_may_act(settings.may_act.clone());
    invite::connect(connection, token, transport)
}

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
