//! Link options for the `init` binary on the musl targets (the PID 1 of an
//! initramfs), where every byte ships in every image:
//!
//! - the `init` and `init-test` profiles build with `panic = "abort"`, so
//!   nothing unwinds, and `link/no-unwind-tables.ld` drops `.eh_frame` and
//!   `--no-eh-frame-hdr` its index: 264 KiB of the x86_64 binary, 80 KiB
//!   after zstd -19. (Build scripts cannot see the profile's panic
//!   strategy; a musl build with `panic = "unwind"` would abort on a panic
//!   too, having no tables to unwind with — which is what PID 1 does
//!   anyway.)
//! - `-z pack-relative-relocs` stores the x86_64 static-pie's relative
//!   relocations as RELR (musl's start code applies them): 72 KiB → 1 KiB,
//!   7 KiB after zstd.
//!
//! `.cargo/config.toml` names `rust-lld` as the musl linker, so these are
//! its flags, not gcc's. Host builds (tests, tools) are left alone.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=link/no-unwind-tables.ld");
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_ENV") != "musl" {
        return;
    }
    let arg = |a: &str| println!("cargo:rustc-link-arg-bin=init={a}");
    arg("-z");
    arg("pack-relative-relocs");
    let script = PathBuf::from(var("CARGO_MANIFEST_DIR")).join("link/no-unwind-tables.ld");
    arg("--no-eh-frame-hdr");
    arg(&script.display().to_string());
}
