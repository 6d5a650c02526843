//! Exactly once across crashes (issue point 1): the `Inviting` intent is recorded in the status
//! before the invite call, so a controller killed at any point and restarted sends each
//! invitation at most once and loses none.
//!
//! Each window test kills the controller task (`RunningController::kill`, an abort at whatever
//! await point it is parked on, like a crash) at one precise point of a reconcile, for both API
//! flavours, restarts it and counts, in the mock API, the emails and the invite requests per
//! address (at the wire: a second request for a person fails the test whatever the API
//! answered). The UserInvite cases most exposed to a second request also run against an API
//! that sends again (`*_resending`: re-inviting an invited user answers 200 with a new email):
//!
//! | test | window | how it is reached deterministically |
//! |---|---|---|
//! | `kill_before_the_call_*` | intent written, invite request not sent | endpoint rate limit of 1 request/s: after the lookup the invite POST waits ~1 s in the limiter, while `Inviting` is already in Kubernetes |
//! | `kill_during_the_call_after_the_api_acted_*` | request processed by the API, answer not yet received | scripted mock fault with `after_effect` and a `delay`: the invitation is sent, the answer is held |
//! | `kill_during_the_call_before_the_api_acted_*` | request received by the API, not processed yet (a slow API, answering within the endpoint's timeout) | rate limit as above, then mock latency raised to 4.5 s (timeout 5 s) just before the POST arrives, lowered once it is in flight |
//! | `kill_after_the_call_before_the_outcome_is_written_*` | API answered, outcome status write not done | status patches fail (Kubernetes fault) once the intent is written; kill after the refused outcome write |
//! | `randomized_kills_*` | any | many resources, kills every 50–300 ms while resources are created and updated, mock latency and random 503s |

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use crate::common::{flavor::*, *};
use invite_mock::{JournalEntry, MockConfig, ScriptedFault};
use invite_operator::{
    api::{UserInvitation, UserState},
    health::Readiness,
};
use kube::api::ListParams;
use kube_test_apiserver::Fault;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use tokio::time::Instant;

/// The harness, with the endpoint of the flavour under test.
struct Env {
    flavor: Flavor,
    harness: Harness,
}

deref_to_harness!(Env);

impl Env {
    /// The endpoint at `rps` requests/s on a mock that sends again when `resend`.
    async fn new(flavor: Flavor, rps: u32, resend: bool) -> Env {
        let config = if resend {
            resending(MockConfig::default())
        } else {
            MockConfig::default()
        };
        Env::with_mock(flavor, rps, config).await
    }

    async fn with_mock(flavor: Flavor, rps: u32, config: MockConfig) -> Env {
        let harness = Harness::with_mock(config).await;
        harness.cluster.put_secret(SECRET, TOKEN).await;
        let env = Env { flavor, harness };
        env.set_rate(rps).await;
        env
    }

    /// Sets the endpoint's rate limit (raised for a quick convergence after the window was hit).
    async fn set_rate(&self, rps: u32) {
        let (url, timeout, cluster) = (&self.mock.url, REQUEST_TIMEOUT.as_secs(), &self.cluster);
        let endpoint = self.flavor.endpoint(url, timeout, rps);
        cluster.apply_endpoint(ENDPOINT, endpoint).await;
    }

    fn start(&mut self) {
        self.harness.start_controller();
    }

    async fn kill(&mut self) {
        let controller = self.controller.take();
        controller.expect("a running controller").kill().await;
    }

    fn invite_posts(&self) -> Vec<JournalEntry> {
        self.flavor.invite_posts(&self.mock)
    }

    fn emails(&self, users: &[String]) -> Vec<usize> {
        let api = &self.mock.api;
        users.iter().map(|u| api.invitations_sent_to(u)).collect()
    }

