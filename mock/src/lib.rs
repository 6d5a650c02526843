//! Stateful mock of both invite APIs as a real HTTP server (axum), for tests, benchmarks and
//! demos.
//!
//! * **UserInvite** (Wavefront REST API v2): `/api/v2/user*`, `/api/v2/usergroup*`, static token
//!   as `Authorization: Bearer` or `X-AUTH-TOKEN` (a live CSP access token is accepted too, as on
//!   CSP-onboarded instances).
//! * **OrgInvitation** (VMware CSP IAM): token exchange at
//!   `/csp/gateway/am/api/auth/api-tokens/authorize`, then `csp-auth-token` (or
//!   `Authorization: Bearer`) on `/csp/gateway/am/api/...` invitations and org users.
//! * **Control** endpoints under `/mock/` (no auth, not journaled, no latency or faults).
//!
//! Every API request is journaled (never credentials), delayed by the configured latency, and
//! may be answered by a scripted fault or a random 503 (`fault_rate`, seeded). Faults answer in
//! the error shape of the API the path belongs to.
//!
//! Control endpoints (JSON; for benchmarks and demos running the mock out of process):
//!
//! | request | effect |
//! |---|---|
//! | `GET /mock/requests` / `DELETE /mock/requests` | the journal ([`JournalEntry`] list) / clear it |
//! | `POST /mock/faults` `{method?, pathPrefix?, status, retryAfter?, delayMs?, times?, afterEffect?}` | add a [`ScriptedFault`]; `GET` lists, `DELETE` clears |
//! | `PUT /mock/settings` `{latencyMs?, faultRate?}` | change latency / random fault rate |
//! | `POST /mock/users` (UserModel-ish JSON) | seed an existing UserInvite user |
//! | `POST /mock/usergroups` `{id?, name}` | seed a user group |
//! | `POST /mock/org/members` `{username, organizationRoles?: [names]}` | seed a CSP org member |
//! | `POST /mock/users/{id}/login` | the invited user logs in (`lastSuccessfulLogin`) |
//! | `POST /mock/org/invitations/{username}/redeem` | the invited person accepts (404 if none pending) |
//! | `POST /mock/expire` | every pending invitation (both APIs) expires now |
//! | `GET /mock/state` | `{users, userGroups, orgInvitations, orgMembers, emailsSent, emails, liveAccessTokens}` |
//!
//! Choices where the API documents are silent:
//! * UserInvite invite of an existing user fails the whole batch with
//!   `User with id <email> is already created in our system.` — except a user who never logged
//!   in and whose 24 h activation link expired: that is a re-send (new email, new expiry, the
//!   request's permissions/groups/roles replace the old ones). Users seeded or created without
//!   an email are "already created".
//! * Ignored unknown user groups answer HTTP **202** with the wrapped body whose
//!   `status.code` is 202 (the body's code is documented as the HTTP code). Unknown groups in
//!   `addUserGroups` are a 400; the system group "Everyone" is always kept.
//! * `POST /api/v2/user` on an existing user returns it unchanged (wrapped), no email;
//!   `PUT /api/v2/user/{id}` replaces groups/userGroups/roles, absent lists mean empty.
//! * Roles are not modelled: any role id is accepted and rendered as a `RoleDTO` of that name.
//! * JSON endpoints require `Content-Type: application/json`, grant/revoke require a form
//!   (otherwise 415, as a JAX-RS/Spring server answers).
//! * Identifiers are compared case-insensitively; with `multi_tenant_identifiers` a user is only
//!   found by its `local+customer@domain` identifier, never by the plain email.
//! * OrgInvitation: inviting a username with a pending invitation creates another invitation and
//!   sends another email (the conservative assumption for exactly-once tests); members are
//!   skipped silently (no email); no `organizationRoles` means `org_member`; no email with
//!   `skipNotify`, `skipNotifyRegistration` or `notifyUsersOfRegistration: false`. Expired
//!   invitations stay `AVAILABLE` with `expirationTime` in the past. Role details appear in the
//!   invitation list only with `?expand`. A wrong API token in the exchange is a 400
//!   (`invalid_grant`). CSP errors alternate `moduleCode` between `"540"` and `540`.

pub mod cli;
mod control;
mod orginvitation;
mod state;
mod userinvite;
mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State as AxState};
use axum::http::Method;
use axum::response::Response;
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::state::State;
use self::wire::{ApiRequest, Fail, wf_error, with_retry_after};

