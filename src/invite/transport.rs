//! HTTP plumbing shared by both API clients: TLS, timeouts, the per-endpoint rate limit,
//! `Retry-After` (honoured by every later request to the endpoint), retries of idempotent
//! reads, a cap on answer sizes, the leader check before anything that changes data, and
//! error classification.

use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Method, RequestBuilder, StatusCode, header::HeaderMap};
use tokio::time::Instant;

use super::{ApiError, decode, error::NotSentReason};
use crate::telemetry::ApiCallRecorder;

/// Largest answer read from an API; a larger one is an error.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// The longest `Retry-After` honoured (a larger one is capped).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Settings of an endpoint's HTTP transport.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransportSettings {
    /// Timeout of one request.
    pub timeout: Duration,
    /// Client-side rate limit.
    pub requests_per_second: u32,
    /// Extra trusted CA certificates (PEM).
    pub ca_bundle: Option<String>,
    /// Attempts for idempotent reads before giving up (at least 1).
    pub read_attempts: u32,
    /// First backoff between read attempts.
    pub read_backoff: Duration,
    /// Largest answer read.
    pub max_response_bytes: usize,
    /// Budgets of one lookup.
    pub limits: LookupLimits,
}

/// What one lookup of an endpoint may cost before it is stopped (the endpoint is then not
/// Ready, naming the limit): one tenant's slow or endless API cannot take the operator's
/// memory or time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LookupLimits {
    /// Most members an organization snapshot may hold (`--org-snapshot-max-members`).
    pub max_members: usize,
    /// Most bytes the listings of one organization snapshot may total
    /// (`--org-snapshot-max-bytes`).
    pub max_bytes: usize,
    /// Longest one lookup may take, all its calls together (`--lookup-deadline`).
    pub deadline: Duration,
}

impl Default for LookupLimits {
    fn default() -> Self {
        LookupLimits {
            max_members: 250_000,
            max_bytes: 512 * 1024 * 1024,
            deadline: Duration::from_secs(300),
        }
    }
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            timeout: Duration::from_secs(30),
            requests_per_second: 20,
            ca_bundle: None,
            read_attempts: 3,
            read_backoff: Duration::from_millis(200),
            max_response_bytes: MAX_RESPONSE_BYTES,
            limits: LookupLimits::default(),
        }
    }
}

/// Decides, right before a request that changes data leaves, whether this process may still
/// act (it holds the leader lease).
pub type MayAct = Arc<dyn Fn() -> bool + Send + Sync>;

/// An answer from the API.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: bytes::Bytes,
}

