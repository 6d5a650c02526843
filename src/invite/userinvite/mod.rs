//! Client of the Invite Users API (seed 000): `POST {url}/api/v2/user/invite` with a
//! `UserToCreate` array, existence checks through `POST /api/v2/user/validateUsers` (falling
//! back to `GET /api/v2/user/{id}` on servers that predate it), and the user operations of
//! accessPolicy Enforce and deletionPolicy Delete.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use jiff::SignedDuration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

mod isolate;

use super::{
    ApiError, ApiToken, InviteApi, InviteOutcome, InvitePayload, InviteRequest, Lookup, Observed,
    Transport, UserGrants,
    decode::{self, ApiUser},
};
use crate::api::{ApiFlavor, UserToCreate, address};

/// How long an invitation of the UserInvite API stays valid.
pub const INVITATION_LIFETIME_HOURS: i64 = 24;

/// Client of one UserInvite endpoint.
#[derive(Clone, Debug)]
pub struct UserInviteClient {
    base_url: String,
    token: ApiToken,
    transport: Transport,
    validate_users_supported: Arc<AtomicBool>,
}

/// The client of the API at `base_url` (canonical, e.g. `https://example.wavefront.com`).
pub fn connect(base_url: &str, token: ApiToken, transport: Transport) -> UserInviteClient {
    UserInviteClient {
        base_url: base_url.trim_end_matches('/').to_string(),
        token,
        transport,
        validate_users_supported: Arc::new(AtomicBool::new(true)),
    }
}

