//! Writes otpd's man pages and shell completions, generated from the clap definition
//! the daemon itself parses (`otpd::cli::args`): `cargo run --example otpd-assets -- DIR`,
//! run by packaging/build-deb.sh.
//!
//! An example rather than a subcommand or a second `[[bin]]`: the generators
//! (clap_mangen, clap_complete) stay dev-dependencies, out of the daemon binary and out
//! of the package, and the CI build of the tests already compiles it.
//!
//! It writes `DIR/man/otpd.1` (with FILES, ENVIRONMENT, EXIT STATUS, SIGNALS and SEE
//! ALSO, which clap cannot know), one page per subcommand (`otpd-serve.1`, ...: the
//! SUBCOMMANDS section names them), and `DIR/otpd.bash`, `DIR/_otpd`, `DIR/otpd.fish`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use otpd::cli::args::{Cli, DEFAULT_CONFIG, DEFAULT_SOCKET};
use otpd::cli::exit;

/// A section of the main page: its title, an introduction, and its (term, text) items.
struct Section {
    title: &'static str,
    intro: &'static str,
    items: Vec<(String, String)>,
}

fn item(term: impl Into<String>, text: impl Into<String>) -> (String, String) {
    (term.into(), text.into())
}

/// What clap cannot know: the files, the environment, the exit codes, the signals.
fn sections() -> Vec<Section> {
    vec![
        Section {
            title: "FILES",
            intro: "",
            items: vec![
                item(
                    DEFAULT_CONFIG,
                    "The configuration (a conffile). Every key with its default is in \
                     /usr/share/doc/otpd/examples/config.toml.example; the reference is \
                     /usr/share/doc/otpd/configuration.md.",
                ),
                item(
                    "/etc/otpd/otpd.env",
                    "The Twilio secrets as NAME=value lines (twilio.secrets_file), read by \
                     otpd itself at start and at every reload.",
                ),
                item(
                    "/var/lib/otpd/otpd.db",
                    "The SQLite database (store.path): codes as keyed hashes, messages, the \
                     outbox and the audit trail, with its -wal and -shm files beside it.",
                ),
                item(
                    "/var/lib/otpd/hmac.key",
                    "The key codes are hashed with (otp.hmac_key_file), created at the first \
                     start with mode 0600; the systemd credential otpd_hmac_key replaces it. \
                     Keep it out of database backups.",
                ),
                item(
                    DEFAULT_SOCKET,
                    "The API socket (server.socket_path, or otpd.socket's), owner otpd, \
                     group otpd-clients, mode 0660: members of otpd-clients may call it.",
                ),
                item(
                    "otpd.sock, otpd.db, hmac.key, outbox.jsonl",
                    "With serve --dev, in the current directory; outbox.jsonl receives every \
                     message instead of a phone.",
                ),
            ],
        },
        Section {
            title: "ENVIRONMENT",
            intro: "Twilio settings from the environment beat the configuration file and \
                    twilio.secrets_file; systemd credentials of the lower-case names \
                    (twilio_auth_token, ...) beat the environment.",
            items: vec![
                item("TWILIO_ACCOUNT_SID", "twilio.account_sid."),
                item("TWILIO_AUTH_TOKEN", "twilio.auth_token."),
                item(
                    "TWILIO_API_KEY_SID, TWILIO_API_KEY_SECRET",
                    "An API key, used instead of the auth token.",
                ),
                item("TWILIO_PHONE_NUMBER", "twilio.from_number."),
                item(
                    "TEST_PHONE_NUMBER",
                    "twilio.test_phone_number, the destination of test-twilio.",
                ),
                item(
                    "CREDENTIALS_DIRECTORY",
                    "systemd credentials (LoadCredential=): twilio_account_sid, \
                     twilio_auth_token, twilio_api_key_sid, twilio_api_key_secret, \
                     twilio_phone_number, test_phone_number, otpd_hmac_key.",
                ),
                item(
                    "OTPD_LOG, RUST_LOG",
                    "The log filter (env_logger syntax, e.g. debug), instead of \
                     server.log_level.",
                ),
                item(
                    "OTPD_SOCKET",
                    "The socket the client commands call, instead of --socket's default.",
                ),
                item(
                    "NOTIFY_SOCKET, WATCHDOG_USEC, LISTEN_FDS, LISTEN_PID, JOURNAL_STREAM",
                    "Set by systemd: readiness and watchdog notifications, socket \
                     activation, and logging to the journal.",
                ),
            ],
        },
        Section {
            title: "EXIT STATUS",
            intro: "",
            items: vec![
                item(
                    exit::OK.to_string(),
                    "Done; for verify-otp, the code verified; for serve, a clean stop.",
                ),
                item(
                    exit::REFUSED.to_string(),
                    "The daemon refused the request (4xx): a wrong, expired or used code, \
                     bad input. For serve: a start-up failure other than the configuration \
                     (a socket in use, the database).",
                ),
                item("2", "Bad command line."),
                item(exit::LIMITED.to_string(), "A rate or attempt limit (429)."),
                item(
                    exit::UNAVAILABLE.to_string(),
                    "The daemon or its SMS provider is unavailable (5xx): try again later.",
                ),
                item(
                    exit::PROVIDER_REJECTED.to_string(),
                    "The SMS provider rejected the message (502 twilio_rejected): a number \
                     it cannot deliver to, or the account's credentials; the same request \
                     will be rejected again.",
                ),
                item(
                    exit::NO_DAEMON.to_string(),
                    "Nothing answers on the socket: the daemon is not running, or listens \
                     elsewhere.",
                ),
                item(
                    exit::NO_PERMISSION.to_string(),
                    "Permission denied on the socket: join its group (adduser $USER \
                     otpd-clients), which takes effect at the next login or, for a service, \
                     at its restart.",
                ),
                item(
                    "78",
                    "serve and check-config: the configuration is invalid; the message names \
                     the key.",
                ),
            ],
        },
        Section {
            title: "SIGNALS",
            intro: "",
            items: vec![
                item(
                    "SIGTERM, SIGINT",
                    "Stop: no new connections, in-flight requests and outbox sends finish \
                     (server.shutdown_timeout), the database is closed and the socket \
                     removed.",
                ),
                item(
                    "SIGHUP",
                    "Reload the configuration file and twilio.secrets_file (systemctl reload \
                     otpd); a file that does not load is logged and the running configuration \
                     keeps serving. The environment and systemd credentials need a restart.",
                ),
            ],
        },
        Section {
            title: "SEE ALSO",
            intro: "The configuration reference: /usr/share/doc/otpd/configuration.md, and \
                    every key with its default in \
                    /usr/share/doc/otpd/examples/config.toml.example. The API, the socket \
                    and operations: /usr/share/doc/otpd/README.md.",
            items: vec![item(
                "systemctl(1), journalctl(1), systemd.socket(5), adduser(8)",
                "",
            )],
        },
    ]
}

