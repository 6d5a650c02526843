//! End-to-end tests of leader election: two replicas of the real controller, each with its own
//! Kubernetes client (told apart by User-Agent) and metrics, elect a leader on a Lease against
//! the in-process Kubernetes API server (or a real cluster), with the mock invite API.
//!
//! Every replica records the intervals during which its controller existed (from the moment
//! the election started it until its future was dropped); the tests assert that no two
//! intervals ever overlap, and, on the test server, that the Kubernetes requests of the
//! replicas (other than on the Lease) never interleave.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::*;
use invite_operator::{
    controller,
    health::Readiness,
    leader::{LeaderElection, LeaderError, Term, run_while_leader},
    telemetry::Metrics,
};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{Api, Client, api::PostParams};
use kube_test_apiserver::Fault;
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

/// A short lease so the whole file runs in seconds.
const LEASE: Duration = Duration::from_secs(2);

/// The replicas of the tests that start two.
const REPLICAS: [&str; 2] = ["replica-a", "replica-b"];

// ---------------------------------------------------------------------------------------------
// Activity log: when each replica's controller existed.

#[derive(Clone, Debug)]
struct Interval {
    replica: String,
    start: Instant,
    end: Option<Instant>,
}

#[derive(Clone, Default)]
struct Activity(Arc<Mutex<Vec<Interval>>>);

/// Ends its interval when dropped (the controller's future completed or was aborted).
struct ActiveGuard {
    activity: Activity,
    index: usize,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.activity.0.lock().unwrap()[self.index].end = Some(Instant::now());
    }
}

impl Activity {
    fn begin(&self, replica: &str) -> ActiveGuard {
        let mut log = self.0.lock().unwrap();
        log.push(Interval {
            replica: replica.to_string(),
            start: Instant::now(),
            end: None,
        });
        ActiveGuard {
            activity: self.clone(),
            index: log.len() - 1,
        }
    }

    fn intervals(&self) -> Vec<Interval> {
        let mut all = self.0.lock().unwrap().clone();
        all.sort_by_key(|i| i.start);
        all
    }

    fn of(&self, replica: &str) -> Vec<Interval> {
        let mut all = self.intervals();
        all.retain(|i| i.replica == replica);
        all
    }

    /// The replica active right now, if any.
    fn active(&self) -> Option<String> {
        let active = self.intervals().into_iter().find(|i| i.end.is_none());
        active.map(|i| i.replica)
    }

    /// Panics if two controllers ever existed at the same time.
    fn assert_never_overlapping(&self) {
        let all = self.intervals();
        for pair in all.windows(2) {
            let (first, second) = (&pair[0], &pair[1]);
            let end = first.end;
            let end = end.unwrap_or_else(|| panic!("two replicas active at once: {all:?}"));
            let overlap = end - second.start;
            assert!(
                end <= second.start,
                "{} was still active when {} started ({overlap:?} overlap): {all:?}",
                first.replica,
                second.replica,
            );
        }
    }

