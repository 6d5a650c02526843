//! # Throughput, API economy and memory of the real controller
//!
//! `cargo bench --bench throughput -- [FLAGS]` (`--help` lists them; docs/benchmark.md
//! explains every figure).
//!
//! The controller under test is the real `invite-operator run` binary, started as a child
//! process against a Kubernetes API server (the in-process `kube-test-apiserver`, or a real
//! cluster with `--kubeconfig`) and the in-process mock of both invite APIs with added
//! latency. The benchmark runs five phases, each in a namespace of its own:
//!
//! 0. **latency**: the controller runs and is idle; `--latency-samples` resources of 2 users
//!    are applied one at a time, each timed from its create to Ready (p50 and p90): what a
//!    person waiting on `kubectl wait` sees;
//! 1. **applied at once**: the controller runs; N UserInvitations of M users are created
//!    concurrently; time until every one is Ready;
//! 2. **idle resync**: the controller is restarted over the converged resources; its writes
//!    and API calls in the restart pass, whose first look at each resource checks every
//!    invited user again as the periodic resync does;
//! 3. **backlog at start**: N resources are created, then the controller starts; time from
//!    process start to all Ready, and to the first reconcile; then, with the controller
//!    stopped, the **Kubernetes floor** (`floor.rs`): the benchmark itself makes the writes
//!    the exactly-once rules require of each converged resource;
//! 4. **memory**: a backlog of `--memory-resources` resources naming a missing endpoint (no
//!    API calls); the controller's peak RSS once every status says so.
//!
//! Then it prints one Markdown table on stdout (progress goes to stderr). It fails when an
//! address was not invited exactly once (one invite request at the wire, one email), when a
//! resource never converges, when the controller's counted API calls and the mock's journal
//! disagree, or when the idle resync writes anything; it never asserts speed.

#[path = "throughput/cluster.rs"]
mod cluster;
#[path = "throughput/controller.rs"]
mod controller;
#[path = "throughput/floor.rs"]
mod floor;
#[path = "throughput/invites.rs"]
mod invites;
#[path = "throughput/table.rs"]
mod table;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use invite_mock::{ApiFamily, RunningMock};

use cluster::{Cluster, Tracker, Writes};
use controller::{ControllerProcess, Launch, Metrics};
use table::{Table, count, mib, ms, ratio, secs};

/// Errors are messages: the benchmark reports them and exits non-zero.
pub type BenchResult<T> = Result<T, String>;

/// Prints a progress line on stderr.
pub fn progress(line: std::fmt::Arguments<'_>) {
    eprintln!("throughput: {line}");
}

/// Which invite API the resources use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ApiChoice {
    /// Every resource on a UserInvite endpoint.
    Userinvite,
    /// Every resource on an OrgInvitation endpoint.
    Orginvitation,
    /// Half of the resources on each (alternating).
    Both,
}

