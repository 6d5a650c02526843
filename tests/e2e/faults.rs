//! Faults at scale (issue 11, point 10): many resources (both API flavours, 3 users each)
//! against an invite API that fails about half its requests — 30% 5xx (500/502/503/504),
//! 10% 429 with `Retry-After: 1`, 5% timeouts, 3% truncated answers, 3% connection resets,
//! half of the failed changes acting anyway — while the in-process Kubernetes API server expires
//! the watches (its history compacted, as etcd's every five minutes: watches resuming from an
//! older resourceVersion get `410 Expired` and list again), fails a list and answers status
//! writes with 409, 422 (a failed guard) and 500.
//!
//! Every user must end invited with exactly one email and one invite request at the wire,
//! `Retry-After` must be honoured (the mock lists no request that came too early), and the API
//! calls per user stay under [`CALLS_PER_USER`]. The records show that each kind of fault
//! reached the controller: the fake API server's (409, 422 and 500 on status writes, the failed
//! list) and the mock's journal (503, 504, 429, timeouts).
//!
//! [`watches_that_expire_again_and_again_do_not_stall_the_controller`]: the controller sees
//! changes at once after every one of many watch expiries in a row.
//!
//! Size: `FAULTS_RESOURCES` resources (default 60, which CI runs); the full size is one
//! command away: `FAULTS_RESOURCES=200 cargo test --test e2e faults:: -- --nocapture`.
//! On a real API server the Kubernetes faults cannot be injected: the test says so and runs
//! with the API faults only.

use std::time::Duration;

use crate::common::{flavor::*, *};
use invite_mock::{FaultMix, MockConfig};
use invite_operator::api::UserState;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::PostParams};
use kube_test_apiserver::{Fault, RecordedRequest};

/// The most API requests (lookups, invitations, token exchanges, retries) per user invited.
const CALLS_PER_USER: f64 = 6.0;
const USERS_PER_RESOURCE: usize = 3;
/// How long after a `Retry-After` answer left the mock a request may still arrive because it
/// was sent before the controller read that answer (two loaded cores).
const REACTION: Duration = Duration::from_millis(100);

