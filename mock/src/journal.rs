//! The request journal: what arrived when, how it was answered, and the `Retry-After` check.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ApiFamily {
    /// The Wavefront user API (`/api/v2/...`).
    UserInvite,
    /// The CSP IAM API (`/csp/...`), token exchange included.
    OrgInvitation,
}

impl ApiFamily {
    /// The family of a request path.
    pub fn of_path(path: &str) -> ApiFamily {
        if path.starts_with("/csp/") {
            ApiFamily::OrgInvitation
        } else {
            ApiFamily::UserInvite
        }
    }
}

/// Path of the OrgInvitation token exchange.
pub(crate) const TOKEN_EXCHANGE_PATH: &str = "/csp/gateway/am/api/auth/api-tokens/authorize";

/// One API request as the mock saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// Position in arrival order since the mock started (kept when the journal is cleared).
    #[serde(default)]
    pub seq: u64,
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
    /// Status answered; 0 while the request is in flight, and for good when it got no HTTP
    /// answer (a `timeout` or `reset` fault).
    pub status: u16,
    /// When the request arrived (wall clock).
    pub at: Timestamp,
    /// When the request arrived, on the mock's monotonic clock (time since the mock started).
    /// JSON: `offsetMicros`.
    #[serde(default, rename = "offsetMicros", with = "micros")]
    pub offset: Duration,
    /// When the answer left (or the connection was dropped, for `reset`), on the same clock;
    /// `None` while in flight and for requests never answered. JSON: `answeredMicros`.
    #[serde(default, rename = "answeredMicros", with = "opt_micros")]
    pub answered: Option<Duration>,
    /// Name of the header that carried credentials (`authorization`, `x-auth-token`,
    /// `csp-auth-token`), never its value.
    #[serde(default)]
    pub auth: Option<String>,
    /// An opaque label of the credential presented (`token-1`, `token-2`, …): equal labels
    /// mean the same API token. An OrgInvitation access token counts as the API token it was
    /// exchanged for; the token exchange is labelled by the API token it sends. Never the
    /// credential itself.
    #[serde(default)]
    pub credential: Option<String>,
    /// The request's `Content-Type`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// True when the answer was an injected fault (scripted, random or from the fault mix).
    #[serde(default)]
    pub fault: bool,
    /// The kind of injected fault (`status`, `timeout`, `reset`, `truncated`, `hugeBody`,
    /// `redirect`, `nonJson`, `errorBody200`, `unknownUsers`), if any.
    #[serde(default)]
    pub fault_kind: Option<String>,
    /// True when the API processed the request (it was answered normally, whatever the
    /// status, or hit by a fault with `afterEffect`); false when a fault answered instead. A
    /// performed invite that was accepted sent its emails.
    #[serde(default)]
    pub performed: bool,
    /// The `Retry-After` seconds answered, if any.
    #[serde(default)]
    pub retry_after: Option<u64>,
}

impl JournalEntry {
    /// The API this request was for.
    pub fn family(&self) -> ApiFamily {
        ApiFamily::of_path(&self.path)
    }

    /// True for the OrgInvitation token exchange.
    pub fn is_token_exchange(&self) -> bool {
        self.path == TOKEN_EXCHANGE_PATH
    }

    /// The addresses an invite request asks for (lowercased), `None` for any other request.
    /// Invite requests: UserInvite `POST /api/v2/user/invite` and `POST /api/v2/user` with
    /// `sendEmail=true`; OrgInvitation `POST .../orgs/{org}/invitations` (not `action=revoke`).
    pub fn invited_addresses(&self) -> Option<Vec<String>> {
        if self.method != "POST" {
            return None;
        }
        let query = self.query.as_deref().unwrap_or_default();
        let emails: Vec<&Value> = if self.path == "/api/v2/user/invite" {
            self.body
                .as_array()?
                .iter()
                .map(|u| &u["emailAddress"])
                .collect()
        } else if self.path == "/api/v2/user" && query.contains("sendEmail=true") {
            vec![&self.body["emailAddress"]]
        } else if self.path.starts_with("/csp/gateway/am/api/orgs/")
            && self.path.ends_with("/invitations")
            && !query.contains("action=")
        {
            self.body["usernames"].as_array()?.iter().collect()
        } else {
            return None;
        };
        Some(
            emails
                .into_iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect(),
        )
    }
}

