//! Injected faults: what a fault looks like on the wire ([`FaultKind`]), scripted faults
//! ([`ScriptedFault`]), the seeded random mix ([`FaultMix`]), and how each is answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::journal::{ApiFamily, TOKEN_EXCHANGE_PATH};
use crate::orginvitation::{csp_error, csp_error_body};
use crate::server::Reply;
use crate::wire::{Fail, reason, wf_error, wf_error_body, with_retry_after};

/// What an injected fault does to the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// An HTTP status in the API's error shape (the only kind before fault kinds existed).
    Status(u16),
    /// Hold the request and never answer, so that the client's timeout fires (the mock lets
    /// go when the client disconnects or the mock stops).
    Timeout,
    /// Close the connection after the request was read, without any answer.
    Reset,
    /// A 200 whose body is cut short: `Content-Length` is larger than what is sent before the
    /// connection closes.
    Truncated,
    /// A 200 with a valid JSON body of exactly this many bytes (a long string inside).
    HugeBody {
        /// Size of the body.
        bytes: usize,
    },
    /// A redirect (301, 302, 303, 307 or 308) to `location`.
    Redirect {
        /// The redirect status.
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// A 200 with a `text/html` page instead of JSON.
    NonJson,
    /// A 200 whose body is an error: the Wavefront error container
    /// `{"status":{"result":"ERROR","message":…,"code":400}}`, or a `CspErrorResponse` with
    /// `statusCode` 400 on OrgInvitation paths.
    ErrorBody200,
    /// The real answer, naming users nobody asked for and who do not exist as well:
    /// `validateUsers` gains a valid user and an invalid identifier, lists (users,
    /// invitations, org members, search results) gain an entry, and a single user or
    /// invitation names someone else. Other answers (errors, empty bodies) are left alone.
    UnknownUsers,
    /// This status with exactly this body (`application/json`): answers of a wrong shape.
    Body {
        /// The status answered.
        status: u16,
        /// The body sent, as is.
        body: String,
    },
    /// The request is held for the fault's `delay`, then performed and answered as usual: a
    /// client whose timeout is shorter gives up, and the request acts after it did.
    Late,
}

impl FaultKind {
    /// The kind's name, as in JSON and the journal (`status`, `timeout`, `reset`, `truncated`,
    /// `hugeBody`, `redirect`, `nonJson`, `errorBody200`, `unknownUsers`).
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Status(_) => "status",
            FaultKind::Timeout => "timeout",
            FaultKind::Reset => "reset",
            FaultKind::Truncated => "truncated",
            FaultKind::HugeBody { .. } => "hugeBody",
            FaultKind::Redirect { .. } => "redirect",
            FaultKind::NonJson => "nonJson",
            FaultKind::ErrorBody200 => "errorBody200",
            FaultKind::UnknownUsers => "unknownUsers",
            FaultKind::Body { .. } => "body",
            FaultKind::Late => "late",
        }
    }
}

/// A scripted fault: the next `times` requests matching `method` and `path_prefix` get the
/// fault `kind` instead of their answer (or after their effect, with `after_effect`).
///
/// JSON (`POST /mock/faults`): `{method?, pathPrefix?, kind?, status?, bytes?, location?,
/// retryAfter?, delayMs?, times?, afterEffect?, message?}`; `kind` defaults to `status`, which
/// needs `status` (and answers `message` when given); `hugeBody` needs `bytes`, `redirect` needs
/// `location` (status 302 unless given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FaultSpec", into = "FaultSpec")]
pub struct ScriptedFault {
    /// Method to match (any when `None`; case-insensitive).
    pub method: Option<String>,
    /// Path prefix to match (any when `None`).
    pub path_prefix: Option<String>,
    /// What the fault does.
    pub kind: FaultKind,
    /// `Retry-After` seconds to send with the answer (when the fault answers at all).
    pub retry_after: Option<u64>,
    /// Wait this long before the fault (to provoke client timeouts with a late answer).
    pub delay: Option<Duration>,
    /// How many matching requests get this fault.
    pub times: usize,
    /// Perform the real operation first (create the invitation, send the email), then fail:
    /// the client cannot know the outcome.
    pub after_effect: bool,
    /// Only requests whose body contains this text (any when `None`).
    pub body_contains: Option<String>,
    /// The error message of a status fault (default: the status's reason, marked as injected).
    pub message: Option<String>,
}

