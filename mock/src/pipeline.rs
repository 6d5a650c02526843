//! The way of one API request through the mock: buffered, journaled, delayed, maybe faulted,
//! performed, answered.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Request, State as AxState};
use axum::http::Method;
use axum::http::header::RETRY_AFTER;
use axum::response::Response;
use jiff::Timestamp;
use rand::Rng;

use crate::faults::{self, FaultKind};
use crate::journal::{ApiFamily, JournalEntry, TOKEN_EXCHANGE_PATH};
use crate::server::Reply;
use crate::state::State;
use crate::wire::{ApiRequest, Fail, wf_error};
use crate::{MockApi, lock, orginvitation, userinvite};

/// Largest request body the mock buffers (larger ones get 413).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// The fault chosen for one request.
struct Fault {
    kind: FaultKind,
    retry_after: Option<u64>,
    delay: Option<Duration>,
    after_effect: bool,
    message: Option<String>,
}

/// How a request ended, for the journal.
struct Outcome {
    status: u16,
    answered: bool,
    fault: Option<&'static str>,
    performed: bool,
    retry_after: Option<u64>,
}

/// True for requests that change something (not reads, not `validateUsers`, not the token
/// exchange).
fn is_mutating(req: &ApiRequest) -> bool {
    !matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !req.path.ends_with("/validateUsers")
        && req.path != TOKEN_EXCHANGE_PATH
}

/// The secret a request authenticates with: a header's token, or the API token of a token
/// exchange.
fn presented_secret(req: &ApiRequest) -> Option<String> {
    if req.path == TOKEN_EXCHANGE_PATH {
        let mut fields = req.query_pairs();
        if req.is_form() {
            fields.extend(req.form_pairs());
        }
        return fields
            .into_iter()
            .find(|(k, _)| k == "api_token" || k == "refresh_token")
            .map(|(_, v)| v);
    }
    let header = req
        .header("csp-auth-token")
        .or_else(|| req.header("x-auth-token"))
        .map(str::to_string);
    let bearer = req.header("authorization").map(|a| {
        let a = a.trim();
        match a.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim().to_string(),
            _ => a.to_string(),
        }
    });
    bearer.or(header).filter(|t| !t.is_empty())
}

impl MockApi {
    /// The opaque label of the request's credential; an access token counts as the API token
    /// it was exchanged for.
    fn credential_label(&self, req: &ApiRequest) -> Option<String> {
        let mut secret = presented_secret(req)?;
        {
            let st = self.state();
            if st.access_tokens.contains_key(&secret) {
                secret = st.cfg.token.clone();
            }
        }
        Some(lock(&self.inner.labels).label(&secret))
    }

    fn journal_start(&self, req: &ApiRequest) -> u64 {
        let entry = JournalEntry {
            seq: 0,
            method: req.method.to_string(),
            path: req.path.clone(),
            query: req.journal_query(),
            body: req.journal_body(),
            status: 0,
            at: Timestamp::now(),
            offset: self.inner.started.elapsed(),
            answered: None,
            auth: req.auth_header_name(),
            credential: self.credential_label(req),
            content_type: req.header("content-type").map(str::to_string),
            fault: false,
            fault_kind: None,
            performed: false,
            retry_after: None,
        };
        lock(&self.inner.journal).push(entry)
    }

    fn journal_finish(&self, seq: u64, o: &Outcome) {
        let now = self.inner.started.elapsed();
        let mut j = lock(&self.inner.journal);
        if let Some(e) = j.get_mut(seq) {
            e.status = o.status;
            e.answered = o.answered.then_some(now);
            e.fault = o.fault.is_some();
            e.fault_kind = o.fault.map(str::to_string);
            e.performed = o.performed;
            e.retry_after = o.retry_after;
        }
    }

    fn take_scripted(&self, req: &ApiRequest) -> Option<Fault> {
        let mut faults = lock(&self.inner.faults);
        let f = faults
            .iter_mut()
            .find(|f| f.matches(&req.method, &req.path, &req.body))?;
        f.times -= 1;
        let taken = Fault {
            kind: f.kind.clone(),
            retry_after: f.retry_after,
            delay: f.delay,
            after_effect: f.after_effect,
            message: f.message.clone(),
        };
        faults.retain(|f| f.times > 0);
        Some(taken)
    }

    fn random_503(&self) -> bool {
        let rate = lock(&self.inner.settings).fault_rate;
        rate > 0.0 && lock(&self.inner.fault_rng).random::<f64>() < rate
    }