/// Throughput, API economy and memory of the real invite-operator controller.
#[derive(Parser, Debug)]
#[command(name = "throughput")]
struct Args {
    /// Run against the cluster of this kubeconfig (CRDs are applied; namespaces
    /// `invite-bench-<random>-<phase>` are created and deleted). Default: the in-process
    /// Kubernetes API server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// UserInvitations per convergence run [default: 1000; --quick: 20].
    #[arg(long)]
    resources: Option<usize>,
    /// Users per UserInvitation [default: 5; --quick: 2].
    #[arg(long)]
    users: Option<usize>,
    /// Latency the mock API adds to every request [default: 50ms; --quick: 5ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    latency: Option<Duration>,
    /// Which API the resources use (`both`: alternating, half on each).
    #[arg(long, value_enum, default_value = "both")]
    api: ApiChoice,
    /// Members the OrgInvitation organization has before each convergence run (seeded in the
    /// mock; lookups then choose between the user search and the paged member listing).
    #[arg(long, default_value_t = 0)]
    org_members: usize,
    /// `requestsPerSecond` of the endpoints (default: left out, so the default in code applies).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    requests_per_second: Option<u32>,
    /// Resources of the memory run, which name a missing endpoint (0 skips it)
    /// [default: 10000; --quick: 200].
    #[arg(long)]
    memory_resources: Option<usize>,
    /// The controller's `--concurrency` (default: the controller's default).
    #[arg(long)]
    concurrency: Option<u16>,
    /// The controller's `--batch-window` (default: the controller's default).
    #[arg(long)]
    batch_window: Option<String>,
    /// The controller's `--batch-max-users` (default: the controller's default).
    #[arg(long)]
    batch_max_users: Option<u32>,
    /// Any other flag for `invite-operator run`, e.g. `--controller-arg=--retry-base-delay=100ms`
    /// (repeatable).
    #[arg(long = "controller-arg", allow_hyphen_values = true)]
    controller_args: Vec<String>,
    /// Measure another operator on the same CRD instead of invite-operator, e.g.
    /// `--operator-command "python3 benches/kopf/kopf_operator.py"` (the kopf baseline, see
    /// benches/kopf/README.md). The command gets `KUBECONFIG`, `WATCH_NAMESPACE` and
    /// `METRICS_ADDR` and must serve `/readyz` and `/metrics` with invite-operator's reconcile
    /// and API-call counters there. The idle-resync run is skipped for it (what a restart does
    /// differs by design); controller flags do not apply.
    #[arg(long)]
    operator_command: Option<String>,
    /// Resources of the latency run: applied one at a time to an idle controller, each timed
    /// from its create to Ready (0 skips it) [default: 20; --quick: 5].
    #[arg(long)]
    latency_samples: Option<usize>,
    /// How many creates are in flight at once.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
    /// How many resources the Kubernetes floor run writes at once (0 skips that run).
    #[arg(long, default_value_t = 64)]
    floor_concurrency: usize,
    /// Longest wait for a run to converge before the benchmark fails.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The controller's `--log-level`.
    #[arg(long, default_value = "info")]
    controller_log_level: String,
    /// Where the kubeconfig and the controller's logs go (default: a new directory in the
    /// system's temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the namespaces (real clusters) instead of deleting them.
    #[arg(long)]
    keep_namespaces: bool,
    /// Small sizes for CI: 20 resources × 2 users, 200 for memory, 5 ms latency (explicit
    /// flags win).
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The sizes and settings of one benchmark run, flags and defaults resolved.
struct Plan {
    resources: usize,
    users: usize,
    latency: Duration,
    families: Vec<ApiFamily>,
    memory_resources: usize,
    latency_samples: usize,
    /// Tuning flags for the controller, as given.
    tuning: Vec<String>,
    prefix: String,
    work_dir: PathBuf,
    args: Args,
}

impl Plan {
    fn new(args: Args) -> BenchResult<Plan> {
        let quick = args.quick;
        let pick = |given: Option<usize>, normal: usize, small: usize| {
            given.unwrap_or(if quick { small } else { normal })
        };
        let resources = pick(args.resources, 1000, 20);
        let users = pick(args.users, 5, 2);
        if resources == 0 || !(1..=1000).contains(&users) {
            return Err("--resources must be positive and --users within 1..=1000".into());
        }
        let latency = args.latency.unwrap_or(if quick {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(50)
        });
        let families = match args.api {
            ApiChoice::Userinvite => vec![ApiFamily::UserInvite],
            ApiChoice::Orginvitation => vec![ApiFamily::OrgInvitation],
            ApiChoice::Both => vec![ApiFamily::UserInvite, ApiFamily::OrgInvitation],
        };
        let mut tuning = Vec::new();
        if let Some(c) = args.concurrency {
            tuning.push(format!("--concurrency={c}"));
        }
        if let Some(w) = &args.batch_window {
            tuning.push(format!("--batch-window={w}"));
        }
        if let Some(m) = args.batch_max_users {
            tuning.push(format!("--batch-max-users={m}"));
        }
        tuning.extend(args.controller_args.iter().cloned());
        let id = format!("{:08x}", rand::random::<u32>());
        let work_dir = args
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("invite-operator-bench-{id}")));
        std::fs::create_dir_all(&work_dir)
            .map_err(|e| format!("create {}: {e}", work_dir.display()))?;
        Ok(Plan {
            resources,
            users,
            latency,
            families,
            memory_resources: pick(args.memory_resources, 10_000, 200),
            latency_samples: pick(args.latency_samples, 20, 5),
            tuning,
            prefix: format!("invite-bench-{id}"),
            work_dir,
            args,
        })
    }

    /// The API of resource `r`.
    fn family_of(&self, r: usize) -> ApiFamily {
        self.families[r % self.families.len()]
    }

    /// Resources per API.
    fn resources_of(&self, family: ApiFamily) -> usize {
        (0..self.resources)
            .filter(|r| self.family_of(*r) == family)
            .count()
    }

    fn launch(&self, ns: &str, cluster: &Cluster, log: &str, extra: &[String]) -> Launch {
        let mut extra_args = self.tuning.clone();
        extra_args.extend(extra.iter().cloned());
        Launch {
            kubeconfig: cluster.kubeconfig.clone(),
            namespace: ns.to_string(),
            extra_args,
            log_level: self.args.controller_log_level.clone(),
            log_file: self.work_dir.join(format!("{log}.log")),
            operator_command: self.args.operator_command.clone(),
        }
    }
}

/// How a convergence run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// The controller runs; the resources are created concurrently.
    AppliedAtOnce,
    /// The resources exist; then the controller starts.
    Backlog,
}

impl Start {
    fn label(self) -> &'static str {
        match self {
            Start::AppliedAtOnce => "applied",
            Start::Backlog => "backlog",
        }
    }
}

/// The figures of a convergence run.
struct Converged {
    created_in: Duration,
    all_ready: Duration,
    /// When half and 90 % of the resources were Ready.
    half_ready: Option<Duration>,
    most_ready: Option<Duration>,
    first_reconcile: Option<Duration>,
    calls: invites::Calls,
    controller_calls: f64,
    reconciles: Metrics,
    rps: BTreeMap<ApiFamily, u32>,
    invited: usize,
    writes: Writes,
    writes_source: &'static str,
    peak_rss: Option<u64>,
    /// VmRSS once every resource is Ready and the controller is quiet.
    settled_rss: Option<u64>,
    cpu: Option<Duration>,
    exactly_once: BenchResult<usize>,
}

