//! Client of the Invite Users API (seed 000): `POST {url}/api/v2/user/invite`, with
//! existence checks through `POST /api/v2/user/validateUsers` (falling back to
//! `GET /api/v2/user/{id}` on servers that predate it).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    ApiError, ApiToken, InviteApi, InviteResult, Observed, Transport,
    decode::{self, ApiUser},
    transport::error_from_answer,
};
use crate::api::{ApiFlavor, UserInvitationSpec, UserToCreate};

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

impl UserInviteClient {
    /// The HTTP transport of this client.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// A client for the API at `base_url` (e.g. `https://example.wavefront.com`).
    pub fn new(base_url: &str, token: ApiToken, transport: Transport) -> UserInviteClient {
        UserInviteClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
            transport,
            validate_users_supported: Arc::new(AtomicBool::new(true)),
        }
    }

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
    async fn validate_users(&self, ids: &[String]) -> Result<Option<Vec<ApiUser>>, ApiError> {
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
            message: e.to_string(),
        })?;
        let payload = decode::unwrap_response(&value);
        let valid = payload
            .get("validUsers")
            .and_then(Value::as_array)
            .map(|users| users.iter().filter_map(decode::user).collect())
            .unwrap_or_default();
        Ok(Some(valid))
    }

    async fn post_invite_by(
        &self,
        users: &[UserToCreate],
        send_by: std::time::Instant,
    ) -> Result<Result<Option<String>, (u16, String)>, ApiError> {
        let body: Vec<Value> = users.iter().map(invite_body).collect();
        let answer = self
            .transport
            .send_once_by(
                "invite users",
                self.request(Method::POST, "/api/v2/user/invite")
                    .json(&body),
                Some(send_by),
            )
            .await?;
        let status = answer.status;
        if status.is_success() {
            let warning = serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|v| decode::wrapper_warning(&v));
            return Ok(Ok(warning));
        }
        let error = error_from_answer("invite users", &answer);
        match status {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                Err(ApiError::Configuration {
                    operation: "invite users",
                    status: status.as_u16(),
                    message: format!(
                        "{}{}: check the endpoint's url",
                        self.base_url, "/api/v2/user/invite"
                    ),
                })
            }
            _ if error.category() == super::ErrorCategory::Permanent => {
                let message = match &error {
                    ApiError::Rejected { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                Ok(Err((status.as_u16(), message)))
            }
            _ => Err(error),
        }
    }
}

