//! The `otpd` command: parse the command line, load the configuration, set up logging,
//! bind the socket and hand over to [`otpd::run`]. Exits 78 (EX_CONFIG) on a bad
//! configuration and 1 on any other start-up failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    fn load(&self) -> Result<Config, ExitCode> {
        let path = match (&self.config, self.dev) {
            (Some(path), _) => Some(path.clone()),
            (None, true) => None,
            (None, false) => Some(PathBuf::from(DEFAULT_CONFIG)),
        };
        Config::load(path.as_deref(), self.dev, &Sources::from_process()).map_err(|e| {
            eprintln!("otpd: configuration error: {e}");
            ExitCode::from(EX_CONFIG)
        })
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
            Ok(config) => serve(&config),
            Err(code) => code,
        },
    }
}

fn serve(config: &Config) -> ExitCode {
    otpd::logging::init(&config.server.log_level);
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
        let mut intents = Intents::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let socket = otpd::server::bind(&config.server.socket_path, config.server.socket_mode)
            .map_err(|e| e.to_string())?;
        let shutdown = async move {
            while let Some(intent) = intents.next().await {
                match intent {
                    Intent::Shutdown => break,
                    Intent::Reload => log::warn!("SIGHUP: configuration reload is not supported yet; restart otpd to apply changes"),
                }
            }
        };
        otpd::run(config, &socket.listener, shutdown).await.map_err(|e| e.to_string())
        // `socket` drops here and removes the socket file.
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