    /// The status of "team" (every 10 ms) until each of `users` is `Inviting`: the intent.
    async fn wait_intent(&self, users: &[String]) -> UserInvitation {
        let invitations = self.cluster.invitations();
        let poll = Duration::from_millis(10);
        eventually_every(poll, WAIT, "the intent", async || {
            let inv = invitations.get("team").await.expect("get");
            match &inv.status {
                Some(status) if all_in(status, users, UserState::Inviting) => Ok(inv),
                status => Err(serde_json::to_string_pretty(status).unwrap()),
            }
        })
        .await
    }

    /// Polls the mock journal (every 5 ms) until `check` holds.
    async fn wait_journal(&self, what: &str, check: impl Fn(&[JournalEntry]) -> bool) {
        eventually_every(Duration::from_millis(5), WAIT, what, async || {
            let journal = self.mock.api.journal();
            check(&journal).then_some(()).ok_or(format!("{journal:#?}"))
        })
        .await
    }

    /// Waits until the mock has answered every request it received (held ones included).
    async fn wait_mock_idle(&self) {
        let answered = |j: &[JournalEntry]| j.iter().all(|e| e.status != 0);
        let what = "every mock request answered";
        self.wait_journal(what, answered).await;
    }

    /// After the restart: Ready, every user Invited, one email each, and one invite request
    /// each at the wire (the mock's journal).
    async fn assert_invited_once(&self, name: &str, users: &[String]) {
        let status = self.cluster.wait_ready(name).await.status.unwrap();
        let invited = all_in(&status, users, UserState::Invited);
        assert!(invited, "every user Invited: {status:#?}");
        self.wait_mock_idle().await;
        let describe = |e: &JournalEntry| {
            let at = e.at.strftime("%T%.3f").to_string();
            (at, e.status, self.flavor.invited_in(e))
        };
        let posts: Vec<_> = self.invite_posts().iter().map(describe).collect();
        assert_eq!(
            self.emails(users),
            vec![1; users.len()],
            "exactly one invitation email per user ({:?}); invite requests (arrival, status, users): {posts:?}",
            self.flavor
        );
        assert_invite_requests_once(&self.mock.api, users, name);
    }

    /// Once the window was hit and the controller killed: a quick endpoint, a restarted
    /// controller, one email and one invite request each.
    async fn restart_and_assert_invited_once(mut self, users: &[String]) {
        self.set_rate(100).await;
        self.start();
        self.assert_invited_once("team", users).await;
        let posts = self.invite_posts();
        assert_eq!(posts.len(), 1, "{posts:?}");
        self.harness.finish().await;
    }
}

/// The endpoint's request timeout (`timeoutSeconds` of the endpoint).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the slow API holds the invite request before acting on it: within the endpoint's
/// request timeout, so the client would still have been waiting for the answer.
const HOLD: Duration = Duration::from_millis(4500);

/// A controller at 1 request/s, "team" of two `prefix` users created, and their intent
/// recorded while the invite request is still waiting in the limiter (the lookup used the
/// only permit): the environment, the users and the resource with its intent.
async fn intent_recorded(flavor: Flavor, prefix: &str) -> (Env, Vec<String>, UserInvitation) {
    let mut e = Env::new(flavor, 1, false).await;
    let users = addresses(prefix, 2);
    e.start();
    let spec = flavor.spec(&users);
    e.cluster.create_invitation("team", spec).await;
    let inv = e.wait_intent(&users).await;
    let posts = e.invite_posts();
    let not_sent = posts.is_empty();
    assert!(not_sent, "sent before the intent was observed: {posts:?}");
    (e, users, inv)
}

// ------------------------------------------------------------------------------ kill before

/// Window: the intent (`Inviting`) is durable in Kubernetes, the invite request has not left the
/// controller. With a rate limit of 1 request/s the invite POST waits about a second in the
/// endpoint's limiter right after the intent write (the lookup just used the only permit), so
/// the controller is parked there when it is killed. The journal proves the POST never arrived,
/// even after the limiter would have let it go.
async fn kill_before_the_call(flavor: Flavor) {
    let (mut e, users, inv) = intent_recorded(flavor, "before").await;
    e.kill().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let posts = e.invite_posts();
    let never = posts.is_empty();
    assert!(never, "the killed controller never sends it: {posts:?}");
    assert_eq!(e.emails(&users), vec![0, 0]);
    let now = e.cluster.invitations().get("team").await.unwrap();
    let last = now.metadata.resource_version == inv.metadata.resource_version;
    assert!(last, "the intent is the last status written");
    e.restart_and_assert_invited_once(&users).await;
}