impl Converged {
    /// The least time the client-side rate limits allow for the calls made: per endpoint,
    /// calls ÷ requestsPerSecond; the endpoints run side by side, so the slowest one.
    fn api_bound(&self) -> (Duration, String) {
        let mut worst = (Duration::ZERO, String::new());
        for (family, rps) in &self.rps {
            let calls = self.calls.to(*family);
            let limit = Duration::from_secs_f64(calls as f64 / f64::from(*rps));
            if limit >= worst.0 {
                worst = (
                    limit,
                    format!(
                        "{}: {calls} calls at {rps}/s",
                        invites::family_name(*family)
                    ),
                );
            }
        }
        worst
    }
}

/// A converged run whose namespace, mock and watch stay for the idle run.
struct Kept {
    ns: String,
    mock: RunningMock,
    tracker: Tracker,
    controller: ControllerProcess,
}

/// The figures of the idle run.
struct Idle {
    pass: Duration,
    writes: Writes,
    calls: invites::Calls,
    reconciles: Metrics,
}

/// Users of each resource of the latency run (as a person's everyday invitation).
const LATENCY_USERS: usize = 2;

/// The figures of the latency run: create → Ready of each resource, in order.
struct Latency {
    samples: Vec<Duration>,
}

impl Latency {
    /// The `p` quantile (nearest rank) of the samples.
    fn quantile(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }
}

/// The figures of the memory run.
struct Memory {
    resources: usize,
    all_blocked: Duration,
    first_reconcile: Duration,
    peak_rss: Option<u64>,
    rss_after: Option<u64>,
    writes: Writes,
    writes_source: &'static str,
    calls: u64,
}

struct Bench {
    plan: Plan,
    cluster: Cluster,
    namespaces: Vec<String>,
}

impl Bench {
    /// Creates a namespace for `phase` (remembered for cleanup).
    async fn namespace(&mut self, phase: &str) -> BenchResult<String> {
        let ns = format!("{}-{phase}", self.plan.prefix);
        self.cluster.create_namespace(&ns).await?;
        self.namespaces.push(ns.clone());
        Ok(ns)
    }

    /// Deletes a phase's namespace (unless kept) and waits until it is gone.
    async fn drop_namespace(&mut self, ns: &str) -> BenchResult<()> {
        self.namespaces.retain(|n| n != ns);
        if self.plan.args.keep_namespaces {
            return Ok(());
        }
        progress(format_args!("deleting namespace {ns}"));
        self.cluster
            .delete_namespace(ns, Duration::from_secs(600))
            .await
    }

    /// The Secret and one endpoint per API at the mock; returns each endpoint's
    /// requestsPerSecond.
    async fn endpoints(&self, ns: &str, url: &str) -> BenchResult<BTreeMap<ApiFamily, u32>> {
        self.cluster
            .put_secret(ns, "invite-api-token", invites::TOKEN)
            .await?;
        let mut rps = BTreeMap::new();
        for family in &self.plan.families {
            let name = match family {
                ApiFamily::UserInvite => invites::USERINVITE_ENDPOINT,
                ApiFamily::OrgInvitation => invites::ORGINVITATION_ENDPOINT,
            };
            let spec = invites::endpoint_spec(*family, url, self.plan.args.requests_per_second);
            rps.insert(*family, self.cluster.put_endpoint(ns, name, spec).await?);
        }
        Ok(rps)
    }

    /// The resources of a convergence run and the addresses they name.
    fn invitations(&self) -> (Vec<(String, serde_json::Value)>, BTreeSet<String>) {
        let plan = &self.plan;
        let mut expected = BTreeSet::new();
        let specs = (0..plan.resources)
            .map(|r| {
                expected.extend(invites::addresses(r, plan.users));
                let spec = invites::invitation_spec(plan.family_of(r), r, plan.users, None);
                (format!("r{r:05}"), spec)
            })
            .collect();
        (specs, expected)
    }

