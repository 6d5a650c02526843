//! The process's one tracing subscriber. Every test's logs go to the test output at the level
//! of `RUST_LOG` (default `warn`); a test can also capture everything logged on its own threads
//! at TRACE, as text and as JSON lines ([`Captured`]), while the other tests run beside it in
//! the same process.

use std::{
    cell::RefCell,
    io::Write,
    sync::{Arc, Mutex},
};

use tracing_subscriber::{
    EnvFilter, Layer, filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt,
};

thread_local! {
    /// Where this thread's logs are captured, if anywhere.
    static CAPTURE: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

fn capture_of_this_thread() -> Option<Captured> {
    CAPTURE.with(|c| c.borrow().clone())
}

/// Installs the subscriber once (later calls do nothing).
pub fn init() {
    let captured = || filter_fn(|_| capture_of_this_thread().is_some());
    let level = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let output = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(level);
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(|| Sink);
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true);
    let json = json.with_span_list(true).with_writer(|| Sink);
    let registry = tracing_subscriber::registry().with(output);
    let registry = registry.with(text.with_filter(captured()));
    let _ = registry.with(json.with_filter(captured())).try_init();
}

/// Everything logged on the threads that [`Captured::capture_this_thread`] was called on,
/// every target at TRACE, as text and as JSON lines.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// From now on, what this thread logs is captured here too.
    pub fn capture_this_thread(&self) {
        init();
        CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
    }

    /// A runtime like `#[tokio::test]`'s (one thread) whose threads — the one it runs on and
    /// those of `spawn_blocking` — all log here.
    pub fn runtime(&self) -> tokio::runtime::Runtime {
        self.capture_this_thread();
        let captured = self.clone();
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder
            .enable_all()
            .on_thread_start(move || captured.capture_this_thread());
        builder.build().expect("runtime")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Writes to the capture of the thread that logs.
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(captured) = capture_of_this_thread() {
            captured.0.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