/// The JSON body of one `UserToCreate`. `groups` and `userGroups` are always sent (the server
/// requires them, even empty); `roles` only when set, for servers that predate it.
fn invite_body(user: &UserToCreate) -> Value {
    let mut body = json!({
        "emailAddress": user.email_address.to_ascii_lowercase(),
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

impl InviteApi for UserInviteClient {
    fn flavor(&self) -> ApiFlavor {
        ApiFlavor::UserInvite
    }

    fn invitation_lifetime(&self) -> chrono::Duration {
        chrono::Duration::hours(INVITATION_LIFETIME_HOURS)
    }

    async fn observe(&self, emails: &[String]) -> Result<BTreeMap<String, Observed>, ApiError> {
        let mut found = BTreeMap::new();
        if emails.is_empty() {
            return Ok(found);
        }
        let existing = if self.validate_users_supported.load(Ordering::Relaxed) {
            self.validate_users(emails).await?
        } else {
            None
        };
        match existing {
            Some(users) => {
                for email in emails {
                    let user = users
                        .iter()
                        .find(|u| decode::same_user(email, &u.identifier, u.customer.as_deref()));
                    found.insert(email.clone(), observed(user));
                }
            }
            None => {
                self.validate_users_supported
                    .store(false, Ordering::Relaxed);
                for email in emails {
                    let user = self.get_user(email).await?;
                    found.insert(email.clone(), observed(user.as_ref()));
                }
            }
        }
        Ok(found)
    }

    async fn invite(
        &self,
        spec: &UserInvitationSpec,
        emails: &[String],
        send_by: std::time::Instant,
    ) -> Result<BTreeMap<String, InviteResult>, ApiError> {
        let requested = spec.users.as_deref().unwrap_or_default();
        let users: Vec<UserToCreate> = emails
            .iter()
            .filter_map(|email| {
                requested
                    .iter()
                    .find(|u| u.email_address.eq_ignore_ascii_case(email))
                    .cloned()
            })
            .collect();
        let mut results = BTreeMap::new();
        if users.is_empty() {
            return Ok(results);
        }
        match self.post_invite_by(&users, send_by).await? {
            Ok(warning) => {
                self.record_invited(emails, warning, &mut results).await;
                return Ok(results);
            }
            Err((_, message)) if users.len() == 1 => {
                let email = &emails[0];
                let result = self.refused(email, message).await?;
                results.insert(email.clone(), result);
                return Ok(results);
            }
            Err(_) => {}
        }
        // The batch was refused as a whole because of some of its users. Find out whether any
        // was created anyway, then invite the others one by one so each gets its own verdict.
        let now = self.observe(emails).await?;
        for user in users {
            let email = user.email_address.to_ascii_lowercase();
            if let Some(Observed::Member { identifier, .. }) = now.get(&email) {
                results.insert(
                    email,
                    InviteResult::Invited {
                        identifier: identifier.clone(),
                        expires_at: None,
                        warning: None,
                    },
                );
                continue;
            }
            let result = match self
                .post_invite_by(std::slice::from_ref(&user), send_by)
                .await
            {
                // Past the deadline nothing more is sent: the rest have no result, stay
                // `Inviting`, and are looked up once their requests must have settled.
                Err(ApiError::NotSent { .. }) => break,
                other => other?,
            };
            let result = match result {
                Ok(warning) => {
                    self.record_invited(std::slice::from_ref(&email), warning, &mut results)
                        .await;
                    continue;
                }
                Err((_, message)) => self.refused(&email, message).await?,
            };
            results.insert(email, result);
        }
        Ok(results)
    }
    async fn enforce(
        &self,
        identifier: &str,
        desired: &super::UserGrants,
        actual: &super::UserGrants,
    ) -> Result<Vec<String>, ApiError> {
        let id = encode_segment(identifier);
        let mut changes = Vec::new();
        let add: Vec<&String> = desired
            .user_groups
            .difference(&actual.user_groups)
            .collect();
        if !add.is_empty() {
            let path = format!("/api/v2/user/{id}/addUserGroups");
            self.user_operation(
                "add user groups",
                self.request(Method::POST, &path).json(&add),
            )
            .await?;
            changes.push(format!("added user groups {add:?}"));
        }
        let remove: Vec<&String> = actual
            .user_groups
            .difference(&desired.user_groups)
            .collect();
        if !remove.is_empty() {
            let path = format!("/api/v2/user/{id}/removeUserGroups");
            self.user_operation(
                "remove user groups",
                self.request(Method::POST, &path).json(&remove),
            )
            .await?;
            changes.push(format!("removed user groups {remove:?}"));
        }
        for permission in desired.groups.difference(&actual.groups) {
            let path = format!("/api/v2/user/{id}/grant");
            self.user_operation(
                "grant permission",
                self.request(Method::POST, &path)
                    .form(&[("group", permission)]),
            )
            .await?;
            changes.push(format!("granted {permission}"));
        }
        for permission in actual.groups.difference(&desired.groups) {
            let path = format!("/api/v2/user/{id}/revoke");
            self.user_operation(
                "revoke permission",
                self.request(Method::POST, &path)
                    .form(&[("group", permission)]),
            )
            .await?;
            changes.push(format!("revoked {permission}"));
        }
        if desired.roles != actual.roles {
            // Roles have no per-user add/remove operation: Update User replaces the lists.
            let path = format!("/api/v2/user/{id}");
            let body = json!({
                "identifier": identifier,
                "groups": desired.groups,
                "userGroups": desired.user_groups,
                "roles": desired.roles,
            });
            self.user_operation("update user", self.request(Method::PUT, &path).json(&body))
                .await?;
            changes.push(format!("set roles {:?}", desired.roles));
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
            .send("delete user", self.request(Method::DELETE, &path))
            .await
        {
            Ok(_) => Ok(Some(format!("deleted user {id}"))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl UserInviteClient {
    async fn user_operation(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(), ApiError> {
        self.transport.send(operation, request).await.map(|_| ())
    }

    /// After a successful invite call, reads the identifiers back (the invite answer names
    /// at most one user). If that read fails, the addresses stand in for the identifiers.
    async fn record_invited(
        &self,
        emails: &[String],
        warning: Option<String>,
        results: &mut BTreeMap<String, InviteResult>,
    ) {
        let confirmed = self.observe(emails).await.unwrap_or_default();
        for email in emails {
            let identifier = match confirmed.get(email) {
                Some(Observed::Member { identifier, .. }) => identifier.clone(),
                _ => email.clone(),
            };
            results.insert(
                email.clone(),
                InviteResult::Invited {
                    identifier,
                    expires_at: None,
                    warning: warning.clone(),
                },
            );
        }
    }

    /// The verdict for one refused user: `AlreadyMember` when the user turns out to exist,
    /// otherwise `Rejected` with the API's message.
    async fn refused(&self, email: &str, message: String) -> Result<InviteResult, ApiError> {
        if looks_like_already_exists(&message) {
            let identifier = match self.get_user(email).await? {
                Some(user) => user.identifier,
                None => email.to_string(),
            };
            return Ok(InviteResult::AlreadyMember { identifier });
        }
        Ok(InviteResult::Rejected { message })
    }
}

fn observed(user: Option<&ApiUser>) -> Observed {
    match user {
        Some(user) => Observed::Member {
            identifier: user.identifier.clone(),
            accepted: user.last_successful_login.is_some_and(|t| t > 0),
            grants: Some(super::UserGrants {
                groups: user.groups.iter().cloned().collect(),
                user_groups: user.user_groups.iter().cloned().collect(),
                roles: user.roles.iter().cloned().collect(),
            }),
        },
        None => Observed::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_body_always_carries_groups_and_user_groups() {
        let user = UserToCreate {
            email_address: "Alice@Example.com".into(),
            groups: vec![],
            user_groups: vec![],
            roles: vec![],
        };
        assert_eq!(
            invite_body(&user),
            json!({"emailAddress": "alice@example.com", "groups": [], "userGroups": []})
        );
        let with_roles = UserToCreate {
            roles: vec!["r".into()],
            ..user
        };
        assert_eq!(invite_body(&with_roles)["roles"], json!(["r"]));
    }

    #[test]
    fn already_exists_messages_are_recognized() {
        assert!(looks_like_already_exists(
            "User with id <a@b.c> is already created in our system."
        ));
        assert!(looks_like_already_exists("user already exists"));
        assert!(!looks_like_already_exists("Invalid permission foo"));
    }

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(encode_segment("a+b@example.com"), "a%2Bb%40example.com");
    }
}