    fn draw_from_mix(&self, req: &ApiRequest) -> Option<Fault> {
        let mix = lock(&self.inner.settings).fault_mix;
        let d = mix.draw(&mut lock(&self.inner.mix_rng), &req.path, is_mutating(req))?;
        Some(Fault {
            kind: d.kind,
            retry_after: d.retry_after,
            delay: None,
            after_effect: d.after_effect,
            message: None,
        })
    }

    /// The fault for this request: scripted, else a random 503, else the mix.
    fn choose_fault(&self, req: &ApiRequest) -> Option<Fault> {
        if let Some(f) = self.take_scripted(req) {
            return Some(f);
        }
        if self.random_503() {
            return Some(Fault {
                kind: FaultKind::Status(503),
                retry_after: None,
                delay: None,
                after_effect: false,
                message: None,
            });
        }
        self.draw_from_mix(req)
    }

    pub(crate) fn error_response(&self, path: &str, fail: &Fail) -> Response {
        match ApiFamily::of_path(path) {
            ApiFamily::OrgInvitation => orginvitation::csp_error(&self.inner.error_seq, fail),
            ApiFamily::UserInvite => wf_error(fail),
        }
    }

    /// Runs the real operation on `state`.
    fn dispatch_on(&self, state: &mut State, req: &ApiRequest) -> Response {
        match ApiFamily::of_path(&req.path) {
            ApiFamily::OrgInvitation => orginvitation::handle(state, req, &self.inner.error_seq),
            ApiFamily::UserInvite => userinvite::handle(state, req),
        }
    }

    /// Runs the real operation.
    fn dispatch(&self, req: &ApiRequest) -> Response {
        let mut st = self.state();
        self.dispatch_on(&mut st, req)
    }

    /// The answer to a request the fault `f` hits.
    async fn fault_reply(&self, req: &ApiRequest, f: &Fault) -> (Reply, bool) {
        let real = if f.kind == FaultKind::Late {
            // Held first, then performed and answered as usual.
            tokio::time::sleep(f.delay.unwrap_or_default()).await;
            return (Reply::Answer(self.dispatch(req)), true);
        } else if f.after_effect {
            Some(self.dispatch(req))
        } else if f.kind == FaultKind::UnknownUsers {
            // The answer the API would give, computed without changing anything.
            let mut scratch = self.state().clone();
            Some(self.dispatch_on(&mut scratch, req))
        } else {
            None
        };
        if let Some(d) = f.delay {
            tokio::time::sleep(d).await;
        }
        let ghost = self.inner.ghost_seq.fetch_add(1, Ordering::Relaxed);
        let reply = faults::answer(
            &f.kind,
            f.message.as_deref(),
            &req.path,
            &self.inner.error_seq,
            f.retry_after,
            real,
            ghost,
        )
        .await;
        (reply, f.after_effect)
    }

    async fn process(self, req: Request) -> Reply {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                let fail = Fail::new(413, "Request body too large");
                return Reply::Answer(self.error_response(&path, &fail));
            }
        };
        let req = ApiRequest::new(parts.method, &path, parts.uri.query(), parts.headers, bytes);
        let seq = self.journal_start(&req);
        let latency = lock(&self.inner.settings).latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fault = self.choose_fault(&req);
        let (reply, performed) = match &fault {
            Some(f) => self.fault_reply(&req, f).await,
            None => (Reply::Answer(self.dispatch(&req)), true),
        };
        let (status, retry_after) = match &reply {
            Reply::Answer(r) => (
                r.status().as_u16(),
                r.headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            ),
            Reply::Hold | Reply::Reset => (0, None),
        };
        let outcome = Outcome {
            status,
            answered: !matches!(reply, Reply::Hold),
            fault: fault.as_ref().map(|f| f.kind.name()),
            performed,
            retry_after,
        };
        self.journal_finish(seq, &outcome);
        tracing::debug!(method = %req.method, path = %req.path, status, fault = outcome.fault, "mock api request");
        reply
    }
}

/// Every non-control request: handled in its own task so that an operation completes even when
/// the client gives up (as on a real server).
pub(crate) async fn api_entry(AxState(api): AxState<MockApi>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    match tokio::spawn(api.clone().process(req)).await {
        Ok(reply) => reply.into_response().await,
        Err(_) => api.error_response(&path, &Fail::new(500, "mock internal error")),
    }
}