/// Invite requests per address, counted at the wire whatever the API answered: a client that
/// invites each person exactly once has 1 for every address it invited, and a second request
/// for the same person counts (refused as "already created", accepted and sent again, or still
/// in flight). Requests that provably did nothing for the address and so may be repeated are
/// left out: one answered by an injected fault instead of the API (a 503, a timeout or reset
/// without `afterEffect`), and a refused batch of several addresses sent before the address
/// was invited (refused for another address of the batch, which the client then isolates). A
/// refusal of that address alone counts. Entries are taken in arrival order.
pub fn invite_requests_by_address(entries: &[JournalEntry]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut invited = std::collections::BTreeSet::new();
    for e in entries {
        let Some(addresses) = e.invited_addresses() else {
            continue;
        };
        let in_flight = e.status == 0 && !e.fault;
        let accepted = e.performed && ((200..300).contains(&e.status) || e.fault);
        let refused = e.performed && !e.fault && e.status >= 300;
        for a in &addresses {
            let counted =
                in_flight || accepted || (refused && (addresses.len() == 1 || invited.contains(a)));
            if counted {
                *counts.entry(a.clone()).or_default() += 1;
            }
            if accepted {
                invited.insert(a.clone());
            }
        }
    }
    counts
}

impl JournalEntry {
    /// The API operation this request asked for: a name for the OrgInvitation operations
    /// (`list members`, `search members`, `list invitations`, `invite users`, …), otherwise
    /// the method and the path with identifiers (addresses, numbers, uuids) as `{id}`.
    pub fn operation(&self) -> String {
        let segments: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let revoke = self
            .query
            .as_deref()
            .is_some_and(|q| q.contains("action=revoke"));
        let named = match (self.method.as_str(), segments.as_slice()) {
            ("POST", [.., "auth", "api-tokens", "authorize"]) => Some("exchange token"),
            ("GET", ["csp", .., "orgs", _, "users"]) => Some("list members"),
            ("DELETE", ["csp", .., "orgs", _, "users"]) => Some("remove members"),
            ("GET", ["csp", .., "orgs", _, "users", "search"]) => Some("search members"),
            ("GET", ["csp", .., "orgs", _, "invitations"]) => Some("list invitations"),
            ("GET", ["csp", .., "orgs", _, "invitations", _]) => Some("get invitation"),
            ("POST", ["csp", .., "orgs", _, "invitations"]) if revoke => Some("revoke by username"),
            ("POST", ["csp", .., "orgs", _, "invitations"]) => Some("invite users"),
            ("DELETE", ["csp", .., "orgs", _, "invitations", _]) => Some("revoke invitation"),
            ("PATCH", ["csp", .., "roles"]) => Some("update roles"),
            ("GET", ["csp", .., "roles"]) => Some("get roles"),
            _ => None,
        };
        if let Some(name) = named {
            return name.to_string();
        }
        let generic: Vec<&str> = segments
            .iter()
            .map(|s| {
                let id = s.contains('@')
                    || s.contains("%40")
                    || s.chars().filter(|c| *c == '-').count() >= 4
                    || s.chars().all(|c| c.is_ascii_digit());
                if id { "{id}" } else { s }
            })
            .collect();
        format!("{} /{}", self.method, generic.join("/"))
    }
}

/// Calls per operation ([`JournalEntry::operation`]) in `entries`.
pub(crate) fn calls_by_operation(entries: &[JournalEntry]) -> BTreeMap<String, usize> {
    let mut calls = BTreeMap::new();
    for entry in entries {
        *calls.entry(entry.operation()).or_default() += 1;
    }
    calls
}

/// A request that arrived earlier than a `Retry-After` answered before allowed: same API
/// family, same credential, and both token exchanges or both not (the token exchange may be
/// served by another host, `tokenUrl`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryAfterViolation {
    /// The API both requests were for.
    pub family: ApiFamily,
    /// The credential label both requests carried.
    pub credential: Option<String>,
    /// The answered request that carried the `Retry-After` (its window ends latest).
    pub throttled: JournalEntry,
    /// The request that came too early.
    pub request: JournalEntry,
    /// How much too early it came. JSON: `earlyByMicros`.
    #[serde(rename = "earlyByMicros", with = "micros")]
    pub early_by: Duration,
}

