//! One leadership term: the controller runs while the Lease is renewed, and is stopped
//! (gracefully, then by aborting it) before the Lease can pass to another replica.

use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use super::{
    LeaderElection, Leadership, Term,
    lease::{Acquired, LeaseApi, Renewal, release, renew_loop},
};
use crate::health::Readiness;

/// A spawned task that is aborted when the handle is dropped (so dropping the election future
/// never leaves a controller running).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> AbortOnDrop<T> {
    /// Aborts the task and waits until it is gone.
    async fn abort_and_wait(&mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

/// How a term ended.
pub enum TermEnd {
    /// The process is shutting down (the Lease was released).
    Shutdown,
    /// The Lease was lost or could not be renewed: wait as a standby again.
    SteppedDown,
    /// The controller stopped by itself.
    ControllerExited,
}

/// Resolves at `at` (never without one): when a shutting-down controller that has not stopped
/// is aborted, one lease duration after the shutdown began.
async fn abort_after(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A running term: the controller, the renewing task, and what they report.
struct Running<'a> {
    api: &'a LeaseApi,
    election: &'a LeaderElection,
    leadership: Leadership,
    stop: CancellationToken,
    controller: AbortOnDrop<()>,
    renewer: AbortOnDrop<()>,
    last_renewed: Instant,
    shutting_down: Option<Instant>,
}

/// Runs the controller for one term, until it must stop.
pub async fn lead<F, Fut>(
    api: &LeaseApi,
    election: &LeaderElection,
    acquired: Acquired,
    readiness: &watch::Sender<Readiness>,
    shutdown: &CancellationToken,
    run: &mut F,
) -> TermEnd
where
    F: FnMut(Term) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let leadership = Leadership::default();
    leadership.set(Some(acquired.sent_at + election.renew_deadline()));
    let stop = CancellationToken::new();
    let (term_readiness, mut term_readiness_rx) = watch::channel(Readiness::default());
    let _ = readiness.send(Readiness::default());
    let controller = AbortOnDrop(tokio::spawn(run(Term {
        readiness: term_readiness,
        stop: stop.clone(),
        leadership: leadership.clone(),
    })));
    let last_renewed = acquired.sent_at;
    let (renew_tx, mut renew_rx) = watch::channel(Renewal::Renewed(last_renewed));
    renew_rx.mark_unchanged();
    let renewer = AbortOnDrop(tokio::spawn(renew_loop(
        api.clone(),
        election.clone(),
        acquired,
        renew_tx,
    )));
    let mut term = Running {
        api,
        election,
        leadership,
        stop,
        controller,
        renewer,
        last_renewed,
        shutting_down: None,
    };
    loop {
        let renew_deadline = term.last_renewed + election.renew_deadline();
        let abort_at = term.shutting_down.map(|at| at + election.lease_duration);
        let running = term.shutting_down.is_none();
        tokio::select! {
            biased;
            changed = renew_rx.changed() => {
                let renewal = match changed {
                    Ok(()) => renew_rx.borrow_and_update().clone(),
                    Err(_) => Renewal::Lost(None),
                };
                if let Some(end) = term.renewed(renewal).await {
                    return end;
                }
            }
            _ = sleep_until(renew_deadline) => return term.step_down().await,
            result = &mut term.controller.0 => return term.controller_ended(result).await,
            _ = abort_after(abort_at) => return term.abort_on_shutdown().await,
            _ = shutdown.cancelled(), if running => {
                // Keep renewing while the controller finishes its reconciles.
                term.shutting_down = Some(Instant::now());
                term.stop.cancel();
            }
            Ok(()) = term_readiness_rx.changed() => {
                let state = *term_readiness_rx.borrow_and_update();
                let _ = readiness.send(state);
            }
        }
    }
}

impl Running<'_> {
    fn ended(&self) -> TermEnd {
        match self.shutting_down {
            Some(_) => TermEnd::Shutdown,
            None => TermEnd::SteppedDown,
        }
    }

    /// A renewal succeeded (the leadership lasts longer) or found the Lease lost (the
    /// controller is aborted at once).
    async fn renewed(&mut self, renewal: Renewal) -> Option<TermEnd> {
        match renewal {
            Renewal::Renewed(at) => {
                self.last_renewed = at;
                self.leadership
                    .set(Some(at + self.election.renew_deadline()));
                None
            }
            Renewal::Lost(holder) => {
                self.leadership.set(None);
                self.controller.abort_and_wait().await;
                tracing::error!(
                    identity = %self.election.identity,
                    holder = holder.as_deref().unwrap_or("<none>"),
                    "leader election: the lease was taken by someone else; controller aborted"
                );
                Some(self.ended())
            }
        }
    }

    /// No renewal for the renew deadline: stop the controller (gracefully until the stop
    /// deadline, then abort it) before a standby can take over.
    async fn step_down(&mut self) -> TermEnd {
        let election = self.election;
        self.leadership.set(None);
        self.renewer.abort_and_wait().await;
        tracing::error!(
            identity = %election.identity,
            deadline = ?election.renew_deadline(),
            "leader election: could not renew the lease in time; stopping the controller"
        );
        self.stop.cancel();
        let deadline = self.last_renewed + election.stop_deadline();
        if tokio::time::timeout_at(deadline, &mut self.controller.0)
            .await
            .is_err()
        {
            self.controller.abort_and_wait().await;
            tracing::warn!(identity = %election.identity, "leader election: the controller did not stop in time and was aborted");
        }
        // The controller is gone: releasing (if the lease is still ours) is safe and lets a
        // standby take over sooner.
        release(self.api, election).await;
        self.ended()
    }

    /// The controller returned: after a shutdown request that is the end; otherwise it failed.
    async fn controller_ended(&mut self, result: Result<(), tokio::task::JoinError>) -> TermEnd {
        let identity = &self.election.identity;
        self.leadership.set(None);
        self.renewer.abort_and_wait().await;
        release(self.api, self.election).await;
        if self.shutting_down.is_some() {
            tracing::info!(%identity, "leader election: controller stopped, lease released");
            return TermEnd::Shutdown;
        }
        match result {
            Err(e) if e.is_panic() => {
                tracing::error!(%identity, "leader election: the controller panicked")
            }
            _ => tracing::error!(%identity, "leader election: the controller stopped unexpectedly"),
        }
        TermEnd::ControllerExited
    }

    async fn abort_on_shutdown(&mut self) -> TermEnd {
        tracing::warn!(identity = %self.election.identity, "leader election: the controller did not stop within the lease duration; aborting it");
        self.leadership.set(None);
        self.controller.abort_and_wait().await;
        self.renewer.abort_and_wait().await;
        release(self.api, self.election).await;
        TermEnd::Shutdown
    }
}
