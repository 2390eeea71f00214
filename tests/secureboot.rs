//! UEFI Secure Boot, enforced by the firmware: an ESP whose UKI mkimage
//! signed with a key in `db` boots to the init's ready event under a
//! locked-down kernel; an unsigned or tampered UKI is refused by the
//! firmware itself, which says so; behind shim with Microsoft's keys (a
//! stock PC), shim starts and, our certificate not yet enrolled as a MOK,
//! says it cannot verify our loader and hands over to MokManager.
//!
//! The keys are Debian's public "snakeoil" test key, which the
//! `*_VARS*.snakeoil.fd` variable stores of ovmf and qemu-efi-aarch64 hold
//! as PK, KEK and db; `OVMF_VARS_4M.ms.fd` holds Microsoft's.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use phase_scenarios::{BOOT, SHORT, check, contains};
use serde_json::{Value, json};
use xtask::Arch;
use xtask::images::{self, SecureBootImages};
use xtask::vm::{Drive, Firmware, Media, SecureBootKeys, Vm, VmSpec};

/// How long a refusing firmware gets to say so: it gets as far as the boot
/// option in well under a minute under TCG.
const REFUSAL: Duration = Duration::from_secs(120);

/// What the Linux kernel prints first; a refused image never gets there.
const KERNEL_BANNER: &str = "Linux version";

fn start(arch: Arch, name: &str, keys: SecureBootKeys, image: &Path) -> Result<Vm> {
    Vm::start(&VmSpec {
        name: format!("{name}-{arch}"),
        arch,
        memory_mb: 512,
        kernel: None,
        initrd: None,
        append: String::new(),
        firmware: Firmware::SecureBoot(keys),
        efi_vars: None,
        drives: vec![Drive {
            path: image.to_owned(),
            media: Media::Disk,
            format: "raw",
            readonly: true,
        }],
        user_net: false,
        event_port: true,
        rtc_base: None,
        tap: None,
        extra_args: Vec::new(),
    })
}

fn images(arch: Arch) -> Result<SecureBootImages> {
    images::secure_boot_images(arch)
}

/// The signed UKI boots with Secure Boot enforced: the kernel reports it
/// and locks itself down, and the init reaches ready and reports.
fn signed_uki_boots(arch: Arch) -> Result<()> {
    let sb = images(arch)?;
    let mut vm = start(arch, "sb-signed", SecureBootKeys::Snakeoil, &sb.signed)?;
    let ready = vm.wait_event("ready", BOOT)?;
    check(
        &vm,
        ready["arch"] == arch.name(),
        "ready names the wrong arch",
    )?;
    check(
        &vm,
        vm.console_contains("Secure boot enabled")
            || vm.console_contains("UEFI Secure Boot is enabled"),
        "the kernel does not report Secure Boot enabled",
    )?;
    check(
        &vm,
        vm.console_contains("Kernel is locked down from EFI Secure Boot"),
        "the kernel did not lock itself down",
    )?;
    let report = vm.wait_event("report", SHORT)?;
    contains(&report["cmdline"], images::APPEND)?;
    vm.expect_clean_exit(SHORT)
}

/// The firmware refuses `image` (unsigned, or signed but altered) with its
/// own words, and no kernel starts.
fn refused(arch: Arch, name: &str, image: &Path) -> Result<()> {
    let mut vm = start(arch, name, SecureBootKeys::Snakeoil, image)?;
    // BdsDxe: "failed to load Boot0001 … : Access Denied" (the image
    // verification handler's EFI_SECURITY_VIOLATION becomes that).
    vm.wait_console("Access Denied", REFUSAL)?;
    check(
        &vm,
        !vm.console_contains(KERNEL_BANNER) && !vm.console_contains("EFI stub"),
        "a kernel started from a refused image",
    )?;
    vm.kill()
}

fn unsigned_uki_is_refused(arch: Arch) -> Result<()> {
    let sb = images(arch)?;
    refused(arch, "sb-unsigned", &sb.unsigned)
}