    /// Runs a convergence run; the namespace, mock, watch and controller are returned too.
    async fn converge(&mut self, start: Start) -> BenchResult<(Converged, Kept)> {
        let label = start.label();
        let ns = self.namespace(label).await?;
        let mock = invites::start_mock(self.plan.latency, self.plan.args.org_members).await?;
        let rps = self.endpoints(&ns, &mock.url).await?;
        let (specs, expected) = self.invitations();
        let tracker = Tracker::start(&self.cluster.client, &ns, cluster::is_ready).await?;
        let mark = self.cluster.request_mark();
        let launch = self.plan.launch(&ns, &self.cluster, label, &[]);
        let n = self.plan.resources;
        let concurrency = self.plan.args.create_concurrency;
        let timeout = self.plan.args.timeout;
        let (mut controller, created_in, t0, first_reconcile) = match start {
            Start::AppliedAtOnce => {
                let mut controller = ControllerProcess::spawn(&launch)?;
                controller.wait_ready(Duration::from_secs(120)).await?;
                progress(format_args!(
                    "[{label}] controller ready; creating {n} resources"
                ));
                let t0 = Instant::now();
                let created_in = self
                    .cluster
                    .create_invitations(label, &ns, specs, concurrency)
                    .await?;
                (controller, created_in, t0, None)
            }
            Start::Backlog => {
                let created_in = self
                    .cluster
                    .create_invitations(label, &ns, specs, concurrency)
                    .await?;
                tracker.wait_seen(n, Duration::from_secs(120)).await?;
                progress(format_args!(
                    "[{label}] {n} resources exist; starting the controller"
                ));
                let mut controller = ControllerProcess::spawn(&launch)?;
                let first = controller.wait_reconciles(1.0, timeout).await?;
                let t0 = controller.started;
                (controller, created_in, t0, Some(first))
            }
        };
        progress(format_args!(
            "[{label}] created {n} in {}; waiting for all Ready",
            secs(created_in)
        ));
        let all_ready = tracker
            .wait_done(label, n, t0, timeout, || controller.alive())
            .await?;
        let done = format!("[{label}] all Ready after {}", secs(all_ready));
        let metrics = self
            .settled_metrics(&done, &ns, mark, Some(&mock), &tracker, &controller)
            .await?;
        let calls = invites::Calls::of(&mock.api.journal());
        let controller_calls = metrics.api_calls.values().sum();
        let (writes, writes_source) = self.writes(&ns, mark, &tracker, Writes::default());
        let exactly_once = invites::check_exactly_once(&mock, &expected);
        let converged = Converged {
            created_in,
            all_ready,
            half_ready: tracker.done_after(t0, 0.5),
            most_ready: tracker.done_after(t0, 0.9),
            first_reconcile,
            calls,
            controller_calls,
            reconciles: metrics,
            rps,
            invited: mock.api.emails_sent().values().sum(),
            writes,
            writes_source,
            peak_rss: controller.peak_rss_kib(),
            settled_rss: controller.rss_kib(),
            cpu: controller.cpu_time(),
            exactly_once,
        };
        Ok((
            converged,
            Kept {
                ns,
                mock,
                tracker,
                controller,
            },
        ))
    }

    /// The controller's writes: the in-process server's request records since `mark`, or on a
    /// real cluster the watch's resourceVersion changes minus `before`.
    fn writes(
        &self,
        ns: &str,
        mark: usize,
        tracker: &Tracker,
        before: Writes,
    ) -> (Writes, &'static str) {
        match self.cluster.recorded_writes(ns, mark) {
            Some(writes) => {
                let watched = tracker.writes();
                progress(format_args!(
                    "writes from request records: {writes:?}; from the watch: {:?}",
                    diff(watched, before)
                ));
                (writes, "request records of the in-process server")
            }
            None => {
                let relists = tracker.relists();
                if relists > 0 {
                    progress(format_args!(
                        "the watch listed again {relists} time(s): writes may be undercounted"
                    ));
                }
                (
                    diff(tracker.writes(), before),
                    "resourceVersion changes seen by a watch",
                )
            }
        }
    }

    /// Restarts the controller over the converged resources of `kept` and counts what it
    /// writes and calls in its restart pass: a full resync (the first pass of a process looks
    /// every invited user up again, as the periodic resync does).
    async fn idle(&mut self, kept: Kept) -> BenchResult<Idle> {
        let Kept {
            ns,
            mock,
            tracker,
            controller,
        } = kept;
        controller.stop().await?;
        let n = self.plan.resources as f64;
        let journal_mark = mock.api.journal().len();
        let mark = self.cluster.request_mark();
        let before = tracker.writes();
        let launch = self.plan.launch(&ns, &self.cluster, "idle", &[]);
        progress(format_args!(
            "[idle] restarting the controller over {n} converged resources"
        ));
        let mut controller = ControllerProcess::spawn(&launch)?;
        let timeout = self.plan.args.timeout;
        // Every resource once (some more often: an endpoint's status change requeues the
        // resources naming it), until the count stops moving.
        controller.wait_reconciles(n, timeout).await?;
        let (reconciled, pass) = controller
            .wait_quiet(Duration::from_secs(2), timeout)
            .await?;
        let done = format!(
            "[idle] restart pass: {reconciled} reconciles in {}",
            secs(pass)
        );
        let reconciles = self
            .settled_metrics(&done, &ns, mark, Some(&mock), &tracker, &controller)
            .await?;
        let (writes, _) = self.writes(&ns, mark, &tracker, before);
        let calls = invites::Calls::of(&mock.api.journal()[journal_mark..]);
        controller.stop().await?;
        drop(tracker);
        mock.shutdown().await;
        self.drop_namespace(&ns).await?;
        Ok(Idle {
            pass,
            writes,
            calls,
            reconciles,
        })
    }