per_flavor!(kill_before_the_call() =>
    kill_before_the_call_userinvite, kill_before_the_call_orginvitation);

// ------------------------------------------------------------------------------ kill during

per_flavor!(#[tokio::test] kill_during_the_call_after_the_api_acted =>
    kill_during_the_call_after_the_api_acted_userinvite,
    kill_during_the_call_after_the_api_acted_userinvite_resending,
    kill_during_the_call_after_the_api_acted_orginvitation);

/// Window: the API has received the invite request and acted on it (the emails are sent), its
/// answer is still on the way (a lost response). A scripted fault with `after_effect` performs
/// the operation, then holds the answer for 2 s (the journal shows the request in flight,
/// status 0); the controller is killed meanwhile. After the restart the lookup finds the
/// invitations: no second request, no second email.
async fn kill_during_the_call_after_the_api_acted(flavor: Flavor, resend: bool) {
    let mut e = Env::new(flavor, 100, resend).await;
    let held = ScriptedFault::new(503).delay(Duration::from_secs(2));
    let held = flavor.on_invite(held.after_effect(true));
    e.mock.api.add_fault(held);
    let users = addresses("during", 2);
    e.start();
    let spec = flavor.spec(&users);
    e.cluster.create_invitation("team", spec).await;
    let in_flight = |j: &[JournalEntry]| j.iter().any(|x| flavor.is_invite_post(x));
    e.wait_journal("the invite POST in flight", in_flight).await;
    let emailed = |_: &[JournalEntry]| e.emails(&users) == [1, 1];
    e.wait_journal("the API acted on it", emailed).await;
    let posts = e.invite_posts();
    let held = posts.len() == 1 && posts[0].status == 0;
    assert!(held, "the invite request is held: {posts:?}");
    let status = e.cluster.invitations().get("team").await.unwrap().status;
    let intent_only = all_in(status.as_ref().unwrap(), &users, UserState::Inviting);
    assert!(intent_only, "only the intent is recorded: {status:?}");
    e.kill().await;

    e.start();
    e.assert_invited_once("team", &users).await;
    let posts = e.invite_posts();
    assert_eq!(posts.len(), 1, "looked up, not sent again: {posts:?}");
    e.harness.finish().await;
}

/// Window: the API has received the invite request but not processed it yet (a slow API that
/// answers within the endpoint's timeout), when the controller is killed and restarted. The
/// POST waits ~1 s in the rate limiter after the intent write (as in `kill_before_the_call`); in
/// that second the mock's latency is raised to [`HOLD`], so the API holds the POST before acting
/// on it; once it is in flight (journal status 0, no email yet) the latency goes back to 0 and
/// the controller is killed. The restarted controller finds `Inviting` whose request has not
/// settled: it neither looks the users up nor invites them while the first request is held;
/// once the request has settled it looks them up, and each user has exactly one email.
async fn kill_during_the_call_before_the_api_acted(flavor: Flavor) {
    let (mut e, users, intent) = intent_recorded(flavor, "slow").await;
    let invited_at = intent.status.unwrap().users[0].invited_at;
    eprintln!("intent recorded, invitedAt {invited_at:?}");
    e.mock.api.set_latency(HOLD);
    let in_flight = |j: &[JournalEntry]| j.iter().any(|x| flavor.is_invite_post(x));
    let what = "the invite request in flight";
    e.wait_journal(what, in_flight).await;
    e.mock.api.set_latency(Duration::ZERO);
    assert_eq!(e.emails(&users), vec![0, 0], "the API has not acted yet");
    let journal = e.mock.api.journal();
    let held = journal.iter().position(|x| flavor.is_invite_post(x));
    let held = held.unwrap();
    assert_eq!(journal[held].status, 0, "{:?}", journal[held]);
    e.kill().await;

    e.set_rate(100).await;
    e.start();
    // While the first request is held, the restarted controller touches none of its users:
    // a lookup now would find nobody and invite again.
    let answered = |j: &[JournalEntry]| j[held].status != 0;
    e.wait_journal("the held request answered", answered).await;
    let journal = e.mock.api.journal();
    let touching = |x: &&JournalEntry| flavor.is_lookup(x) || flavor.is_invite_post(x);
    let meanwhile: Vec<_> = journal[held + 1..].iter().filter(touching).collect();
    let untouched = meanwhile.is_empty();
    assert!(untouched, "looked up or invited meanwhile: {meanwhile:?}");
    // Once it has settled, the users are looked up, and each has exactly one email.
    e.assert_invited_once("team", &users).await;
    e.harness.finish().await;
}