fn tampered_uki_is_refused(arch: Arch) -> Result<()> {
    let sb = images(arch)?;
    refused(arch, "sb-tampered", &sb.tampered)
}

/// sbverify, the referee, accepts the UKI the scenarios boot, signed on
/// either arch, with the snakeoil certificate (and no other).
fn sbverify_accepts_the_signed_uki(arch: Arch) -> Result<()> {
    let sb = images(arch)?;
    let sbverify = |cert: &Path| -> Result<(bool, String)> {
        let out = std::process::Command::new("sbverify")
            .arg("--cert")
            .arg(cert)
            .arg(&sb.uki)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ))
    };
    let (ok, text) = sbverify(&sb.cert)?;
    anyhow::ensure!(ok && text.contains("Signature verification OK"), "{text}");
    let other =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mkimage/testdata/secureboot-test.crt");
    let (ok, text) = sbverify(&other)?;
    anyhow::ensure!(!ok, "sbverify accepts another certificate:\n{text}");
    Ok(())
}

phase_scenarios::on_both_arches!(
    sbverify_accepts_the_signed_uki,
    signed_uki_boots,
    unsigned_uki_is_refused,
    tampered_uki_is_refused,
);

/// Microsoft's keys, as a stock PC: the firmware starts Debian's shim
/// (signed by Microsoft), and shim refuses our systemd-boot with its own
/// message — our certificate is in neither db nor the MOK list yet (shim
/// then hands over to MokManager, where the certificate on the ESP can be
/// enrolled; MokManager draws nothing on the serial console).
#[test]
fn x86_64_shim_starts_and_refuses_our_unenrolled_loader() -> Result<()> {
    let arch = Arch::X86_64;
    let sb = images(arch)?;
    let Some(shim) = &sb.shim else {
        anyhow::bail!("no shim image for {arch}");
    };
    let mut vm = start(arch, "sb-shim", SecureBootKeys::Microsoft, shim)?;
    // The firmware accepted shim (it runs), and shim refused our loader.
    vm.wait_console("Verification failed: (0x1A) Security Violation", REFUSAL)?;
    check(
        &vm,
        !vm.console_contains(KERNEL_BANNER),
        "a kernel started before its key was enrolled",
    )?;
    vm.kill()
}

/// The whole netboot with Secure Boot enforced (x86_64): the signed UKI
/// starts a locked-down kernel, the init fetches and verifies the next
/// kernel, and `kexec_file_load` — which lockdown lets load only a kernel
/// whose signature the running kernel trusts — must decide. Debian's own
/// signature is not enough here: the kernel trusts its build key and the
/// platform keyring (db, and the MOK list shim passes on, which holds
/// Debian's CA only when shim booted us), so the init reports ENOKEY and
/// fails closed.
#[test]
fn x86_64_netboot_refuses_a_kernel_signed_by_an_untrusted_key() -> Result<()> {
    netboot(Arch::X86_64, Next::DebianSigned)
}

/// The same Debian kernel signed with the key in db kexecs, and the second
/// kernel's report carries the marker of the signed command line.
#[test]
fn x86_64_netboot_kexecs_a_kernel_signed_by_a_db_key() -> Result<()> {
    netboot(Arch::X86_64, Next::DbSigned)
}

/// On arm64 the hand-off is `kexec_load`, which a Secure Boot kernel
/// refuses (IMA's Secure Boot policy: EACCES, "impossible to appraise a
/// kernel image without a file descriptor"; lockdown would too): the init
/// must report it and fail closed, nothing kexec'd.
#[test]
fn aarch64_netboot_fails_closed_under_lockdown() -> Result<()> {
    netboot(Arch::Aarch64, Next::DebianSigned)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The Debian kernel as Debian signed it.
    DebianSigned,
    /// The Debian kernel with its signature replaced by the snakeoil key's.
    DbSigned,
}