    /// The latency run: with the controller started and idle, one resource of
    /// [`LATENCY_USERS`] users at a time is created and timed until Ready; the next one follows
    /// once the controller is idle again (no reconcile for 500 ms).
    async fn latency(&mut self) -> BenchResult<Latency> {
        let n = self.plan.latency_samples;
        let ns = self.namespace("latency").await?;
        let mock = invites::start_mock(self.plan.latency, self.plan.args.org_members).await?;
        self.endpoints(&ns, &mock.url).await?;
        let tracker = Tracker::start(&self.cluster.client, &ns, cluster::is_ready).await?;
        let launch = self.plan.launch(&ns, &self.cluster, "latency", &[]);
        let mut controller = ControllerProcess::spawn(&launch)?;
        let timeout = self.plan.args.timeout;
        controller.wait_ready(Duration::from_secs(120)).await?;
        let quiet = Duration::from_millis(500);
        controller.wait_quiet(quiet, timeout).await?;
        progress(format_args!(
            "[latency] controller idle; applying {n} resources one at a time"
        ));
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let r = self.plan.resources + i;
            let spec = invites::invitation_spec(self.plan.family_of(i), r, LATENCY_USERS, None);
            let t0 = Instant::now();
            self.cluster
                .create_invitations("latency", &ns, vec![(format!("l{i:03}"), spec)], 1)
                .await?;
            let took = tracker
                .wait_done("latency", i + 1, t0, timeout, || controller.alive())
                .await?;
            samples.push(took);
            controller.wait_quiet(quiet, timeout).await?;
        }
        let latency = Latency { samples };
        progress(format_args!(
            "[latency] p50 {}, p90 {}",
            ms(latency.quantile(0.5)),
            ms(latency.quantile(0.9))
        ));
        controller.stop().await?;
        drop(tracker);
        mock.shutdown().await;
        self.drop_namespace(&ns).await?;
        Ok(latency)
    }

    /// The memory run: a backlog of resources naming a missing endpoint.
    async fn memory(&mut self) -> BenchResult<Memory> {
        let n = self.plan.memory_resources;
        let ns = self.namespace("memory").await?;
        let specs = (0..n)
            .map(|r| {
                let spec = invites::invitation_spec(
                    ApiFamily::UserInvite,
                    r,
                    self.plan.users,
                    Some(invites::MISSING_ENDPOINT),
                );
                (format!("m{r:05}"), spec)
            })
            .collect();
        let tracker = Tracker::start(
            &self.cluster.client,
            &ns,
            cluster::is_blocked_on_missing_endpoint,
        )
        .await?;
        self.cluster
            .create_invitations("memory", &ns, specs, self.plan.args.create_concurrency)
            .await?;
        tracker.wait_seen(n, Duration::from_secs(300)).await?;
        let mark = self.cluster.request_mark();
        progress(format_args!(
            "[memory] {n} resources exist; starting the controller"
        ));
        let launch = self.plan.launch(&ns, &self.cluster, "memory", &[]);
        let mut controller = ControllerProcess::spawn(&launch)?;
        let timeout = self.plan.args.timeout;
        let first_reconcile = controller.wait_reconciles(1.0, timeout).await?;
        let t0 = controller.started;
        let all_blocked = tracker
            .wait_done("memory", n, t0, timeout, || controller.alive())
            .await?;
        let done = format!("[memory] every status written after {}", secs(all_blocked));
        let metrics = self
            .settled_metrics(&done, &ns, mark, None, &tracker, &controller)
            .await?;
        let (writes, writes_source) = self.writes(&ns, mark, &tracker, Writes::default());
        let memory = Memory {
            resources: n,
            all_blocked,
            first_reconcile,
            peak_rss: controller.peak_rss_kib(),
            rss_after: controller.rss_kib(),
            writes,
            writes_source,
            calls: metrics.api_calls.values().sum::<f64>() as u64,
        };
        controller.stop().await?;
        drop(tracker);
        self.drop_namespace(&ns).await?;
        Ok(memory)
    }

    /// Reports `done`, then reads the controller's metrics once nothing changes any more
    /// ([`settle`]).
    async fn settled_metrics(
        &self,
        done: &str,
        ns: &str,
        mark: usize,
        mock: Option<&RunningMock>,
        tracker: &Tracker,
        controller: &ControllerProcess,
    ) -> BenchResult<Metrics> {
        progress(format_args!("{done}"));
        settle(&self.cluster, ns, mark, mock, tracker).await;
        controller.metrics().await
    }

    /// Deletes what is left (after a failure).
    async fn cleanup(&mut self) {
        for ns in std::mem::take(&mut self.namespaces) {
            if !self.plan.args.keep_namespaces {
                let _ = self
                    .cluster
                    .delete_namespace(&ns, Duration::from_secs(60))
                    .await;
            }
        }
    }
}

fn diff(after: Writes, before: Writes) -> Writes {
    Writes {
        status: after.status - before.status,
        finalizer: after.finalizer - before.finalizer,
        events: after.events - before.events,
        ..after
    }
}

