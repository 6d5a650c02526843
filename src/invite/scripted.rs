//! A scripted [`InviteApi`] for unit tests: it answers what a test sets, after a latency (in
//! the test's virtual time, when paused), and records each call: when, what, for whom.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use jiff::SignedDuration;
use tokio::time::Instant;

use super::{ApiError, InviteApi, InviteOutcome, InviteRequest, Lookup, Observed, UserGrants};
use crate::api::ApiFlavor;

/// A UserInvite API answering as scripted.
#[derive(Debug)]
pub(crate) struct ScriptedApi {
    /// The answer to every lookup; `None`: every address is absent.
    pub look_up: Option<Result<BTreeMap<String, Observed>, ApiError>>,
    /// The outcome of an invitation per address; an address not here gets none.
    pub invite: BTreeMap<String, InviteOutcome>,
    /// The error of every enforce call; `None`: it grants `x`.
    pub enforce: Option<ApiError>,
    /// The error of every remove call; `None`: the user is deleted.
    pub remove: Option<ApiError>,
    /// Set: the client reads identifiers back after the outcome (as UserInvite does), and
    /// every lookup after the first answers this.
    pub read_back: Option<BTreeMap<String, Observed>>,
    /// How long each lookup and invitation takes.
    pub latency: Duration,
    /// When the test began: calls are recorded relative to it.
    pub started: Instant,
    /// The calls so far (read them with `calls` or `timed_calls`).
    pub calls: Mutex<Vec<Call>>,
}

/// One call: when it began (since `started`), what it was, and the addresses it named.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    at: Duration,
    what: &'static str,
    addresses: Vec<String>,
}

impl Default for ScriptedApi {
    fn default() -> Self {
        ScriptedApi {
            look_up: None,
            invite: BTreeMap::new(),
            enforce: None,
            remove: None,
            read_back: None,
            latency: Duration::ZERO,
            started: Instant::now(),
            calls: Mutex::default(),
        }
    }
}

impl ScriptedApi {
    /// The calls so far, as `look up a@x.com,b@x.com`, `invite …`, `enforce id`, `remove …`.
    pub fn calls(&self) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .map(|c| format!("{} {}", c.what, c.addresses.join(",")))
            .collect()
    }

    /// The calls so far: when each began, and its addresses.
    pub fn timed_calls(&self) -> Vec<(Duration, Vec<String>)> {
        let calls = self.calls.lock().unwrap();
        calls.iter().map(|c| (c.at, c.addresses.clone())).collect()
    }

    /// Records a call and takes the latency.
    async fn call(&self, what: &'static str, addresses: Vec<String>) {
        let at = self.started.elapsed();
        self.calls.lock().unwrap().push(Call {
            at,
            what,
            addresses,
        });
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[async_trait::async_trait]
impl InviteApi for ScriptedApi {
    fn flavor(&self) -> ApiFlavor {
        ApiFlavor::UserInvite
    }

    fn invitation_lifetime(&self) -> SignedDuration {
        SignedDuration::from_hours(24)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn verify_credentials(&self) -> Result<(), ApiError> {
        Ok(())
    }

    fn reads_back_identifiers(&self) -> bool {
        self.read_back.is_some()
    }

    async fn look_up(&self, lookups: &[Lookup]) -> Result<BTreeMap<String, Observed>, ApiError> {
        let emails = lookups.iter().map(|l| l.email.clone()).collect();
        let earlier = self.calls().iter().any(|c| c.starts_with("look up"));
        self.call("look up", emails).await;
        if let (true, Some(answer)) = (earlier, &self.read_back) {
            return Ok(answer.clone());
        }
        match &self.look_up {
            Some(answer) => answer.clone(),
            None => Ok(lookups
                .iter()
                .map(|l| (l.email.clone(), Observed::Absent))
                .collect()),
        }
    }

    async fn invite(
        &self,
        requests: &[InviteRequest],
        _: Instant,
    ) -> BTreeMap<String, InviteOutcome> {
        let emails = requests.iter().map(|r| r.email.clone()).collect();
        self.call("invite", emails).await;
        requests
            .iter()
            .filter_map(|r| Some((r.email.clone(), self.invite.get(&r.email)?.clone())))
            .collect()
    }

    async fn enforce(
        &self,
        id: &str,
        _: &UserGrants,
        _: &UserGrants,
    ) -> Result<Vec<String>, ApiError> {
        self.call("enforce", vec![id.to_string()]).await;
        match &self.enforce {
            Some(e) => Err(e.clone()),
            None => Ok(vec!["granted x".into()]),
        }
    }

    async fn remove(&self, email: &str, _: Option<&str>) -> Result<Option<String>, ApiError> {
        self.call("remove", vec![email.to_string()]).await;
        match &self.remove {
            Some(e) => Err(e.clone()),
            None => Ok(Some(format!("deleted user {email}"))),
        }
    }
}

/// The outcome of an invitation the API accepted, with its identifier.
pub(crate) fn invited(id: &str) -> InviteOutcome {
    InviteOutcome::Invited {
        identifier: id.into(),
        expires_at: None,
        warning: None,
    }
}
