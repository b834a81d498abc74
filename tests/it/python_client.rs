//! The Python client example (`examples/python`) against the real daemon: its unittest
//! suite runs in a virtualenv at `target/python-venv` with the pinned requirements,
//! created with `python3 -m venv` and pip on first use (so the first run needs
//! `python3` with the venv module, and PyPI or a pip mirror).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::install_lock::InstallLock;
use crate::common::*;

/// How long to wait for another test process creating the virtualenv.
const VENV_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn python_client_suite_passes_against_the_daemon() {
    let python = ensure_venv();
    let otpd = Setup::new()
        .dev()
        .set("limits", "send_per_phone = \"3/1h\"")
        .start();
    let output = Command::new(&python)
        .args([
            "-m",
            "unittest",
            "-v",
            "examples/python/test_otpd_client.py",
        ])
        .current_dir(crate_root())
        .env("OTPD_SOCKET", otpd.socket())
        .env("OTPD_OUTBOX", otpd.dir.path().join("outbox.jsonl"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONPATH")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let printed = printed(&output);
    assert!(
        output.status.success(),
        "the Python client tests failed ({}):\n{printed}\notpd's log:\n{}",
        output.status,
        otpd.log()
    );
    // A suite that skipped the daemon tests (no OTPD_SOCKET) would also succeed.
    assert!(
        !printed.contains("skipped"),
        "the Python client tests skipped some tests:\n{printed}"
    );
}

fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Returns `target/python-venv/bin/python`, first (re)creating the virtualenv with the
/// requirements in `examples/python/requirements.txt` if it is missing or was made from
/// other requirements (its `requirements.stamp` holds the text it was installed from).
fn ensure_venv() -> PathBuf {
    let requirements = crate_root().join("examples/python/requirements.txt");
    let wanted = fs::read_to_string(&requirements)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", requirements.display()));
    let target = crate_root().join("target");
    fs::create_dir_all(&target).unwrap();
    let venv = target.join("python-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.stamp");
    let _lock = InstallLock::acquire_within(VENV_LOCK_TIMEOUT, &target.join("python-venv.lock"));
    if python.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    // The stamp goes last: a venv left half-made by a killed run has none.
    let _ = fs::remove_file(&stamp);
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "-r",
        ])
        .arg(&requirements));
    fs::write(&stamp, &wanted).unwrap();
    python
}

/// Runs `cmd`, failing the test with its output if it cannot start or fails.
fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let output = match cmd.stdin(Stdio::null()).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{shown}: not found; the Python client test needs python3 with venv")
        }
        Err(e) => panic!("cannot run {shown}: {e}"),
    };
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}",
        output.status,
        printed(&output)
    );
}
