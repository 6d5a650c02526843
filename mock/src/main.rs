//! `invite-mock`: serves the stateful mock of both invite APIs (see the library docs).

use clap::Parser;
use invite_mock::cli::ServeArgs;

/// Stateful mock of the UserInvite (Wavefront) and OrgInvitation (CSP) APIs, with fault
/// injection and a request journal under /mock/.
#[derive(Parser, Debug)]
#[command(name = "invite-mock", version, about)]
struct Cli {
    /// Log filter, in RUST_LOG syntax (e.g. `info`, `invite_mock=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match invite_mock::cli::serve(cli.serve, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
