//! Where values that are not in config.toml come from, and which one wins: systemd
//! credentials, then the process environment, then the file named by
//! `twilio.secrets_file`, then config.toml. The environment beats the secrets file as it
//! beats config.toml (a variable set for one run is the most specific), and credentials
//! beat both as they did before the secrets file existed. Also [`Secret`], which prints
//! as asterisks. What the values mean is the sections' business, not this file's.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::raw::RawTwilio;
use super::{ConfigError, invalid};
use crate::clock::{Clock, DEV_CLOCK_FILE};

/// A secret that prints as asterisks.
#[derive(Clone)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

/// Where values that are not in the file come from: the process environment and the
/// systemd credentials directory. A struct so tests can pass their own.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub env: HashMap<String, String>,
    pub credentials_dir: Option<PathBuf>,
}

impl Sources {
    pub fn from_process() -> Self {
        Sources {
            env: std::env::vars().collect(),
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        }
    }

    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).filter(|v| !v.is_empty()).cloned()
    }

    pub(super) fn credential(&self, name: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(dir) = &self.credentials_dir else {
            return Ok(None);
        };
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

/// The `[twilio]` values that may come from outside config.toml, by environment
/// variable (also the name in the secrets file); the systemd credential is the
/// variable's name in lower case (`twilio_auth_token`, ...), as config.toml.example
/// documents.
type External = (&'static str, fn(&mut RawTwilio) -> &mut String);

const EXTERNAL: [External; 6] = [
    ("TWILIO_ACCOUNT_SID", |t| &mut t.account_sid),
    ("TWILIO_AUTH_TOKEN", |t| &mut t.auth_token),
    ("TWILIO_API_KEY_SID", |t| &mut t.api_key_sid),
    ("TWILIO_API_KEY_SECRET", |t| &mut t.api_key_secret),
    ("TWILIO_PHONE_NUMBER", |t| &mut t.from_number),
    ("TEST_PHONE_NUMBER", |t| &mut t.test_phone_number),
];

/// Overlays credentials, environment and secrets file on `[twilio]`, writing the winners
/// back into the raw view so check-config shows what is in effect (masked by the caller).
/// Returns the warnings to give (never with a value in them).
pub(super) fn overlay(t: &mut RawTwilio, sources: &Sources) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    let from_file = if t.secrets_file.as_os_str().is_empty() {
        HashMap::new()
    } else {
        read_secrets_file(&t.secrets_file, &mut warnings)?
    };
    for (variable, field) in EXTERNAL {
        let value = if let Some(bytes) = sources.credential(&variable.to_ascii_lowercase())? {
            String::from_utf8_lossy(&bytes).trim().to_owned()
        } else if let Some(value) = sources.env(variable) {
            if from_file.get(variable).is_some_and(|v| *v != value) {
                // systemd sets the environment (EnvironmentFile=) at start only, so an
                // edited secrets file loaded that way too would silently not apply.
                warnings.push(format!(
                    "{variable} from the environment overrides a different value in {}; \
                     restart otpd if the environment comes from the same file",
                    t.secrets_file.display()
                ));
            }
            value
        } else if let Some(value) = from_file.get(variable) {
            value.clone()
        } else {
            field(t).trim().to_owned()
        };
        *field(t) = value;
    }
    Ok(warnings)
}

/// Reads `twilio.secrets_file`: a missing or unreadable file is an error (it is named on
/// purpose), a world-readable one a warning. Errors name the line, never its text.
fn read_secrets_file(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<HashMap<String, String>, ConfigError> {
    const KEY: &str = "twilio.secrets_file";
    let shown = path.display();
    let cannot = |e: std::io::Error| invalid(KEY, format!("cannot read {shown}: {e}"));
    let metadata = std::fs::metadata(path).map_err(cannot)?;
    // A FIFO or device would block or never end.
    if !metadata.is_file() {
        return Err(invalid(KEY, format!("{shown} is not a regular file")));
    }
    let text = std::fs::read_to_string(path).map_err(cannot)?;
    let mode = metadata.permissions().mode();
    if mode & 0o004 != 0 {
        warnings.push(format!(
            "{KEY}: {shown} is readable by every user (mode {:04o}): chmod o-r it",
            mode & 0o7777
        ));
    }
    let mut values = HashMap::new();
    for (name, value) in parse_env_file(&text)
        .map_err(|(line, why)| invalid(KEY, format!("{shown}, line {line}: {why}")))?
    {
        if !EXTERNAL.iter().any(|(variable, _)| *variable == name) {
            warnings.push(format!(
                "{KEY}: {shown} sets {name}, which otpd does not read; ignored"
            ));
        } else if !value.is_empty() {
            values.insert(name, value);
        }
    }
    Ok(values)
}

/// `NAME=value` lines as systemd's `EnvironmentFile=` reads them: blank lines and lines
/// starting with `#` or `;` are skipped, `export ` is allowed, a value may be in single
/// quotes (literal) or double quotes (`\"`, `\\`, `` \` `` and `\$` escaped). Multi-line
/// values and backslashes outside quotes are refused rather than read differently from
/// systemd. The error is a line number (from 1) and why.
fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, &'static str)> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fail = |why| (i + 1, why);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let (name, value) = line.split_once('=').ok_or(fail("expected NAME=value"))?;
        let name = name.trim_end();
        let name_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(fail("the name must be letters, digits and '_'"));
        }
        let value = value.trim_start();
        let value = match value.chars().next() {
            Some(quote @ ('"' | '\'')) => unquote(&value[1..], quote).ok_or(fail(
                "the quoted value does not end on this line (or text follows it)",
            ))?,
            _ if value.contains('\\') => return Err(fail("quote a value with backslashes")),
            _ => value.to_owned(),
        };
        pairs.push((name.to_owned(), value));
    }
    Ok(pairs)
}

