//! The invite-API side of the benchmark: the in-process mock of both APIs, the resources'
//! specs, what the mock's journal says about the calls made, and the exactly-once check.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use invite_mock::{ApiFamily, JournalEntry, MockApi, MockConfig, RunningMock};
use serde_json::{Value, json};

use crate::BenchResult;

/// The token the mock accepts (and the benchmark's Secrets hold).
pub const TOKEN: &str = "invite-operator-bench";
/// The organization of the OrgInvitation API.
pub const ORGANIZATION: &str = "bench-org";
/// Name of the UserInvite endpoint (and of the OrgInvitation one) in each namespace.
pub const USERINVITE_ENDPOINT: &str = "userinvite";
/// Name of the OrgInvitation endpoint.
pub const ORGINVITATION_ENDPOINT: &str = "orginvitation";
/// The endpoint the memory run's resources name, which never exists.
pub const MISSING_ENDPOINT: &str = "missing";

/// Starts a mock of both APIs adding `latency` to every request, its organization holding
/// `org_members` members (none of them an address the resources name).
pub async fn start_mock(latency: Duration, org_members: usize) -> BenchResult<RunningMock> {
    let mock = MockApi::start(MockConfig {
        token: TOKEN.into(),
        latency,
        organization_id: ORGANIZATION.into(),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot start the mock API: {e}"))?;
    mock.api
        .seed_org_members((0..org_members).map(|i| format!("member-{i:06}@corp.example.com")));
    Ok(mock)
}

/// The flavour of an API family, as the table names it.
pub fn family_name(family: ApiFamily) -> &'static str {
    match family {
        ApiFamily::UserInvite => "UserInvite",
        ApiFamily::OrgInvitation => "OrgInvitation",
    }
}

/// The endpoint spec of `family` at `url`.
pub fn endpoint_spec(family: ApiFamily, url: &str, requests_per_second: Option<u32>) -> Value {
    let mut spec = match family {
        ApiFamily::UserInvite => json!({"api": "UserInvite", "url": url}),
        ApiFamily::OrgInvitation => {
            json!({"api": "OrgInvitation", "url": url, "organizationId": ORGANIZATION})
        }
    };
    spec["credentials"] = json!({"secretRef": {"name": "invite-api-token"}});
    if let Some(rps) = requests_per_second {
        spec["requestsPerSecond"] = json!(rps);
    }
    spec
}

/// The addresses of resource `r`.
pub fn addresses(r: usize, users: usize) -> Vec<String> {
    (0..users)
        .map(|u| format!("u{u}-r{r}@bench.example.com"))
        .collect()
}

/// The spec of resource `r` on `family`'s endpoint (or on `endpoint`, when given).
pub fn invitation_spec(family: ApiFamily, r: usize, users: usize, endpoint: Option<&str>) -> Value {
    let emails = addresses(r, users);
    match family {
        ApiFamily::UserInvite => json!({
            "endpointRef": {
                "kind": "InvitationEndpoint",
                "name": endpoint.unwrap_or(USERINVITE_ENDPOINT),
            },
            "users": emails.iter().map(|e| json!({"emailAddress": e})).collect::<Vec<_>>(),
        }),
        ApiFamily::OrgInvitation => json!({
            "endpointRef": {
                "kind": "InvitationEndpoint",
                "name": endpoint.unwrap_or(ORGINVITATION_ENDPOINT),
            },
            "orgInvitation": {
                "usernames": emails,
                "organizationRoles": [{"name": "org_member"}],
            },
        }),
    }
}

/// The operation of a journal entry: method and path, with the organization and any id
/// (an address, a uuid, a number) replaced by a placeholder.
pub fn operation(entry: &JournalEntry) -> String {
    let path: Vec<String> = entry
        .path
        .split('/')
        .map(|segment| {
            if segment == ORGANIZATION {
                "{org}".to_string()
            } else if segment.contains('@')
                || segment.chars().filter(|c| *c == '-').count() >= 4
                || (!segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit()))
            {
                "{id}".to_string()
            } else {
                segment.to_string()
            }
        })
        .collect();
    format!("{} {}", entry.method, path.join("/"))
}