/// Text for roff: hyphens that must stay hyphens, and no line read as a request.
fn roff(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    match text.chars().next() {
        Some('.' | '\'') => format!("\\&{text}"),
        _ => text,
    }
}

fn render_section(section: &Section, out: &mut Vec<u8>) -> std::io::Result<()> {
    match section.title.contains(' ') {
        true => writeln!(out, ".SH \"{}\"", section.title)?,
        false => writeln!(out, ".SH {}", section.title)?,
    }
    if !section.intro.is_empty() {
        writeln!(out, "{}", roff(section.intro))?;
    }
    for (term, text) in &section.items {
        writeln!(out, ".TP\n\\fB{}\\fR", roff(term))?;
        if !text.is_empty() {
            writeln!(out, "{}", roff(text))?;
        }
    }
    Ok(())
}

/// The main page: clap's sections, then ours before the version.
fn main_page(command: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    for section in sections() {
        render_section(&section, &mut out)?;
    }
    man.render_version_section(&mut out)?;
    Ok(out)
}

fn generate(dir: &Path) -> std::io::Result<()> {
    let man_dir = dir.join("man");
    std::fs::create_dir_all(&man_dir)?;
    let mut command = Cli::command().disable_help_subcommand(true);
    // Built, so each subcommand knows its display name (`otpd-serve`) and page name.
    command.build();
    std::fs::write(man_dir.join("otpd.1"), main_page(&command)?)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        clap_mangen::Man::new(sub.clone())
            .source(format!("otpd {}", env!("CARGO_PKG_VERSION")))
            .generate_to(&man_dir)?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, "otpd", dir)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: cargo run --example otpd-assets -- DIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "otpd-assets: cannot write to {}: {e}",
                Path::new(&dir).display()
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    fn page() -> String {
        let mut command = Cli::command().disable_help_subcommand(true);
        command.build();
        String::from_utf8(main_page(&command).unwrap()).unwrap()
    }

    #[test]
    fn the_man_page_has_the_sections_a_sysadmin_looks_for() {
        let page = page();
        for title in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "SUBCOMMANDS",
            "FILES",
            "ENVIRONMENT",
            "EXIT STATUS",
            "SIGNALS",
            "SEE ALSO",
        ] {
            let quoted = format!(".SH \"{title}\"");
            let plain = format!(".SH {title}");
            assert!(
                page.lines().any(|l| l == quoted || l == plain),
                "no {title} section in:\n{page}"
            );
        }
        for pointer in [
            "/usr/share/doc/otpd/configuration.md",
            "/usr/share/doc/otpd/examples/config.toml.example",
            "otpd\\-serve(1)",
        ] {
            assert!(
                page.contains(&roff(pointer)) || page.contains(pointer),
                "{pointer}"
            );
        }
    }

    /// The man page and docs/api.md's table list the same exit codes.
    #[test]
    fn the_exit_codes_are_the_ones_docs_api_md_documents() {
        let page = page();
        let section = page
            .split(".SH \"EXIT STATUS\"")
            .nth(1)
            .and_then(|rest| rest.split("\n.SH ").next())
            .unwrap();
        let in_page: Vec<String> = section
            .lines()
            .filter_map(|l| l.strip_prefix("\\fB")?.strip_suffix("\\fR"))
            .map(str::to_owned)
            .collect();
        let api =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
        let table = api.split("| exit code | meaning |").nth(1).unwrap();
        let in_docs: Vec<String> = table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.split('|').nth(1).unwrap().trim().to_owned())
            .collect();
        assert_eq!(in_page, in_docs);
    }
}
