//! otpd's integration tests, one binary: each module is a behaviour area driving the real
//! `otpd` binary (CARGO_BIN_EXE_otpd) over its Unix socket, with a mock Twilio or Prism
//! on loopback; `common` is the harness. One binary links the harness once instead of
//! once per file. Run one area with `cargo test --test it crash::`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::indexing_slicing,
    reason = "a test fails by panicking"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "the tests watch the daemon from outside, by the system's clock; \
              they move the daemon's with `Setup::moved_clock`"
)]

mod common;

mod access;
mod channels;
mod cli;
mod code_recovery;
mod crash;
mod errors;
mod guard;
mod hostile;
mod late_fallback;
mod lifecycle;
mod limits;
mod masking;
mod messaging;
mod metrics;
mod mms;
mod mock_twilio_selftest;
mod monitoring;
mod outbox_recovery;
mod postgres_setup;
mod prism_selftest;
mod readme;
mod reports;
mod retention;
mod send_otp;
mod several_hosts;
mod status;
mod store_faults;
mod store_outage;
mod systemd;
mod templates;
mod twilio_contract;
mod twilio_faults;
mod upgrade;
mod verify_otp;
mod voice;