/// Constructors of the faults that take no parameters: `name => Kind`, each with its doc.
macro_rules! faults_without_parameters {
    ($($(#[$doc:meta])* $name:ident => $kind:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name() -> ScriptedFault {
                ScriptedFault::of(FaultKind::$kind)
            }
        )*
    };
}

impl ScriptedFault {
    faults_without_parameters! {
        /// Never answers ([`FaultKind::Timeout`]).
        timeout => Timeout;
        /// Closes the connection without an answer ([`FaultKind::Reset`]).
        reset => Reset;
        /// A 200 cut short ([`FaultKind::Truncated`]).
        truncated => Truncated;
        /// A 200 with an HTML page ([`FaultKind::NonJson`]).
        non_json => NonJson;
        /// A 200 with an error body ([`FaultKind::ErrorBody200`]).
        error_body_200 => ErrorBody200;
        /// The real answer plus users nobody asked for ([`FaultKind::UnknownUsers`]).
        unknown_users => UnknownUsers;
    }

    /// A fault answering `status` once, to any request.
    pub fn new(status: u16) -> ScriptedFault {
        ScriptedFault::of(FaultKind::Status(status))
    }

    /// A fault of this kind, once, to any request.
    pub fn of(kind: FaultKind) -> ScriptedFault {
        ScriptedFault {
            method: None,
            path_prefix: None,
            kind,
            retry_after: None,
            delay: None,
            times: 1,
            after_effect: false,
            body_contains: None,
            message: None,
        }
    }

    /// This status with exactly this body ([`FaultKind::Body`]).
    pub fn body(status: u16, body: impl Into<String>) -> ScriptedFault {
        ScriptedFault::of(FaultKind::Body {
            status,
            body: body.into(),
        })
    }

    /// Holds the request for `delay`, then performs and answers it ([`FaultKind::Late`]).
    pub fn late(delay: Duration) -> ScriptedFault {
        ScriptedFault::of(FaultKind::Late).delay(delay)
    }

    /// A 200 with a JSON body of `bytes` bytes ([`FaultKind::HugeBody`]).
    pub fn huge_body(bytes: usize) -> ScriptedFault {
        ScriptedFault::of(FaultKind::HugeBody { bytes })
    }

    /// A redirect with this status to `location` ([`FaultKind::Redirect`]).
    pub fn redirect(status: u16, location: &str) -> ScriptedFault {
        ScriptedFault::of(FaultKind::Redirect {
            status,
            location: location.to_string(),
        })
    }