/// The calls the mock's journal holds, per API and operation.
#[derive(Clone, Debug, Default)]
pub struct Calls {
    /// Calls by API family and operation.
    pub by_operation: BTreeMap<ApiFamily, BTreeMap<String, u64>>,
    /// Addresses the requests of each family and operation carried (lookups and
    /// invitations), to show how calls were coalesced.
    pub addresses: BTreeMap<ApiFamily, BTreeMap<String, u64>>,
}

impl Calls {
    /// Counts `journal`.
    pub fn of(journal: &[JournalEntry]) -> Calls {
        let mut calls = Calls::default();
        for entry in journal {
            let op = operation(entry);
            let carried = addresses_in(&entry.body);
            if carried > 0 {
                *calls
                    .addresses
                    .entry(entry.family())
                    .or_default()
                    .entry(op.clone())
                    .or_default() += carried;
            }
            *calls
                .by_operation
                .entry(entry.family())
                .or_default()
                .entry(op)
                .or_default() += 1;
        }
        calls
    }

    /// Calls of one operation of one API, and the addresses they carried.
    pub fn operation(&self, family: ApiFamily, op: &str) -> (u64, u64) {
        let count = |map: &BTreeMap<ApiFamily, BTreeMap<String, u64>>| {
            map.get(&family)
                .and_then(|ops| ops.get(op))
                .copied()
                .unwrap_or(0)
        };
        (count(&self.by_operation), count(&self.addresses))
    }

    /// Calls to one API.
    pub fn to(&self, family: ApiFamily) -> u64 {
        self.by_operation
            .get(&family)
            .map_or(0, |ops| ops.values().sum())
    }

    /// Every call.
    pub fn total(&self) -> u64 {
        self.by_operation
            .values()
            .flat_map(|ops| ops.values())
            .sum()
    }

    /// Calls that change something in the API (anything but reads, `validateUsers` and the
    /// token exchange).
    pub fn mutating(&self) -> u64 {
        self.by_operation
            .values()
            .flat_map(|ops| ops.iter())
            .filter(|(op, _)| {
                !op.starts_with("GET ")
                    && !op.ends_with("/validateUsers")
                    && !op.ends_with("/api-tokens/authorize")
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// Addresses in a request body: an array (UserInvite invite and validateUsers) or
/// `usernames` (OrgInvitation invitations).
fn addresses_in(body: &Value) -> u64 {
    match body {
        Value::Array(items) => items.len() as u64,
        Value::Object(fields) => fields
            .get("usernames")
            .and_then(Value::as_array)
            .map_or(0, |u| u.len() as u64),
        _ => 0,
    }
}

/// Checks that every expected address was asked for in exactly one invite request at the
/// wire (the mock's journal, whatever the API answered: [`MockApi::invite_requests`]) and got
/// exactly one invitation email, and that nobody else got either; returns the number of
/// addresses invited.
pub fn check_exactly_once(mock: &RunningMock, expected: &BTreeSet<String>) -> BenchResult<usize> {
    let sent = mock.api.emails_sent();
    let requests = mock.api.invite_requests();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|a| !sent.contains_key(*a) || !requests.contains_key(*a))
        .collect();
    let mut repeated: BTreeMap<&String, (usize, usize)> = BTreeMap::new();
    for (a, n) in &sent {
        repeated.entry(a).or_default().0 = *n;
    }
    for (a, n) in &requests {
        repeated.entry(a).or_default().1 = *n;
    }
    repeated.retain(|_, (emails, asked)| *emails > 1 || *asked > 1);
    let unexpected: Vec<&String> = sent
        .keys()
        .chain(requests.keys())
        .filter(|a| !expected.contains(*a))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if missing.is_empty() && repeated.is_empty() && unexpected.is_empty() {
        return Ok(sent.len());
    }
    let sample = |items: Vec<String>| -> String {
        let shown: Vec<String> = items.iter().take(5).cloned().collect();
        if items.len() > 5 {
            format!("{} …", shown.join(", "))
        } else {
            shown.join(", ")
        }
    };
    Err(format!(
        "exactly-once violated: {} of {} addresses never invited ({}), {} invited more than once ({}), {} unexpected ({})",
        missing.len(),
        expected.len(),
        sample(missing.iter().map(|a| a.to_string()).collect()),
        repeated.len(),
        sample(
            repeated
                .iter()
                .map(|(a, (emails, asked))| format!("{a}: {emails} emails, {asked} requests"))
                .collect()
        ),
        unexpected.len(),
        sample(unexpected.iter().map(|a| a.to_string()).collect()),
    ))
}