/// The HTTP transport of one endpoint.
#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    paused_until: Arc<Mutex<Option<Instant>>>,
    settings: TransportSettings,
    endpoint: String,
    recorder: ApiCallRecorder,
    may_act: MayAct,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("endpoint", &self.endpoint)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A transport that cannot be built from an endpoint's settings.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// `caBundle` is not PEM.
    #[error("caBundle is not a valid PEM bundle: {0}")]
    CaBundle(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Transport {
    /// Builds the transport. `endpoint` names the endpoint in metrics and logs. Redirects are
    /// never followed.
    pub fn new(
        endpoint: impl Into<String>,
        settings: TransportSettings,
        recorder: ApiCallRecorder,
    ) -> Result<Transport, TransportError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("invite-operator/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = settings
            .ca_bundle
            .as_deref()
            .filter(|p| !p.trim().is_empty())
        {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| TransportError::CaBundle(e.to_string()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| TransportError::Client(e.to_string()))?;
        let rps = NonZeroU32::new(settings.requests_per_second.max(1)).expect("at least 1");
        Ok(Transport {
            http,
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(rps))),
            paused_until: Arc::default(),
            settings,
            endpoint: endpoint.into(),
            recorder,
            may_act: Arc::new(|| true),
        })
    }

    /// The same transport, asking `may_act` before every request that changes data.
    pub fn with_may_act(mut self, may_act: MayAct) -> Transport {
        self.may_act = may_act;
        self
    }

    /// The timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// The budgets of one lookup.
    pub fn limits(&self) -> LookupLimits {
        self.settings.limits
    }

    /// Starts a request.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Waits for the rate limit and any `Retry-After` the API asked for. With a deadline,
    /// gives up (returning false) when the request could not leave before it.
    async fn wait_turn(&self, send_by: Option<Instant>) -> bool {
        loop {
            let paused = *self.paused_until.lock().expect("lock");
            if let Some(until) = paused.filter(|u| *u > Instant::now()) {
                if send_by.is_some_and(|deadline| until > deadline) {
                    return false;
                }
                tokio::time::sleep_until(until).await;
            }
            self.limiter.until_ready().await;
            // A Retry-After that arrived while this request waited for the rate limit holds it
            // too.
            let paused = *self.paused_until.lock().expect("lock");
            if paused.is_none_or(|u| u <= Instant::now()) {
                return send_by.is_none_or(|deadline| Instant::now() <= deadline);
            }
        }
    }

    /// Sends a request once (rate-limited), without judging the status. Connection failures
    /// and timeouts are errors.
    pub async fn send_once(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<Answer, ApiError> {
        self.wait_turn(None).await;
        self.exchange(operation, request).await
    }

    /// Sends a request that changes data, once: not at all when `send_by` passes before it may
    /// leave or when this process may no longer act ([`ApiError::NotSent`]); non-success
    /// answers become classified errors.
    pub async fn send_mutation(
        &self,
        operation: &'static str,
        request: RequestBuilder,
        send_by: Option<Instant>,
    ) -> Result<Answer, ApiError> {
        if !self.wait_turn(send_by).await {
            return Err(ApiError::NotSent {
                operation,
                reason: NotSentReason::Deadline,
            });
        }
        if !(self.may_act)() {
            return Err(ApiError::NotSent {
                operation,
                reason: NotSentReason::NotLeader,
            });
        }
        let answer = self.exchange(operation, request).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(error_from_answer(operation, &answer))
        }
    }

    /// Sends an idempotent read, retrying transient failures with exponential backoff and
    /// jitter, honouring `Retry-After` up to a cap.
    pub async fn send_read(
        &self,
        operation: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, ApiError> {
        let attempts = self.settings.read_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.wait_turn(None).await;
            let result = match self.exchange(operation, build()).await {
                Ok(answer) if answer.status.is_success() => Ok(answer),
                Ok(answer) => Err(error_from_answer(operation, &answer)),
                Err(e) => Err(e),
            };
            match result {
                Err(e) if attempt < attempts && e.category() == super::ErrorCategory::Transient => {
                    let backoff = backoff_delay(self.settings.read_backoff, attempt);
                    if e.retry_after().is_some_and(|r| r > Duration::from_secs(10)) {
                        return Err(e);
                    }
                    tracing::debug!(operation, attempt, ?backoff, error = %e, "retrying read");
                    tokio::time::sleep(backoff).await;
                }
                other => return other,
            }
        }
    }

    /// One request and its answer, read up to the size cap; records the call and any
    /// `Retry-After`.
    async fn exchange(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<Answer, ApiError> {
        let started = std::time::Instant::now();
        let result = match request.send().await {
            Ok(response) => self.read(operation, response).await,
            Err(e) => Err(transport_error(operation, &e)),
        };
        let code = match &result {
            Ok(a) => a.status.as_u16().to_string(),
            Err(e) => e.status().map_or("error".to_string(), |s| s.to_string()),
        };
        self.recorder
            .record(&self.endpoint, operation, &code, started.elapsed());
        if let Ok(answer) = &result
            && let Some(wait) = retry_after(&answer.headers)
            && !answer.status.is_success()
        {
            let until = Instant::now() + wait.min(MAX_RETRY_AFTER);
            let mut paused = self.paused_until.lock().expect("lock");
            *paused = Some(paused.map_or(until, |p| p.max(until)));
        }
        result
    }

    async fn read(
        &self,
        operation: &'static str,
        response: reqwest::Response,
    ) -> Result<Answer, ApiError> {
        let status = response.status();
        let headers = response.headers().clone();
        let cap = self.settings.max_response_bytes;
        if response.content_length().is_some_and(|n| n as usize > cap) {
            return Err(too_large(operation, status, cap));
        }
        let mut body = bytes::BytesMut::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.transpose() {
            let chunk = chunk.map_err(|e| ApiError::NoAnswer {
                operation,
                status: Some(status.as_u16()),
                message: format!("the answer was cut short: {}", root_cause(&e)),
                retry_after: None,
            })?;
            if body.len() + chunk.len() > cap {
                return Err(too_large(operation, status, cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

fn too_large(operation: &'static str, status: StatusCode, cap: usize) -> ApiError {
    ApiError::Decode {
        operation,
        message: format!(
            "the answer (HTTP {}) is larger than {} MiB; not read",
            status.as_u16(),
            cap / (1024 * 1024)
        ),
    }
}

/// Exponential backoff with full jitter in [base*2^(n-1)/2, base*2^(n-1)].
pub fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let half = exp / 2;
    let jitter = rand::random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter)
}

/// A failed exchange: without a connection nothing was sent; after it (timeout, reset) the
/// API may have acted.
fn transport_error(operation: &'static str, e: &reqwest::Error) -> ApiError {
    if e.is_connect() {
        return ApiError::Unavailable {
            operation,
            status: None,
            message: format!("cannot connect: {}", root_cause(e)),
            retry_after: None,
        };
    }
    if e.is_redirect() {
        return ApiError::Configuration {
            operation,
            status: e.status().map_or(0, |s| s.as_u16()),
            message: "the API answered with a redirect, which is never followed".into(),
        };
    }
    let message = if e.is_timeout() {
        "the request timed out".to_string()
    } else {
        root_cause(e)
    };
    ApiError::NoAnswer {
        operation,
        status: None,
        message,
        retry_after: None,
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// Builds the classified error for a non-success answer. A redirect is a configuration
/// problem (redirects are never followed).
pub fn error_from_answer(operation: &'static str, answer: &Answer) -> ApiError {
    if answer.status.is_redirection() {
        return ApiError::Configuration {
            operation,
            status: answer.status.as_u16(),
            message: "the API answered with a redirect, which is never followed; check the url"
                .into(),
        };
    }
    let message = decode::error_message(&answer.body).unwrap_or_else(|| {
        answer
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_string()
    });
    ApiError::from_status(
        operation,
        answer.status.as_u16(),
        message,
        retry_after(&answer.headers),
    )
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let delta = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(delta).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests;
