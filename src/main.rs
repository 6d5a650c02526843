use clap::Parser;
use invite_operator::{cli, telemetry};

fn main() -> std::process::ExitCode {
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

/// jemalloc, on glibc targets: glibc's malloc keeps freed memory in per-thread arenas that
/// other threads never reuse, which made the controller's peak RSS at 10,000 cached resources a
/// fifth larger (docs/benchmark.md). The container image is built on musl and keeps musl's
/// allocator.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A C string pointer jemalloc reads at start-up.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[repr(transparent)]
pub struct MallocConf(*const u8);

// SAFETY: it points at a static, immutable, NUL-terminated string.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe impl Sync for MallocConf {}

/// jemalloc's options: one arena (a controller mostly waits; threads rarely allocate at once),
/// no per-thread caches (each worker thread kept freed blocks of its own: 1.5 MiB at 10,000
/// resources, at no measurable cost in time) and freed pages given back at once rather than
/// after ten seconds, so the peak is what is in use. `_RJEM_MALLOC_CONF` in the environment
/// still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: MallocConf = MallocConf(
    c"narenas:1,tcache:false,dirty_decay_ms:0,muzzy_decay_ms:0"
        .as_ptr()
        .cast(),
);