fn netboot(arch: Arch, next: Next) -> Result<()> {
    use xtask::artifacts::{self, Variant};
    use xtask::provider::{self, Publication};
    const NETBOOT: Duration = Duration::from_secs(300);
    let spec = "tests/specs/netboot.toml";
    let bundle = artifacts::bundle(arch, spec, Variant::Release)?;
    let dir = tempfile::Builder::new()
        .prefix("phase-sb-netboot-")
        .tempdir()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mark = format!("marker=secureboot-{arch}-{nanos:08x}");
    let resigned = dir.path().join("vmlinuz-db-signed");
    let kernel = match next {
        Next::DebianSigned => bundle.kernel.image.clone(),
        Next::DbSigned => {
            images::snakeoil_resigned(&bundle.kernel.image, &resigned)?;
            resigned
        }
    };
    let publication = Publication {
        arch,
        version: 5,
        floor: None,
        expires_in: 3600,
        cmdline: format!(
            "console={} panic=-1 phase.report phase.onfail=poweroff {mark}",
            arch.console()
        ),
        kernel: &kernel,
        initrd: Some(&bundle.initrd),
        served_as: None,
        root_image: None,
    };
    let (tree, _) = provider::publish_tree(dir.path(), &publication)?;
    let nginx = provider::nginx(&tree, dir.path())?;
    let url = provider::guest_url("http", nginx.http.port());
    let esp = dir.path().join("esp.img");
    images::signed_direct_esp(
        arch,
        &bundle.kernel.image,
        &bundle.initrd,
        &format!("phase.provider={url} phase.onfail=poweroff"),
        &esp,
    )?;
    let mut spec = VmSpec {
        name: format!("sb-netboot-{arch}"),
        arch,
        memory_mb: 512,
        kernel: None,
        initrd: None,
        append: String::new(),
        firmware: Firmware::SecureBoot(SecureBootKeys::Snakeoil),
        efi_vars: None,
        drives: vec![Drive {
            path: esp,
            media: Media::Disk,
            format: "raw",
            readonly: true,
        }],
        user_net: true,
        event_port: true,
        rtc_base: None,
        tap: None,
        extra_args: Vec::new(),
    };
    spec.user_net = true;
    let mut vm = Vm::start(&spec)?;
    vm.wait_event("ready", BOOT)?;
    check(
        &vm,
        vm.console_contains("Kernel is locked down from EFI Secure Boot"),
        "the first kernel is not locked down",
    )?;
    phase_scenarios::wait_stage(&mut vm, "verify", NETBOOT)?;
    match (arch, next) {
        (Arch::X86_64, Next::DbSigned) => {
            vm.wait_event("kexec", NETBOOT)?;
            let report = vm.wait_event("report", NETBOOT)?;
            contains(&report["cmdline"], &mark)?;
            vm.expect_clean_exit(SHORT)
        }
        (_, _) => {
            let failure = phase_scenarios::failure_in(&mut vm, "handoff", NETBOOT)?;
            // Locked down by Secure Boot: x86_64 tries kexec_file_load alone,
            // whatever the image's method, and its refusal is final.
            let (kind, syscall, errno, why) = match arch {
                Arch::X86_64 => ("kexec_refused", "kexec_file_load", "ENOKEY", "locked_down"),
                Arch::Aarch64 => ("kexec_failed", "kexec_load", "EACCES", "aarch64"),
            };
            let tried: Vec<(&Value, &Value)> = failure["tried"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| (&t["what"], &t["detail"]["why"]))
                .collect();
            check(
                &vm,
                failure["kind"] == kind
                    && failure["detail"]["syscall"] == syscall
                    && failure["detail"]["errno"] == errno
                    && tried == [(&json!(syscall), &json!(why))],
                &format!("expected {syscall} alone, refused with {errno}: {failure}"),
            )?;
            phase_scenarios::wait_power(&mut vm, "power off", SHORT)?;
            vm.expect_clean_exit(SHORT)?;
            check(
                &vm,
                !vm.events().iter().any(|e| e["event"] == "kexec"),
                "something was kexec'd",
            )
        }
    }
}
