//! The accept loop: a connection cap, the caller's peer credentials, hyper's HTTP/1.1
//! connections over the [`Api`] current at each request, and the graceful drain at
//! shutdown. Knows the api's entry point and nothing below it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use crate::api::Api;
use crate::telemetry;
use crate::types::Caller;

/// Connection-level limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub drain_timeout: Duration,
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
/// finish for at most `drain_timeout`. Each request takes the [`Api`] current when it
/// arrives, so a reload applies to the next request, even on a kept-alive connection.
pub async fn serve(
    listener: &UnixListener,
    api: Arc<ArcSwap<Api>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    tokio::pin!(shutdown);

    loop {
        // Waiting for a free slot before accepting leaves excess callers in the
        // kernel's backlog instead of holding open sockets we cannot serve.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let caller = match stream.peer_cred() {
            Ok(cred) => Caller {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            },
            Err(e) => {
                log::warn!("cannot read peer credentials, dropping connection: {e}");
                continue;
            }
        };
        let api = api.clone();
        let service = service_fn(move |req| api.load_full().handle(req, caller));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let open = metrics::gauge!(telemetry::OPEN_CONNECTIONS);
            open.increment(1);
            if let Err(e) = connection.await {
                log::debug!("connection from pid {:?}: {e}", caller.pid);
            }
            open.decrement(1);
            drop(slot);
        });
    }

    log::info!(
        "shutting down: draining {} open connections",
        graceful.count()
    );
    tokio::select! {
        () = graceful.shutdown() => log::info!("all connections closed"),
        () = tokio::time::sleep(options.drain_timeout) => {
            log::warn!("drain timeout of {:?} reached; closing remaining connections", options.drain_timeout);
        }
    }
}