/// Waits until nothing changes any more (journal, recorded requests, watched writes) for
/// 1.5 s, at most 20 s: the events of the last pass, a pass triggered late.
async fn settle(
    cluster: &Cluster,
    ns: &str,
    mark: usize,
    mock: Option<&RunningMock>,
    tracker: &Tracker,
) {
    let fingerprint = || {
        let recorded = cluster.recorded_writes(ns, mark).unwrap_or_default();
        let calls = mock.map_or(0, |m| m.api.journal().len());
        (calls, recorded, tracker.writes())
    };
    let started = Instant::now();
    let mut last = fingerprint();
    let mut quiet_since = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = fingerprint();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(1500) {
            return;
        }
    }
}

/// The machine, for the table's header.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({model})")
}

/// The 1-minute load average: other work on the machine skews every timing.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Reconciles by result: `ok 1000, transient 3`.
fn results(metrics: &Metrics) -> String {
    let detail: Vec<String> = metrics
        .reconciles
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    detail.join(", ")
}

/// The one table.
fn report(
    plan: &Plan,
    applied: &Converged,
    backlog: &Converged,
    idle: Option<&Idle>,
    floor: Option<&floor::Floor>,
    memory: Option<&Memory>,
    latency: Option<&Latency>,
) -> String {
    let n = plan.resources;
    let users = (n * plan.users) as f64;
    let mut t = Table::new(&[
        "figure",
        "applied at once",
        "backlog at start",
        "how it is measured",
    ]);
    let both = |f: &dyn Fn(&Converged) -> String| [f(applied), f(backlog)];
    let row = |t: &mut Table, name: &str, values: [String; 2], how: &str| {
        t.row(&[
            name.to_string(),
            values[0].clone(),
            values[1].clone(),
            how.to_string(),
        ])
    };
    row(
        &mut t,
        &format!("all Ready, {} × {}", count(n), plan.users),
        both(&|c| secs(c.all_ready)),
        "first create (applied) or process start (backlog) → last resource Ready, from a watch",
    );
    row(
        &mut t,
        "  half, 90 % Ready",
        both(&|c| {
            let show = |d: Option<Duration>| d.map_or("?".into(), secs);
            format!("{}, {}", show(c.half_ready), show(c.most_ready))
        }),
        "",
    );
    if let Some(l) = latency {
        row(
            &mut t,
            &format!("one resource → Ready, p50 / p90 of {}", l.samples.len()),
            [
                format!("{} / {}", ms(l.quantile(0.5)), ms(l.quantile(0.9))),
                "—".into(),
            ],
            &format!(
                "create → Ready from a watch, {LATENCY_USERS} users, one resource at a time, controller idle before each"
            ),
        );
    }
    row(
        &mut t,
        "API-bound limit",
        both(&|c| {
            let (limit, why) = c.api_bound();
            format!("{}, {why}", secs(limit))
        }),
        "calls made ÷ the endpoint's requestsPerSecond, slowest endpoint",
    );
    if let Some(floor) = floor {
        row(
            &mut t,
            "Kubernetes floor",
            [
                "—".into(),
                format!(
                    "{}: {} status writes + {} journal writes + {} events, {} resources at once",
                    secs(floor.took),
                    count(floor.status_writes),
                    count(floor.journal_writes),
                    count(floor.events),
                    floor.concurrency
                ),
            ],
            "the benchmark alone, controller stopped, makes the writes the exactly-once rules need \
             (per batch of that many resources a journal object created and deleted; per resource \
             its outcome status and one event) for each converged backlog resource",
        );
    }
    row(
        &mut t,
        "resources created in",
        both(&|c| secs(c.created_in)),
        &format!(
            "{} creates at once ({}: before the controller starts)",
            plan.args.create_concurrency, "backlog"
        ),
    );
    row(
        &mut t,
        "API calls per invited user",
        both(&|c| ratio(c.calls.total() as f64, users)),
        "every request in the mock's journal ÷ users",
    );
    for family in &plan.families {
        let of = plan.resources_of(*family) as f64;
        let name = invites::family_name(*family);
        row(
            &mut t,
            &format!("{name} calls per resource"),
            both(&|c| {
                format!(
                    "{} ({} calls)",
                    ratio(c.calls.to(*family) as f64, of),
                    c.calls.to(*family)
                )
            }),
            &format!(
                "the mock's journal ÷ {} {name} resources",
                count(of as usize)
            ),
        );
        let operations: BTreeSet<String> = [applied, backlog]
            .iter()
            .filter_map(|c| c.calls.by_operation.get(family))
            .flat_map(|ops| ops.keys().cloned())
            .collect();
        let addresses = of * plan.users as f64;
        for op in operations {
            row(
                &mut t,
                &format!("  {op}"),
                both(&|c| {
                    let (k, carried) = c.calls.operation(*family, &op);
                    let per = format!(
                        "{} per resource, {} per address ({k}",
                        ratio(k as f64, of),
                        ratio(k as f64, addresses)
                    );
                    if carried > 0 && k > 0 {
                        format!("{per}; {:.0} addresses each)", carried as f64 / k as f64)
                    } else {
                        format!("{per})")
                    }
                }),
                "",
            );
        }
    }
    row(
        &mut t,
        "API calls the controller counted",
        both(&|c| {
            if c.controller_calls as u64 == c.calls.total() {
                format!("{} (= journal)", c.controller_calls)
            } else {
                format!("{} (journal: {})", c.controller_calls, c.calls.total())
            }
        }),
        "invite_operator_api_calls_total in /metrics, beside the journal",
    );
    row(
        &mut t,
        "reconciles per resource",
        both(&|c| {
            format!(
                "{} ({})",
                ratio(c.reconciles.reconciles(), n as f64),
                results(&c.reconciles)
            )
        }),
        "invite_operator_reconciles_total ÷ resources",
    );
    row(
        &mut t,
        "mean reconcile duration",
        both(&|c| c.reconciles.mean_reconcile().map_or("?".into(), secs)),
        "invite_operator_reconcile_duration_seconds sum ÷ count",
    );
    row(
        &mut t,
        "controller CPU time",
        both(&|c| c.cpu.map_or("?".into(), secs)),
        "user + system time of the controller process until convergence (/proc/PID/stat)",
    );
    row(
        &mut t,
        "Kubernetes writes per resource",
        both(&|c| ratio(c.writes.resource_writes() as f64, n as f64)),
        &format!(
            "status + finalizer patches that changed a resource; {}",
            applied.writes_source
        ),
    );
    if applied.writes_source.starts_with("request") {
        row(
            &mut t,
            "  intent journal writes",
            both(&|c| {
                format!(
                    "{} ({})",
                    ratio(c.writes.journal as f64, n as f64),
                    c.writes.journal
                )
            }),
            "creates and deletes of InviteIntent objects (one per coalesced batch of several \
             resources), per resource; request records only",
        );
    }
    row(
        &mut t,
        "  status patches",
        both(&|c| {
            let refused = if c.writes_source.starts_with("request") {
                format!(", {} refused", c.writes.status_failed)
            } else {
                String::new()
            };
            format!(
                "{} ({}{refused})",
                ratio(c.writes.status as f64, n as f64),
                c.writes.status
            )
        }),
        if applied.writes_source.starts_with("request") {
            "refused: a stale resourceVersion guard (409/422), counted apart"
        } else {
            "only writes that changed the resource are seen"
        },
    );
    row(
        &mut t,
        "  finalizer patches",
        both(&|c| format!("{}", c.writes.finalizer)),
        "deletionPolicy Retain: none expected",
    );
    row(
        &mut t,
        "events per resource",
        both(&|c| {
            format!(
                "{} ({})",
                ratio(c.writes.events as f64, n as f64),
                c.writes.events
            )
        }),
        "events.k8s.io Event creations and series updates",
    );
    row(
        &mut t,
        &format!("peak RSS, {} resources", count(n)),
        both(&|c| format!("{} ({} settled)", mib(c.peak_rss), mib(c.settled_rss))),
        "VmHWM of the controller process (/proc/PID/status); settled: its VmRSS once all are Ready and it is quiet",
    );
    row(
        &mut t,
        "start-up to first reconcile",
        ["—".into(), backlog.first_reconcile.map_or("—".into(), secs)],
        "process start → first reconcile counted in /metrics (polled every 5 ms)",
    );
    if let Some(idle) = idle {
        row(
            &mut t,
            "idle resync: Kubernetes writes",
            [
                format!(
                    "{} (status {}, finalizer {}, events {})",
                    idle.writes.all(),
                    idle.writes.status + idle.writes.status_failed,
                    idle.writes.finalizer + idle.writes.finalizer_failed,
                    idle.writes.events
                ),
                "—".into(),
            ],
            "controller restarted over the converged resources: its first pass looks every invited user up again",
        );
        row(
            &mut t,
            "idle resync: API calls per resource",
            [
                format!(
                    "{} ({} calls, {} changing)",
                    ratio(idle.calls.total() as f64, n as f64),
                    idle.calls.total(),
                    idle.calls.mutating(),
                ),
                "—".into(),
            ],
            "the mock's journal",
        );
        row(
            &mut t,
            "idle resync: duration",
            [
                format!(
                    "{} ({} reconciles: {})",
                    secs(idle.pass),
                    idle.reconciles.reconciles(),
                    results(&idle.reconciles)
                ),
                "—".into(),
            ],
            "process start → last reconcile of the restart pass (none for 2 s after it)",
        );
    }
    if let Some(m) = memory {
        let k = count(m.resources);
        row(
            &mut t,
            &format!("peak RSS, {k} resources"),
            ["—".into(), mib(m.peak_rss)],
            &format!(
                "VmHWM once every status is written (VmRSS then {}); the resources name a missing endpoint: {} API calls",
                mib(m.rss_after),
                m.calls
            ),
        );
        row(
            &mut t,
            &format!("{k} resources: all statuses written"),
            ["—".into(), secs(m.all_blocked)],
            "process start → every resource Ready=False EndpointNotFound",
        );
        row(
            &mut t,
            &format!("{k} resources: start-up to first reconcile"),
            ["—".into(), secs(m.first_reconcile)],
            "as above",
        );
        row(
            &mut t,
            &format!("{k} resources: writes per resource"),
            [
                "—".into(),
                format!(
                    "{} + {} events",
                    ratio(m.writes.resource_writes() as f64, m.resources as f64),
                    ratio(m.writes.events as f64, m.resources as f64)
                ),
            ],
            m.writes_source,
        );
    }
    row(
        &mut t,
        "exactly once",
        both(&|c| match &c.exactly_once {
            Ok(k) => format!("{} addresses, 1 request and 1 email each", count(*k)),
            Err(_) => "FAILED".into(),
        }),
        "the mock's journal (invite requests per address, whatever answered) and email count: every address once, no other",
    );
    t.render()
}

