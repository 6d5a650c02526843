//! What each command does.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Command, CrdArgs, ReconcileArgs, RunArgs, settings};
use crate::{
    controller,
    health::{self, Readiness},
    leader::{self, LeaderElection, Leadership, Term},
    oneshot,
    telemetry::Metrics,
};

/// Why a command failed.
#[derive(thiserror::Error, Debug)]
pub enum CliError {
    /// The kubeconfig cannot be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No Kubernetes configuration was found.
    #[error("no Kubernetes configuration found: {0}")]
    NoKubeConfig(String),
    /// The Kubernetes client cannot be built.
    #[error("cannot build the Kubernetes client: {0}")]
    KubeClient(#[from] kube::Error),
    /// The HTTP server cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The leader-election settings are unusable.
    #[error(transparent)]
    Election(#[from] leader::InvalidElection),
    /// The controller ended while leading.
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    /// A file or stream cannot be read or written.
    #[error("{what}: {source}")]
    Io {
        /// Which file or stream.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A manifest cannot be parsed.
    #[error(transparent)]
    Manifest(#[from] oneshot::ManifestError),
    /// The given files hold no UserInvitation.
    #[error("no UserInvitation found in the given files")]
    NoInvitation,
    /// The resources cannot be printed.
    #[error("cannot print the resources: {0}")]
    Print(String),
    /// The mock API failed.
    #[error("mock API: {0}")]
    Mock(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let what = what.into();
    move |source| CliError::Io { what, source }
}

/// Runs a parsed command line; the exit code follows the command's outcome.
pub async fn execute(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Run(args) => run_controller(*args).await,
        Command::Crd(args) => write_crds(args),
        Command::Reconcile(args) => reconcile_files(args).await,
        #[cfg(feature = "mock-api")]
        Command::MockApi(args) => invite_mock::cli::serve(args, shutdown_signal())
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| CliError::Mock(e.to_string())),
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

async fn kube_config(path: Option<&PathBuf>) -> Result<kube::Config, CliError> {
    let Some(path) = path else {
        return kube::Config::infer()
            .await
            .map_err(|e| CliError::NoKubeConfig(e.to_string()));
    };
    let invalid = |message: String| CliError::Kubeconfig {
        path: path.clone(),
        message,
    };
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|e| invalid(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| invalid(e.to_string()))
}

/// `run`: the HTTP server, then the controller (under leader election when asked) until
/// SIGTERM.
async fn run_controller(args: RunArgs) -> Result<ExitCode, CliError> {
    let client = controller::kube_client(
        kube_config(args.kubeconfig.as_ref()).await?,
        usize::from(args.kubernetes_requests),
    )?;
    let metrics = Metrics::new();
    let (readiness, readiness_rx) = watch::channel(Readiness::default());
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| CliError::Listen {
            addr: args.metrics_addr,
            source,
        })?;
    tracing::info!(addr = %args.metrics_addr, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(health::serve(
        listener,
        metrics.clone(),
        readiness_rx,
        shutdown.clone(),
    ));
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    let settings = settings(&args);
    if !args.leader_election {
        let leadership = Leadership::unconditional();
        controller::run(client, settings, metrics, readiness, leadership, shutdown).await;
        let _ = server.await;
        return Ok(ExitCode::SUCCESS);
    }
    let election = LeaderElection {
        namespace: args
            .lease_namespace
            .unwrap_or_else(|| settings.operator_namespace.clone()),
        lease_name: args.lease_name,
        identity: args
            .identity
            .filter(|i| !i.is_empty())
            .unwrap_or_else(leader::default_identity),
        lease_duration: args.lease_duration,
    };
    election.validate()?;
    let controller_client = client.clone();
    let run = move |term: Term| {
        controller::run(
            controller_client.clone(),
            settings.clone(),
            metrics.clone(),
            term.readiness,
            term.leadership,
            term.stop,
        )
    };
    // An error means the controller ended unexpectedly: exit (and be restarted) without
    // waiting for the HTTP server, which stops with the process.
    leader::run_while_leader(client, election, readiness, shutdown, run).await?;
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}

/// `crd`: prints the CRDs, or writes them to directories.
fn write_crds(args: CrdArgs) -> Result<ExitCode, CliError> {
    let crds = crate::api::all_crds();
    if args.output_dir.is_empty() {
        let text: String = crds.iter().map(crate::api::crd_yaml).collect();
        write_stdout(&text)?;
    }
    for dir in &args.output_dir {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        for crd in &crds {
            let path = dir.join(crate::api::crd_file_name(crd));
            std::fs::write(&path, crate::api::crd_yaml(crd))
                .map_err(io(format!("cannot write {}", path.display())))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_manifests(args: &ReconcileArgs) -> Result<oneshot::Manifests, CliError> {
    let mut manifests = oneshot::Manifests::default();
    for file in &args.files {
        let (text, name) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(io("cannot read standard input"))?;
            (text, "<stdin>".to_string())
        } else {
            let text = std::fs::read_to_string(file)
                .map_err(io(format!("cannot read {}", file.display())))?;
            (text, file.display().to_string())
        };
        oneshot::parse_manifests(&text, &name, &args.namespace, &mut manifests)?;
    }
    if manifests.invitations.is_empty() {
        return Err(CliError::NoInvitation);
    }
    Ok(manifests)
}

/// The options of a one-shot run from the flags of `reconcile`.
pub(super) fn oneshot_options(args: &ReconcileArgs) -> oneshot::OneShotOptions {
    oneshot::OneShotOptions {
        dry_run: args.dry_run,
        operator_namespace: args.operator_namespace.clone(),
        endpoint_policy: args
            .endpoint_policy
            .policy(args.namespaced_endpoints_loopback_http),
        ..Default::default()
    }
}

/// `reconcile`: one pass over the resources of the files, printed with their status.
async fn reconcile_files(args: ReconcileArgs) -> Result<ExitCode, CliError> {
    let manifests = read_manifests(&args)?;
    #[cfg_attr(not(feature = "mock-api"), allow(unused_mut))]
    let mut options = oneshot_options(&args);
    #[cfg(feature = "mock-api")]
    let mock = match args.mock_api {
        true => Some(start_embedded_mock(&mut options).await?),
        false => None,
    };
    let result = oneshot::run(manifests, &options).await;
    let mut out = String::new();
    if args.dry_run {
        for line in &result.plan {
            out.push_str(line);
            out.push('\n');
        }
    } else {
        for line in &result.plan {
            eprintln!("{line}");
        }
        for invitation in &result.invitations {
            let yaml =
                serde_saphyr::to_string(invitation).map_err(|e| CliError::Print(e.to_string()))?;
            out.push_str("---\n");
            out.push_str(&yaml);
        }
    }
    write_stdout(&out)?;
    #[cfg(feature = "mock-api")]
    if let Some(mock) = mock {
        mock.shutdown().await;
    }
    Ok(if result.all_ready || args.dry_run {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts the embedded mock API (a random token) and points every endpoint of `options` at it.
#[cfg(feature = "mock-api")]
async fn start_embedded_mock(
    options: &mut oneshot::OneShotOptions,
) -> Result<invite_mock::RunningMock, CliError> {
    let config = invite_mock::MockConfig {
        token: format!("oneshot-{}", rand::random::<u64>()),
        ..Default::default()
    };
    let running = invite_mock::MockApi::start(config.clone())
        .await
        .map_err(|e| CliError::Mock(format!("cannot start: {e}")))?;
    eprintln!("mock API listening on {}", running.url);
    options.url_override = Some(running.url.clone());
    options.token_override = Some(config.token);
    Ok(running)
}

/// Writes to standard output; a reader that went away (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(io("cannot write to standard output")(e))
        }
        _ => Ok(()),
    }
}