impl UserInviteClient {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.transport
            .request(method, &format!("{}{path}", self.base_url))
            .bearer_auth(self.token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// `GET /api/v2/user/{id}`: the user, or `None` when the API answers 404.
    pub async fn get_user(&self, id: &str) -> Result<Option<ApiUser>, ApiError> {
        let path = format!("/api/v2/user/{}", encode_segment(id));
        let answer = self
            .transport
            .send_read("get user", || self.request(Method::GET, &path))
            .await;
        match answer {
            Ok(answer) => {
                let users = decode::users(&answer.body).map_err(|message| ApiError::Decode {
                    operation: "get user",
                    message,
                })?;
                Ok(users.into_iter().next())
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /api/v2/user/validateUsers`: the users that exist among `ids`, or `None` when the
    /// server does not know this operation.
    async fn validate_users(&self, ids: &[&str]) -> Result<Option<Vec<ApiUser>>, ApiError> {
        let body = json!(ids);
        let answer = self
            .transport
            .send_read("validate users", || {
                self.request(Method::POST, "/api/v2/user/validateUsers")
                    .json(&body)
            })
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) if matches!(e.status(), Some(404 | 405 | 501)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let value: Value = serde_json::from_slice(&answer.body).map_err(|e| ApiError::Decode {
            operation: "validate users",
            message: format!("not JSON: {e}"),
        })?;
        let payload = decode::unwrap_response(&value);
        if payload
            .get("status")
            .is_some_and(|s| s.get("result") == Some(&json!("ERROR")))
        {
            return Err(ApiError::Decode {
                operation: "validate users",
                message: decode::error_message(&answer.body).unwrap_or_default(),
            });
        }
        // An answer of another shape is an error, not "nobody exists": that would invite
        // existing users.
        let valid = match (payload.get("validUsers"), payload.get("invalidIdentifiers")) {
            (Some(Value::Array(users)), _) => users.iter().filter_map(decode::user).collect(),
            (None | Some(Value::Null), Some(Value::Array(_))) => Vec::new(),
            _ => {
                return Err(ApiError::Decode {
                    operation: "validate users",
                    message: format!(
                        "expected validUsers and invalidIdentifiers, found {}",
                        shape(payload)
                    ),
                });
            }
        };
        Ok(Some(valid))
    }

    async fn user_operation(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(), ApiError> {
        self.transport
            .send_mutation(operation, request, None)
            .await
            .map(|_| ())
    }
}

/// A short description of a JSON value's shape, for errors.
fn shape(value: &Value) -> String {
    decode::excerpt(&value.to_string(), 120)
}

/// A spec address as the person it names: what is sent and what answers are matched with.
fn normalized(email: &str) -> String {
    address::person(email)
}

/// The JSON body of one `UserToCreate`. `groups` and `userGroups` are always sent (the server
/// requires them, even empty); `roles` only when set, for servers that predate it.
fn invite_body(user: &UserToCreate) -> Value {
    let mut body = json!({
        "emailAddress": normalized(&user.email_address),
        "groups": user.groups,
        "userGroups": user.user_groups,
    });
    if !user.roles.is_empty() {
        body["roles"] = json!(user.roles);
    }
    body
}

fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn looks_like_already_exists(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("already") && (m.contains("exist") || m.contains("created") || m.contains("member"))
}

fn observed(user: Option<&ApiUser>) -> Observed {
    match user {
        Some(user) => Observed::Member {
            identifier: user.identifier.clone(),
            accepted: user.last_successful_login.is_some_and(|t| t > 0),
            grants: Some(UserGrants {
                groups: user.groups.iter().cloned().collect(),
                user_groups: user.user_groups.iter().cloned().collect(),
                roles: user.roles.iter().cloned().collect(),
            }),
        },
        None => Observed::Absent,
    }
}

#[async_trait::async_trait]
impl InviteApi for UserInviteClient {
    fn flavor(&self) -> ApiFlavor {
        ApiFlavor::UserInvite
    }

    fn invitation_lifetime(&self) -> SignedDuration {
        SignedDuration::from_hours(INVITATION_LIFETIME_HOURS)
    }

    fn request_timeout(&self) -> Duration {
        self.transport.timeout()
    }

    fn reads_back_identifiers(&self) -> bool {
        true
    }

    async fn verify_credentials(&self) -> Result<(), ApiError> {
        // The API has no side-effect-free check of a token.
        Ok(())
    }

    async fn look_up(&self, lookups: &[Lookup]) -> Result<BTreeMap<String, Observed>, ApiError> {
        let mut found = BTreeMap::new();
        if lookups.is_empty() {
            return Ok(found);
        }
        let ids: BTreeSet<&str> = lookups
            .iter()
            .flat_map(|l| std::iter::once(l.email.as_str()).chain(l.identifier.as_deref()))
            .collect();
        let ids: Vec<&str> = ids.into_iter().collect();
        let existing = if self.validate_users_supported.load(Ordering::Relaxed) {
            self.validate_users(&ids).await?
        } else {
            None
        };
        let users = match existing {
            Some(users) => users,
            None => {
                self.validate_users_supported
                    .store(false, Ordering::Relaxed);
                let mut users = Vec::new();
                for id in ids {
                    users.extend(self.get_user(id).await?);
                }
                users
            }
        };
        for lookup in lookups {
            let user = users.iter().find(|u| lookup.matches(&u.identifier));
            found.insert(lookup.email.clone(), observed(user));
        }
        Ok(found)
    }

    async fn invite(
        &self,
        requests: &[InviteRequest],
        send_by: Instant,
    ) -> BTreeMap<String, InviteOutcome> {
        let mut outcomes = BTreeMap::new();
        let mut users = Vec::new();
        let resends: std::collections::BTreeSet<String> = requests
            .iter()
            .filter(|r| r.resend)
            .map(|r| r.email.clone())
            .collect();
        for request in requests {
            match &request.payload {
                InvitePayload::User(user) => users.push(user),
                InvitePayload::Org(_) => {
                    outcomes.insert(
                        request.email.clone(),
                        InviteOutcome::Rejected {
                            message: "not a UserInvite request".into(),
                        },
                    );
                }
            }
        }
        if !users.is_empty() {
            self.invite_isolating(users, &resends, send_by, &mut outcomes)
                .await;
        }
        outcomes
    }

    async fn enforce(
        &self,
        identifier: &str,
        target: &UserGrants,
        actual: &UserGrants,
    ) -> Result<Vec<String>, ApiError> {
        let id = encode_segment(identifier);
        let mut changes = Vec::new();
        // What `target` has and `actual` lacks is added, the other way round removed.
        let user_groups = [
            ("addUserGroups", "add user groups", "added", target, actual),
            (
                "removeUserGroups",
                "remove user groups",
                "removed",
                actual,
                target,
            ),
        ];
        for (op, operation, done, from, without) in user_groups {
            let ids: Vec<&String> = from.user_groups.difference(&without.user_groups).collect();
            if !ids.is_empty() {
                let path = format!("/api/v2/user/{id}/{op}");
                let request = self.request(Method::POST, &path).json(&ids);
                self.user_operation(operation, request).await?;
                changes.push(format!("{done} user groups {ids:?}"));
            }
        }
        let permissions = [
            ("grant", "grant permission", "granted", target, actual),
            ("revoke", "revoke permission", "revoked", actual, target),
        ];
        for (op, operation, done, from, without) in permissions {
            for permission in from.groups.difference(&without.groups) {
                let path = format!("/api/v2/user/{id}/{op}");
                let request = self.request(Method::POST, &path);
                self.user_operation(operation, request.form(&[("group", permission)]))
                    .await?;
                changes.push(format!("{done} {permission}"));
            }
        }
        if target.roles != actual.roles {
            // Roles have no per-user add/remove operation: Update User replaces the lists, so
            // it is sent with the target of every list (which keeps what `allowed` protects).
            let path = format!("/api/v2/user/{id}");
            let body = json!({
                "identifier": identifier,
                "groups": target.groups,
                "userGroups": target.user_groups,
                "roles": target.roles,
            });
            self.user_operation("update user", self.request(Method::PUT, &path).json(&body))
                .await?;
            changes.push(format!("set roles {:?}", target.roles));
        }
        Ok(changes)
    }

    async fn remove(
        &self,
        email: &str,
        identifier: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        let id = identifier.unwrap_or(email);
        let path = format!("/api/v2/user/{}", encode_segment(id));
        match self
            .transport
            .send_mutation("delete user", self.request(Method::DELETE, &path), None)
            .await
        {
            Ok(_) => Ok(Some(format!("deleted user {id}"))),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
