//! The release link order. Start-up and idle code is laid out first, then the request
//! path, as listed in `packaging/symbol-order.txt` (written by `benches/icount.py
//! --order-file`). Why: the kernel maps a file's pages 64 KiB at a time around each
//! fault, and start-up code spread over the whole `.text` made nearly all of it
//! resident at idle; packed together it is a third of that (BENCHMARKS.md, "Link order").

use std::env;
use std::path::Path;

fn main() {
    let order = Path::new("packaging/symbol-order.txt");
    println!("cargo::rerun-if-changed={}", order.display());
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let target = env::var("TARGET").unwrap_or_default();
    if !release || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    // lld is Rust's default linker on this target since 1.90 (rust-version); a linker
    // chosen in config or flags may be GNU ld, which rejects the flag, so it gets none.
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("fuse-ld")
    {
        println!("cargo::warning=a linker is configured: release built without the link order");
        return;
    }
    // Names the list has but this build lacks (a newer compiler or dependency renames
    // them) are skipped: the order is a layout hint, never a failure.
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let path = Path::new(&dir).join(order);
    println!(
        "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}
