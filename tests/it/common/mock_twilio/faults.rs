//! Scripted misbehaviour: each request takes one fault at arrival (from its operation's
//! queue first, then the shared one) and gets it instead of the normal answer; with no
//! fault queued the mock answers normally.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::routes::{self, Operation};
use super::wire::{Body, answer, read_request};
use super::{Outcome, Shared};

/// A scripted misbehaviour for one request (see [`super::MockTwilio::script`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// This status with Twilio's error JSON (`{"code","message","more_info","status"}`)
    /// and, if given, a `Retry-After` header (seconds or an HTTP-date). Nothing is created.
    Error {
        status: u16,
        code: u32,
        message: String,
        retry_after: Option<String>,
    },
    /// Read the request, never answer (until the mock is dropped). Nothing is created.
    Hang,
    /// Read the request, then reset the connection (TCP RST) without an answer. Nothing
    /// is created.
    Reset,
    /// Answer normally (a 201 creates the resource) but send the body's first half, wait
    /// this long, then the rest: Twilio accepted, the client may give up reading.
    SlowBody(Duration),
}

impl Fault {
    /// 500 with Twilio's code 20500.
    pub fn internal_error() -> Fault {
        Fault::error(500, 20500, "Internal Server Error", None)
    }

    /// 503 with Twilio's code 20503.
    pub fn unavailable() -> Fault {
        Fault::error(503, 20503, "Service Unavailable", None)
    }

    /// 429 with Twilio's code 20429 and `Retry-After: seconds`.
    pub fn too_many_requests(retry_after_seconds: u64) -> Fault {
        Fault::error(
            429,
            20429,
            "Too Many Requests",
            Some(retry_after_seconds.to_string()),
        )
    }

    pub fn error(status: u16, code: u32, message: &str, retry_after: Option<String>) -> Fault {
        Fault::Error {
            status,
            code,
            message: message.to_owned(),
            retry_after,
        }
    }
}

/// The queued faults: one queue per operation, and one for any request.
#[derive(Default)]
pub(super) struct Queues {
    pub(super) any: VecDeque<Fault>,
    by_operation: [VecDeque<Fault>; Operation::COUNT],
}

impl Queues {
    pub(super) fn queue(&mut self, operation: Operation) -> &mut VecDeque<Fault> {
        &mut self.by_operation[operation as usize]
    }

    pub(super) fn len(&self) -> usize {
        self.any.len() + self.by_operation.iter().map(VecDeque::len).sum::<usize>()
    }

    fn next(&mut self, operation: Option<Operation>) -> Option<Fault> {
        operation
            .and_then(|op| self.queue(op).pop_front())
            .or_else(|| self.any.pop_front())
    }
}

/// Why the mock answered nothing: hyper then closes the connection.
#[derive(Debug)]
pub(super) struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted connection reset")
    }
}

impl std::error::Error for Reset {}

/// One request: its fault if one is queued, else the normal answer.
pub(super) async fn handle(
    shared: Arc<Shared>,
    socket: Arc<socket2::Socket>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Reset> {
    let operation = Operation::of(req.method(), req.uri().path());
    let fault = shared.state().faults.next(operation);
    let (mut record, is_form, method) = read_request(req).await;
    record.fault.clone_from(&fault);
    let hang = fault == Some(Fault::Hang) || (fault.is_none() && shared.state().hang);
    if hang {
        shared.state().requests.push(record);
        // Never answer; the task is cancelled when the mock's runtime is dropped.
        match std::future::pending::<Infallible>().await {}
    }
    match fault {
        Some(Fault::Reset) => {
            shared.state().requests.push(record);
            // SO_LINGER 0: closing the last handle sends RST instead of FIN.
            let _ = socket.set_linger(Some(Duration::ZERO));
            Err(Reset)
        }
        Some(Fault::Error {
            status,
            code,
            message,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut outcome = Outcome::error(status, code, message);
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                outcome.headers.push((header::RETRY_AFTER, value));
            }
            Ok(answer(&shared, record, outcome, None).await)
        }
        Some(Fault::SlowBody(pause)) => {
            let outcome = routes::evaluate(&shared, &method, &record, is_form);
            Ok(answer(&shared, record, outcome, Some(pause)).await)
        }
        Some(Fault::Hang) | None => {
            let outcome = routes::evaluate(&shared, &method, &record, is_form);
            Ok(answer(&shared, record, outcome, None).await)
        }
    }
}
