//! HTTP plumbing shared by both API clients: TLS, timeouts, the per-endpoint rate limit,
//! `Retry-After`, retries of idempotent reads, and error classification.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Method, RequestBuilder, StatusCode, header::HeaderMap};

use super::{ApiError, decode};
use crate::telemetry::ApiCallRecorder;

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
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            timeout: Duration::from_secs(30),
            requests_per_second: 5,
            ca_bundle: None,
            read_attempts: 3,
            read_backoff: Duration::from_millis(200),
        }
    }
}

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
    settings: TransportSettings,
    endpoint: String,
    recorder: ApiCallRecorder,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("endpoint", &self.endpoint)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Transport {
    /// Builds the transport. `endpoint` names the endpoint in metrics and logs.
    pub fn new(
        endpoint: impl Into<String>,
        settings: TransportSettings,
        recorder: ApiCallRecorder,
    ) -> Result<Transport, String> {
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
                .map_err(|e| format!("caBundle is not a valid PEM bundle: {e}"))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let rps = NonZeroU32::new(settings.requests_per_second.max(1)).expect("at least 1");
        Ok(Transport {
            http,
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(rps))),
            settings,
            endpoint: endpoint.into(),
            recorder,
        })
    }

    /// The timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Starts a request.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends a request once (rate-limited), classifying connection failures as transient.
    /// Any HTTP status is returned as an answer.
    pub async fn send_once(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<Answer, ApiError> {
        self.send_once_by(operation, request, None).await
    }

    /// Like [`Transport::send_once`], but the request is not sent at all when `send_by` has
    /// passed by the time it may leave (after the rate limit): [`ApiError::NotSent`].
    pub async fn send_once_by(
        &self,
        operation: &'static str,
        request: RequestBuilder,
        send_by: Option<std::time::Instant>,
    ) -> Result<Answer, ApiError> {
        self.limiter.until_ready().await;
        if send_by.is_some_and(|deadline| std::time::Instant::now() > deadline) {
            return Err(ApiError::NotSent { operation });
        }
        let started = std::time::Instant::now();
        let result = request.send().await;
        let answer = match result {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                match response.bytes().await {
                    Ok(body) => Ok(Answer {
                        status,
                        headers,
                        body,
                    }),
                    Err(e) => Err(transport_error(operation, &e)),
                }
            }
            Err(e) => Err(transport_error(operation, &e)),
        };
        let code = match &answer {
            Ok(a) => a.status.as_u16().to_string(),
            Err(_) => "error".to_string(),
        };
        self.recorder
            .record(&self.endpoint, operation, &code, started.elapsed());
        answer
    }

    /// Sends a request and turns non-success statuses into classified errors.
    pub async fn send(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<Answer, ApiError> {
        self.send_by(operation, request, None).await
    }

    /// Like [`Transport::send`], with a send deadline (see [`Transport::send_once_by`]).
    pub async fn send_by(
        &self,
        operation: &'static str,
        request: RequestBuilder,
        send_by: Option<std::time::Instant>,
    ) -> Result<Answer, ApiError> {
        let answer = self.send_once_by(operation, request, send_by).await?;
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
            match self.send(operation, build()).await {
                Err(e) if attempt < attempts && e.category() == super::ErrorCategory::Transient => {
                    let backoff = backoff_delay(self.settings.read_backoff, attempt);
                    let wait = e.retry_after().map_or(backoff, |r| r.max(backoff));
                    if wait > Duration::from_secs(10) {
                        return Err(e);
                    }
                    tracing::debug!(operation, attempt, ?wait, error = %e, "retrying read");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// Exponential backoff with full jitter in [base*2^(n-1)/2, base*2^(n-1)].
pub fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let half = exp / 2;
    let jitter = rand::random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter)
}

fn transport_error(operation: &'static str, e: &reqwest::Error) -> ApiError {
    let message = if e.is_timeout() {
        "the request timed out".to_string()
    } else if e.is_connect() {
        format!("cannot connect: {}", root_cause(e))
    } else {
        root_cause(e)
    };
    ApiError::Transient {
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

/// Builds the classified error for a non-success answer.
pub fn error_from_answer(operation: &'static str, answer: &Answer) -> ApiError {
    let retry_after = answer
        .headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let message = decode::error_message(&answer.body).unwrap_or_else(|| {
        answer
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_string()
    });
    ApiError::from_status(operation, answer.status.as_u16(), message, retry_after)
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_and_stays_in_bounds() {
        let base = Duration::from_millis(100);
        for attempt in 1..6 {
            let d = backoff_delay(base, attempt);
            let full = base * (1 << (attempt - 1));
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn statuses_are_classified() {
        use super::super::ErrorCategory::*;
        let c = |s| ApiError::from_status("op", s, String::new(), None).category();
        assert_eq!(c(503), Transient);
        assert_eq!(c(429), Transient);
        assert_eq!(c(406), Transient);
        assert_eq!(c(401), Configuration);
        assert_eq!(c(403), Configuration);
        assert_eq!(c(400), Permanent);
        assert_eq!(c(409), Permanent);
    }
}
