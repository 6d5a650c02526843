//! The controller under test: the real `invite-operator` binary as a child process, so its
//! memory is its own (`VmHWM` in `/proc/<pid>/status`) and its `/metrics` can be scraped.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::BenchResult;

/// Environment variables `invite-operator run` reads: cleared for the child, so that only the
/// flags the benchmark passes decide its settings.
const CONTROLLER_ENV: &[&str] = &[
    "KUBECONFIG",
    "POD_NAMESPACE",
    "RESYNC_INTERVAL",
    "RETRY_BASE_DELAY",
    "RETRY_MAX_DELAY",
    "CONCURRENCY",
    "BATCH_WINDOW",
    "BATCH_MAX_USERS",
    "SECRET_CACHE_TTL",
    "ALLOW_INSECURE_HTTP",
    "NAMESPACED_ENDPOINTS",
    "NAMESPACED_ENDPOINT_HOSTS",
    "NAMESPACED_ENDPOINTS_LOOPBACK_HTTP",
    "REQUIRE_CREDENTIALS_LABEL",
    "MAX_CLOCK_SKEW",
    "CLUSTER_ENDPOINT_SELECTOR",
    "NAMESPACED_ENDPOINT_SELECTOR",
    "METRICS_ADDR",
    "WATCH_NAMESPACES",
    "LEADER_ELECTION",
    "LEASE_NAME",
    "LEASE_NAMESPACE",
    "LEASE_DURATION",
    "POD_NAME",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "RUST_LOG",
];

/// How to start the controller.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The kubeconfig it reads.
    pub kubeconfig: PathBuf,
    /// Its operator namespace and the only namespace it watches.
    pub namespace: String,
    /// Flags added after the benchmark's own (tuning, `--resync-interval`, …).
    pub extra_args: Vec<String>,
    /// Its `--log-level`.
    pub log_level: String,
    /// Where its standard output and error go.
    pub log_file: PathBuf,
    /// Another operator to start instead (`--operator-command`), run by `sh -c`.
    pub operator_command: Option<String>,
}

/// A running controller process; killed when dropped.
pub struct ControllerProcess {
    child: Child,
    /// When the process was spawned.
    pub started: Instant,
    metrics_url: String,
    http: reqwest::Client,
    /// Its log file.
    pub log_file: PathBuf,
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `invite-operator run` as `launch` says, its metrics on `metrics_addr`.
fn invite_operator(launch: &Launch, metrics_addr: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_invite-operator"));
    for var in CONTROLLER_ENV {
        command.env_remove(var);
    }
    // Plain log lines in the file.
    command.env("NO_COLOR", "1");
    command
        .arg("--log-level")
        .arg(&launch.log_level)
        .arg("run")
        .arg("--kubeconfig")
        .arg(&launch.kubeconfig)
        .arg("--metrics-addr")
        .arg(metrics_addr)
        .arg("--namespace")
        .arg(&launch.namespace)
        // The mock API listens on loopback and the benchmark's endpoints are namespaced.
        .arg("--namespaced-endpoints-loopback-http")
        .arg("--watch-namespaces")
        .arg(&launch.namespace)
        .args(&launch.extra_args);
    command
}

/// A free loopback port: bound to port 0, read back, released.
fn free_port() -> BenchResult<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local address: {e}"))
}

