//! The `otpd` command: parse the command line ([`otpd::cli::args`]); for `serve`, load
//! the configuration, set up logging, take or bind the socket and hand over to
//! [`otpd::daemon::run`]; for the client commands, hand over to [`otpd::cli`]. Exits 78
//! (EX_CONFIG) on a bad configuration and 1 on any other start-up failure.

use std::process::ExitCode;

use clap::Parser;
use otpd::cli::args::{Cli, Command, ConfigSource};
use otpd::config::{Backend, Config, ProviderConfig, Sources};
use otpd::signals::{Intent, Intents};
use otpd::store::{PG_SCHEMA_VERSION, PgStore};

const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let command = Cli::parse().command;
    match command {
        Command::CheckConfig { source, connect } => match load(&source) {
            Ok(config) => {
                // A warning, not a failure: the package installs a file without
                // credentials on purpose, and check-config runs before they are added.
                if matches!(config.provider, ProviderConfig::None) {
                    eprintln!(
                        "otpd: WARNING: no SMS provider is configured: every send will answer \
                         503 provider_not_configured. Set twilio.account_sid and an auth token \
                         or API key (in the file, twilio.secrets_file or TWILIO_*), or \
                         [dev] enabled = true for a local outbox."
                    );
                }
                print!("{}", config.effective_toml());
                if connect {
                    return check_connection(&config);
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { source } => match load(&source) {
            Ok(config) => serve(&config, loader(&source)),
            Err(code) => code,
        },
        Command::Client(client) => {
            let (call, daemon) = client.into_call();
            ExitCode::from(otpd::cli::run(&daemon.socket, &call, daemon.json))
        }
    }
}

fn load(source: &ConfigSource) -> Result<Config, ExitCode> {
    loader(source)().map_err(|e| {
        eprintln!("otpd: configuration error: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

/// `check-config --connect`: reaches the shared store as the daemon would and says
/// which schema version it holds. Exit 1 when it cannot be reached.
fn check_connection(config: &Config) -> ExitCode {
    let Backend::Postgres(pg) = &config.store.backend else {
        eprintln!("otpd: store.backend is \"sqlite\": a local file, nothing to connect to");
        return ExitCode::SUCCESS;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("otpd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(PgStore::schema_version(pg)) {
        Ok(version) => {
            eprintln!(
                "otpd: connected to PostgreSQL as instance {:?}: schema {:?} is at version \
                 {version} (this otpd knows {PG_SCHEMA_VERSION}{})",
                pg.instance,
                pg.schema,
                if version == 0 {
                    "; created at the first start"
                } else {
                    ""
                },
            );
            if version > PG_SCHEMA_VERSION {
                eprintln!("otpd: the schema is newer than this otpd: it would refuse to start");
                return ExitCode::from(EX_CONFIG);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otpd: cannot reach PostgreSQL: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Start-up and SIGHUP load the configuration the same way.
fn loader(source: &ConfigSource) -> otpd::daemon::LoadConfig {
    let (path, dev) = (source.path(), source.dev);
    std::sync::Arc::new(move || Config::load(path.as_deref(), dev, &Sources::from_process()))
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
            Intents::install().map_err(|e| (format!("cannot install signal handlers: {e}"), 1))?;
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
            .map_err(|e| {
                // A shared store that disagrees with this host (another HMAC key, a
                // newer schema) needs an operator, not systemd's next restart.
                let code = match &e {
                    otpd::daemon::StartError::Store(s) if s.is_configuration() => EX_CONFIG,
                    _ => 1,
                };
                (e.to_string(), code)
            })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, code)) => {
            log::error!("{e}");
            ExitCode::from(code)
        }
    }
}
