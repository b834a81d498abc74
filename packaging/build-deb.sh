#!/bin/sh
# Builds target/debian/otpd_<version>-1_<arch>.deb from the dist profile's binary,
# target/dist/otpd (built here if missing): the man pages and completions come from the
# daemon's clap definition through examples/otpd-assets.rs (a debug build, which CI's
# test stage has already compiled), the production config from config.toml.example.
# Extra arguments go to `cargo deb`.
set -eu
cd "$(dirname "$0")/.."

[ -x target/dist/otpd ] || cargo build --profile dist --locked
assets=target/deb-assets
rm -rf "$assets"
cargo run --quiet --locked --example otpd-assets -- "$assets"
gzip -9n "$assets"/man/*.1
# The example documents every default; production names the callers' group and the
# secrets file, which otpd reads itself (so a reload applies an edit to it).
sed -e 's/^socket_group = ""$/socket_group = "otpd-clients"/' \
    -e 's|^secrets_file = ""$|secrets_file = "/etc/otpd/otpd.env"|' \
    config.toml.example >"$assets/config.toml"
grep -q '^socket_group = "otpd-clients"$' "$assets/config.toml"

cargo deb --no-build --locked "$@"
