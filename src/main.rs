use clap::Parser;
use invite_operator::{cli, telemetry};

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let cli = cli::Cli::parse();
        telemetry::init_logging(&cli.log_level, cli.log_format);
        match cli::execute(cli.command).await {
            Ok(code) => code,
            Err(message) => {
                eprintln!("error: {message}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// glibc's malloc gives threads that allocate at once arenas of their own, up to eight per
/// core, and memory freed in one arena is never reused by another: the controller's peak RSS
/// grew by a quarter with them (52 against 40 MiB at 1000 resources, see
/// docs/benchmark.md). One arena is enough for a process that mostly waits. `MALLOC_ARENA_MAX`
/// in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; it runs before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
