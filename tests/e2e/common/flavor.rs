//! Both API flavours behind one interface, for tests that run a scenario on each: the
//! endpoint, a resource's spec, and how to read the mock's journal (invite requests, lookups).

use invite_mock::{JournalEntry, ScriptedFault};
use invite_operator::api::{UserInvitation, UserInvitationStatus, UserState, UserStatus};
use serde_json::{Value, json};

use super::{Harness, ORG, RunningMock, TOKEN, TestCluster};

/// An API flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    UserInvite,
    OrgInvitation,
}

impl Flavor {
    /// The invite call's path.
    pub fn invite_path(self) -> String {
        match self {
            Flavor::UserInvite => "/api/v2/user/invite".to_string(),
            Flavor::OrgInvitation => format!("/csp/gateway/am/api/orgs/{ORG}/invitations"),
        }
    }

    /// A scripted fault that hits only invite calls.
    pub fn on_invite(self, fault: ScriptedFault) -> ScriptedFault {
        fault.method("POST").path(&self.invite_path())
    }

    /// Whether a journal entry is an invite call (not a revocation).
    pub fn is_invite_post(self, e: &JournalEntry) -> bool {
        e.method == "POST"
            && e.path == self.invite_path()
            && !e.query.as_deref().unwrap_or_default().contains("revoke")
    }

    /// Whether a journal entry looks users up (what a pass does before inviting).
    pub fn is_lookup(self, e: &JournalEntry) -> bool {
        match self {
            Flavor::UserInvite => {
                e.path.ends_with("/validateUsers")
                    || (e.method == "GET" && e.path.starts_with("/api/v2/user/"))
            }
            Flavor::OrgInvitation => {
                e.method == "GET" && (e.path == self.invite_path() || e.path.ends_with("/users"))
            }
        }
    }

    /// The addresses an invite request asked for (lowercased).
    pub fn invited_in(self, e: &JournalEntry) -> Vec<String> {
        e.invited_addresses().unwrap_or_default()
    }

    /// The invite requests of the mock's journal (answered or not).
    pub fn invite_posts(self, mock: &RunningMock) -> Vec<JournalEntry> {
        let journal = mock.api.journal().into_iter();
        journal.filter(|e| self.is_invite_post(e)).collect()
    }

    /// The invite requests of the mock's journal that name `person`.
    pub fn invite_posts_for(self, mock: &RunningMock, person: &str) -> Vec<JournalEntry> {
        let mut posts = self.invite_posts(mock);
        posts.retain(|e| self.invited_in(e).iter().any(|p| p == person));
        posts
    }

    /// The addresses of each invite request in `journal` whose answer had `status` (0: not
    /// answered yet).
    pub fn invites_answered(self, journal: &[JournalEntry], status: u16) -> Vec<Vec<String>> {
        let answered = journal
            .iter()
            .filter(|e| self.is_invite_post(e) && e.status == status);
        answered.map(|e| self.invited_in(e)).collect()
    }

    /// The spec of a resource inviting `emails` through the flavour's endpoint.
    pub fn spec(self, emails: &[String]) -> Value {
        match self {
            Flavor::UserInvite => json!({
                "endpointRef": {"kind": "InvitationEndpoint", "name": ENDPOINT},
                "users": emails.iter().map(|e| json!({
                    "emailAddress": e, "groups": ["dashboard_management"], "userGroups": []
                })).collect::<Vec<_>>(),
            }),
            Flavor::OrgInvitation => json!({
                "endpointRef": {"kind": "InvitationEndpoint", "name": ENDPOINT},
                "orgInvitation": {
                    "usernames": emails,
                    "organizationRoles": [{"name": "org_member"}],
                }
            }),
        }
    }

    /// The endpoint spec at `url` with this timeout and rate limit.
    pub fn endpoint(self, url: &str, timeout_seconds: u64, rps: u32) -> Value {
        let mut spec = json!({
            "url": url,
            "credentials": {"secretRef": {"name": SECRET}},
            "requestsPerSecond": rps,
            "timeoutSeconds": timeout_seconds,
        });
        match self {
            Flavor::UserInvite => spec["api"] = json!("UserInvite"),
            Flavor::OrgInvitation => {
                spec["api"] = json!("OrgInvitation");
                spec["organizationId"] = json!(ORG);
            }
        }
        spec
    }