per_flavor!(kill_during_the_call_before_the_api_acted() =>
    kill_during_the_call_before_the_api_acted_userinvite,
    kill_during_the_call_before_the_api_acted_orginvitation);

/// Window: one invite request carries the users of several resources (their calls are
/// coalesced), the API holds it (it acts later, then answers 502), and the controller is killed
/// meanwhile. The batch's intent was recorded before the call in the intent journal (one
/// `InviteIntent` naming every address and its resource), so after the restart each resource's
/// addresses count as `Inviting` until the request has settled; then they are looked up and
/// found invited: one email each.
async fn kill_while_a_batch_spanning_resources_is_in_flight(flavor: Flavor, resend: bool) {
    let mut e = Env::new(flavor, 100, resend).await;
    let held = ScriptedFault::new(502).delay(HOLD).after_effect(true);
    e.mock.api.add_fault(flavor.on_invite(held.times(1)));
    // A long collection window, so the resources' invitations surely share one request.
    let settings = e.cluster.batching_settings();
    e.harness.start_controller_with(settings);
    let resources = resources(4, 2);
    futures::future::join_all(
        resources
            .iter()
            .map(|(name, users)| e.cluster.create_invitation(name, flavor.spec(users))),
    )
    .await;
    e.wait_journal("an invite request spanning resources in flight", |j| {
        j.iter().any(|x| {
            flavor.is_invite_post(x) && x.status == 0 && spans(&flavor.invited_in(x), &resources)
        })
    })
    .await;
    e.kill().await;
    e.start();
    for (name, users) in &resources {
        e.assert_invited_once(name, users).await;
    }
    e.harness.finish().await;
}

per_flavor!(#[tokio::test] kill_while_a_batch_spanning_resources_is_in_flight =>
    kill_while_a_batch_spanning_resources_is_in_flight_userinvite,
    kill_while_a_batch_spanning_resources_is_in_flight_userinvite_resending,
    kill_while_a_batch_spanning_resources_is_in_flight_orginvitation);

// ------------------------------------------------------------------------------ kill after

/// Window: the API answered the invite request (journal status 2xx, emails sent), the outcome
/// (`Invited`) is not in Kubernetes. Once the intent is observed (the POST is still waiting in
/// the 1 request/s limiter), every status patch fails with a 500, so the outcome write is
/// refused; the controller is killed after that refusal, the fault is lifted, and the restarted
/// controller must look the users up instead of inviting them again.
async fn kill_after_the_call_before_the_outcome_is_written(flavor: Flavor) {
    if real_cluster_kubeconfig().is_some() {
        eprintln!("skipped: needs the in-process API server (fault injection)");
        return;
    }
    let (mut e, users, _) = intent_recorded(flavor, "after").await;
    let server = e.cluster.server.clone().expect("the in-process API server");
    let status_patch = Fault::new(500).verb("patch").resource("userinvitations");
    server.inject_fault(status_patch.subresource(Some("status")).times(usize::MAX));
    let ok = |x: &JournalEntry| flavor.is_invite_post(x) && (200..300).contains(&x.status);
    let answered = |j: &[JournalEntry]| j.iter().any(ok);
    let what = "the invite request answered";
    e.wait_journal(what, answered).await;
    assert_eq!(e.emails(&users), vec![1, 1]);
    let outcome_write_refused = async || {
        server.requests().iter().any(|r| {
            r.verb == "patch"
                && r.resource == "userinvitations"
                && r.subresource.as_deref() == Some("status")
                && r.status == 500
        })
    };
    let (poll, what) = (Duration::from_millis(5), "an outcome write attempted");
    eventually_every(poll, WAIT, what, outcome_write_refused).await;
    let status = e.cluster.invitations().get("team").await.unwrap().status;
    let not_recorded = all_in(status.as_ref().unwrap(), &users, UserState::Inviting);
    assert!(not_recorded, "the outcome is not recorded: {status:?}");
    e.kill().await;
    server.clear_faults();
    e.restart_and_assert_invited_once(&users).await;
}

