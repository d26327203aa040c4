//! Shutdown signals: Ctrl-C (SIGINT) and SIGTERM both cancel one token.

use tokio_util::sync::CancellationToken;

/// Cancels `cancel` on Ctrl-C (SIGINT) or SIGTERM.
pub async fn cancel_on_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                _ = cancel.cancelled() => {}
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    cancel.cancel();
}
