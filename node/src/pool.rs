//! Store work off tokio's worker threads. Everything that reads or writes
//! the store (a session step, an import, opening and closing) runs on
//! tokio's blocking pool through these two functions, so a slow disk never
//! stalls the network, the control socket or another session. A panic
//! there resumes on the caller, as if the work had run in place.

/// Runs `work` on the blocking pool and returns what it returns.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking work was cancelled: {e}"),
    }
}

/// Lines a reporting job may have queued before it waits for the caller.
const REPORTS_QUEUED_MAX: usize = 64;

/// Runs `work` on the blocking pool, handing each report it makes to `out`
/// here, in order, as it goes (progress lines, streamed records).
pub async fn blocking_reporting<T, P>(
    work: impl FnOnce(&mut dyn FnMut(P)) -> T + Send + 'static,
    out: &mut (dyn FnMut(P) + Send),
) -> T
where
    T: Send + 'static,
    P: Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<P>(REPORTS_QUEUED_MAX);
    let job = tokio::task::spawn_blocking(move || {
        work(&mut |report| {
            // The caller stopped listening: the work still finishes.
            let _ = tx.blocking_send(report);
        })
    });
    while let Some(report) = rx.recv().await {
        out(report);
    }
    match job.await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking work was cancelled: {e}"),
    }
}
