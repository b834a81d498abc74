//! The command line, as clap definitions: `serve` and `check-config`, and the client
//! commands that talk to a running daemon. In the library rather than in main.rs so that
//! the man page and shell completions are generated from this one definition outside
//! the daemon binary (`cargo run --example otpd-assets`). Knows nothing of what the
//! commands do; main.rs dispatches them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::Call;

/// The configuration file `serve` and `check-config` read without `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/otpd/config.toml";
/// Where the client commands look for the daemon without `--socket` or `OTPD_SOCKET`.
pub const DEFAULT_SOCKET: &str = "/run/otpd/otpd.sock";

#[derive(Parser)]
#[command(
    name = "otpd",
    version,
    about = "SMS one-time passwords through Twilio, served on a local Unix socket",
    long_about = "otpd sends SMS one-time passwords for a web backend and checks them. \
        otpd serve is the daemon (run by systemd as otpd.service); the other commands \
        talk to a running daemon over its socket, as the backend does."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        #[command(flatten)]
        source: ConfigSource,
    },
    /// Validate the configuration and print it as it takes effect, secrets masked.
    CheckConfig {
        #[command(flatten)]
        source: ConfigSource,
        /// Also connect to the store (store.backend = "postgres") and print its schema version.
        #[arg(long)]
        connect: bool,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

/// The commands that talk to a running daemon.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Send a code to PHONE (through the running daemon).
    SendOtp {
        /// The number to send the code to, E.164 (+34600111222) or national with
        /// otp.default_region.
        phone: String,
        /// What the code is for: one of otp.purposes (registration, login, ...).
        #[arg(long, short)]
        purpose: String,
        /// The backend's id of the user the code is bound to.
        #[arg(long, short)]
        user: Option<String>,
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Check CODE for PHONE; exit 0 only if it verified.
    VerifyOtp {
        /// The number the code was sent to.
        phone: String,
        /// The code the user typed.
        code: String,
        /// The purpose the code was sent for.
        #[arg(long, short)]
        purpose: String,
        /// The user the code was sent for, if it was bound to one.
        #[arg(long, short)]
        user: Option<String>,
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Send the test message to the configured test number.
    TestTwilio {
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Health, configuration summary, provider reachability and credentials, codes and
    /// messages by state.
    Status {
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Messages sent (or not) recently.
    Messages {
        /// How far back: a duration (1h, 2d) or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
        /// At most this many messages, newest first (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        daemon: Daemon,
    },
    /// The audit trail of codes (generated, sent, verified, failed attempts, ...).
    Audit {
        /// Only this phone number.
        #[arg(long)]
        phone: Option<String>,
        /// How far back: a duration (1h, 2d) or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
        /// At most this many events, newest first (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Sends, verifications and conversion by country, purpose, channel and provider;
    /// failures by provider error; guard blocks; median time to verify; estimated cost.
    Report {
        /// How far back: a duration (7d, 24h) or an RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Run the retention job now.
    Purge {
        #[command(flatten)]
        daemon: Daemon,
    },
}

/// How the client commands reach the daemon, and how they print.
#[derive(clap::Args)]
pub struct Daemon {
    /// The daemon's socket.
    #[arg(long, env = "OTPD_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where `serve` and `check-config` read the configuration.
#[derive(clap::Args)]
pub struct ConfigSource {
    /// Configuration file [default: /etc/otpd/config.toml; none with --dev].
    #[arg(long, short, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Development mode, without a file: messages go to a local outbox file, never to
    /// Twilio, and the socket, database, key and outbox live in the current directory.
    /// Refused with --config: set "[dev] enabled = true" in the file instead.
    #[arg(long)]
    pub dev: bool,
}

impl ConfigSource {
    /// The file to read: `--config`, else none in development mode, else the default.
    pub fn path(&self) -> Option<PathBuf> {
        match (&self.config, self.dev) {
            (Some(path), _) => Some(path.clone()),
            (None, true) => None,
            (None, false) => Some(PathBuf::from(DEFAULT_CONFIG)),
        }
    }
}

impl ClientCommand {
    /// The call this command makes, and how it reaches the daemon.
    pub fn into_call(self) -> (Call, Daemon) {
        match self {
            ClientCommand::SendOtp {
                phone,
                purpose,
                user,
                daemon,
            } => (
                Call::SendOtp {
                    phone,
                    purpose,
                    user,
                },
                daemon,
            ),
            ClientCommand::VerifyOtp {
                phone,
                code,
                purpose,
                user,
                daemon,
            } => (
                Call::VerifyOtp {
                    phone,
                    code,
                    purpose,
                    user,
                },
                daemon,
            ),
            ClientCommand::TestTwilio { daemon } => (Call::TestTwilio, daemon),
            ClientCommand::Status { daemon } => (Call::Status, daemon),
            ClientCommand::Messages {
                since,
                limit,
                daemon,
            } => (Call::Messages { since, limit }, daemon),
            ClientCommand::Audit {
                phone,
                since,
                limit,
                daemon,
            } => (
                Call::Audit {
                    phone,
                    since,
                    limit,
                },
                daemon,
            ),
            ClientCommand::Report { since, daemon } => (Call::Report { since }, daemon),
            ClientCommand::Purge { daemon } => (Call::Purge, daemon),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The man page and `--help` show these texts: none may be missing.
    #[test]
    fn every_command_argument_and_option_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() {
                missing.push(path.clone());
            }
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && !matches!(arg.get_id().as_str(), "help" | "version")
                {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
        command.debug_assert();
    }
}
