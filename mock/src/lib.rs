//! # invite-mock
//!
//! Stateful mock of both invite APIs as a real HTTP server, for tests, benchmarks and demos:
//! the library [`MockApi`] (in-process, [`MockApi::start`] binds a free port) and the binary
//! `invite-mock` (flags in [`cli::ServeArgs`]; `invite-operator mock-api` serves the same).
//!
//! * **UserInvite** (Wavefront REST API v2): `/api/v2/user*`, `/api/v2/usergroup*`, static token
//!   as `Authorization: Bearer` or `X-AUTH-TOKEN` (a live CSP access token is accepted too, as on
//!   CSP-onboarded instances).
//! * **OrgInvitation** (VMware CSP IAM): token exchange at
//!   `/csp/gateway/am/api/auth/api-tokens/authorize`, then `csp-auth-token` (or
//!   `Authorization: Bearer`) on `/csp/gateway/am/api/...` invitations, org users (paged list,
//!   `users/search`), member removal and role updates.
//! * **Control** endpoints under `/mock/` (no auth, not journaled, no latency or faults).
//!
//! Every API request is journaled (never credentials: a credential appears only as an opaque
//! label), delayed by the configured latency, and may be answered by a fault: first a
//! scripted one ([`ScriptedFault`], in the order added), else a random 503 (`fault_rate`,
//! seeded), else one drawn from the seeded fault mix ([`FaultMix`]). Status faults answer in
//! the error shape of the API the path belongs to. A fault with `afterEffect` performs the
//! request's operation first (creates the invitation, sends the email) and then fails: the
//! client cannot know the outcome. Fault kinds ([`FaultKind`], JSON `kind`):
//!
//! | `kind` | the client sees |
//! |---|---|
//! | `status` (default) `{status, retryAfter?}` | that status, in the API's error shape, with `Retry-After` when given |
//! | `timeout` | nothing: the request is held until the client gives up (or the mock stops) |
//! | `reset` | the connection closed after the request was read, no answer |
//! | `truncated` | a 200 whose `Content-Length` is larger than the body sent before the connection closes |
//! | `hugeBody` `{bytes}` | a 200 with a valid JSON body of `bytes` bytes (a long string) |
//! | `redirect` `{location, status?}` | a 301/302/303/307/308 (default 302) to `location` |
//! | `nonJson` | a 200 with a `text/html` page |
//! | `errorBody200` | a 200 whose body is an error: `{"status":{"result":"ERROR","message":…,"code":400}}` (a `CspErrorResponse` on OrgInvitation paths) |
//! | `unknownUsers` | the real answer naming users never asked for / not existing: `validateUsers` gains a valid user and an invalid identifier, lists (users, invitations, org members, search) gain an entry, a single user or invitation names someone else. Without `afterEffect` it is computed on a scratch copy of the state, so nothing changes |
//! | `body` `{status?, body}` | that status (default 200) with exactly that body as `application/json`: answers of a wrong shape |
//! | `late` `{delayMs}` | the request is held for `delayMs`, then performed and answered as usual: a client with a shorter timeout gives up, and the request acts after it did |
//!
//! A scripted fault may also match on the request body (`bodyContains`, e.g. one address of a
//! batch).
//!
//! Control endpoints (JSON; for benchmarks and demos running the mock out of process):
//!
//! | request | effect |
//! |---|---|
//! | `GET /mock/requests` / `DELETE /mock/requests` | the journal ([`JournalEntry`] list: `seq`, `method`, `path`, `query`, `body`, `status` (0 = no answer), `at`, `offsetMicros` (arrival on the mock's monotonic clock), `answeredMicros`, `auth`, `credential` (opaque label), `contentType`, `fault`, `faultKind`, `performed`, `retryAfter`) / clear it |
//! | `GET /mock/calls` | calls per operation since the journal was cleared (`{"list members": 50, "search members": 3, …}`, see [`JournalEntry::operation`]) |
//! | `GET /mock/retry-after-violations` | requests that arrived before an earlier `Retry-After` of the same API family and credential allowed ([`RetryAfterViolation`] list) |
//! | `POST /mock/faults` `{method?, pathPrefix?, bodyContains?, kind?, status?, body?, bytes?, location?, retryAfter?, delayMs?, times?, afterEffect?, message?}` | add a [`ScriptedFault`] (kinds above; `times` default 1; `message`: a status fault's error message); `GET` lists, `DELETE` clears |
//! | `PUT /mock/settings` `{latencyMs?, faultRate?, faultMix?, token?}` | change latency / random 503 rate / the fault mix (`faultMix`: `{serverError, tooManyRequests, retryAfterSecs, timeout, truncated, reset, afterEffect, tokenExchange}`, `null` or `{}` turns it off) / rotate the accepted API token ([`MockApi::set_token`]); `GET` shows them (never the token) |
//! | `POST /mock/users` (UserModel-ish JSON) | seed an existing UserInvite user |
//! | `POST /mock/usergroups` `{id?, name}` | seed a user group |
//! | `POST /mock/org/members` `{username, organizationRoles?: [names]}`, or a list of those or of usernames | seed CSP org members (a list answers `{added, total}`) |
//! | `POST /mock/users/{id}/login` | the invited user logs in (`lastSuccessfulLogin`) |
//! | `POST /mock/org/invitations/{username}/redeem` | the invited person accepts (404 if none pending): the invitation becomes `REDEEMED` and the person a member |
//! | `POST /mock/expire` | every pending invitation (both APIs) expires now |
//! | `GET /mock/state` | `{users, userGroups, orgInvitations, orgMembers, emailsSent, emails, liveAccessTokens}` |
//!
//! The fault mix ([`FaultMix`], `MockConfig::fault_mix` or `faultMix`) draws, per API request
//! (not the token exchange unless `tokenExchange`), one of: a server error (500/502/503/504
//! evenly), a 429 (with `Retry-After: retryAfterSecs`), a timeout, a truncated 200 or a reset;
//! `afterEffect` is the probability that a faulted *mutating* request (not GETs, not
//! `validateUsers`) takes effect first — never for 429 and 503, which say nothing was done.
//!
//! `Retry-After` bookkeeping: the journal records when each request arrived and when its answer
//! left on a monotonic clock, and [`MockApi::retry_after_violations`] lists requests of the same
//! [`ApiFamily`] and credential that arrived inside a `Retry-After` window answered before
//! (the token exchange keeps its own windows, as it may be another host).
//!
//! Choices where the API documents are silent:
//! * UserInvite invite of an existing user fails the whole batch with
//!   `User with id <email> is already created in our system.` — except a user who never logged
//!   in and whose 24 h activation link expired: that is a re-send (new email, new expiry, the
//!   request's permissions/groups/roles replace the old ones). Users seeded or created without
//!   an email are "already created". With `MockConfig::resend_to_invited` every invited user
//!   who never logged in is re-sent to, as an API that does send again.
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
//! * OrgInvitation: organization roles must be known (`org_owner`, `org_member`, `org_admin`,
//!   `platform_operator`, `read_only_operator`, `billing_read_only`, and those added with
//!   [`MockApi::seed_org_role`]); an unknown one refuses the whole request with a 400 whose
//!   message names the role, not a user.
//! * OrgInvitation: inviting a username with a pending invitation creates another invitation and
//!   sends another email (the conservative assumption for exactly-once tests); members are
//!   skipped silently (no email); no `organizationRoles` means `org_member`; no email with
//!   `skipNotify`, `skipNotifyRegistration` or `notifyUsersOfRegistration: false`. Expired
//!   invitations stay `AVAILABLE` with `expirationTime` in the past. Role details appear in the
//!   invitation list only with `?expand`. A wrong API token in the exchange is a 400
//!   (`invalid_grant`). CSP errors alternate `moduleCode` between `"540"` and `540`.
//! * OrgInvitation user search (`users/search?userSearchTerm=`): case-insensitive "contains" on
//!   username, first name, last name and email, members in the order they joined, the first 20
//!   only. The paged member list (`v2/orgs/{orgId}/users?pageStart&pageLimit`) counts
//!   `pageStart` from 1, allows `pageLimit` up to 200 (default 20) and links `nextLink` /
//!   `prevLink` while there are more.