/// Largest request body the mock buffers (larger ones get 413).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Configuration of a mock.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The UserInvite API token, and the CSP API token accepted by the token exchange.
    pub token: String,
    /// Added to every API request (not to `/mock/` control requests).
    pub latency: Duration,
    /// Probability (0..=1) that an API request is answered by a random 503.
    pub fault_rate: f64,
    /// Seed of the random generators (fault draws, ids, tokens).
    pub seed: u64,
    /// Lifetime of CSP access tokens (`expires_in`); after it they get 401.
    pub access_token_ttl: Duration,
    /// Validity of a UserInvite activation link.
    pub invitation_ttl_userinvite: SignedDuration,
    /// Validity of an OrgInvitation invitation (unless the request sets
    /// `invitationExpirationInDays`).
    pub invitation_ttl_org: SignedDuration,
    /// The organization served by the CSP API; other org ids get 404.
    pub organization_id: String,
    /// The UserInvite customer (tenant) id, in `UserModel.customer`.
    pub customer: String,
    /// When true, UserInvite identifiers are `local+customer@domain`.
    pub multi_tenant_identifiers: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            token: "mock-token".to_string(),
            latency: Duration::ZERO,
            fault_rate: 0.0,
            seed: 0,
            access_token_ttl: Duration::from_secs(1799),
            invitation_ttl_userinvite: SignedDuration::from_hours(24),
            invitation_ttl_org: SignedDuration::from_hours(7 * 24),
            organization_id: "mock-org".to_string(),
            customer: "mock".to_string(),
            multi_tenant_identifiers: false,
        }
    }
}

/// One API request as the mock saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// HTTP method.
    pub method: String,
    /// Request path (not decoded).
    pub path: String,
    /// Raw query string (credentials redacted).
    #[serde(default)]
    pub query: Option<String>,
    /// The body: `Null` when none, form bodies as an object, JSON as is, other text as a
    /// string. Credentials (`api_token`, `refresh_token`, ...) are redacted.
    #[serde(default)]
    pub body: Value,
    /// Status answered (0 while the request is still in flight).
    pub status: u16,
    /// When the request arrived.
    pub at: Timestamp,
    /// Name of the header that carried credentials (`authorization`, `x-auth-token`,
    /// `csp-auth-token`), never its value.
    #[serde(default)]
    pub auth: Option<String>,
    /// The request's `Content-Type`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// True when the answer was an injected fault (scripted or random).
    #[serde(default)]
    pub fault: bool,
}

/// A scripted fault: the next `times` requests matching `method` and `path_prefix` are answered
/// with `status` (in the matched API's error shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptedFault {
    /// Method to match (any when `None`; case-insensitive).
    #[serde(default)]
    pub method: Option<String>,
    /// Path prefix to match (any when `None`).
    #[serde(default, alias = "path")]
    pub path_prefix: Option<String>,
    /// Status to answer.
    pub status: u16,
    /// `Retry-After` seconds to send.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Hang this long before answering (to provoke client timeouts). JSON: `delayMs`.
    #[serde(default, rename = "delayMs", with = "millis")]
    pub delay: Option<Duration>,
    /// How many matching requests get this fault.
    #[serde(default = "one")]
    pub times: usize,
    /// Perform the real operation first, then answer the fault (a lost response).
    #[serde(default)]
    pub after_effect: bool,
}

