//! Command-line interface: `run`, `crd`, `reconcile` and `mock-api`.

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
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML, or write them to a directory.
    Crd(CrdArgs),
    /// Reconcile UserInvitations read from files once, with no cluster, and print them with
    /// their resulting status.
    Reconcile(ReconcileArgs),
    /// Serve the stateful mock of both invite APIs.
    MockApi(MockApiArgs),
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
    /// Interval of the slow resync that observes acceptance and expiry (jittered by 10%).
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// First delay before retrying after a transient failure (doubles per failure, jittered).
    #[arg(long, env = "RETRY_BASE_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Longest delay between retries.
    #[arg(long, env = "RETRY_MAX_DELAY", default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
    /// How many UserInvitations are reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
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
    /// Label selector of the ClusterInvitationEndpoints this controller serves (e.g.
    /// `invite.operators.dev/operator=blue`); empty means all.
    #[arg(long, env = "CLUSTER_ENDPOINT_SELECTOR", default_value = "")]
    pub cluster_endpoint_selector: String,
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
    /// name with a random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
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
    #[arg(long)]
    pub mock_api: bool,
    /// Namespace of resources that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Namespace of ClusterInvitationEndpoint Secrets that name none.
    #[arg(long, env = "POD_NAMESPACE", default_value = "invite-operator")]
    pub operator_namespace: String,
}

/// Flags of `mock-api`.
#[derive(Args, Debug)]
pub struct MockApiArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The API token clients must present (UserInvite Bearer token; OrgInvitation API token).
    #[arg(long, env = "MOCK_API_TOKEN", default_value = "mock-token")]
    pub token: String,
    /// Latency added to every API request.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Fraction (0..1) of API requests answered with a random 503.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Seed of the random faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Organization served by the OrgInvitation API.
    #[arg(long, default_value = "mock-org")]
    pub organization_id: String,
    /// Lifetime of the OrgInvitation API's access tokens.
    #[arg(long, default_value = "1799s", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,
}