/// The value after an opening `quote`, if it closes and only blanks follow.
fn unquote(text: &str, quote: char) -> Option<String> {
    let mut value = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quote == '"' => match chars.next()? {
                escaped @ ('"' | '\\' | '`' | '$') => value.push(escaped),
                other => value.extend(['\\', other]),
            },
            c if c == quote => return chars.as_str().trim().is_empty().then_some(value),
            c => value.push(c),
        }
    }
    None
}

/// The wall clock, or in development mode the one [`DEV_CLOCK_FILE`] moves. Outside
/// it the variable is said and ignored: a test's clock never reaches a real phone.
pub(super) fn clock(sources: &Sources, dev: bool) -> Clock {
    match sources.env(DEV_CLOCK_FILE) {
        Some(path) if dev => Clock::offset_by(path.into()),
        Some(_) => {
            warn(&format!(
                "{DEV_CLOCK_FILE} is ignored: it moves the clock in development mode only"
            ));
            Clock::system()
        }
        None => Clock::system(),
    }
}

/// Config is loaded before logging is set up (the log level is in it) and by
/// check-config, which sets none up; there, warnings go to stderr.
pub(super) fn warn(message: &str) {
    if log::max_level() == log::LevelFilter::Off {
        eprintln!("otpd: warning: {message}");
    } else {
        log::warn!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, String)> {
        parse_env_file(text).unwrap()
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn secrets_files_read_as_systemd_reads_them() {
        let text = "# comment\n\n; also a comment\n  TWILIO_AUTH_TOKEN = abc def  \n\
                    export TWILIO_API_KEY_SID='SK#1 \\n'\nTEST_PHONE_NUMBER=\"+34 \\\"6\\\\\"\r\n\
                    EMPTY=\nexported=1\n";
        assert_eq!(
            parsed(text),
            [
                pair("TWILIO_AUTH_TOKEN", "abc def"),
                pair("TWILIO_API_KEY_SID", "SK#1 \\n"),
                pair("TEST_PHONE_NUMBER", "+34 \"6\\"),
                pair("EMPTY", ""),
                pair("exported", "1"),
            ]
        );
    }

    #[test]
    fn a_bad_secrets_line_is_named_by_number_only() {
        for (text, line) in [
            ("A=1\nTWILIO_AUTH_TOKEN\n", 2),
            ("\n\n1A=x", 3),
            ("A=\"open", 1),
            ("A='x' y", 1),
            ("A=x\\\n", 1),
            ("BAD NAME=1", 1),
        ] {
            assert_eq!(parse_env_file(text).map_err(|e| e.0), Err(line), "{text:?}");
        }
    }

    fn raw_with_file(dir: &Path, text: &str, mode: u32) -> RawTwilio {
        let path = dir.join("otpd.env");
        let written = std::fs::write(&path, text)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)));
        assert!(written.is_ok(), "{written:?}");
        RawTwilio {
            secrets_file: path,
            auth_token: "from-toml".into(),
            api_key_sid: "toml-key".into(),
            from_number: "+15005550006".into(),
            ..RawTwilio::default()
        }
    }

    #[test]
    fn credential_beats_environment_beats_secrets_file_beats_toml() {
        let dir = tempfile::tempdir().unwrap();
        let _ = std::fs::write(dir.path().join("twilio_account_sid"), "AC-credential\n");
        let mut t = raw_with_file(
            dir.path(),
            "TWILIO_ACCOUNT_SID=AC-file\nTWILIO_AUTH_TOKEN=file-token\n\
             TWILIO_API_KEY_SID=SK-file\nTWILIO_API_KEY_SECRET=\nOTHER=1\n",
            0o640,
        );
        let sources = Sources {
            env: HashMap::from([
                ("TWILIO_AUTH_TOKEN".to_owned(), "env-token".to_owned()),
                ("TWILIO_API_KEY_SECRET".to_owned(), String::new()),
            ]),
            credentials_dir: Some(dir.path().to_owned()),
        };
        let warnings = overlay(&mut t, &sources).unwrap();
        assert_eq!(t.account_sid, "AC-credential");
        assert_eq!(t.auth_token, "env-token");
        assert_eq!(t.api_key_sid, "SK-file");
        // Empty in the file and in the environment: neither replaces config.toml.
        assert_eq!(t.api_key_secret, "");
        assert_eq!(t.from_number, "+15005550006");
        assert!(
            warnings.iter().any(|w| w.contains("sets OTHER")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("TWILIO_AUTH_TOKEN from the environment")
                    && !w.contains("env-token")
                    && !w.contains("file-token")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_missing_or_malformed_secrets_file_is_an_error_naming_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = RawTwilio {
            secrets_file: dir.path().join("absent.env"),
            ..RawTwilio::default()
        };
        let bad = raw_with_file(dir.path(), "TWILIO_AUTH_TOKEN=\"s3cret", 0o600);
        for (mut t, says) in [(missing, "absent.env"), (bad, "otpd.env, line 1")] {
            match overlay(&mut t, &Sources::default()) {
                Err(ConfigError::Invalid { key, message }) => {
                    assert_eq!(key, "twilio.secrets_file");
                    assert!(
                        message.contains(says) && !message.contains("s3cret"),
                        "{message}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_world_readable_secrets_file_loads_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, warned) in [(0o644, true), (0o640, false)] {
            let mut t = raw_with_file(dir.path(), "TWILIO_AUTH_TOKEN=s3cret\n", mode);
            let warnings = overlay(&mut t, &Sources::default()).unwrap();
            assert_eq!(t.auth_token, "s3cret");
            assert_eq!(
                warnings
                    .iter()
                    .any(|w| w.contains("readable by every user (mode 0644)")),
                warned,
                "{warnings:?}"
            );
            assert!(!warnings.iter().any(|w| w.contains("s3cret")));
        }
    }
}
