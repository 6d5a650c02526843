use clap::Parser;
use invite_operator::{cli, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init_logging(&cli.log_level, cli.log_format);
    match cli::execute(cli.command).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