    /// The status answered, for status and redirect faults.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            FaultKind::Status(s) | FaultKind::Redirect { status: s, .. } => Some(s),
            _ => None,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_string());
        self
    }

    /// Only requests whose body contains `text` (e.g. one address of a batch).
    pub fn body_contains(mut self, text: &str) -> Self {
        self.body_contains = Some(text.to_string());
        self
    }

    /// Only requests whose path starts with this prefix.
    pub fn path(mut self, prefix: &str) -> Self {
        self.path_prefix = Some(prefix.to_string());
        self
    }

    /// Applies to this many matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    /// Sends `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Waits this long before the fault.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// When `yes`: performs the real operation, then answers the fault (a lost response).
    pub fn after_effect(mut self, yes: bool) -> Self {
        self.after_effect = yes;
        self
    }

    /// A status fault answers with this error message (in the API's error shape).
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Checks the fault's values (statuses, redirect codes).
    pub fn validate(&self) -> Result<(), String> {
        match &self.kind {
            FaultKind::Status(s) | FaultKind::Body { status: s, .. }
                if !(100..=599).contains(s) =>
            {
                Err(format!("invalid status {s}"))
            }
            FaultKind::Redirect { status, .. } if !REDIRECTS.contains(status) => Err(format!(
                "invalid redirect status {status} (one of 301, 302, 303, 307, 308)"
            )),
            FaultKind::Redirect { location, .. } if location.is_empty() => {
                Err("a redirect needs a location".to_string())
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn matches(&self, method: &Method, path: &str, body: &[u8]) -> bool {
        self.times > 0
            && self.body_contains.as_deref().is_none_or(|text| {
                !text.is_empty() && body.windows(text.len()).any(|w| w == text.as_bytes())
            })
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

const REDIRECTS: [u16; 5] = [301, 302, 303, 307, 308];

/// The JSON shape of a [`ScriptedFault`] (flat, `kind` as a name).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, alias = "path", skip_serializing_if = "Option::is_none")]
    path_prefix: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    location: Option<String>,
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default = "one")]
    times: usize,
    #[serde(default)]
    after_effect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

fn one() -> usize {
    1
}

impl TryFrom<FaultSpec> for ScriptedFault {
    type Error = String;

    fn try_from(s: FaultSpec) -> Result<ScriptedFault, String> {
        let need = |what: &str, kind: &str| format!("a {kind} fault needs {what}");
        let kind = match s.kind.as_deref().unwrap_or("status") {
            "status" => FaultKind::Status(s.status.ok_or_else(|| need("status", "status"))?),
            "timeout" => FaultKind::Timeout,
            "reset" => FaultKind::Reset,
            "truncated" => FaultKind::Truncated,
            "hugeBody" => FaultKind::HugeBody {
                bytes: s.bytes.ok_or_else(|| need("bytes", "hugeBody"))?,
            },
            "redirect" => FaultKind::Redirect {
                status: s.status.unwrap_or(302),
                location: s.location.ok_or_else(|| need("location", "redirect"))?,
            },
            "nonJson" => FaultKind::NonJson,
            "errorBody200" => FaultKind::ErrorBody200,
            "unknownUsers" => FaultKind::UnknownUsers,
            "body" => FaultKind::Body {
                status: s.status.unwrap_or(200),
                body: s.body.ok_or_else(|| need("body", "body"))?,
            },
            "late" => FaultKind::Late,
            other => {
                return Err(format!(
                    "unknown fault kind '{other}' (status, timeout, reset, truncated, hugeBody, \
                     redirect, nonJson, errorBody200, unknownUsers, body, late)"
                ));
            }
        };
        let fault = ScriptedFault {
            method: s.method,
            path_prefix: s.path_prefix,
            kind,
            retry_after: s.retry_after,
            delay: s.delay_ms.map(Duration::from_millis),
            times: s.times,
            after_effect: s.after_effect,
            body_contains: s.body_contains,
            message: s.message,
        };
        fault.validate()?;
        Ok(fault)
    }
}

impl From<ScriptedFault> for FaultSpec {
    fn from(f: ScriptedFault) -> FaultSpec {
        let body = match &f.kind {
            FaultKind::Body { body, .. } => Some(body.clone()),
            _ => None,
        };
        let (status, bytes, location) = match &f.kind {
            FaultKind::Status(s) | FaultKind::Body { status: s, .. } => (Some(*s), None, None),
            FaultKind::HugeBody { bytes } => (None, Some(*bytes), None),
            FaultKind::Redirect { status, location } => {
                (Some(*status), None, Some(location.clone()))
            }
            _ => (None, None, None),
        };
        FaultSpec {
            method: f.method,
            path_prefix: f.path_prefix,
            kind: Some(f.kind.name().to_string()),
            status,
            bytes,
            location,
            retry_after: f.retry_after,
            delay_ms: f
                .delay
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            times: f.times,
            after_effect: f.after_effect,
            body_contains: f.body_contains,
            body,
            message: f.message,
        }
    }
}

/// A seeded random mix of faults for API requests (not `/mock/` requests; the token exchange
/// only with `token_exchange`). Each request draws one fault or none; the probabilities add
/// up to at most 1. All zero (the default) means no faults.
///
/// JSON (`PUT /mock/settings` `faultMix`): `{serverError, tooManyRequests, retryAfterSecs,
/// timeout, truncated, reset, afterEffect, tokenExchange}`, every field optional.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultMix {
    /// Probability of a server error, spread evenly over 500, 502, 503 and 504.
    pub server_error: f64,
    /// Probability of a 429.
    pub too_many_requests: f64,
    /// `Retry-After` seconds sent with every 429 of the mix (none when `None`).
    pub retry_after_secs: Option<u64>,
    /// Probability of a [`FaultKind::Timeout`] (never answered).
    pub timeout: f64,
    /// Probability of a [`FaultKind::Truncated`] 200.
    pub truncated: f64,
    /// Probability of a [`FaultKind::Reset`] connection.
    pub reset: f64,
    /// Probability that a faulted *mutating* request takes effect before it fails (the
    /// unknown outcome). Applies to 500, 502, 504, timeouts, truncated answers and resets;
    /// never to 429 and 503, which tell the client that nothing was done.
    pub after_effect: f64,
    /// Also fault the OrgInvitation token exchange.
    pub token_exchange: bool,
}

/// A fault drawn for one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Drawn {
    pub kind: FaultKind,
    pub retry_after: Option<u64>,
    pub after_effect: bool,
}

