//! Log output: the systemd journal when journald is our stderr (`JOURNAL_STREAM`),
//! plain stderr otherwise. The filter is `OTPD_LOG` or `RUST_LOG` (env_logger syntax),
//! else `server.log_level`. No code, token or full phone number is ever logged: also
//! not by the PostgreSQL driver, whose debug lines carry every statement's parameters
//! (phone numbers, code hashes), so its lines below warnings never pass.

use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

/// Targets whose lines below `Warn` may hold query parameters.
const QUIET_BELOW_WARN: &[&str] = &["tokio_postgres", "postgres_protocol"];

/// Wraps the real logger and drops what `QUIET_BELOW_WARN` names.
struct Redacting<L>(L);

fn allowed(metadata: &Metadata<'_>) -> bool {
    metadata.level() <= Level::Warn
        || !QUIET_BELOW_WARN
            .iter()
            .any(|t| metadata.target().starts_with(t))
}

impl<L: Log> Log for Redacting<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        allowed(metadata) && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if allowed(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

pub fn init(config_level: &str) {
    let spec = std::env::var("OTPD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| config_level.to_owned());
    if systemd_journal_logger::connected_to_journal()
        && let Ok(journal) = JournalLog::new()
        && log::set_boxed_logger(Box::new(Redacting(
            journal.with_syslog_identifier("otpd".to_owned()),
        )))
        .is_ok()
    {
        // The journal filters by priority itself; honour a plain level here.
        log::set_max_level(spec.parse().unwrap_or(LevelFilter::Info));
        return;
    }
    let logger = env_logger::Builder::new()
        .parse_filters(&spec)
        .format_target(false)
        .build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Redacting(logger))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_drivers_debug_lines_never_pass_but_its_warnings_do() {
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        assert!(!allowed(&meta("tokio_postgres::query", Level::Debug)));
        assert!(!allowed(&meta("tokio_postgres::connection", Level::Info)));
        assert!(allowed(&meta("tokio_postgres::connection", Level::Warn)));
        assert!(allowed(&meta("otpd::store::postgres", Level::Debug)));
    }
}
