//! Client of the organization-invitation API of the cloud services platform (seed 002):
//! `POST {url}/csp/gateway/am/api/orgs/{organizationId}/invitations` (202, no body).
//!
//! The Secret holds an API token, exchanged at
//! `{tokenUrl | url}/csp/gateway/am/api/auth/api-tokens/authorize` for an access token that is
//! cached, refreshed shortly before `expires_in` runs out and once on a 401, and sent as
//! `csp-auth-token`. Because the invite call returns no ids, outcomes are read back from
//! `GET …/invitations` and the organization's users.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    ApiError, ApiToken, ErrorCategory, InviteApi, InviteResult, Observed, Transport,
    decode::{self, as_i64},
    transport::{Answer, error_from_answer},
};
use crate::api::{ApiFlavor, UserInvitationSpec};

/// How long an organization invitation stays valid.
pub const INVITATION_LIFETIME_DAYS: i64 = 7;

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
    /// The invited username (email).
    pub username: String,
    /// AVAILABLE, REDEEMED or REVOKED.
    pub status: String,
    /// Reference link of the invitation.
    pub ref_link: String,
    /// When it was generated.
    pub generated_at: Option<DateTime<Utc>>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
}

impl OrgInvitationClient {
    /// The HTTP transport of this client.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// A client for organization `organization_id` at `base_url`; the API token is exchanged
    /// at `token_url` (default: `base_url`).
    pub fn new(
        base_url: &str,
        token_url: Option<&str>,
        organization_id: &str,
        api_token: ApiToken,
        transport: Transport,
    ) -> OrgInvitationClient {
        let base_url = base_url.trim_end_matches('/').to_string();
        let token_url = token_url
            .filter(|u| !u.is_empty())
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| base_url.clone());
        OrgInvitationClient {
            base_url,
            token_url,
            organization_id: organization_id.to_string(),
            api_token,
            transport,
            access: Arc::default(),
        }
    }

    fn org_path(&self) -> String {
        format!(
            "/csp/gateway/am/api/orgs/{}",
            url::form_urlencoded::byte_serialize(self.organization_id.as_bytes())
                .collect::<String>()
        )
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
            message: e.to_string(),
        })?;
        let token = value
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::Decode {
                operation: "exchange token",
                message: "no access_token in the answer".into(),
            })?
            .to_string();
        let expires_in = value
            .get("expires_in")
            .and_then(as_i64)
            .unwrap_or(1799)
            .max(1) as u64;
        // Refresh a minute early, or at half-life for very short-lived tokens.
        let margin = Duration::from_secs(60).min(Duration::from_secs(expires_in) / 2);
        *access = Some(AccessToken {
            value: token.clone(),
            refresh_at: Instant::now() + Duration::from_secs(expires_in) - margin,
        });
        Ok(token)
    }

    /// Sends an authenticated request, fetching a new access token and retrying once on 401.
    async fn call(
        &self,
        operation: &'static str,
        idempotent: bool,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Answer, ApiError> {
        self.call_by(operation, idempotent, build, None).await
    }

    /// [`OrgInvitationClient::call`] with a send deadline for non-idempotent requests.
    async fn call_by(
        &self,
        operation: &'static str,
        idempotent: bool,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        send_by: Option<Instant>,
    ) -> Result<Answer, ApiError> {
        let mut refreshed = false;
        loop {
            let token = self.access_token(refreshed).await?;
            let result = if idempotent {
                self.transport.send_read(operation, || build(&token)).await
            } else {
                self.transport
                    .send_by(operation, build(&token), send_by)
                    .await
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

    /// Exchanges the API token for an access token, unless a valid one is cached.
    pub async fn verify_credentials(&self) -> Result<(), ApiError> {
        self.access_token(false).await.map(|_| ())
    }

    /// Every invitation of the organization.
    pub async fn list_invitations(&self) -> Result<Vec<OrgInvitation>, ApiError> {
        let path = format!("{}/invitations", self.org_path());
        let answer = self
            .call("list invitations", true, |t| {
                self.request(Method::GET, &path, t)
            })
            .await?;
        let value: Value = serde_json::from_slice(&answer.body).map_err(|e| ApiError::Decode {
            operation: "list invitations",
            message: e.to_string(),
        })?;
        Ok(items(&value).iter().filter_map(invitation).collect())
    }

    /// Usernames (lowercased) of the organization's members, mapped to their user id.
    pub async fn members(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut members = BTreeMap::new();
        let mut page_start = 1u64;
        const PAGE: u64 = 200;
        loop {
            let path = format!(
                "/csp/gateway/am/api/v2/orgs/{}/users?pageStart={page_start}&pageLimit={PAGE}",
                url::form_urlencoded::byte_serialize(self.organization_id.as_bytes())
                    .collect::<String>()
            );
            let answer = self
                .call("list organization users", true, |t| {
                    self.request(Method::GET, &path, t)
                })
                .await?;
            let value: Value =
                serde_json::from_slice(&answer.body).map_err(|e| ApiError::Decode {
                    operation: "list organization users",
                    message: e.to_string(),
                })?;
            let results = items(&value);
            for entry in &results {
                let user = entry.get("user").unwrap_or(entry);
                let name = user
                    .get("username")
                    .or_else(|| user.get("email"))
                    .and_then(Value::as_str);
                if let Some(name) = name {
                    let id = user
                        .get("userId")
                        .and_then(Value::as_str)
                        .unwrap_or(name)
                        .to_string();
                    members.insert(name.to_ascii_lowercase(), id);
                }
            }
            let total = value.get("totalResults").and_then(as_i64).unwrap_or(0) as u64;
            let has_next = value.get("nextLink").is_some_and(|l| !l.is_null());
            if results.is_empty()
                || (!has_next && page_start + PAGE > total.max(1))
                || page_start > 10_000
            {
                break;
            }
            page_start += PAGE;
        }
        Ok(members)
    }

    async fn post_invitation(
        &self,
        spec: &UserInvitationSpec,
        usernames: &[String],
        send_by: Instant,
    ) -> Result<Result<(), String>, ApiError> {
        let Some(request) = &spec.org_invitation else {
            return Ok(Err("spec.orgInvitation is not set".into()));
        };
        let mut body = serde_json::to_value(request).map_err(|e| ApiError::Decode {
            operation: "invite users",
            message: e.to_string(),
        })?;
        body["usernames"] = json!(usernames);
        let path = format!("{}/invitations", self.org_path());
        let result = self
            .call_by(
                "invite users",
                false,
                |t| self.request(Method::POST, &path, t).json(&body),
                Some(send_by),
            )
            .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(ApiError::Rejected { message, .. }) => Ok(Err(message)),
            Err(e) => Err(e),
        }
    }
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

/// A timestamp in epoch milliseconds or seconds, or RFC 3339.
fn timestamp(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let value = value?;
    if let Some(n) = as_i64(value) {
        let millis = if n > 100_000_000_000 { n } else { n * 1000 };
        return Utc.timestamp_opt(millis.div_euclid(1000), 0).single();
    }
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc).trunc_subsecs(0))
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

/// What the invitations and members say about one address: a member wins; otherwise the
/// newest invitation decides.
fn observe_one(
    email: &str,
    invitations: &[OrgInvitation],
    members: &BTreeMap<String, String>,
) -> Observed {
    if let Some(id) = members.get(email) {
        return Observed::Member {
            identifier: id.clone(),
            accepted: true,
            grants: None,
        };
    }
    let newest = invitations
        .iter()
        .filter(|i| i.username == email)
        .max_by_key(|i| (i.generated_at, i.status == "AVAILABLE"));
    match newest {
        Some(i) if i.status == "AVAILABLE" => Observed::PendingInvitation {
            reference: i.ref_link.clone(),
            expires_at: i.expires_at,
            invited_at: i.generated_at,
        },
        Some(i) if i.status == "REVOKED" => Observed::RevokedInvitation {
            reference: i.ref_link.clone(),
        },
        _ => Observed::Absent,
    }
}

impl InviteApi for OrgInvitationClient {
    fn flavor(&self) -> ApiFlavor {
        ApiFlavor::OrgInvitation
    }

    fn invitation_lifetime(&self) -> chrono::Duration {
        chrono::Duration::days(INVITATION_LIFETIME_DAYS)
    }

    async fn observe(&self, emails: &[String]) -> Result<BTreeMap<String, Observed>, ApiError> {
        if emails.is_empty() {
            return Ok(BTreeMap::new());
        }
        let members = self.members().await?;
        let invitations = self.list_invitations().await?;
        Ok(emails
            .iter()
            .map(|e| (e.clone(), observe_one(e, &invitations, &members)))
            .collect())
    }

    async fn invite(
        &self,
        spec: &UserInvitationSpec,
        emails: &[String],
        send_by: Instant,
    ) -> Result<BTreeMap<String, InviteResult>, ApiError> {
        let mut rejected = BTreeMap::new();
        match self.post_invitation(spec, emails, send_by).await? {
            Ok(()) => {}
            Err(message) if emails.len() == 1 => {
                rejected.insert(emails[0].clone(), message);
            }
            Err(_) => {
                // Refused as a whole: send each address alone so each gets its own verdict,
                // skipping any the refused call created after all.
                let now = self.observe(emails).await?;
                for email in emails {
                    if matches!(
                        now.get(email),
                        Some(Observed::Absent) | Some(Observed::RevokedInvitation { .. }) | None
                    ) && let Err(message) = self
                        .post_invitation(spec, std::slice::from_ref(email), send_by)
                        .await?
                    {
                        rejected.insert(email.clone(), message);
                    }
                }
            }
        }
        // The call answers 202 with no body: read the invitations back for their references.
        let confirmed = self.observe(emails).await.unwrap_or_default();
        Ok(emails
            .iter()
            .map(|email| {
                let result = if let Some(message) = rejected.remove(email) {
                    InviteResult::Rejected { message }
                } else {
                    match confirmed.get(email) {
                        Some(Observed::PendingInvitation {
                            reference,
                            expires_at,
                            ..
                        }) => InviteResult::Invited {
                            identifier: reference.clone(),
                            expires_at: *expires_at,
                            warning: None,
                        },
                        Some(Observed::Member { identifier, .. }) => InviteResult::Invited {
                            identifier: identifier.clone(),
                            expires_at: None,
                            warning: Some("added to the organization directly".into()),
                        },
                        _ => InviteResult::Invited {
                            identifier: email.clone(),
                            expires_at: None,
                            warning: Some("the invitation is not listed yet".into()),
                        },
                    }
                };
                (email.clone(), result)
            })
            .collect())
    }

    async fn enforce(
        &self,
        _identifier: &str,
        _desired: &super::UserGrants,
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
        let observed = self
            .observe(std::slice::from_ref(&email.to_string()))
            .await?;
        let Some(Observed::PendingInvitation { reference, .. }) = observed.get(email) else {
            // Members are left in the organization; nothing is pending otherwise.
            return Ok(None);
        };
        if reference.starts_with('/') {
            let result = self
                .call("revoke invitation", false, |t| {
                    self.request(Method::DELETE, reference, t)
                })
                .await;
            match result {
                Ok(_) => return Ok(Some(format!("revoked invitation {reference}"))),
                Err(e)
                    if e.status() == Some(404)
                        || e.category() == ErrorCategory::Configuration
                            && e.status() == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        let path = format!("{}/invitations?action=revoke", self.org_path());
        let body = json!({"usernames": [email]});
        self.call("revoke invitation", false, |t| {
            self.request(Method::POST, &path, t).json(&body)
        })
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
        assert_eq!(list[0].expires_at.unwrap().timestamp(), 1_764_404_800);
        let wrapped = json!({"results": v});
        assert_eq!(items(&wrapped).len(), 3);
    }

    #[test]
    fn members_win_then_the_newest_invitation_decides() {
        let inv = |user: &str, status: &str, at: i64| OrgInvitation {
            username: user.into(),
            status: status.into(),
            ref_link: format!("/{user}/{at}"),
            generated_at: Utc.timestamp_opt(at, 0).single(),
            expires_at: Utc.timestamp_opt(at + 100, 0).single(),
        };
        let invitations = vec![
            inv("a@x.com", "REVOKED", 1),
            inv("a@x.com", "AVAILABLE", 2),
            inv("b@x.com", "AVAILABLE", 1),
            inv("b@x.com", "REVOKED", 2),
            inv("m@x.com", "REDEEMED", 1),
        ];
        let members = BTreeMap::from([("m@x.com".to_string(), "idp:m".to_string())]);
        assert!(
            matches!(observe_one("a@x.com", &invitations, &members), Observed::PendingInvitation { reference, .. } if reference == "/a@x.com/2")
        );
        assert!(matches!(
            observe_one("b@x.com", &invitations, &members),
            Observed::RevokedInvitation { .. }
        ));
        assert_eq!(
            observe_one("m@x.com", &invitations, &members),
            Observed::Member {
                identifier: "idp:m".into(),
                accepted: true,
                grants: None
            }
        );
        assert_eq!(
            observe_one("z@x.com", &invitations, &members),
            Observed::Absent
        );
    }
}