per_flavor!(kill_after_the_call_before_the_outcome_is_written() =>
    kill_after_the_call_before_the_outcome_is_written_userinvite,
    kill_after_the_call_before_the_outcome_is_written_orginvitation);

// ------------------------------------------------------------------------------ randomized

enum Op {
    Create(String, Vec<String>),
    Update(String, Vec<String>),
}

/// Many resources (1–5 users each, drawn from a shared pool so that addresses are shared
/// between resources), created and updated at random moments while the controller is killed
/// and restarted every 50–300 ms, against a mock with latency and random 503s. Then one
/// controller runs to completion.
///
/// Checks: every resource Ready for its last spec, every user `Invited` or `AlreadyMember`;
/// the first resource to invite a person owns them, so however many resources list an
/// address it was asked for in at most one invite request at the wire (the mock's journal,
/// whatever the API answered) and got at most one email; every address of a final spec got its
/// invitation; an address never listed got none. `resend` runs it against an API that sends
/// again. Set `EXACTLY_ONCE_SEED` to replay a seed's plan.
/// What a randomized run does: resources created and updated at random moments, and the
/// moments (with pauses) the controller is killed.
#[derive(Default)]
struct Plan {
    count: usize,
    ops: Vec<(u64, Op)>,
    /// Each resource's last list of users.
    last: BTreeMap<String, Vec<String>>,
    /// Everyone each resource ever listed.
    ever: BTreeMap<String, BTreeSet<String>>,
    kills: Vec<(u64, u64)>,
}

impl Plan {
    /// Creations over the first 2.5 s, updates of about half of them later; kills every 50 to
    /// 300 ms for 4 s, each followed by a pause of up to 30 ms.
    fn new(rng: &mut StdRng, pool: &[String]) -> Plan {
        let pick = |rng: &mut StdRng| -> Vec<String> {
            let n = rng.random_range(1..=5);
            pool.choose_multiple(rng, n).cloned().collect()
        };
        let count = rng.random_range(15..=30);
        let mut plan = Plan {
            count,
            ..Plan::default()
        };
        for i in 0..count {
            let name = format!("r{i:02}");
            let at = rng.random_range(0..2500);
            let users = plan.list(&name, pick(rng));
            plan.ops.push((at, Op::Create(name.clone(), users)));
            let mut t = at;
            while rng.random_bool(0.5) && t < 3500 {
                t += rng.random_range(50..800);
                let users = plan.list(&name, pick(rng));
                plan.ops.push((t, Op::Update(name.clone(), users)));
            }
        }
        plan.ops.sort_by_key(|(at, _)| *at);
        let mut t = 0;
        loop {
            t += rng.random_range(50..=300);
            if t > 4000 {
                break;
            }
            plan.kills.push((t, rng.random_range(0..=30)));
        }
        plan
    }

    /// Records that `name` lists `users`; returns them.
    fn list(&mut self, name: &str, users: Vec<String>) -> Vec<String> {
        let ever = self.ever.entry(name.to_string()).or_default();
        ever.extend(users.iter().cloned());
        self.last.insert(name.to_string(), users.clone());
        users
    }
}