async fn run(bench: &mut Bench) -> BenchResult<(String, Vec<String>)> {
    bench.cluster.install_crds().await?;
    let latency = if bench.plan.latency_samples > 0 {
        Some(bench.latency().await?)
    } else {
        None
    };
    let (applied, kept) = bench.converge(Start::AppliedAtOnce).await?;
    let idle = if bench.plan.args.operator_command.is_none() {
        Some(bench.idle(kept).await?)
    } else {
        kept.controller.stop().await?;
        drop(kept.tracker);
        kept.mock.shutdown().await;
        bench.drop_namespace(&kept.ns).await?;
        None
    };
    let (backlog, kept) = bench.converge(Start::Backlog).await?;
    kept.controller.stop().await?;
    let floor = if bench.plan.args.floor_concurrency > 0 {
        progress(format_args!(
            "[floor] writing the converged resources again, without the controller"
        ));
        let floor = floor::measure(
            &bench.cluster.client,
            &kept.ns,
            bench.plan.args.floor_concurrency,
        )
        .await?;
        progress(format_args!("[floor] done in {}", secs(floor.took)));
        Some(floor)
    } else {
        None
    };
    drop(kept.tracker);
    kept.mock.shutdown().await;
    bench.drop_namespace(&kept.ns).await?;
    let memory = if bench.plan.memory_resources > 0 {
        Some(bench.memory().await?)
    } else {
        None
    };
    let mut failures = Vec::new();
    for (name, run) in [("applied at once", &applied), ("backlog", &backlog)] {
        if let Err(e) = &run.exactly_once {
            failures.push(format!("{name}: {e}"));
        }
        if run.controller_calls as u64 != run.calls.total() {
            failures.push(format!(
                "{name}: the controller counted {} API calls, the mock's journal holds {}",
                run.controller_calls,
                run.calls.total()
            ));
        }
        if run.invited != bench.plan.resources * bench.plan.users {
            failures.push(format!(
                "{name}: {} emails sent for {} addresses",
                run.invited,
                bench.plan.resources * bench.plan.users
            ));
        }
    }
    if let Some(idle) = &idle {
        if idle.writes.all() > 0 {
            failures.push(format!(
                "the idle resync wrote to Kubernetes: {:?}",
                idle.writes
            ));
        }
        if idle.calls.mutating() > 0 {
            failures.push(format!(
                "the idle resync made {} API calls that change something: {:?}",
                idle.calls.mutating(),
                idle.calls.by_operation
            ));
        }
    }
    Ok((
        report(
            &bench.plan,
            &applied,
            &backlog,
            idle.as_ref(),
            floor.as_ref(),
            memory.as_ref(),
            latency.as_ref(),
        ),
        failures,
    ))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let plan = match Plan::new(args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("throughput: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cluster = match Cluster::connect(plan.args.kubeconfig.as_deref(), &plan.work_dir).await {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("throughput: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let server = cluster.describe().await;
    let rps = plan
        .args
        .requests_per_second
        .map_or("default".to_string(), |r| r.to_string());
    let tuning = if plan.tuning.is_empty() {
        "defaults".to_string()
    } else {
        plan.tuning.join(" ")
    };
    let apis: Vec<String> = plan
        .families
        .iter()
        .map(|f| format!("{} {}", plan.resources_of(*f), invites::family_name(*f)))
        .collect();
    let header = format!(
        "invite-operator throughput: {} UserInvitations × {} users ({}), {} organization members, \
         invite API latency {}, requestsPerSecond {rps}, controller flags: {tuning}\nKubernetes: {server}; machine: {}",
        count(plan.resources),
        plan.users,
        apis.join(", "),
        count(plan.args.org_members),
        humantime::format_duration(plan.latency),
        machine(),
    );
    progress(format_args!("{header}"));
    progress(format_args!(
        "kubeconfig and controller logs in {}",
        plan.work_dir.display()
    ));
    let mut bench = Bench {
        plan,
        cluster,
        namespaces: Vec::new(),
    };
    let load_before = load_average();
    let outcome = run(&mut bench).await;
    bench.cleanup().await;
    match outcome {
        Ok((table, failures)) => {
            println!(
                "{header}; load average {load_before} before, {} after\n\n{table}",
                load_average()
            );
            if failures.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                for failure in failures {
                    eprintln!("throughput: FAILED: {failure}");
                }
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("throughput: FAILED: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
