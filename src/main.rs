//! The `otpd` command: parse the command line; for `serve`, load the configuration, set
//! up logging, bind the socket and hand over to [`otpd::run`]; for the client commands,
//! hand over to [`otpd::client`]. Exits 78 (EX_CONFIG) on a bad
//! configuration and 1 on any other start-up failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use otpd::cli::Call;
use otpd::config::{Config, Sources};
use otpd::signals::{Intent, Intents};

const DEFAULT_CONFIG: &str = "/etc/otpd/config.toml";
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    version,
    about = "SMS one-time passwords through Twilio, served on a local Unix socket"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        #[command(flatten)]
        source: ConfigSource,
    },
    /// Validate the configuration and print it as it takes effect, secrets masked.
    CheckConfig {
        #[command(flatten)]
        source: ConfigSource,
    },
    /// Send a code to PHONE (through the running daemon).
    SendOtp {
        phone: String,
        #[arg(long, short)]
        purpose: String,
        #[arg(long, short)]
        user: Option<String>,
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Check CODE for PHONE; exit 0 only if it verified.
    VerifyOtp {
        phone: String,
        code: String,
        #[arg(long, short)]
        purpose: String,
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
    /// Health, configuration summary, provider reachability, codes and messages by state.
    Status {
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Messages sent (or not) recently.
    Messages {
        /// How far back: a duration (1h, 2d) or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
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
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Run the retention job now.
    Purge {
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Write the man page and shell completions into DIR (used to build the package).
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
}

/// How the client commands reach the daemon, and how they print.
#[derive(clap::Args)]
struct Daemon {
    /// The daemon's socket.
    #[arg(long, env = "OTPD_SOCKET", default_value = "/run/otpd/otpd.sock")]
    socket: PathBuf,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

impl Daemon {
    fn call(&self, call: Call) -> ExitCode {
        ExitCode::from(otpd::cli::run(&self.socket, &call, self.json))
    }
}

#[derive(clap::Args)]
struct ConfigSource {
    /// Configuration file [default: /etc/otpd/config.toml, or none with --dev].
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Development mode: messages go to a local outbox file, never to Twilio; without
    /// --config, the socket, database and outbox live in the current directory.
    #[arg(long)]
    dev: bool,
}

impl ConfigSource {
    fn path(&self) -> Option<PathBuf> {
        match (&self.config, self.dev) {
            (Some(path), _) => Some(path.clone()),
            (None, true) => None,
            (None, false) => Some(PathBuf::from(DEFAULT_CONFIG)),
        }
    }

    fn load(&self) -> Result<Config, ExitCode> {
        self.loader()().map_err(|e| {
            eprintln!("otpd: configuration error: {e}");
            ExitCode::from(EX_CONFIG)
        })
    }

    /// Start-up and SIGHUP load the configuration the same way.
    fn loader(&self) -> otpd::daemon::LoadConfig {
        let (path, dev) = (self.path(), self.dev);
        std::sync::Arc::new(move || Config::load(path.as_deref(), dev, &Sources::from_process()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { source } => match source.load() {
            Ok(config) => {
                print!("{}", config.effective_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { source } => match source.load() {
            Ok(config) => serve(&config, source.loader()),
            Err(code) => code,
        },
        Command::SendOtp {
            phone,
            purpose,
            user,
            daemon,
        } => daemon.call(Call::SendOtp {
            phone,
            purpose,
            user,
        }),
        Command::VerifyOtp {
            phone,
            code,
            purpose,
            user,
            daemon,
        } => daemon.call(Call::VerifyOtp {
            phone,
            code,
            purpose,
            user,
        }),
        Command::TestTwilio { daemon } => daemon.call(Call::TestTwilio),
        Command::Status { daemon } => daemon.call(Call::Status),
        Command::Messages {
            since,
            limit,
            daemon,
        } => daemon.call(Call::Messages { since, limit }),
        Command::Audit {
            phone,
            since,
            limit,
            daemon,
        } => daemon.call(Call::Audit {
            phone,
            since,
            limit,
        }),
        Command::Purge { daemon } => daemon.call(Call::Purge),
        Command::GenerateAssets { dir } => match generate_assets(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("otpd: cannot write to {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// `otpd.1` and completions for bash, zsh and fish, from the clap definition.
fn generate_assets(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(dir.join("otpd.1"), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, "otpd", dir)?;
    }
    Ok(())
}

fn serve(config: &Config, load: otpd::daemon::LoadConfig) -> ExitCode {
    otpd::logging::init(&config.server.log_level);
    // Before the runtime's threads exist: taking the socket unsets LISTEN_FDS.
    let passed = match otpd::socket::passed_socket() {
        Ok(passed) => passed,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut intents =
            Intents::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let (reload, requests) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = async move {
            while let Some(intent) = intents.next().await {
                match intent {
                    Intent::Shutdown => break,
                    Intent::Reload => {
                        let _ = reload.send(());
                    }
                }
            }
        };
        let reloads = otpd::daemon::Reloads { requests, load };
        otpd::daemon::run(config, passed, shutdown, Some(reloads))
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
