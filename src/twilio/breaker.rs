//! The circuit breaker in front of Twilio: after `failures` consecutive failed requests
//! it opens and refuses every request for `cooldown`; then it lets one probe through
//! (half-open): the probe's success closes it, its failure opens it again. It owns only
//! that state machine; what counts as a failure is the caller's call, and time is a
//! parameter so the tests need no sleeps. Knows nothing of HTTP, Twilio or OTPs.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What `/status/` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    /// Refusing requests for `retry_after` more.
    Open {
        retry_after: Duration,
    },
    /// The cooldown is over: the next request is (or is already) the probe.
    HalfOpen,
}

impl CircuitState {
    pub fn name(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open { .. } => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// A request refused because the circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When the circuit will let a probe through (at least a moment while one runs).
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is in flight; everyone else is refused until it reports. `due` is when
    /// the cooldown ended, restored if the probe is abandoned.
    Probing {
        due: Instant,
    },
}

/// A change worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    /// The probe failed: open for another cooldown.
    Reopened,
    Closed,
}

pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    // std Mutex: each section is a few comparisons and never awaits.
    state: Mutex<State>,
}

/// Leave to make one request; report how it went with [`Permit::succeeded`] or
/// [`Permit::failed`]. A permit dropped unreported (the caller went away) frees the
/// probe slot, so an abandoned probe cannot wedge the circuit half-open.
#[must_use]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

/// While a probe runs, others are told to come back after this.
const PROBE_WAIT: Duration = Duration::from_secs(1);

impl Breaker {
    pub fn new(failures: u32, cooldown: Duration) -> Breaker {
        Breaker {
            failures: failures.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// May a request go out now?
    pub fn admit(&self, now: Instant) -> Result<Permit<'_>, Refused> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(self.permit(false)),
            State::Open { until } if now >= until => {
                *state = State::Probing { due: until };
                Ok(self.permit(true))
            }
            State::Open { until } => Err(Refused {
                retry_after: until - now,
            }),
            State::Probing { .. } => Err(Refused {
                retry_after: PROBE_WAIT,
            }),
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            reported: false,
        }
    }

    pub fn state(&self, now: Instant) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open {
                retry_after: until - now,
            },
            State::Open { .. } | State::Probing { .. } => CircuitState::HalfOpen,
        }
    }

    fn report(&self, probe: bool, success: bool, now: Instant) -> Option<Transition> {
        let mut state = self.lock();
        let before = *state;
        *state = match (before, success) {
            // Any answer proves Twilio is back, even one that set out before it opened.
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 >= self.failures => State::Open {
                until: now + self.cooldown,
            },
            (State::Closed { failures }, false) => State::Closed {
                failures: failures + 1,
            },
            (State::Probing { .. }, false) if probe => State::Open {
                until: now + self.cooldown,
            },
            // A straggler from before the circuit opened changes nothing.
            (other, false) => other,
        };
        match (before, *state) {
            (State::Closed { .. }, State::Open { .. }) => Some(Transition::Opened),
            (State::Probing { .. }, State::Open { .. }) => Some(Transition::Reopened),
            (State::Closed { .. }, _) => None,
            (_, State::Closed { .. }) => Some(Transition::Closed),
            _ => None,
        }
    }
}

impl Permit<'_> {
    /// The request got an answer; `Some` if that closed the circuit.
    pub fn succeeded(mut self, now: Instant) -> Option<Transition> {
        self.reported = true;
        self.breaker.report(self.probe, true, now)
    }

    /// The request failed; `Some` if that opened the circuit.
    pub fn failed(mut self, now: Instant) -> Option<Transition> {
        self.reported = true;
        self.breaker.report(self.probe, false, now)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut state = self.breaker.lock();
            if let State::Probing { due } = *state {
                // The cooldown is over already: the next request probes instead.
                *state = State::Open { until: due };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_n_consecutive_failures_and_a_success_resets_the_count() {
        let b = Breaker::new(3, COOLDOWN);
        let t = Instant::now();
        b.admit(t).unwrap().failed(t);
        b.admit(t).unwrap().failed(t);
        b.admit(t).unwrap().succeeded(t);
        b.admit(t).unwrap().failed(t);
        b.admit(t).unwrap().failed(t);
        assert_eq!(b.state(t), CircuitState::Closed);
        assert_eq!(b.admit(t).unwrap().failed(t), Some(Transition::Opened));
        assert_eq!(
            b.state(t),
            CircuitState::Open {
                retry_after: COOLDOWN
            }
        );
        let refused = b.admit(t + Duration::from_secs(10)).err();
        assert_eq!(
            refused.map(|r| r.retry_after),
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_outcome_decides() {
        let b = Breaker::new(1, COOLDOWN);
        let t = Instant::now();
        b.admit(t).unwrap().failed(t);
        let later = t + COOLDOWN;
        assert_eq!(b.state(later), CircuitState::HalfOpen);
        let probe = b.admit(later).unwrap();
        assert!(b.admit(later).is_err(), "only one probe at a time");
        assert_eq!(probe.failed(later), Some(Transition::Reopened));
        assert!(b.admit(later).is_err(), "a failed probe re-opens");
        let again = later + COOLDOWN;
        assert_eq!(
            b.admit(again).unwrap().succeeded(again),
            Some(Transition::Closed)
        );
        assert_eq!(b.state(again), CircuitState::Closed);
        assert!(b.admit(again).is_ok());
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_request_probe() {
        let b = Breaker::new(1, COOLDOWN);
        let t = Instant::now();
        b.admit(t).unwrap().failed(t);
        drop(b.admit(t + COOLDOWN).unwrap());
        assert!(b.admit(t + COOLDOWN).is_ok());
    }

    #[test]
    fn a_straggling_failure_does_not_extend_an_open_circuit() {
        let b = Breaker::new(1, COOLDOWN);
        let t = Instant::now();
        let straggler = b.admit(t).unwrap();
        b.admit(t).unwrap().failed(t);
        straggler.failed(t + Duration::from_secs(20));
        assert!(b.admit(t + COOLDOWN).is_ok());
    }
}