impl FaultMix {
    fn probabilities(&self) -> [f64; 5] {
        [
            self.server_error,
            self.too_many_requests,
            self.timeout,
            self.truncated,
            self.reset,
        ]
    }

    /// True when the mix injects nothing.
    pub fn is_off(&self) -> bool {
        self.probabilities().iter().all(|p| *p <= 0.0)
    }

    /// Checks that every probability is within 0..=1 and that they add up to at most 1.
    pub fn validate(&self) -> Result<(), String> {
        let all = self.probabilities();
        if all
            .iter()
            .chain([&self.after_effect])
            .any(|p| !(0.0..=1.0).contains(p))
        {
            return Err("fault mix probabilities must be between 0 and 1".to_string());
        }
        let sum: f64 = all.iter().sum();
        if sum > 1.0 + 1e-9 {
            return Err(format!(
                "fault mix probabilities add up to {sum}, more than 1"
            ));
        }
        Ok(())
    }

    /// Draws the fault for one request, if any.
    pub(crate) fn draw(&self, rng: &mut StdRng, path: &str, mutating: bool) -> Option<Drawn> {
        if self.is_off() || (path == TOKEN_EXCHANGE_PATH && !self.token_exchange) {
            return None;
        }
        let r: f64 = rng.random();
        let mut edge = 0.0;
        let mut pick = None;
        for (i, p) in self.probabilities().iter().enumerate() {
            edge += p;
            if r < edge {
                pick = Some(i);
                break;
            }
        }
        let (kind, retry_after) = match pick? {
            0 => {
                let s = [500, 502, 503, 504][rng.random_range(0..4)];
                (FaultKind::Status(s), None)
            }
            1 => (FaultKind::Status(429), self.retry_after_secs),
            2 => (FaultKind::Timeout, None),
            3 => (FaultKind::Truncated, None),
            _ => (FaultKind::Reset, None),
        };
        let may_have_acted = !matches!(kind, FaultKind::Status(429 | 503));
        let after_effect = mutating
            && may_have_acted
            && self.after_effect > 0.0
            && rng.random::<f64>() < self.after_effect;
        Some(Drawn {
            kind,
            retry_after,
            after_effect,
        })
    }
}