pub mod cli;
mod control;
mod faults;
mod journal;
mod orginvitation;
mod pipeline;
mod server;
mod state;
mod userinvite;
mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use jiff::SignedDuration;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use self::faults::{FaultKind, FaultMix, ScriptedFault};
pub use self::journal::{ApiFamily, JournalEntry, RetryAfterViolation, invite_requests_by_address};

use self::journal::{CredentialLabels, Journal};
use self::state::State;

/// Configuration of a mock.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The UserInvite API token, and the CSP API token accepted by the token exchange.
    pub token: String,
    /// Added to every API request (not to `/mock/` control requests). Default 0.
    pub latency: Duration,
    /// Probability (0..=1) that an API request is answered by a random 503.
    pub fault_rate: f64,
    /// The seeded random mix of faults (all zero, the default, injects none).
    pub fault_mix: FaultMix,
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
    /// The largest page the member listing returns, whatever `pageLimit` asks (default 200,
    /// the documented maximum): a smaller one is a server that returns less than asked.
    pub max_member_page: usize,
    /// A hostile organization: the member listing never ends (every page is full of new
    /// members and links to the next one).
    pub endless_members: bool,
    /// UserInvite: an API that does send again. Inviting a user who was invited and never
    /// logged in answers 200 and sends the invitation email again (new expiry, the request's
    /// permissions/groups/roles), instead of refusing the batch as "already created". Off by
    /// default; exactly-once tests run against both behaviours.
    pub resend_to_invited: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            token: "mock-token".to_string(),
            latency: Duration::ZERO,
            fault_rate: 0.0,
            fault_mix: FaultMix::default(),
            seed: 0,
            access_token_ttl: Duration::from_secs(1799),
            invitation_ttl_userinvite: SignedDuration::from_hours(24),
            invitation_ttl_org: SignedDuration::from_hours(7 * 24),
            organization_id: "mock-org".to_string(),
            customer: "mock".to_string(),
            multi_tenant_identifiers: false,
            max_member_page: 200,
            endless_members: false,
            resend_to_invited: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    latency: Duration,
    fault_rate: f64,
    fault_mix: FaultMix,
}