impl ControllerProcess {
    /// Spawns `invite-operator run` with `launch`.
    pub fn spawn(launch: &Launch) -> BenchResult<ControllerProcess> {
        let port = free_port()?;
        let log = File::create(&launch.log_file)
            .map_err(|e| format!("create {}: {e}", launch.log_file.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", launch.log_file.display()))?;
        let metrics_addr = format!("127.0.0.1:{port}");
        let mut command = match &launch.operator_command {
            Some(other) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("exec {other}"))
                    .env("KUBECONFIG", &launch.kubeconfig)
                    .env("WATCH_NAMESPACE", &launch.namespace)
                    .env("METRICS_ADDR", &metrics_addr);
                command
            }
            None => invite_operator(launch, &metrics_addr),
        };
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let started = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start the operator: {e}"))?;
        Ok(ControllerProcess {
            child,
            started,
            metrics_url: format!("http://{metrics_addr}/metrics"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
            log_file: launch.log_file.clone(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error when the process has ended.
    pub fn alive(&mut self) -> BenchResult<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the controller exited ({status}); last lines of {}:\n{}",
                self.log_file.display(),
                tail(&self.log_file, 20)
            )),
            Err(e) => Err(format!("the controller process: {e}")),
        }
    }

    /// Its `/metrics`, parsed.
    pub async fn metrics(&self) -> BenchResult<Metrics> {
        let text = self
            .http
            .get(&self.metrics_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("scrape {}: {e}", self.metrics_url))?
            .text()
            .await
            .map_err(|e| format!("scrape {}: {e}", self.metrics_url))?;
        Ok(Metrics::parse(&text))
    }

    /// Waits until `/readyz` answers 200 (CRDs found, caches synced).
    pub async fn wait_ready(&mut self, timeout: Duration) -> BenchResult<Duration> {
        let url = self.metrics_url.replace("/metrics", "/readyz");
        let ready = async |c: &Self| {
            let answer = c.http.get(&url).send().await;
            answer.is_ok_and(|a| a.status().is_success())
        };
        self.poll(Duration::from_millis(10), timeout, "was not ready", ready)
            .await
    }

    /// Waits until `/metrics` counts `n` reconciles; returns the time since the process
    /// started. Polls every 5 ms.
    pub async fn wait_reconciles(&mut self, n: f64, timeout: Duration) -> BenchResult<Duration> {
        let counted = async |c: &Self| c.metrics().await.is_ok_and(|m| m.reconciles() >= n);
        let failed = format!("counted fewer than {n} reconciles");
        self.poll(Duration::from_millis(5), timeout, &failed, counted)
            .await
    }

    /// Checks `done` every `every` until it holds; returns the time since the process started.
    /// Fails when the process has exited, or after `timeout` (the controller `failed` then).
    async fn poll(
        &mut self,
        every: Duration,
        timeout: Duration,
        failed: &str,
        done: impl AsyncFn(&Self) -> bool,
    ) -> BenchResult<Duration> {
        loop {
            if done(self).await {
                return Ok(self.started.elapsed());
            }
            self.alive()?;
            if self.started.elapsed() > timeout {
                return Err(format!(
                    "the controller {failed} within {} s (log: {})",
                    timeout.as_secs(),
                    self.log_file.display()
                ));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Waits until the reconcile count has not changed for `quiet` (polling every 50 ms, at
    /// most `timeout`); returns the count and when (since process start) it last changed.
    pub async fn wait_quiet(
        &mut self,
        quiet: Duration,
        timeout: Duration,
    ) -> BenchResult<(f64, Duration)> {
        let began = Instant::now();
        let mut last = (self.metrics().await?.reconciles(), self.started.elapsed());
        let mut changed_at = Instant::now();
        while changed_at.elapsed() < quiet && began.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.alive()?;
            let count = self.metrics().await?.reconciles();
            if count != last.0 {
                last = (count, self.started.elapsed());
                changed_at = Instant::now();
            }
        }
        Ok(last)
    }

    /// CPU time the process used so far (user + system), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Current resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Stops the process as Kubernetes would (SIGTERM), killing it after 15 s.
    pub async fn stop(mut self) -> BenchResult<()> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "the controller did not stop within 15 s of SIGTERM (log: {})",
                        self.log_file.display()
                    ));
                }
            }
        }
    }
}

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The controller's counters that the benchmark reads.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// `invite_operator_reconciles_total` by `result`.
    pub reconciles: BTreeMap<String, f64>,
    /// `invite_operator_api_calls_total` by (`endpoint`, `operation`, `code`).
    pub api_calls: BTreeMap<(String, String, String), f64>,
    /// `invite_operator_reconcile_duration_seconds` sum and count.
    pub reconcile_seconds: (f64, f64),
}

impl Metrics {
    /// Parses the text exposition (only the two counters).
    pub fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
            match name {
                "invite_operator_reconciles_total" => {
                    *metrics.reconciles.entry(label("result")).or_default() += value;
                }
                "invite_operator_reconcile_duration_seconds_sum" => {
                    metrics.reconcile_seconds.0 += value
                }
                "invite_operator_reconcile_duration_seconds_count" => {
                    metrics.reconcile_seconds.1 += value
                }
                "invite_operator_api_calls_total" => {
                    let key = (label("endpoint"), label("operation"), label("code"));
                    *metrics.api_calls.entry(key).or_default() += value;
                }
                _ => {}
            }
        }
        metrics
    }

    /// The mean reconcile duration.
    pub fn mean_reconcile(&self) -> Option<Duration> {
        let (sum, count) = self.reconcile_seconds;
        (count > 0.0).then(|| Duration::from_secs_f64(sum / count))
    }

    /// Reconciles of any result.
    pub fn reconciles(&self) -> f64 {
        self.reconciles.values().sum()
    }
}

/// `a="x",b="y"` (values without escaped quotes, as the operator's labels are).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some((value, after)) = after.split_once('"') else {
            break;
        };
        labels.insert(
            key.trim_start_matches(',').trim().to_string(),
            value.to_string(),
        );
        rest = after;
    }
    labels
}
