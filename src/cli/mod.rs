//! Command-line interface: the flags of `run`, `crd`, `reconcile` and, with the `mock-api`
//! feature, `mock-api`; `commands` runs them.

mod commands;

pub use commands::{CliError, execute, shutdown_signal};

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Kubernetes operator that turns UserInvitation resources into invitations on a
/// user-management API.
#[derive(Parser, Debug)]
#[command(name = "invite-operator", version, about)]
pub struct Cli {
    /// Log filter, in RUST_LOG syntax (e.g. `info`, `invite_operator=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    /// Log format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster of the kubeconfig or in-cluster config.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML, or write them to a directory.
    Crd(CrdArgs),
    /// Reconcile UserInvitations read from files once, with no cluster, and print them with
    /// their resulting status.
    Reconcile(ReconcileArgs),
    /// Serve the stateful mock of both invite APIs (the `invite-mock` binary's server).
    #[cfg(feature = "mock-api")]
    MockApi(invite_mock::cli::ServeArgs),
}

/// Flags of `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Path of a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace the operator runs in; ClusterInvitationEndpoint Secrets without a namespace
    /// are read from it.
    #[arg(long, env = "POD_NAMESPACE", default_value = "invite-operator")]
    pub namespace: String,
    /// Interval of the slow resync that checks acceptance and expiry (jittered by 10%).
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// First delay before retrying after a transient failure (doubles per failure, jittered).
    #[arg(long, env = "RETRY_BASE_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Longest delay between retries.
    #[arg(long, env = "RETRY_MAX_DELAY", default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
    /// How many UserInvitations are reconciled at once (per watched namespace). Reconciles
    /// mostly wait for the APIs; many at once let their calls coalesce into few batches.
    #[arg(long, env = "CONCURRENCY", default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Most Kubernetes requests in flight at once (watches and Lease renewals not counted).
    /// Each holds a connection; the API server takes only so many writes per second, so more
    /// reconciles than this queue their status writes in the controller instead.
    #[arg(long, env = "KUBERNETES_REQUESTS", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub kubernetes_requests: u16,
    /// The longest lookups and invitations of many resources are collected into one API call
    /// while earlier calls to the endpoint are in flight (a call goes out as soon as those end,
    /// or when its batch is full); a call on a quiet endpoint goes out after the linger.
    #[arg(long, env = "BATCH_WINDOW", default_value = "200ms", value_parser = parse_batch_window)]
    pub batch_window: Duration,
    /// How long the first lookup or invitation on a quiet endpoint (no call in flight) waits
    /// for others to join it; at most the batch window. The default, 0s, sends
    /// it at once: one `kubectl apply` pays no wait.
    #[arg(long, env = "BATCH_LINGER", default_value = "0s", value_parser = humantime::parse_duration)]
    pub batch_linger: Duration,
    /// Most addresses one coalesced lookup or invitation batch carries.
    #[arg(long, env = "BATCH_MAX_USERS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub batch_max_users: u32,
    /// How long a token read from a Secret is used before the Secret is read again (it is
    /// also read again after the API refuses it). Secrets are read by name, never listed.
    #[arg(long, env = "SECRET_CACHE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub secret_cache_ttl: Duration,
    /// What endpoints may reach.
    #[command(flatten)]
    pub endpoint_policy: EndpointPolicyArgs,
    /// Let namespaced InvitationEndpoints call plain http:// on loopback addresses (off: only
    /// ClusterInvitationEndpoints may; a tenant must not reach sidecars in the operator's pod).
    #[arg(long, env = "NAMESPACED_ENDPOINTS_LOOPBACK_HTTP")]
    pub namespaced_endpoints_loopback_http: bool,
    /// Whether a namespaced InvitationEndpoint may only use Secrets labelled
    /// `invite.operators.dev/credentials: "true"` (`--require-credentials-label=false` turns
    /// the check off). ClusterInvitationEndpoints are not affected.
    #[arg(long, env = "REQUIRE_CREDENTIALS_LABEL", default_value_t = true, action = clap::ArgAction::Set)]
    pub require_credentials_label: bool,
    /// The largest difference between two replicas' clocks exactly-once must survive (at least
    /// the lease duration).
    #[arg(long, env = "MAX_CLOCK_SKEW", default_value = "15s", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,
    /// The most of the reconcile slots (--concurrency) one namespace, and one endpoint, may
    /// hold at once (0 < share ≤ 1): one tenant's slow or hostile API cannot starve the others.
    #[arg(long, env = "FAIR_SHARE", default_value_t = 0.5, value_parser = parse_share)]
    pub fair_share: f64,
    /// Most members an OrgInvitation organization may list before the endpoint is not Ready
    /// (LimitExceeded).
    #[arg(long, env = "ORG_SNAPSHOT_MAX_MEMBERS", default_value_t = 250_000)]
    pub org_snapshot_max_members: usize,
    /// Most bytes (MiB) an OrgInvitation organization's listings may total in one read before
    /// the endpoint is not Ready (LimitExceeded).
    #[arg(long, env = "ORG_SNAPSHOT_MAX_MIB", default_value_t = 512)]
    pub org_snapshot_max_mib: usize,
    /// Longest one lookup may take, all its calls together, before the endpoint is not Ready
    /// (LimitExceeded).
    #[arg(long, env = "LOOKUP_DEADLINE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub lookup_deadline: Duration,
    /// Serve only the ClusterInvitationEndpoints matching this label selector (e.g. to run
    /// several operators side by side); empty means all. A UserInvitation naming another
    /// ClusterInvitationEndpoint (or one that does not exist) is left alone entirely.
    #[arg(long, env = "CLUSTER_ENDPOINT_SELECTOR", default_value = "")]
    pub cluster_endpoint_selector: String,
    /// Serve only the InvitationEndpoints (of the watched namespaces) matching this label
    /// selector; empty means all. A UserInvitation naming another InvitationEndpoint (or one
    /// that does not exist) is left alone entirely.
    #[arg(long, env = "NAMESPACED_ENDPOINT_SELECTOR", default_value = "")]
    pub namespaced_endpoint_selector: String,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Namespaces whose UserInvitations and InvitationEndpoints are reconciled, comma-separated;
    /// empty means all namespaces.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,
    /// Elect one active replica through a Lease: only its holder reconciles, the others wait
    /// as standbys (needed with more than one replica).
    #[arg(long, env = "LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "invite-operator")]
    pub lease_name: String,
    /// Namespace of the leader-election Lease (default: the operator namespace, --namespace).
    #[arg(long, env = "LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a leader holds the Lease without renewing it; a standby takes over within
    /// about this time after the leader disappears (at least 1s).
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease; must be unique per process (default: the host
    /// name with a random suffix). Events name it as their `reportingInstance` (default: the
    /// host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// The platform's endpoint policy, for the controller and the one-shot mode alike.
#[derive(Args, Debug)]
pub struct EndpointPolicyArgs {
    /// Allow endpoints with plain http:// URLs to any host (default: https:// only, plain
    /// http:// only to loopback addresses).
    #[arg(long, env = "ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// Whether namespaced InvitationEndpoints may be used (`--namespaced-endpoints=false`
    /// leaves only the platform's ClusterInvitationEndpoints).
    #[arg(long, env = "NAMESPACED_ENDPOINTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub namespaced_endpoints: bool,
    /// Hosts namespaced InvitationEndpoints may call, comma-separated (`*.example.com` matches
    /// subdomains); empty means any.
    #[arg(
        long,
        env = "NAMESPACED_ENDPOINT_HOSTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub namespaced_endpoint_hosts: Vec<String>,
}

impl EndpointPolicyArgs {
    /// The policy, with or without plain http:// to loopback for namespaced endpoints.
    pub fn policy(
        &self,
        namespaced_loopback_http: bool,
    ) -> crate::reconcile::resolve::EndpointPolicy {
        crate::reconcile::resolve::EndpointPolicy {
            allow_insecure_http: self.allow_insecure_http,
            namespaced_loopback_http,
            namespaced_endpoints: self.namespaced_endpoints,
            namespaced_endpoint_hosts: self
                .namespaced_endpoint_hosts
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }
}

/// Flags of `crd`.
#[derive(Args, Debug)]
pub struct CrdArgs {
    /// Write one file per CRD into this directory instead of printing them; repeat to write
    /// several (`--output-dir crds --output-dir deploy/charts/invite-operator/crd-files`).
    #[arg(long)]
    pub output_dir: Vec<PathBuf>,
}

/// Flags of `reconcile`.
#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// Manifest files (YAML, several documents each) with UserInvitations, endpoints and the
    /// Secrets holding their tokens. `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Print the plan; call nothing that changes anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Start the embedded mock API and point every endpoint at it.
    #[cfg(feature = "mock-api")]
    #[arg(long)]
    pub mock_api: bool,
    /// Namespace of resources that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Namespace of ClusterInvitationEndpoint Secrets that name none.
    #[arg(long, env = "POD_NAMESPACE", default_value = "invite-operator")]
    pub operator_namespace: String,
    /// What endpoints may reach, as for `run`.
    #[command(flatten)]
    pub endpoint_policy: EndpointPolicyArgs,
    /// Let namespaced InvitationEndpoints call plain http:// on loopback addresses (default
    /// here: on, for the embedded mock and local test servers; `=false` checks as `run` does).
    #[arg(long, env = "NAMESPACED_ENDPOINTS_LOOPBACK_HTTP", default_value_t = true, action = clap::ArgAction::Set)]
    pub namespaced_endpoints_loopback_http: bool,
}

fn parse_batch_window(text: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if window > Duration::from_secs(5) {
        return Err("at most 5s: every invitation waits this long".into());
    }
    Ok(window)
}

/// A label selector flag: `None` when empty (everything is served).
fn selector(flag: &str) -> Option<String> {
    Some(flag.trim().to_string()).filter(|s| !s.is_empty())
}

/// The controller's settings from the flags.
pub fn settings(args: &RunArgs) -> crate::controller::Settings {
    let list = |items: &[String]| -> Vec<String> {
        items
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    };
    crate::controller::Settings {
        operator_namespace: args.namespace.clone(),
        resync_interval: args.resync_interval,
        retry_base_delay: args.retry_base_delay,
        retry_max_delay: args.retry_max_delay,
        concurrency: args.concurrency,
        watch_namespaces: list(&args.watch_namespaces),
        cluster_endpoint_selector: selector(&args.cluster_endpoint_selector),
        namespaced_endpoint_selector: selector(&args.namespaced_endpoint_selector),
        batch: crate::invite::coalesce::BatchSettings {
            window: args.batch_window,
            linger: args.batch_linger.min(args.batch_window),
            max_users: args.batch_max_users as usize,
            ..Default::default()
        },
        secret_cache_ttl: args.secret_cache_ttl,
        endpoint_policy: args
            .endpoint_policy
            .policy(args.namespaced_endpoints_loopback_http),
        require_credentials_label: args.require_credentials_label,
        fair_share: args.fair_share,
        lookup_limits: crate::invite::LookupLimits {
            max_members: args.org_snapshot_max_members,
            max_bytes: args.org_snapshot_max_mib.saturating_mul(1024 * 1024),
            deadline: args.lookup_deadline,
        },
        // The pod name (POD_NAME, from the downward API), or the host name (a pod's is its
        // name).
        instance: args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|i| i.trim().to_string())
            .filter(|i| !i.is_empty()),
        max_clock_skew: args.max_clock_skew.max(if args.leader_election {
            args.lease_duration
        } else {
            Duration::ZERO
        }),
        ..Default::default()
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("{s:?} is not a share in (0, 1]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_settings(args: &[&str]) -> crate::controller::Settings {
        let cli = Cli::try_parse_from(["invite-operator", "run"].iter().chain(args)).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        settings(&run)
    }

    #[test]
    fn the_tenancy_flags_reach_the_settings() {
        let strict = run_settings(&[]);
        assert!(!strict.endpoint_policy.allow_insecure_http);
        assert!(strict.endpoint_policy.namespaced_endpoints);
        assert!(strict.endpoint_policy.namespaced_endpoint_hosts.is_empty());
        assert!(!strict.endpoint_policy.namespaced_loopback_http);
        assert!(strict.require_credentials_label);
        assert_eq!(strict.fair_share, 0.5);
        assert_eq!(strict.lookup_limits, crate::invite::LookupLimits::default());
        assert_eq!(strict.secret_cache_ttl, Duration::from_secs(60));
        assert_eq!(strict.max_clock_skew, Duration::from_secs(15));
        let set = run_settings(&[
            "--allow-insecure-http",
            "--namespaced-endpoints=false",
            "--namespaced-endpoint-hosts",
            " *.wavefront.com, console.cloud.vmware.com,",
            "--secret-cache-ttl",
            "5s",
            "--max-clock-skew",
            "20s",
            "--namespaced-endpoints-loopback-http",
            "--require-credentials-label=false",
            "--fair-share=0.25",
            "--org-snapshot-max-members=1000",
            "--org-snapshot-max-mib=8",
            "--lookup-deadline=30s",
        ]);
        assert_eq!(set.fair_share, 0.25);
        assert_eq!(
            set.lookup_limits,
            crate::invite::LookupLimits {
                max_members: 1000,
                max_bytes: 8 * 1024 * 1024,
                deadline: Duration::from_secs(30),
            }
        );
        assert!(set.endpoint_policy.namespaced_loopback_http);
        assert!(!set.require_credentials_label);
        assert!(set.endpoint_policy.allow_insecure_http);
        assert!(!set.endpoint_policy.namespaced_endpoints);
        assert_eq!(
            set.endpoint_policy.namespaced_endpoint_hosts,
            ["*.wavefront.com", "console.cloud.vmware.com"]
        );
        assert_eq!(set.secret_cache_ttl, Duration::from_secs(5));
        assert_eq!(set.max_clock_skew, Duration::from_secs(20));
        // Under leader election the tolerated skew is at least the lease duration.
        let elected = run_settings(&["--leader-election", "--lease-duration", "30s"]);
        assert_eq!(elected.max_clock_skew, Duration::from_secs(30));
    }

    #[test]
    fn the_endpoint_policy_flags_reach_the_one_shot_mode() {
        let options = |args: &[&str]| {
            let base = ["invite-operator", "reconcile", "-f", "x.yaml"];
            let cli = Cli::try_parse_from(base.iter().chain(args)).unwrap();
            let Command::Reconcile(reconcile) = cli.command else {
                panic!("not reconcile")
            };
            commands::oneshot_options(&reconcile)
        };
        // By default, as before: loopback allowed for namespaced endpoints (the embedded mock).
        let default = options(&[]).endpoint_policy;
        assert!(default.namespaced_loopback_http);
        assert!(default.namespaced_endpoints);
        assert!(!default.allow_insecure_http);
        let set = options(&[
            "--allow-insecure-http",
            "--namespaced-endpoints=false",
            "--namespaced-endpoint-hosts",
            "a.example.com, b.example.com",
            "--namespaced-endpoints-loopback-http=false",
        ])
        .endpoint_policy;
        assert!(set.allow_insecure_http);
        assert!(!set.namespaced_endpoints);
        assert!(!set.namespaced_loopback_http);
        assert_eq!(
            set.namespaced_endpoint_hosts,
            ["a.example.com", "b.example.com"]
        );
    }

    #[test]
    fn the_endpoint_selectors_reach_the_settings() {
        use crate::api::EndpointKind::{ClusterInvitationEndpoint, InvitationEndpoint};
        let all = run_settings(&["--cluster-endpoint-selector", " "]);
        assert_eq!(all.cluster_endpoint_selector, None);
        assert_eq!(all.namespaced_endpoint_selector, None);
        assert_eq!(all.endpoint_selector(ClusterInvitationEndpoint), None);
        assert_eq!(all.endpoint_selector(InvitationEndpoint), None);
        let split = run_settings(&[
            "--cluster-endpoint-selector",
            "invite.operators.dev/operator=blue",
            "--namespaced-endpoint-selector",
            " invite.operators.dev/operator in (blue),tier!=test ",
        ]);
        assert_eq!(
            split.endpoint_selector(ClusterInvitationEndpoint),
            Some("invite.operators.dev/operator=blue")
        );
        assert_eq!(
            split.endpoint_selector(InvitationEndpoint),
            Some("invite.operators.dev/operator in (blue),tier!=test")
        );
        // Each flag has its environment variable (the chart sets those).
        let command = <Cli as clap::CommandFactory>::command();
        let run = command.find_subcommand("run").unwrap();
        let env = |id: &str| {
            run.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(
            env("cluster_endpoint_selector").as_deref(),
            Some("CLUSTER_ENDPOINT_SELECTOR")
        );
        assert_eq!(
            env("namespaced_endpoint_selector").as_deref(),
            Some("NAMESPACED_ENDPOINT_SELECTOR")
        );
    }
}