    /// Waits until `replica` has an interval matching `check`; returns it.
    async fn wait_for(
        &self,
        what: &str,
        check: impl Fn(&[Interval]) -> Option<Interval>,
    ) -> Interval {
        eventually_every(Duration::from_millis(10), WAIT, what, async || {
            let intervals = self.intervals();
            check(&intervals).ok_or(format!("{intervals:?}"))
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Replicas.

fn user_agent(replica: &str) -> String {
    format!("{} {replica}", controller::USER_AGENT)
}

/// A client of its own per replica, so the test server tells their requests apart.
fn replica_client(cluster: &TestCluster, replica: &str) -> Client {
    let mut config = cluster.config.clone();
    let agent = http::HeaderValue::from_str(&user_agent(replica)).unwrap();
    config.headers.push((http::header::USER_AGENT, agent));
    Client::try_from(config).expect("client")
}

/// One replica of the operator: the election around the real controller.
struct Replica {
    name: String,
    metrics: Metrics,
    readiness: watch::Receiver<Readiness>,
    stop: tokio_util::sync::CancellationToken,
    handle: JoinHandle<Result<(), LeaderError>>,
}

impl Replica {
    /// The replica `name` of `election`'s Lease, with `lease` and these controller settings.
    fn start(
        election: &Election,
        name: &str,
        lease: Duration,
        settings: controller::Settings,
    ) -> Replica {
        let cluster = &election.cluster;
        let client = replica_client(cluster, name);
        let lease = LeaderElection {
            lease_name: election.lease_name.clone(),
            namespace: cluster.namespace.clone(),
            identity: name.into(),
            lease_duration: lease,
        };
        let metrics = Metrics::new();
        let (readiness_tx, readiness) = watch::channel(Readiness::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let shutdown = stop.clone();
        let run = {
            let (client, metrics) = (client.clone(), metrics.clone());
            let (activity, name) = (election.activity.clone(), name.to_string());
            move |term: Term| {
                let guard = activity.begin(&name);
                let (client, settings, metrics) =
                    (client.clone(), settings.clone(), metrics.clone());
                let (readiness, leadership) = (term.readiness, term.leadership);
                let controller =
                    controller::run(client, settings, metrics, readiness, leadership, term.stop);
                async move {
                    let _guard = guard;
                    controller.await
                }
            }
        };
        let handle = tokio::spawn(run_while_leader(client, lease, readiness_tx, shutdown, run));
        cluster.abort_on_drop(handle.abort_handle());
        Replica {
            name: name.to_string(),
            metrics,
            readiness,
            stop,
            handle,
        }
    }

    fn reconciles(&self) -> u64 {
        sum_metric(&self.metrics, "invite_operator_reconciles_total{")
    }

    fn api_calls(&self) -> u64 {
        sum_metric(&self.metrics, "invite_operator_api_calls_total{")
    }

    /// Graceful stop (SIGTERM): the controller stops, then the Lease is released.
    async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(WAIT, self.handle).await;
        let result = result.expect("replica stops");
        result.expect("no panic").expect("no election error");
    }

    /// A crash: everything is dropped where it is, the Lease is not released.
    async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

// ---------------------------------------------------------------------------------------------
// Setup and checks.

/// The UserInvite harness (no controller of its own), the replicas' activity log and the
/// name of their Lease (unique to the test).
struct Election {
    harness: Harness,
    activity: Activity,
    lease_name: String,
}

deref_to_harness!(Election);

impl Election {
    async fn new() -> Election {
        let harness = Harness::user_invite().await;
        let lease_name = harness.cluster.unique("invite-operator");
        Election {
            harness,
            activity: Activity::default(),
            lease_name,
        }
    }

    fn replica(&self, name: &str, lease: Duration) -> Replica {
        Replica::start(self, name, lease, self.cluster.settings())
    }

    /// Bob, in the resource `second`, invited by whoever leads now.
    async fn invite_second(&self) {
        let bob = users_spec("wavefront", &["bob@example.com"], &[]);
        self.cluster.create_ready("second", bob).await;
    }

    /// Alice and Bob were invited once each, and the replicas' requests followed their terms.
    fn assert_both_invited_once(&self) {
        assert_sent(&self.mock, &["alice@example.com", "bob@example.com"], 1);
        self.assert_requests_follow_terms(&REPLICAS);
    }

    /// A replica whose collection window surely spans resources created together.
    fn batching_replica(&self, name: &str, lease: Duration) -> Replica {
        Replica::start(self, name, lease, self.cluster.batching_settings())
    }

    async fn finish(self, replicas: Vec<Replica>) {
        for r in replicas {
            r.stop().await;
        }
        self.activity.assert_never_overlapping();
        self.harness.finish().await;
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.cluster.client.clone(), &self.cluster.namespace)
    }

    async fn holder(&self) -> Option<String> {
        holder(&self.leases(), &self.lease_name).await
    }

    /// Two replicas with `lease`; once one leads, `first` (alice@) is Ready. The replicas and
    /// the leader's name.
    async fn two_replicas_serving_first(&self, lease: Duration) -> (Vec<Replica>, String) {
        let replicas = REPLICAS.map(|name| self.replica(name, lease));
        let replicas = Vec::from(replicas);
        let leader = self.wait_leader().await;
        let spec = users_spec("wavefront", &["alice@example.com"], &[]);
        self.cluster.create_ready("first", spec).await;
        (replicas, leader)
    }

    /// Waits until the standby `replica` leads; its interval.
    async fn wait_leading(&self, replica: &str) -> Interval {
        let leading = |all: &[Interval]| all.iter().find(|i| i.replica == replica).cloned();
        let what = "the standby to take over";
        self.activity.wait_for(what, leading).await
    }

    /// Waits until `replica` stopped leading; when.
    async fn wait_stopped(&self, replica: &str) -> Instant {
        let stopped = |all: &[Interval]| {
            let stopped = all.iter().find(|i| i.replica == replica && i.end.is_some());
            stopped.cloned()
        };
        let interval = self.activity.wait_for("the leader to stop", stopped).await;
        interval.end.unwrap()
    }

    /// Waits until some replica leads (holds the Lease and runs its controller); its name.
    async fn wait_leader(&self) -> String {
        let leading = async || match (self.holder().await, self.activity.active()) {
            (Some(holder), Some(active)) if holder == active => Ok(holder),
            seen => Err(format!("holder and active: {seen:?}")),
        };
        eventually_every(Duration::from_millis(20), WAIT, "a leader", leading).await
    }

    /// The replicas' Kubernetes requests other than on the Lease, in the order served.
    fn controller_requests(&self, replicas: &[&str]) -> Vec<(String, String)> {
        let server = self.cluster.server.as_ref().expect("test server");
        let all = server.requests().into_iter();
        let requests = all.filter(|r| r.resource != "leases");
        let by_replica = |r: kube_test_apiserver::RecordedRequest| {
            let agent = r.user_agent.unwrap_or_default();
            let replica = replicas.iter().find(|n| agent == user_agent(n))?;
            Some((replica.to_string(), format!("{} {}", r.verb, r.path)))
        };
        requests.filter_map(by_replica).collect()
    }

    /// On the test server: the replicas' requests (other than on the Lease) come in one block
    /// per leadership term, in the order of the terms, never interleaved.
    fn assert_requests_follow_terms(&self, replicas: &[&str]) {
        if !self.cluster.is_test_server() {
            eprintln!(
                "skipped the check that requests follow the terms: needs the in-process API server (request records)"
            );
            return;
        }
        let requests = self.controller_requests(replicas).into_iter();
        let mut blocks: Vec<String> = requests.map(|(replica, _)| replica).collect();
        blocks.dedup();
        let intervals = self.activity.intervals().into_iter();
        let mut terms: Vec<String> = intervals.map(|interval| interval.replica).collect();
        terms.dedup();
        let follow = "requests of the replicas interleave or come outside their terms";
        assert_eq!(blocks, terms, "{follow}");
    }

    /// On the test server: the replicas' Lease requests stay within the chart's
    /// `leaderElection` grants (files/rbac-rules.yaml), on the one Lease in the operator
    /// namespace.
    fn assert_lease_calls_are_granted(&self, replicas: &[&str]) {
        let Some(server) = &self.cluster.server else {
            eprintln!(
                "skipped the check of Lease calls against the chart's grants: needs the in-process API server (request records)"
            );
            return;
        };
        let path = package_path("deploy/charts/invite-operator/files/rbac-rules.yaml");
        let rules: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut granted = BTreeSet::new();
        let rules = &rules["leaderElection"];
        for rule in rules.as_array().expect("leaderElection rules") {
            assert_eq!(rule["apiGroups"], json!(["coordination.k8s.io"]));
            assert_eq!(rule["resources"], json!(["leases"]));
            for verb in rule["verbs"].as_array().unwrap() {
                granted.insert(verb.as_str().unwrap().to_string());
            }
        }
        let mut used = BTreeSet::new();
        for r in server.requests() {
            let agent = r.user_agent.clone().unwrap_or_default();
            if r.resource != "leases" || !replicas.iter().any(|n| agent == user_agent(n)) {
                continue;
            }
            assert_eq!(r.api_group, "coordination.k8s.io");
            let namespace = Some(self.cluster.namespace.as_str());
            assert_eq!(r.namespace.as_deref(), namespace);
            let the_lease = r.name.as_deref() == Some(self.lease_name.as_str());
            assert!(r.name.is_none() && r.verb == "create" || the_lease, "{r:?}");
            used.insert(r.verb);
        }
        let missing: Vec<_> = used.difference(&granted).collect();
        let granted = missing.is_empty();
        assert!(granted, "Lease calls the chart does not grant: {missing:?}");
        for verb in ["get", "create", "update"] {
            assert!(used.contains(verb), "no Lease {verb} seen: {used:?}");
        }
    }
}

/// The holder of the Lease `name`, if anyone holds it.
async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    let lease = leases.get_opt(name).await.expect("read the lease");
    let holder = lease.and_then(|l| l.spec?.holder_identity);
    holder.filter(|h| !h.is_empty())
}

fn pick<'a>(replicas: &'a [Replica], name: &str) -> &'a Replica {
    replicas.iter().find(|r| r.name == name).expect("replica")
}

/// Takes the other replica out of a pair by name.
fn split(mut replicas: Vec<Replica>, leader: &str) -> (Replica, Replica) {
    let at = replicas.iter().position(|r| r.name == leader).unwrap();
    let leader = replicas.remove(at);
    (leader, replicas.pop().unwrap())
}

async fn wait_ready(replica: &Replica) {
    let mut rx = replica.readiness.clone();
    let ready = tokio::time::timeout(WAIT, rx.wait_for(|r| *r == Readiness::Ready)).await;
    let ready = ready.unwrap_or_else(|_| panic!("{} never became ready", replica.name));
    ready.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn only_the_leader_reconciles_and_invites_once() {
    let s = Election::new().await;
    // Both start at once and race for the Lease.
    let replicas = Vec::from(REPLICAS.map(|name| s.replica(name, LEASE)));
    let leader = s.wait_leader().await;
    let standby = REPLICAS.into_iter().find(|r| *r != leader).unwrap();

    let emails = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let spec = users_spec("wavefront", &emails, &[]);
    s.cluster.create_ready("team", spec).await;
    // Let several renewals pass: leadership is stable, the standby stays idle.
    tokio::time::sleep(LEASE * 2).await;

    let (leading, standing_by) = (pick(&replicas, &leader), pick(&replicas, standby));
    assert!(leading.reconciles() >= 1);
    assert!(leading.api_calls() >= 1);
    assert_eq!(standing_by.reconciles(), 0, "the standby reconciled");
    assert_eq!(standing_by.api_calls(), 0, "the standby called the API");
    let ran = s.activity.of(standby);
    assert!(ran.is_empty(), "the standby ran a controller");
    assert_eq!(s.activity.of(&leader).len(), 1, "leadership changed hands");
    assert_sent(&s.mock, &emails, 1);
    // /readyz: the leader once its caches synced, the standby while waiting.
    for r in &replicas {
        wait_ready(r).await;
    }
    if s.cluster.is_test_server() {
        let touched = s.controller_requests(&[standby]);
        let idle = touched.is_empty();
        assert!(idle, "the standby touched more than its Lease: {touched:?}");
    } else {
        eprintln!(
            "skipped the check that the standby touched only its Lease: needs the in-process API server (request records)"
        );
    }
    s.assert_requests_follow_terms(&REPLICAS);
    s.finish(replicas).await;
}

#[tokio::test]
async fn the_standby_takes_over_within_the_lease_duration_when_the_leader_crashes() {
    let s = Election::new().await;
    let (replicas, leader) = s.two_replicas_serving_first(LEASE).await;

    let (leader, standby) = split(replicas, &leader);
    let standby_name = standby.name.clone();
    let killed_at = Instant::now();
    leader.kill().await;
    let bob = users_spec("wavefront", &["bob@example.com"], &[]);
    s.cluster.create_invitation("second", bob).await;

    let took_over = s.wait_leading(&standby_name).await;
    let after = took_over.start - killed_at;
    // The crashed leader renewed at most a renew deadline (2/3 of the lease) before the crash,
    // so the standby cannot take over earlier than a third of the lease after it; it waits one
    // lease duration after the last renewal it saw (plus its polling).
    assert!(after >= LEASE / 3, "took over too early: {after:?}");
    assert!(after <= LEASE + LEASE / 2, "took over too late: {after:?}");
    s.cluster.wait_ready("second").await;
    assert!(standby.reconciles() >= 1);
    assert_eq!(s.holder().await.as_deref(), Some(standby_name.as_str()));
    s.assert_both_invited_once();
    s.finish(vec![standby]).await;
}

#[tokio::test]
async fn a_leader_stopping_gracefully_hands_over_at_once() {
    let s = Election::new().await;
    // A long lease: the handover must not wait for it.
    let lease = Duration::from_secs(6);
    let (replicas, leader) = s.two_replicas_serving_first(lease).await;

    let (leader, standby) = split(replicas, &leader);
    let standby_name = standby.name.clone();
    let stopping_at = Instant::now();
    leader.stop().await;
    let took_over = s.wait_leading(&standby_name).await;
    let after = took_over.start - stopping_at;
    let at_once = after < lease / 3;
    assert!(at_once, "the released lease was taken after {after:?}");
    s.invite_second().await;
    s.assert_both_invited_once();
    standby.stop().await;
    assert_eq!(s.holder().await, None, "released on shutdown");
    s.assert_lease_calls_are_granted(&REPLICAS);
    s.finish(vec![]).await;
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_before_the_standby_takes_over() {
    let s = Election::new().await;
    let Some(server) = s.cluster.server.clone() else {
        eprintln!("skipped: needs the in-process API server (fault injection on Lease writes)");
        return s.finish(vec![]).await;
    };
    let (replicas, leader) = s.two_replicas_serving_first(LEASE).await;
    let (leader, standby) = split(replicas, &leader);
    let (leader_name, standby_name) = (leader.name.clone(), standby.name.clone());

    // From now on every Lease write of the leader fails (as in a partition from the API).
    let renewals = Fault::new(500).resource("leases").verb("update");
    let renewals = renewals.user_agent(user_agent(&leader_name));
    server.inject_fault(renewals.times(usize::MAX));
    let failing_since = Instant::now();
    let stopped = s.wait_stopped(&leader_name).await;
    // Its last successful renewal was before the faults: it must be gone by 5/6 of the lease
    // after that (plus scheduling slack).
    let after = stopped - failing_since;
    let kept_acting =
        format!("the leader kept acting {after:?} after its renewals started failing");
    assert!(after <= LEASE, "{kept_acting}");
    let requests_at_stop = server.requests().len();
    let reconciles_at_stop = leader.reconciles();

    let took_over = s.wait_leading(&standby_name).await;
    let later = took_over.start > stopped;
    assert!(later, "the standby started before the leader stopped");
    s.invite_second().await;
    assert_eq!(s.holder().await.as_deref(), Some(standby_name.as_str()));

    // Nothing but Lease requests from the old leader since it stopped.
    let (requests, agent) = (server.requests(), Some(user_agent(&leader_name)));
    let late = requests[requests_at_stop..].iter();
    let late = late.filter(|r| r.user_agent == agent && r.resource != "leases");
    let late: Vec<_> = late.map(|r| format!("{} {}", r.verb, r.path)).collect();
    assert!(late.is_empty(), "the old leader still acted: {late:?}");
    assert_eq!(leader.reconciles(), reconciles_at_stop);
    assert!(standby.reconciles() >= 1);
    // It stays a standby while its writes fail.
    assert_eq!(s.activity.of(&leader_name).len(), 1);
    s.assert_both_invited_once();
    server.clear_faults();
    s.finish(vec![leader, standby]).await;
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_at_once() {
    let s = Election::new().await;
    let (replicas, leader) = s.two_replicas_serving_first(LEASE).await;

    // Someone else writes itself into the Lease (and then never renews it).
    let stolen_at = Instant::now();
    let mut lease = s.leases().get(&s.lease_name).await.unwrap();
    let now = || Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    lease.spec = Some(LeaseSpec {
        holder_identity: Some("intruder".into()),
        acquire_time: now(),
        renew_time: now(),
        lease_duration_seconds: Some(LEASE.as_secs() as i32),
        ..lease.spec.unwrap_or_default()
    });
    let (leases, pp) = (s.leases(), PostParams::default());
    let stolen = leases.replace(&s.lease_name, &pp, &lease).await;
    stolen.expect("steal the lease");

    let stopped = s.wait_stopped(&leader).await;
    // It notices at its next renewal (every 1/6 of the lease).
    let noticed = stopped - stolen_at;
    assert!(noticed <= LEASE / 2, "the leader noticed after {noticed:?}");
    // The intruder's lease must expire before anyone leads again.
    let after_the_stop = |all: &[Interval]| all.iter().find(|i| i.start > stopped).cloned();
    let next = s.activity.wait_for("a new leader", after_the_stop).await;
    let taken = next.start - stolen_at;
    let who = &next.replica;
    let expired = taken >= LEASE;
    assert!(expired, "{who} took the intruder's lease after {taken:?}");
    s.invite_second().await;
    s.assert_both_invited_once();
    s.finish(replicas).await;
}

/// The binary wired through its environment as the Helm chart runs it (LEADER_ELECTION,
/// POD_NAME, POD_NAMESPACE, LEASE_DURATION, and the default Lease name, in the test's
/// namespace): of two processes one leads, both are ready, and SIGTERM hands the Lease over at
/// once. The processes watch only the test's namespace and cluster endpoints.
#[cfg(unix)]
#[tokio::test]
async fn the_binary_elects_from_its_environment_and_hands_over_on_sigterm() {
    let cluster = TestCluster::start().await;
    let process = |name| {
        let env = [
            ("LEADER_ELECTION", "true"),
            ("POD_NAME", name),
            ("LEASE_DURATION", "2s"),
        ];
        OperatorProcess::start(&cluster, name, &env)
    };
    let mut processes: Vec<OperatorProcess> = ["pod-1", "pod-2"].map(process).into();
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let holder = || holder(&leases, "invite-operator");
    let leader = eventually("a process to take the lease", holder).await;
    // Both ready: the leader once its caches synced, the other as a standby.
    for p in &processes {
        p.wait_ready().await;
    }
    let at = processes.iter().position(|p| p.name == leader).unwrap();
    let first = processes.remove(at);
    let second = processes.pop().unwrap();
    first.terminate().await;
    let released_at = Instant::now();
    let takes_over = async || expect_eq(holder().await, Some(second.name.clone()));
    let (poll, what) = (Duration::from_millis(20), "the standby to take over");
    eventually_every(poll, WAIT, what, takes_over).await;
    // Released on SIGTERM: no waiting for the 2s lease to expire.
    let after = released_at.elapsed();
    assert!(after < Duration::from_secs(1), "took over after {after:?}");
    second.wait_ready().await;
    second.terminate().await;
    assert_eq!(holder().await, None);
    cluster.cleanup().await;
}

/// Takeover with a journaled batch in flight (issue 19, item 2): the leader sends one invite
/// batch of several resources, recorded as one InviteIntent, and crashes while the API holds
/// the answer (it acted). The new leader reads the journal first: the addresses stay
/// `Inviting` until the request settles, are looked up then, and are never sent again; the
/// journal object is gone once the outcomes are recorded.
#[tokio::test]
async fn a_new_leader_reads_the_intent_journal_and_never_sends_its_batch_again() {
    use crate::{common::flavor::*, journal};

    let e = Election::new().await;
    // A short request timeout: the crashed leader's request settles in seconds.
    let (url, timeout) = (&e.mock.url, journal::TIMEOUT_SECONDS);
    let endpoint = Flavor::UserInvite.endpoint(url, timeout, 100);
    e.cluster.apply_endpoint(ENDPOINT, endpoint).await;
    journal::hold_invite_answers(&e);
    let first = e.batching_replica("replica-a", LEASE);
    assert_eq!(e.wait_leader().await, "replica-a");
    let second = e.batching_replica("replica-b", LEASE);
    let all = resources(3, 2);
    journal::journaled_batch_in_flight(&e, &all).await;
    first.kill().await;
    e.mock.api.clear_faults();
    journal::assert_converged_once(&e, &all).await;
    assert_eq!(e.wait_leader().await, "replica-b");
    e.finish(vec![second]).await;
}
