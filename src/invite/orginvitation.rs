//! Client of the organization-invitation API of the cloud services platform (seed 002):
//! `POST {url}/csp/gateway/am/api/orgs/{organizationId}/invitations` (202, no body).
//!
//! The Secret holds an API token, exchanged at
//! `{tokenUrl | url}/csp/gateway/am/api/auth/api-tokens/authorize` for an access token that is
//! cached, refreshed shortly before `expires_in` runs out and once on a 401, and sent as
//! `csp-auth-token`. Because the invite call returns no ids, outcomes are read back from the
//! organization's invitations and members.
//!
//! Lookups read one **snapshot** of the organization (every member, every invitation), shared
//! by every lookup of the endpoint for a short time and fetched once however many lookups wait
//! for it. A snapshot is never reused across a change this client makes (invite, revoke): a
//! lookup after the change sees it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    ApiError, ApiToken, ConnectError, ErrorCategory, InviteApi, InviteOutcome, InviteRequest,
    Lookup, Observed, Transport,
    decode::{self, as_i64},
    transport::{Answer, error_from_answer},
};
use crate::api::{ApiFlavor, EndpointConnection, OrgInvitationRequest, UserInvitationSpec};

/// How long an organization invitation stays valid.
pub const INVITATION_LIFETIME_DAYS: i64 = 7;

/// How long a snapshot of the organization serves lookups.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(2);

/// Page size of the member listing.
const MEMBER_PAGE: u64 = 200;

/// Most member pages read (a bound against an API that never ends its listing).
const MAX_MEMBER_PAGES: u64 = 10_000;

const TOKEN_PATH: &str = "/csp/gateway/am/api/auth/api-tokens/authorize";

#[derive(Clone)]
struct AccessToken {
    value: String,
    refresh_at: Instant,
}

/// The organization as read at one moment: members (lowercased username → user id) and
/// every invitation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgSnapshot {
    /// Members, lowercased username → user id.
    pub members: BTreeMap<String, String>,
    /// Every invitation.
    pub invitations: Vec<OrgInvitation>,
}

#[derive(Default)]
struct SnapshotCache {
    /// Bumped when a change starts and when it ends: a snapshot is reused only within the
    /// epoch its read started in.
    epoch: u64,
    cached: Option<(u64, Instant, Arc<OrgSnapshot>)>,
}

/// Client of one OrgInvitation endpoint.
#[derive(Clone)]
pub struct OrgInvitationClient {
    base_url: String,
    token_url: String,
    organization_id: String,
    api_token: ApiToken,
    transport: Transport,
    access: Arc<tokio::sync::Mutex<Option<AccessToken>>>,
    snapshots: Arc<Mutex<SnapshotCache>>,
    snapshot_fetch: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for OrgInvitationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgInvitationClient")
            .field("base_url", &self.base_url)
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
}

/// One invitation as listed by the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgInvitation {
    /// The invited username (email), lowercased.
    pub username: String,
    /// AVAILABLE, REDEEMED or REVOKED.
    pub status: String,
    /// Reference link of the invitation.
    pub ref_link: String,
    /// When it was generated.
    pub generated_at: Option<Timestamp>,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
}

/// The client of organization `connection.organizationId` at `base_url` (canonical); the API
/// token is exchanged at `tokenUrl` (default: `base_url`).
pub fn connect(
    base_url: &str,
    connection: &EndpointConnection,
    api_token: ApiToken,
    transport: Transport,
) -> Result<OrgInvitationClient, ConnectError> {
    let organization_id = connection
        .organization_id
        .as_deref()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| {
            ConnectError::Setting("organizationId is required for an OrgInvitation endpoint".into())
        })?;
    let token_url = match connection.token_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => super::identity::canonical_url(url).map_err(ConnectError::Setting)?,
        None => base_url.to_string(),
    };
    Ok(OrgInvitationClient {
        base_url: base_url.trim_end_matches('/').to_string(),
        token_url,
        organization_id: organization_id.to_string(),
        api_token,
        transport,
        access: Arc::default(),
        snapshots: Arc::default(),
        snapshot_fetch: Arc::default(),
    })
}

/// What one invite call answered.
enum Posted {
    Sent,
    Refused(String),
}

