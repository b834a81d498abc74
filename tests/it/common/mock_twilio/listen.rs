//! The accept loop, and Twilio going down and coming back: while down the port is
//! closed, so a client's connect is refused (no byte of a request can reach the mock),
//! and the connections already open are shut, so a pooled keep-alive connection does
//! not get through either. Coming back binds the same port again, and everything
//! recorded (requests, messages) is still there.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::{Shared, faults};

/// What the test thread asks of the server thread; each is acknowledged once done.
pub(super) enum Control {
    Down(std_mpsc::Sender<()>),
    Up(StdListener, std_mpsc::Sender<()>),
}

/// The connections open now, to shut when the mock goes down.
type Open = Arc<Mutex<Vec<Weak<socket2::Socket>>>>;

/// Binds `addr` (the mock's own port, again); std sets SO_REUSEADDR, so the closed
/// connections' TIME_WAIT does not stand in the way.
pub(super) fn bind(addr: SocketAddr) -> StdListener {
    let listener = StdListener::bind(addr).expect("mock Twilio: bind");
    listener
        .set_nonblocking(true)
        .expect("mock Twilio: set_nonblocking");
    listener
}

pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut listener = Some(listener);
    let open: Open = Arc::default();
    loop {
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            asked = control.recv() => match asked {
                Some(Control::Down(done)) => {
                    listener = None;
                    let sockets = std::mem::take(&mut *open.lock().unwrap_or_else(PoisonError::into_inner));
                    for socket in sockets.iter().filter_map(Weak::upgrade) {
                        let _ = socket.shutdown(std::net::Shutdown::Both);
                    }
                    let _ = done.send(());
                }
                Some(Control::Up(std_listener, done)) => {
                    listener = TcpListener::from_std(std_listener).ok();
                    let _ = done.send(());
                }
                None => break,
            },
            accepted = accept => {
                let Ok((stream, _)) = accepted else { continue };
                // A second handle on the socket, for Fault::Reset and for going down:
                // hyper owns the stream.
                let Ok(handle) = socket2::SockRef::from(&stream).try_clone() else { continue };
                let handle = Arc::new(handle);
                {
                    let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
                    open.retain(|w| w.strong_count() > 0);
                    open.push(Arc::downgrade(&handle));
                }
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        faults::handle(Arc::clone(&shared), Arc::clone(&handle), req)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}