fn one() -> usize {
    1
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl ScriptedFault {
    /// A fault answering `status` once, to any request.
    pub fn new(status: u16) -> ScriptedFault {
        ScriptedFault {
            method: None,
            path_prefix: None,
            status,
            retry_after: None,
            delay: None,
            times: 1,
            after_effect: false,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_string());
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

    /// Waits this long before answering.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// When `yes`: performs the real operation, then answers the fault (a lost response).
    pub fn after_effect(mut self, yes: bool) -> Self {
        self.after_effect = yes;
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.times > 0
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

#[derive(Debug, Clone, Copy)]
struct Settings {
    latency: Duration,
    fault_rate: f64,
}

#[derive(Debug, Default)]
struct Journal {
    next: u64,
    entries: Vec<(u64, JournalEntry)>,
}

/// Shared state behind a [`MockApi`].
#[derive(Debug)]
pub(crate) struct Inner {
    state: Mutex<State>,
    journal: Mutex<Journal>,
    faults: Mutex<Vec<ScriptedFault>>,
    settings: Mutex<Settings>,
    fault_rng: Mutex<StdRng>,
    error_seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn clamp_rate(r: f64) -> f64 {
    if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) }
}

/// A cheap, cloneable handle to one mock's state; serves both APIs and the control endpoints.
#[derive(Debug, Clone)]
pub struct MockApi {
    inner: Arc<Inner>,
}

/// A mock serving on `127.0.0.1`; shuts down when dropped or on [`RunningMock::shutdown`].
#[derive(Debug)]
pub struct RunningMock {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// Handle to the mock's state.
    pub api: MockApi,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningMock {
    /// Stops the server and waits (at most 5 s) for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl MockApi {
    /// A mock with fresh state.
    pub fn new(config: MockConfig) -> MockApi {
        let settings = Settings {
            latency: config.latency,
            fault_rate: clamp_rate(config.fault_rate),
        };
        let fault_rng = StdRng::seed_from_u64(config.seed);
        MockApi {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(config)),
                journal: Mutex::new(Journal::default()),
                faults: Mutex::new(Vec::new()),
                settings: Mutex::new(settings),
                fault_rng: Mutex::new(fault_rng),
                error_seq: AtomicU64::new(0),
            }),
        }
    }

    /// The router: both APIs plus the `/mock/` control endpoints.
    pub fn router(&self) -> Router {
        control::routes()
            .fallback(api_entry)
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds `127.0.0.1:0` and serves in a background task.
    pub async fn start(config: MockConfig) -> std::io::Result<RunningMock> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let api = MockApi::new(config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(api.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(RunningMock {
            url: format!("http://{addr}"),
            addr,
            api,
            stop: Some(tx),
            task: Some(task),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Every API request so far, in arrival order.
    pub fn journal(&self) -> Vec<JournalEntry> {
        lock(&self.inner.journal)
            .entries
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Forgets the journal.
    pub fn clear_journal(&self) {
        lock(&self.inner.journal).entries.clear();
    }

    /// Number of invitation emails "sent" to this address by either API (case-insensitive).
    pub fn invitations_sent_to(&self, email: &str) -> usize {
        self.state().emails_to(email)
    }

    /// Emails sent, per (lowercased) address.
    pub fn emails_sent(&self) -> BTreeMap<String, usize> {
        self.state().email_counts()
    }

    /// Appends a scripted fault (faults match in the order added).
    pub fn add_fault(&self, fault: ScriptedFault) {
        lock(&self.inner.faults).push(fault);
    }

    /// Removes all scripted faults.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// Scripted faults not yet used up.
    pub fn pending_faults(&self) -> Vec<ScriptedFault> {
        lock(&self.inner.faults)
            .iter()
            .filter(|f| f.times > 0)
            .cloned()
            .collect()
    }

    /// Sets the latency added to every API request.
    pub fn set_latency(&self, d: Duration) {
        lock(&self.inner.settings).latency = d;
    }

    /// Sets the probability of a random 503.
    pub fn set_fault_rate(&self, r: f64) {
        lock(&self.inner.settings).fault_rate = clamp_rate(r);
    }

    /// Seeds an existing UserInvite user from UserModel-ish JSON (`identifier` or
    /// `emailAddress`, `groups`, `userGroups` (ids or objects), `roles`, `ssoId`,
    /// `lastSuccessfulLogin`). No email is counted. Ignored without an identifier.
    pub fn seed_user(&self, user: Value) {
        if self.state().seed_user(&user).is_none() {
            tracing::warn!("mock: seed_user without identifier/emailAddress ignored");
        }
    }

    /// Seeds (or renames) a UserInvite user group.
    pub fn seed_user_group(&self, id: &str, name: &str) {
        self.state().seed_group(id, name);
    }

    /// Seeds an existing member of the CSP organization (role `org_member`).
    pub fn seed_org_member(&self, username: &str) {
        let mut st = self.state();
        let roles = vec![st.binding("org_member")];
        st.add_member(username, roles, Vec::new(), Vec::new());
    }

    /// The current `UserModel` of a UserInvite user (identifier, case-insensitive).
    pub fn user(&self, id: &str) -> Option<Value> {
        let st = self.state();
        let k = st.user_key(id)?;
        st.users.get(&k).map(|u| st.user_json(u))
    }

    /// All UserInvite users as `UserModel`s.
    pub fn users(&self) -> Vec<Value> {
        self.state().users_json()
    }

    /// Plays the invited person accepting: sets `lastSuccessfulLogin` to now.
    pub fn login(&self, id: &str) {
        self.state().login(id);
    }

    /// CSP: the invited person accepts their newest pending invitation: REDEEMED, and they
    /// become an org member with its roles. False when none is pending (or it expired).
    pub fn redeem_invitation(&self, username: &str) -> bool {
        self.state().redeem(username)
    }

    /// CSP: expires every access token issued so far, as if they had all outlived their
    /// lifetime; the next call with one of them gets a 401.
    pub fn expire_access_tokens(&self) {
        self.state().access_tokens.clear();
    }

    /// Moves every pending invitation's expiry into the past (both APIs).
    pub fn expire_invitations(&self) {
        self.state().expire_all();
    }

    /// All CSP invitations (`UserOrganizationInvitationResponse`, expanded), oldest first.
    pub fn org_invitations(&self) -> Vec<Value> {
        let st = self.state();
        st.invitations
            .iter()
            .map(|i| st.invitation_json(i, true))
            .collect()
    }

    /// All CSP org members (`ExpandedTypedUserDto`).
    pub fn org_members(&self) -> Vec<Value> {
        let st = self.state();
        st.members.iter().map(|m| st.member_json(m)).collect()
    }

    // ------------------------------------------------------------ request pipeline

    fn journal_start(&self, req: &ApiRequest) -> u64 {
        let entry = JournalEntry {
            method: req.method.to_string(),
            path: req.path.clone(),
            query: req.journal_query(),
            body: req.journal_body(),
            status: 0,
            at: Timestamp::now(),
            auth: req.auth_header_name(),
            content_type: req.header("content-type").map(str::to_string),
            fault: false,
        };
        let mut j = lock(&self.inner.journal);
        let id = j.next;
        j.next += 1;
        j.entries.push((id, entry));
        id
    }

    fn journal_finish(&self, id: u64, status: u16, fault: bool) {
        let mut j = lock(&self.inner.journal);
        if let Some((_, e)) = j.entries.iter_mut().rev().find(|(i, _)| *i == id) {
            e.status = status;
            e.fault = fault;
        }
    }

    fn take_fault(&self, method: &Method, path: &str) -> Option<ScriptedFault> {
        let mut faults = lock(&self.inner.faults);
        let f = faults.iter_mut().find(|f| f.matches(method, path))?;
        f.times -= 1;
        let taken = f.clone();
        faults.retain(|f| f.times > 0);
        Some(taken)
    }

    fn random_fault(&self) -> bool {
        let rate = lock(&self.inner.settings).fault_rate;
        rate > 0.0 && lock(&self.inner.fault_rng).random::<f64>() < rate
    }

    fn error_response(&self, path: &str, fail: &Fail) -> Response {
        if is_csp(path) {
            orginvitation::csp_error(&self.inner.error_seq, fail)
        } else {
            wf_error(fail)
        }
    }

    /// Runs the real operation.
    fn dispatch(&self, req: &ApiRequest) -> Response {
        let mut st = self.state();
        if is_csp(&req.path) {
            orginvitation::handle(&mut st, req, &self.inner.error_seq)
        } else {
            userinvite::handle(&mut st, req)
        }
    }

    async fn process(self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return self.error_response(&path, &Fail::new(413, "Request body too large"));
            }
        };
        let req = ApiRequest::new(parts.method, &path, parts.uri.query(), parts.headers, bytes);
        let id = self.journal_start(&req);
        let latency = lock(&self.inner.settings).latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let (resp, fault) = match self.take_fault(&req.method, &req.path) {
            Some(f) => {
                if f.after_effect {
                    let _ = self.dispatch(&req);
                }
                if let Some(d) = f.delay {
                    tokio::time::sleep(d).await;
                }
                let fail = Fail::new(
                    f.status,
                    format!("{} (injected by the mock)", wire::reason(f.status)),
                );
                (
                    with_retry_after(self.error_response(&req.path, &fail), f.retry_after),
                    true,
                )
            }
            None if self.random_fault() => {
                let fail = Fail::new(
                    503,
                    "Service Unavailable (random fault injected by the mock)",
                );
                (self.error_response(&req.path, &fail), true)
            }
            None => (self.dispatch(&req), false),
        };
        self.journal_finish(id, resp.status().as_u16(), fault);
        tracing::debug!(method = %req.method, path = %req.path, status = resp.status().as_u16(), fault, "mock api request");
        resp
    }
}

fn is_csp(path: &str) -> bool {
    path.starts_with("/csp/")
}

/// Every non-control request: handled in its own task so that an operation completes even when
/// the client gives up (as on a real server).
async fn api_entry(AxState(api): AxState<MockApi>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    match tokio::spawn(api.clone().process(req)).await {
        Ok(r) => r,
        Err(_) => api.error_response(&path, &Fail::new(500, "mock internal error")),
    }
}