/// What the kills hit: an invite request in flight, a batch spanning resources, a new intent
/// left behind (killed between intent and outcome).
#[derive(Default)]
struct KillRecord {
    during_call: usize,
    during_spanning_batch: usize,
    new_intents: usize,
}

/// Kills and restarts the controller as planned; returns the last one and what the kills hit.
async fn chaos(env: &Env, plan: &Plan, start: Instant) -> (RunningController, KillRecord) {
    let (flavor, cluster) = (env.flavor, &env.cluster);
    let mut controller = cluster.start_controller();
    let mut record = KillRecord::default();
    let mut intents = BTreeSet::new();
    for (at, pause) in &plan.kills {
        tokio::time::sleep_until(start + Duration::from_millis(*at)).await;
        let in_flight = flavor.invites_answered(&env.mock.api.journal(), 0);
        record.during_call += usize::from(!in_flight.is_empty());
        // A batch no single resource's users cover spans resources.
        let within =
            |batch: &Vec<String>, users: &BTreeSet<String>| batch.iter().all(|u| users.contains(u));
        let spans = |batch: &Vec<String>| !plan.ever.values().any(|users| within(batch, users));
        record.during_spanning_batch += usize::from(in_flight.iter().any(spans));
        controller.kill().await;
        let list = cluster.invitations().list(&ListParams::default()).await;
        let mut new = false;
        for inv in list.into_iter().flat_map(|l| l.items) {
            let users = inv.status.map(|s| s.users).unwrap_or_default();
            for u in users.into_iter().filter(|u| u.state == UserState::Inviting) {
                let name = inv.metadata.name.clone();
                new |= intents.insert((name, u.email_address, u.invited_at));
            }
        }
        record.new_intents += usize::from(new);
        tokio::time::sleep(Duration::from_millis(*pause)).await;
        controller = cluster.start_controller();
    }
    (controller, record)
}

/// Creates and updates the resources as planned.
async fn workload(env: &Env, plan: &Plan, start: Instant) {
    for (at, op) in &plan.ops {
        tokio::time::sleep_until(start + Duration::from_millis(*at)).await;
        match op {
            Op::Create(name, users) => {
                let spec = env.flavor.spec(users);
                env.cluster.create_invitation(name, spec).await;
            }
            Op::Update(name, users) => env.cluster.patch_spec(name, env.flavor.spec(users)).await,
        }
    }
}

/// Waits until every resource is done with its last spec. An invitation met by a fault leaves
/// its users unsettled for a settle window (request timeout and clock skew), and a person held
/// by an unsettled resource waits for it, so under 5 % faults a few windows in a row are
/// possible (seen once under a loaded machine: 30 s was not enough).
async fn converge(env: &Env, plan: &Plan, controller: &RunningController, ctx: &str) {
    let done = |inv: &UserInvitation| {
        let name = inv.metadata.name.clone().unwrap_or_default();
        let Some(status) = &inv.status else {
            return false;
        };
        let wanted = &plan.last[&name];
        is_ready(status)
            && status.observed_generation == inv.metadata.generation
            && status.users.len() == wanted.len()
            && wanted.iter().all(|u| {
                matches!(
                    state(status, u),
                    Some(UserState::Invited | UserState::AlreadyMember)
                )
            })
    };
    let what = format!("{ctx}: resources to converge");
    eventually_every(Duration::from_millis(100), 3 * WAIT, &what, async || {
        let list = env.cluster.invitations().list(&ListParams::default()).await.unwrap();
        let describe = |inv: &UserInvitation| {
            let name = inv.metadata.name.clone().unwrap_or_default();
            format!("{name}: {}", serde_json::to_string(&inv.status).unwrap())
        };
        let pending = list.items.iter().filter(|inv| !done(inv));
        let pending: Vec<String> = pending.map(describe).collect();
        if pending.is_empty() && list.items.len() == plan.count {
            return Ok(());
        }
        let readiness = *controller.readiness.borrow();
        let task = if controller.is_finished() { "ended" } else { "is running" };
        let stalled = " (stalled before its endpoint caches reported ready)";
        let stalled = if readiness != Readiness::Ready { stalled } else { "" };
        let reconciles = controller.reconciles();
        Err(format!(
            "{pending:#?}\nthe last controller made {reconciles} reconciles, its task {task}, readiness {readiness:?}{stalled}"
        ))
    })
    .await;
}

