//! Building the client of an endpoint: its transport (timeouts, rate, CA bundle, read
//! attempts, lookup budgets) and the flavour's client on top.

use std::time::Duration;

use super::{ApiToken, ConnectError, LookupLimits, SharedApi, Transport, TransportSettings};
use super::{coalesce::BatchSettings, transport::MayAct};
use crate::{api::AnyEndpoint, telemetry::ApiCallRecorder};

/// What a client is built with besides the endpoint and its token.
#[derive(Clone)]
pub struct ClientSettings {
    /// Records calls into the metrics.
    pub recorder: ApiCallRecorder,
    /// Attempts for idempotent reads.
    pub read_attempts: u32,
    /// Budgets of one lookup.
    pub limits: LookupLimits,
    /// How calls are coalesced.
    pub batch: BatchSettings,
    /// Asked before every call that changes data.
    pub may_act: MayAct,
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
    super::connect(connection, token, transport)
}
