//! The `otpd` command: parse the command line ([`otpd::cli::args`]); for `serve`, load
//! the configuration, set up logging, take or bind the socket and hand over to
//! [`otpd::daemon::run`]; for the client commands, hand over to [`otpd::cli`]. Exits 78
//! (EX_CONFIG) on a bad configuration and 1 on any other start-up failure.

use std::process::ExitCode;

use clap::Parser;
use otpd::cli::args::{Cli, Command, ConfigSource};
use otpd::config::{Config, ProviderConfig, Sources};
use otpd::signals::{Intent, Intents};

const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let command = Cli::parse().command;
    match command {
        Command::CheckConfig { source } => match load(&source) {
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