    /// A harness with the Secret and the endpoint [`ENDPOINT`] on its mock.
    pub async fn harness(self, timeout_seconds: u64, rps: u32) -> Harness {
        let h = Harness::start().await;
        h.cluster.put_secret(SECRET, TOKEN).await;
        self.apply_endpoint(&h.cluster, ENDPOINT, &h.mock.url, timeout_seconds, rps)
            .await;
        h
    }

    /// [`Flavor::harness`] with the controller started.
    pub async fn running(self, timeout_seconds: u64, rps: u32) -> Harness {
        let mut h = self.harness(timeout_seconds, rps).await;
        h.start_controller();
        h
    }

    /// Creates or updates an endpoint of the flavour.
    pub async fn apply_endpoint(
        self,
        cluster: &TestCluster,
        name: &str,
        url: &str,
        timeout_seconds: u64,
        rps: u32,
    ) {
        let endpoint = self.endpoint(url, timeout_seconds, rps);
        cluster.apply_endpoint(name, endpoint).await;
    }
}

/// The name of the flavour's InvitationEndpoint in [`Flavor::harness`].
pub const ENDPOINT: &str = "api";
/// The Secret holding the token.
pub const SECRET: &str = "api-token";

/// `n` addresses `prefix-i@example.com`.
pub fn addresses(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}-{i}@example.com"))
        .collect()
}

/// `n` resources `r00`, `r01`, … of `per` addresses each: (name, addresses).
pub fn resources(n: usize, per: usize) -> Vec<(String, Vec<String>)> {
    let resource = |r| (format!("r{r:02}"), addresses(&format!("r{r}"), per));
    (0..n).map(resource).collect()
}

/// Whether the addresses of one invite request span resources: no one resource has them all.
pub fn spans(batch: &[String], resources: &[(String, Vec<String>)]) -> bool {
    let within = |users: &Vec<String>| batch.iter().all(|u| users.contains(u));
    !resources.iter().any(|(_, users)| within(users))
}

/// The status entry of `email`.
pub fn entry<'a>(status: &'a UserInvitationStatus, email: &str) -> Option<&'a UserStatus> {
    status.users.iter().find(|u| u.email_address == email)
}

/// The state of `email`, if it has an entry.
pub fn state(status: &UserInvitationStatus, email: &str) -> Option<UserState> {
    entry(status, email).map(|u| u.state)
}

/// Whether every address is in `want`.
pub fn all_in(status: &UserInvitationStatus, emails: &[String], want: UserState) -> bool {
    emails.iter().all(|e| state(status, e) == Some(want))
}

/// The status of a resource (panics without one).
pub fn status_of(inv: &UserInvitation) -> &UserInvitationStatus {
    inv.status.as_ref().expect("a status")
}

/// Two tests, `$user` and `$org`, each running `$scenario(flavor, $args…)` on one API flavour
/// (or three, with an API that sends again: see the second arm).
macro_rules! per_flavor {
    ($scenario:ident($($arg:expr),*) => $user:ident, $org:ident) => {
        #[tokio::test]
        async fn $user() {
            $scenario($crate::common::flavor::Flavor::UserInvite $(, $arg)*).await;
        }

        #[tokio::test]
        async fn $org() {
            $scenario($crate::common::flavor::Flavor::OrgInvitation $(, $arg)*).await;
        }
    };
    // Three tests: `$user` and `$org` running `$scenario(flavor, false)`, and `$resending`
    // running `$scenario(Flavor::UserInvite, true)` against an API that sends again.
    (#[$test:meta] $scenario:ident => $user:ident, $resending:ident, $org:ident) => {
        #[$test]
        async fn $user() {
            $scenario($crate::common::flavor::Flavor::UserInvite, false).await;
        }

        #[$test]
        async fn $resending() {
            $scenario($crate::common::flavor::Flavor::UserInvite, true).await;
        }

        #[$test]
        async fn $org() {
            $scenario($crate::common::flavor::Flavor::OrgInvitation, false).await;
        }
    };
}
pub(crate) use per_flavor;
