//! The mock server's command line, shared by the `invite-mock` binary and
//! `invite-operator mock-api`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::{MockApi, MockConfig};

/// Flags of the mock server.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
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

impl ServeArgs {
    /// The mock configuration these flags describe.
    pub fn config(&self) -> MockConfig {
        MockConfig {
            token: self.token.clone(),
            latency: self.latency,
            fault_rate: self.fault_rate,
            seed: self.seed,
            organization_id: self.organization_id.clone(),
            access_token_ttl: self.access_token_ttl,
            ..MockConfig::default()
        }
    }
}

/// Serves the mock on `args.listen` until `shutdown` completes; prints where it listens on
/// standard error.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return Err(format!(
            "--fault-rate must be between 0 and 1, not {}",
            args.fault_rate
        ));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    eprintln!(
        "mock API listening on http://{addr} (UserInvite: /api/v2/user/*, OrgInvitation: /csp/gateway/am/api/*, control: /mock/*)"
    );
    MockApi::new(args.config())
        .serve(listener, shutdown)
        .await
        .map_err(|e| format!("mock API failed: {e}"))
}