/// Shared state behind a [`MockApi`].
#[derive(Debug)]
pub(crate) struct Inner {
    state: Mutex<State>,
    journal: Mutex<Journal>,
    labels: Mutex<CredentialLabels>,
    faults: Mutex<Vec<ScriptedFault>>,
    settings: Mutex<Settings>,
    fault_rng: Mutex<StdRng>,
    mix_rng: Mutex<StdRng>,
    error_seq: AtomicU64,
    ghost_seq: AtomicU64,
    /// Origin of the journal's monotonic offsets.
    started: Instant,
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
    /// Stops the server (open connections are closed, held requests let go) and waits (at
    /// most 5 s) for it to finish.
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

    /// Requests that came earlier than a `Retry-After` allowed (see
    /// [`MockApi::retry_after_violations`]).
    pub fn retry_after_violations(&self) -> Vec<RetryAfterViolation> {
        self.api.retry_after_violations()
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
    /// A mock with fresh state. An invalid `fault_mix` (see [`FaultMix::validate`]) is
    /// ignored with a warning.
    pub fn new(config: MockConfig) -> MockApi {
        let fault_mix = match config.fault_mix.validate() {
            Ok(()) => config.fault_mix,
            Err(e) => {
                tracing::warn!(error = %e, "mock: fault mix ignored");
                FaultMix::default()
            }
        };
        let settings = Settings {
            latency: config.latency,
            fault_rate: clamp_rate(config.fault_rate),
            fault_mix,
        };
        let fault_rng = StdRng::seed_from_u64(config.seed);
        let mix_rng = StdRng::seed_from_u64(wire::mix(config.seed ^ 0xfa17_3d1c));
        MockApi {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(config)),
                journal: Mutex::new(Journal::default()),
                labels: Mutex::new(CredentialLabels::default()),
                faults: Mutex::new(Vec::new()),
                settings: Mutex::new(settings),
                fault_rng: Mutex::new(fault_rng),
                mix_rng: Mutex::new(mix_rng),
                error_seq: AtomicU64::new(0),
                ghost_seq: AtomicU64::new(1),
                started: Instant::now(),
            }),
        }
    }

    /// The router: both APIs plus the `/mock/` control endpoints. Served by anything but
    /// [`MockApi::serve`], `reset` faults end in an empty 200 instead of a dropped connection.
    pub fn router(&self) -> Router {
        control::routes()
            .fallback(pipeline::api_entry)
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes; then closes every connection.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve(self.router(), listener, shutdown).await
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
        lock(&self.inner.journal).entries().to_vec()
    }

    /// Invite requests per address in the journal kept ([`invite_requests_by_address`]).
    pub fn invite_requests(&self) -> BTreeMap<String, usize> {
        invite_requests_by_address(lock(&self.inner.journal).entries())
    }

    /// Calls per operation since the journal was last cleared: `list members`,
    /// `search members`, `list invitations`, `invite users`, `revoke invitation`,
    /// `exchange token`, … (see [`JournalEntry::operation`]). Faulted calls count too.
    pub fn calls_by_operation(&self) -> BTreeMap<String, usize> {
        journal::calls_by_operation(lock(&self.inner.journal).entries())
    }

    /// Forgets the journal.
    pub fn clear_journal(&self) {
        lock(&self.inner.journal).clear();
    }

    /// Requests (of the journal kept) that arrived earlier than a `Retry-After` allowed: after
    /// an answer with `Retry-After: N` left, any request of the same [`ApiFamily`] and
    /// credential (the token exchange only with token exchanges) arriving within N seconds.
    /// Requests already in flight when that answer left do not count.
    pub fn retry_after_violations(&self) -> Vec<RetryAfterViolation> {
        journal::retry_after_violations(lock(&self.inner.journal).entries())
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

    /// Rotates the API token: from now on only `token` is accepted (UserInvite requests and
    /// the CSP token exchange). Access tokens issued before stay valid until they expire.
    pub fn set_token(&self, token: &str) {
        self.state().cfg.token = token.to_string();
    }

    /// CSP access tokens issued by the token exchange so far (expired ones included).
    pub fn access_tokens(&self) -> Vec<String> {
        self.state().access_tokens.keys().cloned().collect()
    }

    /// Sets the latency added to every API request.
    pub fn set_latency(&self, d: Duration) {
        lock(&self.inner.settings).latency = d;
    }

    /// Sets the probability of a random 503.
    pub fn set_fault_rate(&self, r: f64) {
        lock(&self.inner.settings).fault_rate = clamp_rate(r);
    }

    /// Replaces the fault mix (`FaultMix::default()` turns it off); refuses an invalid one.
    pub fn set_fault_mix(&self, mix: FaultMix) -> Result<(), String> {
        mix.validate()?;
        lock(&self.inner.settings).fault_mix = mix;
        Ok(())
    }

    /// The current fault mix.
    pub fn fault_mix(&self) -> FaultMix {
        lock(&self.inner.settings).fault_mix
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
        self.seed_org_members([username]);
    }

    /// Seeds many existing members of the CSP organization (role `org_member`) at once, in
    /// order; usernames already members are skipped. Returns how many were added. Fast enough
    /// for organizations of tens of thousands.
    pub fn seed_org_members<I, S>(&self, usernames: I) -> usize
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut st = self.state();
        let roles = vec![st.binding("org_member")];
        let before = st.members.len();
        for u in usernames {
            st.add_member(u.as_ref(), roles.clone(), Vec::new(), Vec::new());
        }
        st.members.len() - before
    }

    /// CSP: makes the organization know another organization role (invitations naming a role
    /// it does not know are refused with a 400 naming no user).
    pub fn seed_org_role(&self, name: &str) {
        self.state().org_roles.insert(name.to_string());
    }

    /// CSP: removes a member from the organization (as an admin would); false when not one.
    pub fn remove_org_member(&self, username: &str) -> bool {
        let mut st = self.state();
        let Some(i) = st.member_index(username) else {
            return false;
        };
        let id = st.members[i].user_id.clone();
        st.remove_members(&[id]) == 1
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
        let now = Instant::now();
        for t in self.state().access_tokens.values_mut() {
            t.expires = t.expires.min(now);
        }
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
}