fn resources() -> usize {
    std::env::var("FAULTS_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

#[tokio::test]
async fn every_user_is_invited_once_under_api_and_kubernetes_faults() {
    let n = resources();
    let mut h = faulty_harness().await;
    h.start_controller();
    let users = create_resources(&h, n).await;
    let started = tokio::time::Instant::now();
    let (mut injected, mut tick) = (0usize, 0u64);
    let within = Duration::from_secs(90 + n as u64);
    let what = format!("{n} resources Ready");
    eventually_every(Duration::from_millis(250), within, &what, async || {
        if let Some(server) = h.cluster.server.as_ref().filter(|_| tick.is_multiple_of(4)) {
            injected += inject_kubernetes_faults(server, tick);
        }
        tick += 1;
        let list = h.cluster.list_invitations().await;
        let not_ready: Vec<_> = list
            .iter()
            .filter(|inv| !inv.status.as_ref().is_some_and(is_ready))
            .map(|inv| (inv.metadata.name.clone(), inv.status.clone()))
            .collect();
        let (ready, elapsed) = (n - not_ready.len(), started.elapsed());
        let progress = format!("{ready} Ready after {elapsed:?}; not ready: {not_ready:#?}");
        not_ready.is_empty().then_some(()).ok_or(progress)
    })
    .await;
    let elapsed = started.elapsed();
    if let Some(server) = &h.cluster.server {
        server.clear_faults();
    }
    h.mock.api.set_fault_mix(FaultMix::default()).unwrap();
    // Held (timed-out) requests are let go when the mock stops; everything else was answered.
    let list = h.cluster.list_invitations().await;
    for inv in &list {
        let status = status_of(inv);
        assert_eq!(status.users.len(), USERS_PER_RESOURCE, "{status:#?}");
        let invited = status.users.iter().all(|u| u.state == UserState::Invited);
        assert!(invited, "{status:#?}");
    }
    let emails = h.mock.api.emails_sent();
    for u in &users {
        assert_eq!(emails.get(u).copied(), Some(1), "one email to {u}");
    }
    assert_eq!(emails.len(), users.len(), "nobody else got an email");
    // A request that arrived within REACTION of the throttled answer leaving the mock was
    // already on its way (the controller had not read the answer yet); any later one is a
    // violation.
    let violations: Vec<_> = h
        .mock
        .retry_after_violations()
        .into_iter()
        .filter(|v| {
            v.throttled
                .answered
                .is_none_or(|left| v.request.offset > left + REACTION)
        })
        .collect();
    assert!(violations.is_empty(), "Retry-After: {violations:#?}");
    assert_invite_requests_once(&h.mock.api, &users, "under faults");
    let (journal, kinds) = faults_met(&h);
    let faulted = journal.iter().filter(|e| e.fault).count();
    println!("faults met: {}", kinds.join(", "));
    let per_user = journal.len() as f64 / users.len() as f64;
    println!(
        "{n} resources, {} users in {elapsed:?}: {} API requests ({faulted} faulted), {per_user:.2} per user; {injected} Kubernetes faults injected",
        users.len(),
        journal.len()
    );
    assert!(faulted > 0, "faults were injected");
    let bound = format!("(bound {CALLS_PER_USER})");
    assert!(per_user <= CALLS_PER_USER, "{per_user:.2} per user {bound}");
    h.finish().await;
}

/// The endpoints of both flavours.
const ENDPOINTS: [(Flavor, &str); 2] = [
    (Flavor::UserInvite, "wavefront"),
    (Flavor::OrgInvitation, "csp"),
];

/// `n` resources of 3 users each, alternately UserInvite and OrgInvitation; their users.
async fn create_resources(h: &Harness, n: usize) -> Vec<String> {
    let mut users = Vec::new();
    for i in 0..n {
        let (flavor, endpoint) = ENDPOINTS[i % 2];
        let emails = addresses(&format!("r{i}"), USERS_PER_RESOURCE);
        let mut spec = flavor.spec(&emails);
        spec["endpointRef"]["name"] = endpoint.into();
        users.extend(emails);
        h.cluster.create_invitation(&format!("r{i}"), spec).await;
    }
    users
}

/// A harness whose invite API fails about half its requests (both flavours' endpoints, with
/// 1 s timeouts: an unknown outcome settles within about 3 s).
async fn faulty_harness() -> Harness {
    let h = Harness::with_mock(MockConfig {
        seed: 11,
        ..MockConfig::default()
    })
    .await;
    h.cluster.put_secret(SECRET, TOKEN).await;
    for (flavor, name) in ENDPOINTS {
        let url = &h.mock.url;
        flavor.apply_endpoint(&h.cluster, name, url, 1, 100).await;
    }
    h.mock
        .api
        .set_fault_mix(FaultMix {
            server_error: 0.30,
            too_many_requests: 0.10,
            retry_after_secs: Some(1),
            timeout: 0.05,
            truncated: 0.03,
            reset: 0.03,
            after_effect: 0.5,
            token_exchange: false,
        })
        .unwrap();
    if h.cluster.server.is_none() {
        println!(
            "real API server: Kubernetes faults cannot be injected there; running with the invite API faults only"
        );
    }
    h
}

/// About once a second: a conflict, a failed guard and a server error on status writes; every
/// few seconds a failed list and expired watches (they list again). Returns how many.
fn inject_kubernetes_faults(server: &kube_test_apiserver::TestApiServer, tick: u64) -> usize {
    let mut injected = 0;
    // Faults of the controller's own requests only (its User-Agent).
    let ua = "invite-operator";
    let status_write = |code| {
        Fault::new(code)
            .verb("patch")
            .resource("userinvitations")
            .subresource(Some("status"))
            .user_agent(ua)
    };
    // Faults nobody met are dropped first: piled up while most resources are done, they would
    // all fall on the last resource's writes and starve it (a fault of the test, not of it).
    server.clear_faults();
    server.inject_fault(status_write(409).times(1));
    server.inject_fault(status_write(422).times(1));
    server.inject_fault(status_write(500).times(1));
    injected += 3;
    if tick.is_multiple_of(12) {
        server.inject_fault(Fault::new(500).verb("list").user_agent(ua).times(1));
        server.compact_history();
        server.close_watches();
        injected += 2;
    }
    injected
}

/// Every kind of API fault met by the controller's requests, and of Kubernetes fault answered
/// to it (in-process only); the journal and the counts by kind.
fn faults_met(h: &Harness) -> (Vec<invite_mock::JournalEntry>, Vec<String>) {
    let journal = h.mock.api.journal();
    // Each kind of API fault was met by the controller's requests.
    let met = |what: &str, check: &dyn Fn(&invite_mock::JournalEntry) -> bool| {
        let n = journal.iter().filter(|e| e.fault && check(e)).count();
        assert!(n > 0, "no API request met {what}");
        format!("{n} {what}")
    };
    let mut kinds = vec![
        met("503", &|e| e.status == 503),
        met("504", &|e| e.status == 504),
        met("429", &|e| e.status == 429),
        met("timeout", &|e| e.fault_kind.as_deref() == Some("timeout")),
    ];
    // Each kind of Kubernetes fault was answered to the controller.
    if let Some(server) = &h.cluster.server {
        let requests = server.requests();
        for status in [409, 422, 500] {
            let n = controller_requests(&requests, "patch")
                .filter(|r| r.subresource.as_deref() == Some("status") && r.status == status)
                .count();
            assert!(n > 0, "the controller never got status write {status}");
            kinds.push(format!("{n} status write {status}"));
        }
        // The expired watches list again, and some of those lists fail.
        let lists = requests
            .iter()
            .filter(|r| r.verb == "list" && r.status == 500);
        let lists = lists.count();
        assert!(lists > 0, "the controller never got a failed list");
        kinds.push(format!("{lists} failed list"));
    }
    (journal, kinds)
}

/// Watches that expire again and again (`410 Expired` after a compaction of the history, each
/// followed by a list) do not stall the controller: after many expiries in a row, a new
/// resource is reconciled within seconds. The controller used to pass the watches' errors on to
/// kube-runtime's `Controller`, which paused all its triggers after each one, longer every
/// time (0.8 s doubling up to 30 s) until an object came through — and while paused, the
/// cache the reconciles read from stood still, so resources whose passes had just written
/// their status met an outdated copy of themselves, pass after pass (left `Inviting` for
/// minutes in `every_user_is_invited_once_under_api_and_kubernetes_faults`).
#[tokio::test]
async fn watches_that_expire_again_and_again_do_not_stall_the_controller() {
    const EXPIRIES: usize = 5;
    /// How long the new resource may take to become Ready: a watch's own backoff (about a
    /// second), a list and one pass. Stalled by the fifth expiry: 12.8 s or more.
    const WITHIN: Duration = Duration::from_secs(8);
    let mut h = Flavor::UserInvite.harness(5, 100).await;
    let Some(server) = h.cluster.server.clone() else {
        println!("real API server: watches cannot be expired there; nothing to test");
        return;
    };
    h.start_controller();
    let mut users = addresses("first", 2);
    let c = &h.cluster;
    let spec = Flavor::UserInvite.spec(&users);
    c.create_invitation("first", spec).await;
    c.wait_status("first", "first Ready", is_ready).await;
    // The controller's lists and watches of UserInvitations.
    let requests = |verb: &str| controller_requests(&server.requests(), verb).count();
    let wait_for_more = |verb: &'static str, than: usize| {
        let requests = &requests;
        async move {
            // Seconds with the watch's own backoff; stalled, the pause grew past a minute.
            let (poll, within) = (Duration::from_millis(10), Duration::from_secs(60));
            let what = format!("a new {verb} of UserInvitations after a watch expiry");
            eventually_every(poll, within, &what, async || requests(verb) > than).await;
        }
    };
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), &c.namespace);
    for round in 1..=EXPIRIES {
        // A write the controller does not watch, so that what its watches saw last is older
        // than the compaction: they resume into `410 Expired`, then list and watch again.
        let mut lease = Lease::default();
        lease.metadata.name = Some(format!("round-{round}"));
        lease.metadata.labels = serde_json::from_value(c.labels()).unwrap();
        let created = leases.create(&PostParams::default(), &lease).await;
        created.expect("create a Lease");
        let (lists, watches) = (requests("list"), requests("watch"));
        server.compact_history();
        server.close_watches();
        if round == EXPIRIES {
            // The resource comes while the last expiry is being recovered from.
            break;
        }
        // The watch resumed (and expired), the list, the new watch.
        wait_for_more("list", lists).await;
        wait_for_more("watch", watches + 1).await;
    }
    let emails = addresses("after", 2);
    let spec = Flavor::UserInvite.spec(&emails);
    c.create_invitation("after", spec).await;
    users.extend(emails);
    let what = format!("a resource created after {EXPIRIES} watch expiries in a row Ready");
    eventually_every(Duration::from_millis(20), WITHIN, &what, async || {
        let inv = c.invitations().get("after").await.unwrap();
        inv.status.as_ref().is_some_and(is_ready)
    })
    .await;
    assert_invite_requests_once(&h.mock.api, &users, "after watch expiries");
    h.finish().await;
}

/// The controller's requests (by its User-Agent) with this verb on UserInvitations.
fn controller_requests<'a>(
    requests: &'a [RecordedRequest],
    verb: &'a str,
) -> impl Iterator<Item = &'a RecordedRequest> {
    let ua = invite_operator::controller::USER_AGENT;
    requests.iter().filter(move |r| {
        let controllers = r.user_agent.as_deref().is_some_and(|a| a.starts_with(ua));
        controllers && r.verb == verb && r.resource == "userinvitations"
    })
}
