//! The organization as one snapshot (every member, every invitation), shared by every lookup
//! of the endpoint for a short time, read once however many lookups wait for it, and never
//! reused across a change this client makes.

use std::{collections::BTreeMap, sync::Arc};

use jiff::Timestamp;
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::{MAX_MEMBER_PAGES, MEMBER_PAGE, OrgInvitationClient, SNAPSHOT_TTL, encode};
use crate::{
    api::address,
    invite::{
        ApiError, Observed,
        decode::{self, as_i64},
    },
};

/// The organization as read at one moment: members (username as a person, see
/// [`address::person`] → user id) and
/// every invitation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgSnapshot {
    /// Members, username as a person ([`address::person`]) → user id.
    pub members: BTreeMap<String, String>,
    /// Every invitation.
    pub invitations: Vec<OrgInvitation>,
}

#[derive(Default)]
pub(super) struct SnapshotCache {
    /// Bumped when a change starts and when it ends: a snapshot is reused only within the
    /// epoch its read started in.
    epoch: u64,
    cached: Option<(u64, Instant, Arc<OrgSnapshot>)>,
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
    /// Runs a change (invite, revoke) between two epoch bumps, so no snapshot read before or
    /// during it is reused after it.
    pub(super) async fn changing<T>(&self, change: impl Future<Output = T>) -> T {
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
        let snapshot = Arc::new(self.read_within_budget().await?);
        let mut cache = self.snapshots.lock().expect("lock");
        if cache.epoch == epoch {
            cache.cached = Some((epoch, started, snapshot.clone()));
        }
        Ok(snapshot)
    }

    /// Reads members and invitations within the endpoint's budgets, and records whether it
    /// went past one (the endpoint's Ready condition shows it).
    async fn read_within_budget(&self) -> Result<OrgSnapshot, ApiError> {
        let limits = self.transport.limits();
        let read = async {
            Ok::<_, ApiError>(OrgSnapshot {
                members: self.members().await?,
                invitations: self.list_invitations().await?,
            })
        };
        let result = match tokio::time::timeout(limits.deadline, read).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::LimitExceeded {
                operation: "read the organization",
                message: format!(
                    "reading the organization's members and invitations took longer than {} (the lookup deadline, --lookup-deadline)",
                    humantime::format_duration(limits.deadline)
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

    /// Every invitation of the organization.
    pub async fn list_invitations(&self) -> Result<Vec<OrgInvitation>, ApiError> {
        let path = format!("{}/invitations", self.org_path());
        let answer = self
            .call("list invitations", None, |t| {
                self.request(Method::GET, &path, t)
            })
            .await?;
        let value = listing("list invitations", &answer.body)?;
        Ok(items(&value).iter().filter_map(invitation).collect())
    }

    /// Usernames (as persons, see [`address::person`]) of every member of the organization,
    /// mapped to their user id.
    pub async fn members(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let limits = self.transport.limits();
        let over = |message: String| ApiError::LimitExceeded {
            operation: "list organization users",
            message,
        };
        let mut bytes = 0usize;
        let mut members = BTreeMap::new();
        // 1-based; advanced by what each page returned (a server may return fewer than asked).
        let mut start: u64 = 1;
        for _ in 0..MAX_MEMBER_PAGES {
            let path = format!(
                "/csp/gateway/am/api/v2/orgs/{}/users?pageStart={start}&pageLimit={MEMBER_PAGE}",
                encode(&self.organization_id)
            );
            let answer = self
                .call("list organization users", None, |t| {
                    self.request(Method::GET, &path, t)
                })
                .await?;
            bytes = bytes.saturating_add(answer.body.len());
            if bytes > limits.max_bytes {
                return Err(over(format!(
                    "the organization's member listing is larger than {} MiB (--org-snapshot-max-bytes)",
                    limits.max_bytes / (1024 * 1024)
                )));
            }
            let value = listing("list organization users", &answer.body)?;
            let results = items(&value);
            let before = members.len();
            members.extend(results.iter().filter_map(member));
            if members.len() > limits.max_members {
                return Err(over(format!(
                    "the organization has more than {} members (--org-snapshot-max-members)",
                    limits.max_members
                )));
            }
            let total = value
                .get("totalResults")
                .and_then(as_i64)
                .unwrap_or(0)
                .max(0) as u64;
            let has_next = value.get("nextLink").is_some_and(|l| !l.is_null());
            let returned = results.len() as u64;
            if results.is_empty()
                || members.len() == before
                || (!has_next && start + returned > total)
            {
                return Ok(members);
            }
            start += returned;
        }
        Err(ApiError::Decode {
            operation: "list organization users",
            message: format!("the member listing did not end after {MAX_MEMBER_PAGES} pages"),
        })
    }
}

/// A listing's answer: JSON holding a list (bare, or under `results`, `items` or
/// `invitations`, possibly wrapped). Anything else is an error, never an empty list: an
/// organization read as empty would make every member and invitation look absent.
fn listing(operation: &'static str, body: &[u8]) -> Result<Value, ApiError> {
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
fn items(value: &Value) -> &[Value] {
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

fn member(entry: &Value) -> Option<(String, String)> {
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

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