impl OrgInvitationClient {
    fn org_path(&self) -> String {
        format!("/csp/gateway/am/api/orgs/{}", encode(&self.organization_id))
    }

    /// The cached access token, exchanging the API token when there is none or it is about
    /// to expire.
    async fn access_token(&self, force_refresh: bool) -> Result<String, ApiError> {
        let mut access = self.access.lock().await;
        if !force_refresh
            && let Some(token) = access.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        let url = format!("{}{TOKEN_PATH}", self.token_url);
        let request = self
            .transport
            .request(Method::POST, &url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[("api_token", self.api_token.expose())]);
        let answer = self.transport.send_once("exchange token", request).await?;
        if !answer.status.is_success() {
            let error = error_from_answer("exchange token", &answer);
            return Err(match error.category() {
                ErrorCategory::Transient => error,
                _ => ApiError::Configuration {
                    operation: "exchange token",
                    status: answer.status.as_u16(),
                    message: format!(
                        "the token exchange refused the API token: {}",
                        decode::error_message(&answer.body).unwrap_or_default()
                    ),
                },
            });
        }
        let value: Value = serde_json::from_slice(&answer.body).map_err(|e| ApiError::Decode {
            operation: "exchange token",
            message: format!("not JSON: {e}"),
        })?;
        let token = value
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Decode {
                operation: "exchange token",
                message: "no access_token in the answer".into(),
            })?
            .to_string();
        let expires_in = value
            .get("expires_in")
            .and_then(as_i64)
            .unwrap_or(1799)
            .clamp(1, 24 * 3600) as u64;
        // Refresh a minute early, or at half-life for very short-lived tokens.
        let margin = Duration::from_secs(60).min(Duration::from_secs(expires_in) / 2);
        *access = Some(AccessToken {
            value: token.clone(),
            refresh_at: Instant::now() + Duration::from_secs(expires_in) - margin,
        });
        Ok(token)
    }

    /// Sends an authenticated request, fetching a new access token and retrying once on 401.
    /// Reads are retried on transient errors; changes are sent once, never after `send_by`.
    async fn call(
        &self,
        operation: &'static str,
        change: Option<Option<Instant>>,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Answer, ApiError> {
        let mut refreshed = false;
        loop {
            let token = self.access_token(refreshed).await?;
            let result = match change {
                None => self.transport.send_read(operation, || build(&token)).await,
                Some(send_by) => {
                    self.transport
                        .send_mutation(operation, build(&token), send_by)
                        .await
                }
            };
            match result {
                Err(e) if e.status() == Some(401) && !refreshed => {
                    tracing::debug!(
                        operation,
                        "access token refused; exchanging the API token again"
                    );
                    refreshed = true;
                }
                // Every call is scoped to the organization: 404 means it does not exist.
                Err(ApiError::Rejected {
                    status: 404,
                    message,
                    ..
                }) => {
                    return Err(ApiError::Configuration {
                        operation,
                        status: 404,
                        message: format!("organization {:?}: {message}", self.organization_id),
                    });
                }
                other => return other,
            }
        }
    }

    fn request(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.transport
            .request(method, &format!("{}{path}", self.base_url))
            .header("csp-auth-token", token)
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// Runs a change (invite, revoke) between two epoch bumps, so no snapshot read before or
    /// during it is reused after it.
    async fn changing<T>(&self, change: impl Future<Output = T>) -> T {
        self.snapshots.lock().expect("lock").epoch += 1;
        let result = change.await;
        self.snapshots.lock().expect("lock").epoch += 1;
        result
    }

    /// A snapshot of the organization no older than [`SNAPSHOT_TTL`] and read after this
    /// client's last change; one read serves every caller waiting for it.
    pub async fn snapshot(&self) -> Result<Arc<OrgSnapshot>, ApiError> {
        let usable = |cache: &SnapshotCache| {
            cache.cached.as_ref().and_then(|(epoch, at, snapshot)| {
                (*epoch == cache.epoch && at.elapsed() < SNAPSHOT_TTL).then(|| snapshot.clone())
            })
        };
        if let Some(snapshot) = usable(&self.snapshots.lock().expect("lock")) {
            return Ok(snapshot);
        }
        let _single_flight = self.snapshot_fetch.lock().await;
        let epoch = {
            let cache = self.snapshots.lock().expect("lock");
            if let Some(snapshot) = usable(&cache) {
                return Ok(snapshot);
            }
            cache.epoch
        };
        let started = Instant::now();
        let snapshot = Arc::new(OrgSnapshot {
            members: self.members().await?,
            invitations: self.list_invitations().await?,
        });
        let mut cache = self.snapshots.lock().expect("lock");
        if cache.epoch == epoch {
            cache.cached = Some((epoch, started, snapshot.clone()));
        }
        Ok(snapshot)
    }

    /// Every invitation of the organization.
    pub async fn list_invitations(&self) -> Result<Vec<OrgInvitation>, ApiError> {
        let path = format!("{}/invitations", self.org_path());
        let answer = self
            .call("list invitations", None, |t| {
                self.request(Method::GET, &path, t)
            })
            .await?;
        let value: Value = serde_json::from_slice(&answer.body).map_err(|e| ApiError::Decode {
            operation: "list invitations",
            message: format!("not JSON: {e}"),
        })?;
        Ok(items(&value).iter().filter_map(invitation).collect())
    }

    /// Usernames (lowercased) of every member of the organization, mapped to their user id.
    pub async fn members(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut members = BTreeMap::new();
        for page in 0..MAX_MEMBER_PAGES {
            let start = 1 + page * MEMBER_PAGE;
            let path = format!(
                "/csp/gateway/am/api/v2/orgs/{}/users?pageStart={start}&pageLimit={MEMBER_PAGE}",
                encode(&self.organization_id)
            );
            let answer = self
                .call("list organization users", None, |t| {
                    self.request(Method::GET, &path, t)
                })
                .await?;
            let value: Value =
                serde_json::from_slice(&answer.body).map_err(|e| ApiError::Decode {
                    operation: "list organization users",
                    message: format!("not JSON: {e}"),
                })?;
            let results = items(&value);
            let before = members.len();
            members.extend(results.iter().filter_map(member));
            let total = value
                .get("totalResults")
                .and_then(as_i64)
                .unwrap_or(0)
                .max(0) as u64;
            let has_next = value.get("nextLink").is_some_and(|l| !l.is_null());
            if results.is_empty()
                || members.len() == before
                || (!has_next && start + MEMBER_PAGE > total)
            {
                return Ok(members);
            }
        }
        Err(ApiError::Decode {
            operation: "list organization users",
            message: format!("the member listing did not end after {MAX_MEMBER_PAGES} pages"),
        })
    }

    /// One invite call for `usernames` with `payload`'s roles.
    async fn post_invitation(
        &self,
        payload: &OrgInvitationRequest,
        usernames: &[String],
        send_by: Instant,
    ) -> Result<Posted, ApiError> {
        let mut body = serde_json::to_value(payload).map_err(|e| ApiError::Decode {
            operation: "invite users",
            message: e.to_string(),
        })?;
        body["usernames"] = json!(usernames);
        let path = format!("{}/invitations", self.org_path());
        let result = self
            .changing(self.call("invite users", Some(Some(send_by)), |t| {
                self.request(Method::POST, &path, t).json(&body)
            }))
            .await;
        match result {
            Ok(_) => Ok(Posted::Sent),
            Err(ApiError::Rejected { message, .. }) => Ok(Posted::Refused(message)),
            Err(e) => Err(e),
        }
    }

    /// Invites `usernames`, isolating refused ones. A refusal names nobody, so the batch is
    /// halved until each refused username is found; but first two usernames of a refused batch
    /// are tried alone: when both are refused with the batch's own message, the shared roles
    /// are at fault and every username is refused without more calls.
    async fn invite_isolating(
        &self,
        payload: &OrgInvitationRequest,
        usernames: Vec<String>,
        send_by: Instant,
    ) -> BTreeMap<String, InviteOutcome> {
        let mut outcomes = BTreeMap::new();
        let mut sent = Vec::new();
        let mut pending = vec![usernames];
        let mut probed = false;
        while let Some(batch) = pending.pop() {
            match self.post_invitation(payload, &batch, send_by).await {
                Ok(Posted::Sent) => sent.extend(batch),
                Ok(Posted::Refused(message)) if batch.len() == 1 => {
                    outcomes.insert(batch[0].clone(), InviteOutcome::Rejected { message });
                }
                Ok(Posted::Refused(message)) if !probed => {
                    probed = true;
                    let rest = self
                        .probe(payload, batch, &message, send_by, &mut outcomes, &mut sent)
                        .await;
                    if !rest.is_empty() {
                        let (a, b) = rest.split_at(rest.len().div_ceil(2));
                        pending.extend([b.to_vec(), a.to_vec()]);
                    }
                }
                Ok(Posted::Refused(_)) => {
                    let (a, b) = batch.split_at(batch.len().div_ceil(2));
                    pending.extend([b.to_vec(), a.to_vec()]);
                }
                Err(error) => {
                    for username in batch {
                        outcomes.insert(username, InviteOutcome::of_error(error.clone()));
                    }
                }
            }
        }
        if !sent.is_empty() {
            self.read_back(&sent, &mut outcomes).await;
        }
        outcomes
    }

    /// Tries the first and the last username of a refused batch alone. Returns the usernames
    /// still to decide (none when both probes were refused like the batch: the roles are at
    /// fault).
    async fn probe(
        &self,
        payload: &OrgInvitationRequest,
        batch: Vec<String>,
        batch_message: &str,
        send_by: Instant,
        outcomes: &mut BTreeMap<String, InviteOutcome>,
        sent: &mut Vec<String>,
    ) -> Vec<String> {
        let probes = [batch[0].clone(), batch[batch.len() - 1].clone()];
        let mut same_refusals = 0;
        for username in &probes {
            match self
                .post_invitation(payload, std::slice::from_ref(username), send_by)
                .await
            {
                Ok(Posted::Sent) => sent.push(username.clone()),
                Ok(Posted::Refused(message)) => {
                    same_refusals += usize::from(message == batch_message);
                    outcomes.insert(username.clone(), InviteOutcome::Rejected { message });
                }
                Err(error) => {
                    // Nothing more is sent: the others were not, so they are retried.
                    outcomes.insert(username.clone(), InviteOutcome::of_error(error.clone()));
                    for other in batch.iter().filter(|u| !probes.contains(u)) {
                        outcomes.insert(other.clone(), InviteOutcome::NotDone(error.clone()));
                    }
                    return Vec::new();
                }
            }
        }
        let rest: Vec<String> = batch.into_iter().filter(|u| !probes.contains(u)).collect();
        if same_refusals == probes.len() {
            for username in rest {
                outcomes.insert(
                    username,
                    InviteOutcome::Rejected {
                        message: batch_message.to_string(),
                    },
                );
            }
            return Vec::new();
        }
        rest
    }

    /// The call answers 202 with no body: read the invitations back for their references.
    async fn read_back(&self, sent: &[String], outcomes: &mut BTreeMap<String, InviteOutcome>) {
        let snapshot = self.snapshot().await.ok();
        for username in sent {
            let observed = snapshot.as_deref().map(|s| observe_one(username, s));
            let outcome = match observed {
                Some(Observed::PendingInvitation {
                    reference,
                    expires_at,
                    ..
                }) => InviteOutcome::Invited {
                    identifier: reference,
                    expires_at,
                    warning: None,
                },
                Some(Observed::Member { identifier, .. }) => InviteOutcome::Invited {
                    identifier,
                    expires_at: None,
                    warning: Some("added to the organization directly".into()),
                },
                _ => InviteOutcome::Invited {
                    identifier: username.clone(),
                    expires_at: None,
                    warning: Some("the invitation is not listed yet".into()),
                },
            };
            outcomes.insert(username.clone(), outcome);
        }
    }
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

fn items(value: &Value) -> Vec<Value> {
    let payload = decode::unwrap_response(value);
    match payload {
        Value::Array(a) => a.clone(),
        Value::Object(o) => ["results", "items", "invitations"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_array).cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn member(entry: &Value) -> Option<(String, String)> {
    let user = entry.get("user").unwrap_or(entry);
    let name = user
        .get("username")
        .or_else(|| user.get("email"))
        .and_then(Value::as_str)?;
    let id = user.get("userId").and_then(Value::as_str).unwrap_or(name);
    Some((name.to_ascii_lowercase(), id.to_string()))
}

/// A timestamp in epoch milliseconds or seconds, or RFC 3339.
fn timestamp(value: Option<&Value>) -> Option<Timestamp> {
    let value = value?;
    if let Some(n) = as_i64(value) {
        let millis = if n > 100_000_000_000 {
            n
        } else {
            n.saturating_mul(1000)
        };
        return Timestamp::from_second(millis.div_euclid(1000)).ok();
    }
    let parsed: Timestamp = value.as_str()?.parse().ok()?;
    Timestamp::from_second(parsed.as_second()).ok()
}

fn invitation(value: &Value) -> Option<OrgInvitation> {
    Some(OrgInvitation {
        username: value
            .get("username")
            .and_then(Value::as_str)?
            .to_ascii_lowercase(),
        status: value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("AVAILABLE")
            .to_ascii_uppercase(),
        ref_link: value
            .get("refLink")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        generated_at: timestamp(value.get("generatedAt")),
        expires_at: timestamp(value.get("expirationTime")),
    })
}

/// What the organization says about one address: a member wins; otherwise the newest
/// invitation decides.
pub fn observe_one(email: &str, snapshot: &OrgSnapshot) -> Observed {
    if let Some(id) = snapshot.members.get(email) {
        return Observed::Member {
            identifier: id.clone(),
            accepted: true,
            grants: None,
        };
    }
    let newest = snapshot
        .invitations
        .iter()
        .filter(|i| i.username == email)
        .max_by_key(|i| (i.generated_at, i.status == "AVAILABLE"));
    match newest {
        Some(i) if i.status == "AVAILABLE" => Observed::PendingInvitation {
            reference: i.ref_link.clone(),
            expires_at: i.expires_at,
            invited_at: i.generated_at,
        },
        Some(i) if i.status == "REDEEMED" => Observed::RedeemedInvitation {
            reference: i.ref_link.clone(),
        },
        Some(i) if i.status == "REVOKED" => Observed::RevokedInvitation {
            reference: i.ref_link.clone(),
        },
        _ => Observed::Absent,
    }
}

#[async_trait::async_trait]
impl InviteApi for OrgInvitationClient {
    fn flavor(&self) -> ApiFlavor {
        ApiFlavor::OrgInvitation
    }

    fn invitation_lifetime(&self) -> SignedDuration {
        SignedDuration::from_hours(24 * INVITATION_LIFETIME_DAYS)
    }

    fn request_timeout(&self) -> Duration {
        self.transport.timeout()
    }

    fn batch_key(&self, spec: &UserInvitationSpec) -> String {
        let mut payload = spec.org_invitation.clone();
        if let Some(p) = payload.as_mut() {
            p.usernames.clear();
        }
        serde_json::to_string(&payload).unwrap_or_default()
    }

    async fn verify_credentials(&self) -> Result<(), ApiError> {
        self.access_token(false).await.map(|_| ())
    }

    async fn observe(&self, lookups: &[Lookup]) -> Result<BTreeMap<String, Observed>, ApiError> {
        if lookups.is_empty() {
            return Ok(BTreeMap::new());
        }
        let snapshot = self.snapshot().await?;
        Ok(lookups
            .iter()
            .map(|l| (l.email.clone(), observe_one(&l.email, &snapshot)))
            .collect())
    }

    async fn invite(
        &self,
        requests: &[InviteRequest],
        send_by: Instant,
    ) -> BTreeMap<String, InviteOutcome> {
        let Some(payload) = requests.first().and_then(|r| r.spec.org_invitation.clone()) else {
            return requests
                .iter()
                .map(|r| {
                    let message = "spec.orgInvitation is not set".to_string();
                    (r.email.clone(), InviteOutcome::Rejected { message })
                })
                .collect();
        };
        let usernames = requests.iter().map(|r| r.email.clone()).collect();
        self.invite_isolating(&payload, usernames, send_by).await
    }

    async fn enforce(
        &self,
        _identifier: &str,
        _target: &super::UserGrants,
        _actual: &super::UserGrants,
    ) -> Result<Vec<String>, ApiError> {
        // Grants of organization members are not managed (see the README).
        Ok(Vec::new())
    }

    async fn remove(
        &self,
        email: &str,
        _identifier: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        let snapshot = self.snapshot().await?;
        let Observed::PendingInvitation { reference, .. } = observe_one(email, &snapshot) else {
            // Members are left in the organization; nothing is pending otherwise.
            return Ok(None);
        };
        if reference.starts_with('/') {
            let result = self
                .changing(self.call("revoke invitation", Some(None), |t| {
                    self.request(Method::DELETE, &reference, t)
                }))
                .await;
            match result {
                Ok(_) => return Ok(Some(format!("revoked invitation {reference}"))),
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        let path = format!("{}/invitations?action=revoke", self.org_path());
        let body = json!({"usernames": [email]});
        self.changing(self.call("revoke invitation", Some(None), |t| {
            self.request(Method::POST, &path, t).json(&body)
        }))
        .await?;
        Ok(Some(format!("revoked the invitation of {email}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitations_decode_leniently() {
        let v = json!([
            {"username": "A@example.com", "status": "AVAILABLE", "refLink": "/x/1",
             "generatedAt": 1_763_800_000_000_i64, "expirationTime": "1764404800000"},
            {"username": "b@example.com", "status": "REVOKED", "refLink": "/x/2", "extra": true},
            {"status": "AVAILABLE"}
        ]);
        let list: Vec<_> = items(&v).iter().filter_map(invitation).collect();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].username, "a@example.com");
        assert_eq!(list[0].expires_at.unwrap().as_second(), 1_764_404_800);
        let wrapped = json!({"results": v});
        assert_eq!(items(&wrapped).len(), 3);
    }

    #[test]
    fn members_win_then_the_newest_invitation_decides() {
        let inv = |user: &str, status: &str, at: i64| OrgInvitation {
            username: user.into(),
            status: status.into(),
            ref_link: format!("/{user}/{at}"),
            generated_at: Timestamp::from_second(at).ok(),
            expires_at: Timestamp::from_second(at + 100).ok(),
        };
        let snapshot = OrgSnapshot {
            invitations: vec![
                inv("a@x.com", "REVOKED", 1),
                inv("a@x.com", "AVAILABLE", 2),
                inv("b@x.com", "AVAILABLE", 1),
                inv("b@x.com", "REVOKED", 2),
                inv("m@x.com", "REDEEMED", 1),
                inv("r@x.com", "REDEEMED", 1),
            ],
            members: BTreeMap::from([("m@x.com".to_string(), "idp:m".to_string())]),
        };
        assert!(
            matches!(observe_one("a@x.com", &snapshot), Observed::PendingInvitation { reference, .. } if reference == "/a@x.com/2")
        );
        assert!(matches!(
            observe_one("b@x.com", &snapshot),
            Observed::RevokedInvitation { .. }
        ));
        assert_eq!(
            observe_one("m@x.com", &snapshot),
            Observed::Member {
                identifier: "idp:m".into(),
                accepted: true,
                grants: None
            }
        );
        // Redeemed but not (yet) listed as a member: accepted, never revoked.
        assert!(matches!(
            observe_one("r@x.com", &snapshot),
            Observed::RedeemedInvitation { .. }
        ));
        assert_eq!(observe_one("z@x.com", &snapshot), Observed::Absent);
    }

    #[test]
    fn timestamps_in_millis_seconds_or_rfc3339() {
        assert_eq!(
            timestamp(Some(&json!(1_700_000_000_000_i64)))
                .unwrap()
                .as_second(),
            1_700_000_000
        );
        assert_eq!(
            timestamp(Some(&json!(1_700_000_000))).unwrap().as_second(),
            1_700_000_000
        );
        assert_eq!(
            timestamp(Some(&json!("2026-11-22T10:00:00.5Z")))
                .unwrap()
                .as_second(),
            Timestamp::from_second(1_795_341_600).unwrap().as_second()
        );
        assert_eq!(timestamp(Some(&json!("soon"))), None);
    }
}