/// Lists the requests of `entries` (any order) that arrived while a `Retry-After` answered
/// earlier to the same family and credential was still running.
pub(crate) fn retry_after_violations(entries: &[JournalEntry]) -> Vec<RetryAfterViolation> {
    type Key = (ApiFamily, bool, Option<String>);
    let key =
        |e: &JournalEntry| -> Key { (e.family(), e.is_token_exchange(), e.credential.clone()) };
    // Events on the mock's clock: a window opens when a Retry-After answer leaves; arrivals
    // are checked against the latest-ending window opened strictly before them.
    let mut events: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        events.push((e.offset, false, i));
        if let (Some(answered), Some(_)) = (e.answered, e.retry_after) {
            events.push((answered, true, i));
        }
    }
    // At equal times arrivals come first: a request arriving as the answer leaves was sent
    // before the client could read it.
    events.sort_by_key(|(t, opens, i)| (*t, *opens, *i));
    let mut windows: HashMap<Key, (Duration, usize)> = HashMap::new();
    let mut out = Vec::new();
    for (t, opens, i) in events {
        let e = &entries[i];
        if opens {
            let until = t + Duration::from_secs(e.retry_after.unwrap_or(0));
            let w = windows.entry(key(e)).or_insert((until, i));
            if until >= w.0 {
                *w = (until, i);
            }
        } else if let Some((until, by)) = windows.get(&key(e))
            && t < *until
        {
            out.push(RetryAfterViolation {
                family: e.family(),
                credential: e.credential.clone(),
                throttled: entries[*by].clone(),
                request: e.clone(),
                early_by: *until - t,
            });
        }
    }
    out.sort_by_key(|v| v.request.seq);
    out
}

/// The journal kept by a mock.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    next: u64,
    entries: Vec<JournalEntry>,
    /// Position of the first entry in `entries` (entries before it were cleared).
    first: u64,
}

impl Journal {
    /// Appends an entry, numbering it; returns its number.
    pub fn push(&mut self, mut entry: JournalEntry) -> u64 {
        let seq = self.next;
        self.next += 1;
        entry.seq = seq;
        if self.entries.is_empty() {
            self.first = seq;
        }
        self.entries.push(entry);
        seq
    }

    /// The entry with this number, if still kept.
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut JournalEntry> {
        let i = seq.checked_sub(self.first)?;
        self.entries
            .get_mut(usize::try_from(i).ok()?)
            .filter(|e| e.seq == seq)
    }

    /// Every entry, in arrival order.
    pub fn entries(&self) -> &[JournalEntry] {
        &self.entries
    }

    /// Forgets every entry (numbering goes on).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Opaque labels of credentials: the same secret always gets the same label, and the label
/// says nothing about the secret.
#[derive(Debug, Default)]
pub(crate) struct CredentialLabels {
    by_hash: BTreeMap<u64, usize>,
}

impl CredentialLabels {
    /// The label of a secret (`token-N`, numbered by first sight).
    pub fn label(&mut self, secret: &str) -> String {
        let mut h = DefaultHasher::new();
        secret.hash(&mut h);
        let next = self.by_hash.len() + 1;
        let n = *self.by_hash.entry(h.finish()).or_insert(next);
        format!("token-{n}")
    }
}

mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

mod opt_micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, path: &str, cred: &str, at_ms: u64) -> JournalEntry {
        JournalEntry {
            seq,
            method: "POST".into(),
            path: path.into(),
            query: None,
            body: Value::Null,
            status: 200,
            at: Timestamp::UNIX_EPOCH,
            offset: Duration::from_millis(at_ms),
            answered: Some(Duration::from_millis(at_ms + 5)),
            auth: None,
            credential: Some(cred.into()),
            content_type: None,
            fault: false,
            fault_kind: None,
            performed: true,
            retry_after: None,
        }
    }

    #[test]
    fn retry_after_windows_are_per_family_credential_and_token_exchange() {
        let wf = "/api/v2/user/invite";
        let csp = "/csp/gateway/am/api/orgs/o/invitations";
        let mut throttled = entry(0, wf, "token-1", 0);
        throttled.status = 429;
        throttled.retry_after = Some(2);
        let entries = vec![
            throttled,
            // In flight while the 429 was answered: not a violation.
            entry(1, wf, "token-1", 3),
            // Too early, same family and token.
            entry(2, wf, "token-1", 1000),
            // Other token, other family, the token exchange: not restricted.
            entry(3, wf, "token-2", 1000),
            entry(4, csp, "token-1", 1000),
            entry(5, TOKEN_EXCHANGE_PATH, "token-1", 1000),
            // After the window.
            entry(6, wf, "token-1", 2005),
        ];
        let v = retry_after_violations(&entries);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].request.seq, 2);
        assert_eq!(v[0].throttled.seq, 0);
        assert_eq!(v[0].early_by, Duration::from_millis(1005));
        assert_eq!(v[0].family, ApiFamily::UserInvite);
    }

    #[test]
    fn labels_are_stable_and_opaque() {
        let mut l = CredentialLabels::default();
        let a = l.label("secret-a");
        assert_eq!(a, "token-1");
        assert_eq!(l.label("secret-b"), "token-2");
        assert_eq!(l.label("secret-a"), a);
    }
}