/// What breaks exactly-once, per address of `pool`: listed but never invited, invited without
/// being listed, more than one email or invite request.
fn exactly_once_problems(env: &Env, plan: &Plan, pool: &[String]) -> Vec<String> {
    let requests = env.mock.api.invite_requests();
    let emails = env.mock.api.emails_sent();
    let final_listed: BTreeSet<&String> = plan.last.values().flatten().collect();
    let ever_listed: BTreeSet<&String> = plan.ever.values().flatten().collect();
    let mut problems = Vec::new();
    for address in pool {
        let sent = emails.get(address).copied().unwrap_or(0);
        let asked = requests.get(address).copied().unwrap_or(0);
        let listed_by = plan.ever.values().filter(|s| s.contains(address)).count();
        if final_listed.contains(address) && sent == 0 {
            problems.push(format!(
                "{address}: listed, but no invitation was sent (lost)"
            ));
        }
        if !ever_listed.contains(address) && (sent != 0 || asked != 0) {
            let what = format!("{address}: never listed, {sent} emails, {asked} invite requests");
            problems.push(what);
        }
        // The first resource to invite a person owns them: one request and one email, however
        // many list them.
        if sent > 1 || asked > 1 {
            problems.push(format!(
                "{address}: {sent} emails, {asked} invite requests, listed by {listed_by} resources"
            ));
        }
    }
    problems
}

async fn randomized_kills(flavor: Flavor, resend: bool) {
    let seed = std::env::var("EXACTLY_ONCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed: u64 = seed.unwrap_or_else(rand::random);
    let again = if resend { " (API sending again)" } else { "" };
    let mut ctx = format!("{flavor:?}{again}, seed {seed} (replay with EXACTLY_ONCE_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let latency = Duration::from_millis(rng.random_range(10..=40));
    let config = MockConfig {
        latency,
        fault_rate: 0.05,
        seed,
        resend_to_invited: resend,
        ..MockConfig::default()
    };
    let env = Env::with_mock(flavor, 1000, config).await;
    ctx.push_str(&format!(", namespace {}", env.cluster.namespace));
    eprintln!("randomized exactly-once test: {ctx}");
    let pool = addresses("p", 40);
    let plan = Plan::new(&mut rng, &pool);

    let start = Instant::now();
    let ((controller, kills), ()) =
        tokio::join!(chaos(&env, &plan, start), workload(&env, &plan, start));
    eprintln!(
        "{} resources, {} operations, {} kills ({} during an invite request, {} during a batch \
         spanning resources, {} leaving a new intent behind), latency {latency:?}; converging",
        plan.count,
        plan.ops.len(),
        plan.kills.len(),
        kills.during_call,
        kills.during_spanning_batch,
        kills.new_intents,
    );
    converge(&env, &plan, &controller, &ctx).await;
    env.wait_mock_idle().await;

    let problems = exactly_once_problems(&env, &plan, &pool);
    assert!(
        problems.is_empty(),
        "{ctx}: exactly-once violated:\n{}\nemails: {:?}\ninvite requests: {:?}\nfinal specs: {:?}",
        problems.join("\n"),
        env.mock.api.emails_sent(),
        env.mock.api.invite_requests(),
        plan.last
    );
    let journal = env.mock.api.journal();
    let posts = || journal.iter().filter(|e| flavor.is_invite_post(e));
    eprintln!(
        "{ctx}: {} addresses invited, {} invite requests in all ({} answered by a fault)",
        env.mock.api.emails_sent().len(),
        posts().count(),
        posts().filter(|e| e.fault).count()
    );
    controller.stop().await;
    env.harness.finish().await;
}

per_flavor!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    randomized_kills => randomized_kills_userinvite, randomized_kills_userinvite_resending,
    randomized_kills_orginvitation);
