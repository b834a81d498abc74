//! Log output: the systemd journal when journald is our stderr (`JOURNAL_STREAM`),
//! plain stderr otherwise. The filter is `OTPD_LOG` or `RUST_LOG` (env_logger syntax),
//! else `server.log_level`. No code, token or full phone number is ever logged.

use log::LevelFilter;
use systemd_journal_logger::JournalLog;

pub fn init(config_level: &str) {
    let spec = std::env::var("OTPD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| config_level.to_owned());
    if systemd_journal_logger::connected_to_journal()
        && let Ok(journal) = JournalLog::new()
        && journal
            .with_syslog_identifier("otpd".to_owned())
            .install()
            .is_ok()
    {
        // The journal filters by priority itself; honour a plain level here.
        log::set_max_level(spec.parse().unwrap_or(LevelFilter::Info));
        return;
    }
    let _ = env_logger::Builder::new()
        .parse_filters(&spec)
        .format_target(false)
        .try_init();
}
