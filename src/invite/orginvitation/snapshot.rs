//! The organization's invitations, read once per lookup window (shared by every lookup that
//! began before the read, single-flight) and changed in place by this client's own revokes;
//! decoding of the listings; and what the organization says about one address.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jiff::Timestamp;
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::OrgInvitationClient;
use crate::{
    api::address,
    invite::{
        ApiError, Observed,
        decode::{self, as_i64},
    },
};

/// The invitations as last read, and when that read started.
#[derive(Default)]
pub(super) struct InvitationCache {
    read: Option<(Instant, Arc<Vec<OrgInvitation>>)>,
}

/// One invitation as listed by the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgInvitation {
    /// The invited username (email), as a person ([`address::person`]).
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

impl OrgInvitationClient {
    /// Every invitation, from a read that started at `since` or later: a read in flight or
    /// done since then is shared, otherwise one is made (one at a time).
    pub async fn invitations_since(
        &self,
        since: Instant,
    ) -> Result<Arc<Vec<OrgInvitation>>, ApiError> {
        let current = |cache: &InvitationCache| {
            cache
                .read
                .as_ref()
                .filter(|(started, _)| *started >= since)
                .map(|(_, list)| list.clone())
        };
        if let Some(list) = current(&self.invitations.lock().expect("lock")) {
            return Ok(list);
        }
        let _single_flight = self.invitation_fetch.lock().await;
        if let Some(list) = current(&self.invitations.lock().expect("lock")) {
            return Ok(list);
        }
        let started = Instant::now();
        let list = Arc::new(self.list_invitations().await?);
        let mut cache = self.invitations.lock().expect("lock");
        if cache.read.as_ref().is_none_or(|(at, _)| *at <= started) {
            cache.read = Some((started, list.clone()));
        }
        Ok(list)
    }

    /// Applies this client's revocation of `reference` to the cached invitations.
    pub(super) fn revoked(&self, reference: &str) {
        let mut cache = self.invitations.lock().expect("lock");
        if let Some((_, list)) = cache.read.as_mut() {
            for invitation in Arc::make_mut(list)
                .iter_mut()
                .filter(|i| i.ref_link == reference)
            {
                invitation.status = "REVOKED".into();
            }
        }
    }

    /// Every invitation of the organization, read now.
    async fn list_invitations(&self) -> Result<Vec<OrgInvitation>, ApiError> {
        let path = format!("{}/invitations", self.org_path());
        let answer = self
            .call("list invitations", None, |t| {
                self.request(Method::GET, &path, t)
            })
            .await?;
        let value = listing("list invitations", &answer.body)?;
        Ok(items(&value).iter().filter_map(invitation).collect())
    }

    /// Runs a lookup's reads within the endpoint's deadline, and records whether it went past
    /// a budget (the endpoint's Ready condition shows it).
    pub(super) async fn within_budget<T>(
        &self,
        read: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let deadline: Duration = self.transport.limits().deadline;
        let result = match tokio::time::timeout(deadline, read).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::LimitExceeded {
                operation: "read the organization",
                message: format!(
                    "reading the organization's members and invitations took longer than {} (the lookup deadline, --lookup-deadline)",
                    humantime::format_duration(deadline)
                ),
            }),
        };
        let mut over = self.over_budget.lock().expect("lock");
        match &result {
            Ok(_) => *over = None,
            Err(ApiError::LimitExceeded { message, .. }) => *over = Some(message.clone()),
            Err(_) => {}
        }
        result
    }
}

/// A listing's answer: JSON holding a list (bare, or under `results`, `items` or
/// `invitations`, possibly wrapped). Anything else is an error, never an empty list: an
/// organization read as empty would make every member and invitation look absent.
pub(super) fn listing(operation: &'static str, body: &[u8]) -> Result<Value, ApiError> {
    let decode_error = |message: String| ApiError::Decode { operation, message };
    if let Some(problem) = decode::untrusted_success(body) {
        return Err(decode_error(problem));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| decode_error(format!("not JSON: {e}")))?;
    let listed = match decode::unwrap_response(&value) {
        Value::Array(_) => true,
        Value::Object(o) => ["results", "items", "invitations"]
            .iter()
            .any(|k| o.get(*k).is_some_and(Value::is_array)),
        _ => false,
    };
    if !listed {
        let text = decode::excerpt(&value.to_string(), 120);
        return Err(decode_error(format!("expected a list, found {text}")));
    }
    Ok(value)
}

/// The entries of a listing (borrowed: an organization's listing can be megabytes).
pub(super) fn items(value: &Value) -> &[Value] {
    let payload = decode::unwrap_response(value);
    match payload {
        Value::Array(a) => a,
        Value::Object(o) => ["results", "items", "invitations"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_array))
            .map_or(&[], Vec::as_slice),
        _ => &[],
    }
}

/// A member entry (or a search result): username as a person → user id.
pub(super) fn member(entry: &Value) -> Option<(String, String)> {
    let user = entry.get("user").unwrap_or(entry);
    let name = user
        .get("username")
        .or_else(|| user.get("email"))
        .and_then(Value::as_str)?;
    let id = user.get("userId").and_then(Value::as_str).unwrap_or(name);
    Some((address::person(name), id.to_string()))
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
            .and_then(Value::as_str)
            .map(address::person)?,
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

/// What the organization says about one address, given its membership (`member`: the
/// user id when a member): a member wins; otherwise the newest invitation decides.
pub fn observe_one(email: &str, member: Option<&str>, invitations: &[OrgInvitation]) -> Observed {
    if let Some(id) = member {
        return Observed::Member {
            identifier: id.to_string(),
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
        Some(i) if i.status == "REDEEMED" => Observed::RedeemedInvitation {
            reference: i.ref_link.clone(),
        },
        Some(i) if i.status == "REVOKED" => Observed::RevokedInvitation {
            reference: i.ref_link.clone(),
        },
        _ => Observed::Absent,
    }
}

/// [`observe_one`] for each of `emails`, with the membership `members` says.
pub(super) fn observe_all(
    emails: &[String],
    members: &HashMap<String, Option<String>>,
    invitations: &[OrgInvitation],
) -> Vec<(String, Observed)> {
    emails
        .iter()
        .map(|email| {
            let member = members.get(email).and_then(|m| m.as_deref());
            (email.clone(), observe_one(email, member, invitations))
        })
        .collect()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
