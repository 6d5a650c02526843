//! Client of the organization-invitation API of the cloud services platform (seed 002):
//! `POST {url}/csp/gateway/am/api/orgs/{organizationId}/invitations` (202, no body).
//!
//! The Secret holds an API token, exchanged at
//! `{tokenUrl | url}/csp/gateway/am/api/auth/api-tokens/authorize` for an access token that is
//! cached, refreshed shortly before `expires_in` runs out and once on a 401, and sent as
//! `csp-auth-token`. Because the invite call returns no ids, outcomes are read back from the
//! organization's invitations and members.
//!
//! Lookups are answered from what the client keeps, read the cheaper way: membership
//! (the user search per address or the paged listing, whichever costs fewer
//! calls, kept for [`MEMBER_TTL`] and never re-read because of this client's own changes) and
//! the invitations (read once per lookup window, shared by every lookup waiting for it,
//! single-flight). The invitations a lookup sees were read after it began, so a person who
//! accepted an invitation (`REDEEMED`) or was invited by someone else meanwhile is seen
//! before any invitation is sent.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::SignedDuration;
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

mod isolate;
mod members;
mod snapshot;

use members::MemberCache;
use snapshot::InvitationCache;

use super::{
    ApiError, ApiToken, ConnectError, ErrorCategory, InviteApi, InviteOutcome, InvitePayload,
    InviteRequest, Lookup, Observed, Transport,
    decode::{self, as_i64},
    transport::{Answer, error_from_answer},
};
use crate::api::{ApiFlavor, EndpointConnection, OrgInvitationRequest};

/// How long an organization invitation stays valid.
pub const INVITATION_LIFETIME_DAYS: i64 = 7;

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

/// Client of one OrgInvitation endpoint.
#[derive(Clone)]
pub struct OrgInvitationClient {
    base_url: String,
    token_url: String,
    organization_id: String,
    api_token: ApiToken,
    transport: Transport,
    access: Arc<tokio::sync::Mutex<Option<AccessToken>>>,
    members: Arc<Mutex<MemberCache>>,
    member_fetch: Arc<tokio::sync::Mutex<()>>,
    invitations: Arc<Mutex<InvitationCache>>,
    invitation_fetch: Arc<tokio::sync::Mutex<()>>,
    /// The budget the last lookup went past, if it did.
    over_budget: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for OrgInvitationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgInvitationClient")
            .field("base_url", &self.base_url)
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
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
        Some(url) => super::identity::canonical_url(url)?,
        None => base_url.to_string(),
    };
    Ok(OrgInvitationClient {
        base_url: base_url.trim_end_matches('/').to_string(),
        token_url,
        organization_id: organization_id.to_string(),
        api_token,
        transport,
        access: Arc::default(),
        members: Arc::default(),
        member_fetch: Arc::default(),
        invitations: Arc::default(),
        invitation_fetch: Arc::default(),
        over_budget: Arc::default(),
    })
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
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
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

    fn batch_key(&self, payload: &InvitePayload) -> String {
        let InvitePayload::Org(payload) = payload else {
            return String::new();
        };
        let mut payload = (**payload).clone();
        payload.usernames.clear();
        serde_json::to_string(&Some(payload)).unwrap_or_default()
    }

    async fn verify_credentials(&self) -> Result<(), ApiError> {
        self.access_token(false).await.map(|_| ())
    }

    fn limit_exceeded(&self) -> Option<String> {
        self.over_budget.lock().expect("lock").clone()
    }

    async fn look_up(&self, lookups: &[Lookup]) -> Result<BTreeMap<String, Observed>, ApiError> {
        if lookups.is_empty() {
            return Ok(BTreeMap::new());
        }
        // Invitations read after this lookup began: current for every address asked.
        let since = Instant::now();
        let emails: Vec<String> = lookups.iter().map(|l| l.email.clone()).collect();
        let (members, invitations) = self
            .within_budget(async {
                let members = self.membership(&emails).await?;
                Ok((members, self.invitations_since(since).await?))
            })
            .await?;
        Ok(snapshot::observe_all(&emails, &members, &invitations)
            .into_iter()
            .collect())
    }

    async fn invite(
        &self,
        requests: &[InviteRequest],
        send_by: Instant,
    ) -> BTreeMap<String, InviteOutcome> {
        // The requests of one resource share its payload: that is how a batch's usernames are
        // told apart by resource (a refusal is only ever inferred within one resource).
        let mut resources: Vec<&std::sync::Arc<OrgInvitationRequest>> = Vec::new();
        let (mut usernames, mut outcomes) = (Vec::new(), BTreeMap::new());
        for r in requests {
            let InvitePayload::Org(payload) = &r.payload else {
                let message = "not an OrgInvitation request".to_string();
                outcomes.insert(r.email.clone(), InviteOutcome::Rejected { message });
                continue;
            };
            let resource = match resources
                .iter()
                .position(|s| std::sync::Arc::ptr_eq(s, payload))
            {
                Some(i) => i,
                None => {
                    resources.push(payload);
                    resources.len() - 1
                }
            };
            usernames.push((r.email.clone(), resource));
        }
        let Some(payload) = resources.first() else {
            return outcomes;
        };
        let sent = self.invite_isolating(payload, usernames, send_by).await;
        outcomes.extend(sent);
        outcomes
    }

    async fn enforce(
        &self,
        _identifier: &str,
        _target: &super::UserGrants,
        _actual: &super::UserGrants,
    ) -> Result<Vec<String>, ApiError> {
        // Grants of organization members are not managed (see docs/resources.md).
        Ok(Vec::new())
    }

    async fn remove(
        &self,
        email: &str,
        identifier: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        // Only the invitation this resource sent, by its reference, and only while it is
        // still pending: never by username (that would revoke whoever invited the person
        // last), and members stay in the organization.
        let Some(reference) = identifier.filter(|r| r.starts_with('/')) else {
            tracing::debug!(
                email,
                "no invitation reference recorded; nothing is revoked"
            );
            return Ok(None);
        };
        // Read now (or by a read that started now): the invitation may have changed since.
        let pending = self
            .invitations_since(Instant::now())
            .await?
            .iter()
            .any(|i| i.ref_link == reference && i.status == "AVAILABLE");
        if !pending {
            return Ok(None);
        }
        let result = self
            .call("revoke invitation", Some(None), |t| {
                self.request(Method::DELETE, reference, t)
            })
            .await;
        match result {
            Ok(_) => {
                self.revoked(reference);
                Ok(Some(format!("revoked invitation {reference}")))
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
