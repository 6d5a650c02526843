//! Waiting for what the controller does: [`eventually`] polls a check until it holds, and
//! panics naming what it waited for and what it saw last.

use std::time::Duration;

use tokio::time::Instant;

use super::WAIT;

/// How often [`eventually`] checks.
pub const POLL: Duration = Duration::from_millis(50);

/// What a check saw: done (with a result) or not yet (with what it saw, for the panic).
pub trait Observed {
    type Done;
    fn done(self) -> Result<Self::Done, String>;
}

/// `true`: done.
impl Observed for bool {
    type Done = ();
    fn done(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

/// `Some`: done with the value.
impl<T> Observed for Option<T> {
    type Done = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".into())
    }
}

/// `Ok`: done with the value; `Err` says what the check saw.
impl<T> Observed for Result<T, String> {
    type Done = T;
    fn done(self) -> Result<T, String> {
        self
    }
}

/// Checks every [`POLL`] until `check` is done, for at most [`WAIT`]; returns what it returned.
/// Panics naming `what` and the last thing the check saw.
pub async fn eventually<O: Observed>(what: &str, check: impl AsyncFnMut() -> O) -> O::Done {
    eventually_every(POLL, WAIT, what, check).await
}

/// [`eventually`], checking every `every` for at most `within`.
pub async fn eventually_every<O: Observed>(
    every: Duration,
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> O,
) -> O::Done {
    let deadline = Instant::now() + within;
    loop {
        match check().await.done() {
            Ok(done) => return done,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// `Ok` when `got` is `want`; else what was got, for [`eventually`]'s panic.
pub fn expect_eq<T: PartialEq + std::fmt::Debug>(got: T, want: T) -> Result<(), String> {
    let seen = format!("{got:?}, not {want:?}");
    (got == want).then_some(()).ok_or(seen)
}
