//! otpd: SMS one-time passwords for a web backend, as a local daemon.
//!
//! A request in one sentence: [`server`] accepts a connection on the Unix socket and
//! reads the caller's credentials → [`api`] parses the JSON into [`types`] → [`otp`]
//! (codes) or [`messaging`] (plain SMS) asks the [`limiter`] and the cost [`guard`],
//! writes through the [`store`] and sends through the [`sender`] ([`twilio`] or the
//! development outbox) → the `Result` returns to [`api`], which alone picks the HTTP
//! status and error code.
//!
//! ```text
//! caller ──HTTP/1.1 JSON over Unix socket──▶ server ─▶ api
//!                                                      │
//!                                                      ▼
//!                                              otp    messaging
//!                                 ╱          ╱         │          ╲
//!                          limiter      guard        store          sender ─▶ twilio
//!                         (governor)  (cost guard)  (SQLite)      (or dev outbox)
//! ```
//!
//! Plain SMS are committed to the [`store`]'s outbox and answered 202; the outbox
//! workers send them through the [`sender`] and record each step; Twilio's status
//! callbacks, checked by [`twilio::webhook`], extend that history. [`segments`] says
//! what a body costs; [`templates`] renders the texts.
//!
//! Around the flow: [`daemon`] owns the process's lifetime (store, the [`daemon::App`]
//! of parts, socket, reloads, background jobs); [`socket`] makes the socket file;
//! [`config`] is parsed and validated once, before anything starts, and again on SIGHUP;
//! [`signals`] turns SIGTERM/SIGINT/SIGHUP into intents; [`systemd`] tells systemd our
//! state; [`logging`] picks journald or stderr; [`telemetry`] names the Prometheus
//! metrics; [`memory`] hands freed memory back; [`clock`] is the one reading of the
//! wall clock, handed to the api edge, the jobs and the workers (the services below
//! take `now`). [`cli`] is the other side of the socket:
//! the `otpd status`, `otpd send-otp`, ... commands.
//!
//! Data flows one way: nothing below the services imports a service or the api, and
//! nothing above the store knows SQL.

pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod memory;
pub mod signals;
pub mod socket;
pub mod systemd;
pub mod telemetry;

pub mod server;

pub mod api;
pub mod types;

pub mod messaging;
pub mod otp;
pub mod reports;
pub mod segments;
pub mod templates;

pub mod checks;
pub mod guard;
pub mod limiter;
pub mod sender;
pub mod store;
pub mod twilio;

#[cfg(test)]
mod properties;
