//! Setting up the shared PostgreSQL store: `check-config --connect` reports the schema
//! version, a password in the URL is refused, and a schema newer than the binary stops
//! the start with exit 78. PostgreSQL only: ignored unless run with
//! `OTPD_TEST_POSTGRES_URL` and `--include-ignored`.

use crate::common::*;

fn check_connect(setup: &Setup, dir: &std::path::Path) -> std::process::Output {
    let config = setup.write_config(dir);
    otpd_command()
        .args(["check-config", "--connect", "--config"])
        .arg(&config)
        .output()
        .unwrap()
}

#[tokio::test]
#[ignore = "needs OTPD_TEST_POSTGRES_URL"]
async fn check_config_connects_and_a_newer_schema_stops_the_start() {
    let url = postgres_url().expect("OTPD_TEST_POSTGRES_URL");
    let setup = Setup::new().dev();
    let dir = tempfile::tempdir().unwrap();
    let before = check_connect(&setup, dir.path());
    let stderr = String::from_utf8_lossy(&before.stderr);
    assert!(before.status.success(), "{stderr}");
    assert!(stderr.contains("is at version 0"), "{stderr}");

    let mut otpd = setup.clone().start_in(dir);
    let dir = tempfile::tempdir().unwrap();
    // The same schema: named after the first daemon's directory.
    let same = setup.clone().set(
        "store.postgres",
        &format!("schema = \"{}\"", schema_for(otpd.dir.path())),
    );
    let after = check_connect(&same, dir.path());
    let stderr = String::from_utf8_lossy(&after.stderr);
    let current = format!("is at version {}", otpd::store::PG_SCHEMA_VERSION);
    assert!(stderr.contains(&current), "{stderr}");
    otpd.stop();

    // A later otpd migrated further: this one must not run against that schema.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let schema = schema_for(otpd.dir.path());
    client
        .execute(
            &format!("INSERT INTO {schema}.schema_migrations (version, otpd) VALUES (99, 'later')"),
            &[],
        )
        .await
        .unwrap();
    let config = otpd.config_path();
    let output = otpd_command()
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(otpd.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("version 99, newer than this otpd knows"),
        "{stderr}"
    );
}

#[test]
fn a_password_in_the_url_is_refused_before_anything_connects() {
    let dir = tempfile::tempdir().unwrap();
    let config = Setup::new()
        .dev()
        .set("store", "backend = \"postgres\"")
        .set(
            "store.postgres",
            "url = \"postgresql://otpd:hunter2@db.invalid/app\"",
        )
        .write_config(dir.path());
    let output = check_config(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("store.postgres.url"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is never echoed: {stderr}"
    );
}