/// Runs a parsed command line; the exit code follows the command's outcome.
pub async fn execute(cli: Cli) -> Result<std::process::ExitCode, String> {
    match cli.command {
        Command::Run(args) => run_controller(args).await,
        Command::Crd(args) => write_crds(args),
        Command::Reconcile(args) => reconcile_files(args).await,
        Command::MockApi(args) => serve_mock(args).await,
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

async fn run_controller(args: RunArgs) -> Result<std::process::ExitCode, String> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| format!("invalid kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration found: {e}"))?,
    };
    let client = crate::controller::kube_client(config)
        .map_err(|e| format!("cannot build the Kubernetes client: {e}"))?;
    let metrics = crate::telemetry::Metrics::new();
    let (readiness_tx, readiness_rx) =
        tokio::sync::watch::channel(crate::controller::Readiness::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_addr))?;
    tracing::info!(addr = %args.metrics_addr, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(crate::telemetry::serve_http(
        listener,
        metrics.clone(),
        readiness_rx,
        stopped(),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let settings = crate::controller::Settings {
        operator_namespace: args.namespace,
        resync_interval: args.resync_interval,
        retry_base_delay: args.retry_base_delay,
        retry_max_delay: args.retry_max_delay,
        concurrency: args.concurrency,
        watch_namespaces: args
            .watch_namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        cluster_endpoint_selector: Some(args.cluster_endpoint_selector.trim().to_string())
            .filter(|s| !s.is_empty()),
        ..Default::default()
    };
    if args.leader_election {
        let election = crate::leader::LeaderElection {
            lease_name: args.lease_name,
            namespace: args
                .lease_namespace
                .unwrap_or_else(|| settings.operator_namespace.clone()),
            identity: args
                .identity
                .filter(|i| !i.is_empty())
                .unwrap_or_else(crate::leader::default_identity),
            lease_duration: args.lease_duration,
        };
        election.validate()?;
        let controller_client = client.clone();
        let run = move |term: crate::leader::Term| {
            crate::controller::run(
                controller_client.clone(),
                settings.clone(),
                metrics.clone(),
                term.readiness,
                term.stop,
            )
        };
        let result =
            crate::leader::run_while_leader(client, election, readiness_tx, stopped(), run).await;
        // An error means the controller ended unexpectedly: exit (and be restarted) without
        // waiting for the HTTP server, which stops with the process.
        result.map_err(|error| error.to_string())?;
    } else {
        let stop = stopped();
        tokio::select! {
            _ = crate::controller::run(client, settings, metrics, readiness_tx, stopped()) => {}
            _ = async { stop.await; std::future::pending::<()>().await } => {}
        }
    }
    let _ = server.await;
    Ok(std::process::ExitCode::SUCCESS)
}

fn write_crds(args: CrdArgs) -> Result<std::process::ExitCode, String> {
    let crds = crate::api::all_crds();
    if args.output_dir.is_empty() {
        let text: String = crds.iter().map(crate::api::crd_yaml).collect();
        write_stdout(&text)?;
    }
    for dir in &args.output_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for crd in &crds {
            let path = dir.join(crate::api::crd_file_name(crd));
            std::fs::write(&path, crate::api::crd_yaml(crd))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn reconcile_files(args: ReconcileArgs) -> Result<std::process::ExitCode, String> {
    let mut manifests = crate::oneshot::Manifests::default();
    for file in &args.files {
        let (text, name) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            (text, "<stdin>".to_string())
        } else {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            (text, file.display().to_string())
        };
        crate::oneshot::parse_manifests(&text, &name, &args.namespace, &mut manifests)?;
    }
    if manifests.invitations.is_empty() {
        return Err("no UserInvitation found in the given files".into());
    }
    let mut options = crate::oneshot::OneShotOptions {
        dry_run: args.dry_run,
        operator_namespace: args.operator_namespace,
        ..Default::default()
    };
    let mock = if args.mock_api {
        let config = crate::mock::MockConfig {
            token: format!("oneshot-{}", rand::random::<u64>()),
            ..Default::default()
        };
        let running = crate::mock::MockApi::start(config.clone())
            .await
            .map_err(|e| format!("cannot start the mock API: {e}"))?;
        eprintln!("mock API listening on {}", running.url);
        options.url_override = Some(running.url.clone());
        options.token_override = Some(config.token.clone());
        Some(running)
    } else {
        None
    };
    let result = crate::oneshot::run(manifests, &options).await;
    if !args.dry_run {
        for line in &result.plan {
            eprintln!("{line}");
        }
    }
    let mut out = String::new();
    if args.dry_run {
        for line in &result.plan {
            out.push_str(line);
            out.push('\n');
        }
    } else {
        for invitation in &result.invitations {
            let yaml = serde_yaml::to_string(invitation).map_err(|e| e.to_string())?;
            out.push_str("---\n");
            out.push_str(&yaml);
        }
    }
    write_stdout(&out)?;
    if let Some(mock) = mock {
        mock.shutdown().await;
    }
    Ok(if result.all_ready || args.dry_run {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

async fn serve_mock(args: MockApiArgs) -> Result<std::process::ExitCode, String> {
    let config = crate::mock::MockConfig {
        token: args.token,
        latency: args.latency,
        fault_rate: args.fault_rate,
        seed: args.seed,
        organization_id: args.organization_id,
        access_token_ttl: args.access_token_ttl,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "mock API listening on http://{} (UserInvite: /api/v2/user/*, OrgInvitation: /csp/gateway/am/api/*, control: /mock/*)",
        args.listen
    );
    crate::mock::MockApi::new(config)
        .serve(listener, shutdown_signal())
        .await
        .map_err(|e| format!("mock API failed: {e}"))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Writes to standard output; a reader that went away (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to standard output: {e}"))
        }
        _ => Ok(()),
    }
}