/// The answer of a fault. `real` is the request's real answer, when it was performed (always
/// for [`FaultKind::UnknownUsers`], which decorates it); `ghost` numbers its unknown user;
/// `message` replaces a status fault's default message.
pub(crate) async fn answer(
    kind: &FaultKind,
    message: Option<&str>,
    path: &str,
    seq: &AtomicU64,
    retry_after: Option<u64>,
    real: Option<Response>,
    ghost: u64,
) -> Reply {
    let family = ApiFamily::of_path(path);
    let resp = match kind {
        FaultKind::Timeout => return Reply::Hold,
        FaultKind::Late => match real {
            Some(real) => real,
            None => return Reply::Hold,
        },
        FaultKind::Body { status, body } => {
            let mut r = Response::new(Body::from(body.clone()));
            *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        FaultKind::Reset => return Reply::Reset,
        FaultKind::UnknownUsers => match real {
            Some(real) => add_unknown_users(real, path, ghost).await,
            None => {
                let mut v = json!([]);
                let email = format!("ghost-{ghost}@never-invited.example.com");
                add_ghost(&mut v, &email, family, path);
                crate::wire::json_response(200, &v)
            }
        },
        FaultKind::Status(s) => {
            let fail = Fail::new(
                *s,
                message.map_or_else(
                    || format!("{} (injected by the mock)", reason(*s)),
                    str::to_string,
                ),
            );
            match family {
                ApiFamily::OrgInvitation => csp_error(seq, &fail),
                ApiFamily::UserInvite => wf_error(&fail),
            }
        }
        FaultKind::Truncated => truncated(family),
        FaultKind::HugeBody { bytes } => huge_body(family, *bytes),
        FaultKind::Redirect { status, location } => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND);
            if let Ok(v) = HeaderValue::from_str(location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        FaultKind::NonJson => {
            let mut r = Response::new(Body::from(NON_JSON_PAGE));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        FaultKind::ErrorBody200 => {
            let message = "Invalid request (an error body in an HTTP 200, injected by the mock)";
            let body = match family {
                ApiFamily::OrgInvitation => {
                    csp_error_body(seq.fetch_add(1, Ordering::Relaxed), 400, message)
                }
                ApiFamily::UserInvite => wf_error_body(400, message),
            };
            crate::wire::json_response(200, &body)
        }
    };
    Reply::Answer(with_retry_after(resp, retry_after))
}

const NON_JSON_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\
<body><h1>Your session has expired</h1><form method=\"post\" action=\"/login\">\
<input name=\"username\"><input name=\"password\" type=\"password\"></form>\
<!-- injected by the mock --></body></html>\n";

fn json_headers(resp: &mut Response, length: usize) {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
}

/// A 200 that announces a whole plausible answer, sends its first half and closes.
fn truncated(family: ApiFamily) -> Response {
    let full = match family {
        ApiFamily::UserInvite => json!({"status": {"result": "OK", "code": 200}, "response": {
            "identifier": "truncated@example.com", "customer": "mock", "groups": [],
            "userGroups": [], "roles": []}}),
        ApiFamily::OrgInvitation => json!({"results": [{"user": {
            "username": "truncated@example.com", "email": "truncated@example.com"}}],
            "totalResults": 1}),
    };
    let full = serde_json::to_vec(&full).unwrap_or_default();
    let part = Bytes::copy_from_slice(&full[..full.len() / 2]);
    let chunks = futures::stream::unfold(Some(part), |state| async move {
        match state {
            Some(part) => Some((Ok(part), None)),
            None => {
                // Let the part reach the client, then break the body off.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "body truncated by the mock",
                    )),
                    None,
                ))
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    json_headers(&mut resp, full.len());
    resp
}

/// A 200 with a valid JSON body of `bytes` bytes (at least its frame), streamed.
fn huge_body(family: ApiFamily, bytes: usize) -> Response {
    let (head, tail): (&'static str, &'static str) = match family {
        ApiFamily::UserInvite => (
            "{\"status\":{\"result\":\"OK\",\"code\":200,\"message\":\"",
            "\"},\"response\":{}}",
        ),
        ApiFamily::OrgInvitation => ("{\"results\":[],\"totalResults\":0,\"message\":\"", "\"}"),
    };
    const CHUNK: usize = 64 * 1024;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let total = head.len() + pad + tail.len();
    let filler = Bytes::from(vec![b'x'; CHUNK.min(pad.max(1))]);
    let chunks = futures::stream::unfold((0u8, pad), move |(stage, left)| {
        let filler = filler.clone();
        async move {
            let item: Bytes = match stage {
                0 => Bytes::from_static(head.as_bytes()),
                1 if left > 0 => {
                    let n = left.min(filler.len());
                    return Some((Ok::<_, std::io::Error>(filler.slice(..n)), (1, left - n)));
                }
                1 => Bytes::from_static(tail.as_bytes()),
                _ => return None,
            };
            Some((Ok(item), (stage + 1, left)))
        }
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    json_headers(&mut resp, total);
    resp
}

/// Adds users nobody asked for to a real answer ([`FaultKind::UnknownUsers`]); answers other
/// than a 2xx JSON body are returned unchanged.
async fn add_unknown_users(resp: Response, path: &str, ghost: u64) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let json = parts
        .status
        .is_success()
        .then(|| serde_json::from_slice::<Value>(&bytes));
    let Some(Ok(mut v)) = json else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let ghost = format!("ghost-{ghost}@never-invited.example.com");
    add_ghost(&mut v, &ghost, ApiFamily::of_path(path), path);
    let out = serde_json::to_vec(&v).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

fn ghost_user(email: &str) -> Value {
    json!({"identifier": email, "customer": "mock", "groups": [], "userGroups": [], "roles": []})
}

fn ghost_member(email: &str) -> Value {
    json!({"user": {"username": email, "email": email, "acct": email, "firstName": "Ghost",
        "lastName": "User", "domain": "never-invited.example.com",
        "userId": format!("never-invited.example.com:{email}")},
        "organizationRoles": [{"name": "org_member"}], "serviceRoles": [], "customRoles": []})
}

fn ghost_invitation(email: &str) -> Value {
    json!({"username": email, "status": "AVAILABLE",
        "refLink": format!("/csp/gateway/am/api/orgs/unknown/invitations/{email}"),
        "generatedAt": 0, "expirationTime": i64::MAX, "orgRoleNames": ["org_member"]})
}

/// Renames whoever an entry names.
fn rename(entry: &mut Value, email: &str) {
    if let Some(o) = entry.as_object_mut() {
        for f in ["identifier", "username"] {
            if o.contains_key(f) {
                o.insert(f.to_string(), json!(email));
            }
        }
        if let Some(u) = o.get_mut("user").and_then(Value::as_object_mut) {
            for f in ["username", "email", "acct"] {
                u.insert(f.to_string(), json!(email));
            }
        }
    }
}

fn add_ghost(v: &mut Value, email: &str, family: ApiFamily, path: &str) {
    let fresh = || match family {
        ApiFamily::UserInvite => ghost_user(email),
        ApiFamily::OrgInvitation if path.contains("/invitations") => ghost_invitation(email),
        ApiFamily::OrgInvitation => ghost_member(email),
    };
    match v {
        Value::Array(items) => items.push(fresh()),
        Value::Object(o) => {
            if let Some(Value::Array(results)) = o.get_mut("results") {
                results.push(ghost_member(email));
                if let Some(n) = o.get("totalResults").and_then(Value::as_u64) {
                    o.insert("totalResults".into(), json!(n + 1));
                }
            } else if let Some(resp) = o.get_mut("response") {
                match resp {
                    Value::Array(items) => items.push(ghost_user(email)),
                    Value::Object(r) if r.contains_key("validUsers") => {
                        if let Some(Value::Array(valid)) = r.get_mut("validUsers") {
                            valid.push(ghost_user(email));
                        }
                        if let Some(Value::Array(invalid)) = r.get_mut("invalidIdentifiers") {
                            invalid.push(json!(format!("also-{email}")));
                        }
                    }
                    other => rename(other, email),
                }
            } else {
                rename(v, email);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn json_round_trip_and_defaults() {
        let f: ScriptedFault = serde_json::from_value(json!({"status": 503})).unwrap();
        assert_eq!(f, ScriptedFault::new(503));
        let f: ScriptedFault = serde_json::from_value(
            json!({"kind": "redirect", "location": "https://elsewhere.example.com/"}),
        )
        .unwrap();
        assert_eq!(f.status(), Some(302));
        let back: ScriptedFault =
            serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        for bad in [
            json!({}),
            json!({"kind": "hugeBody"}),
            json!({"kind": "redirect", "location": "x", "status": 200}),
            json!({"kind": "nope"}),
            json!({"status": 99}),
        ] {
            assert!(
                serde_json::from_value::<ScriptedFault>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_mix_draws_its_proportions_and_spares_the_token_exchange() {
        let mix = FaultMix {
            server_error: 0.3,
            too_many_requests: 0.1,
            retry_after_secs: Some(2),
            timeout: 0.05,
            truncated: 0.05,
            reset: 0.05,
            after_effect: 0.5,
            token_exchange: false,
        };
        mix.validate().unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let n = 20_000;
        let mut faults = 0;
        let mut throttled = 0;
        let mut after = 0;
        for _ in 0..n {
            if let Some(d) = mix.draw(&mut rng, "/api/v2/user/invite", true) {
                faults += 1;
                if d.kind == FaultKind::Status(429) {
                    throttled += 1;
                    assert_eq!(d.retry_after, Some(2));
                    assert!(!d.after_effect);
                }
                after += usize::from(d.after_effect);
            }
        }
        let share = |k: usize| k as f64 / n as f64;
        assert!((share(faults) - 0.55).abs() < 0.02, "{faults}");
        assert!((share(throttled) - 0.10).abs() < 0.01, "{throttled}");
        assert!(after > 0 && after < faults);
        assert!(mix.draw(&mut rng, TOKEN_EXCHANGE_PATH, true).is_none());
        let too_much = FaultMix {
            server_error: 0.9,
            reset: 0.2,
            ..FaultMix::default()
        };
        assert!(too_much.validate().is_err());
    }

    #[test]
    fn unknown_users_are_added_to_every_shape() {
        let mut validated = json!({"status": {"result": "OK", "code": 200}, "response": {
            "validUsers": [ghost_user("a@example.com")], "invalidIdentifiers": []}});
        add_ghost(
            &mut validated,
            "g@x.example.com",
            ApiFamily::UserInvite,
            "/api/v2/user/validateUsers",
        );
        assert_eq!(
            validated["response"]["validUsers"][1]["identifier"],
            "g@x.example.com"
        );
        assert_eq!(
            validated["response"]["invalidIdentifiers"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        let mut list = json!([]);
        add_ghost(
            &mut list,
            "g@x.example.com",
            ApiFamily::OrgInvitation,
            "/csp/gateway/am/api/orgs/o/invitations",
        );
        assert_eq!(list[0]["status"], "AVAILABLE");
        let mut page = json!({"results": [], "totalResults": 0});
        add_ghost(
            &mut page,
            "g@x.example.com",
            ApiFamily::OrgInvitation,
            "/csp/gateway/am/api/v2/orgs/o/users",
        );
        assert_eq!(page["results"][0]["user"]["username"], "g@x.example.com");
        assert_eq!(page["totalResults"], 1);
        let mut one = ghost_user("a@example.com");
        add_ghost(
            &mut one,
            "g@x.example.com",
            ApiFamily::UserInvite,
            "/api/v2/user/a@example.com",
        );
        assert_eq!(one["identifier"], "g@x.example.com");
    }
}
