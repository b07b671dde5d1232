//! Waiting for the signal that stops a process (Ctrl-C or SIGTERM). A leaf
//! module, shared by `shoal node` and `shoal router`.

/// Ctrl-C or SIGTERM.
pub async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
