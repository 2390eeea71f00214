//! Secure Boot signing, judged by the reference tools: `sbverify` (the
//! sbsigntool that Debian signs with) must accept our signatures and refuse
//! a tampered image, `osslsigncode` must list them with a matching digest
//! and PE checksum, `pesign` must list them and compute the same
//! Authenticode hash, and `sbsign` signing the same image must give a
//! signature that verifies the same way. Every boot file of a signed ESP,
//! USB disk and ISO must verify, and with `--shim` Debian's shim must be
//! the boot file with our loader behind it.
//!
//! A missing tool or input skips its part with a printed reason (a failure
//! under `PHASE_REQUIRE_TOOLS`).

mod fixtures;
mod referee;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mkimage::authenticode;

const EPOCH: &str = "1700000000";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The committed public test key and certificate.
fn test_key() -> (PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    // mkimage does not care about the key file's mode; sbsign does not
    // either, but keep it private as a real key would be.
    let key = dir.join("db.key");
    std::fs::copy(testdata("secureboot-test.key"), &key).unwrap();
    (key, testdata("secureboot-test.crt"))
}

fn have(path: &str, what: &str) -> bool {
    let ok = Path::new(path).exists();
    if !ok {
        phase_testkit::skip(what, format_args!("{path} is not installed"));
    }
    ok
}

struct Inputs {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
}

/// A stand-in kernel and an initramfs with a payload, from the CLI tests'
/// fixtures, which pass mkimage's input checks.
fn inputs() -> Inputs {
    let f = fixtures::Inputs::with_payload(300_001);
    Inputs {
        kernel: f.kernel.clone(),
        initrd: f.initrd.clone(),
        dir: f.dir,
    }
}

fn mkimage(args: &[&str]) -> Output {
    referee::run(
        Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .arg("--json")
            .args(args),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a tool without asserting its exit status.
fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (out.status.success(), referee::text(&out))
}

/// `sbverify --cert CERT IMAGE`: whether it accepts, and what it said.
fn sbverify(cert: &Path, image: &Path) -> Option<(bool, String)> {
    let t = referee::tool("sbverify", "sbverify --cert")?;
    Some(output(Command::new(t).arg("--cert").arg(cert).arg(image)))
}

fn assert_sbverify_ok(cert: &Path, image: &Path) {
    if let Some((ok, text)) = sbverify(cert, image) {
        assert!(
            ok && text.contains("Signature verification OK"),
            "sbverify refuses {}:\n{text}",
            image.display()
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uki(inputs: &Inputs, out: &Path, sign: Option<(&Path, &Path)>) {
    let mut args = vec![
        "uki",
        "--kernel",
        s(&inputs.kernel),
        "--initrd",
        s(&inputs.initrd),
        "--cmdline",
        "console=ttyS0",
        "--out",
        s(out),
    ];
    if let Some((key, cert)) = sign {
        args.extend(["--sign", s(key), "--cert", s(cert)]);
    }
    let summary: serde_json::Value = serde_json::from_slice(&mkimage(&args).stdout).unwrap();
    assert_eq!(summary["signed"], sign.is_some());
}

#[test]
fn a_signed_uki_passes_every_referee() {
    if !have(STUB, "Secure Boot referees") {
        return;
    }
    let inputs = inputs();
    let (key, cert) = test_key();
    let unsigned = inputs.dir.path().join("unsigned.efi");
    let signed = inputs.dir.path().join("signed.efi");
    uki(&inputs, &unsigned, None);
    uki(&inputs, &signed, Some((&key, &cert)));
    let signed_bytes = std::fs::read(&signed).unwrap();
    let unsigned_bytes = std::fs::read(&unsigned).unwrap();
    // Signing appends; it changes only the checksum and the certificate
    // entry of what was there.
    assert_eq!(signed_bytes.len() % 8, 0);
    assert!(signed_bytes.len() > unsigned_bytes.len());
    let digest = hex(&authenticode::image_digest(&signed_bytes, "signed").unwrap());
    assert_eq!(
        digest,
        hex(&authenticode::image_digest(&unsigned_bytes, "unsigned").unwrap())
    );
    // Bit-identical for the same inputs and key.
    let again = inputs.dir.path().join("again.efi");
    uki(&inputs, &again, Some((&key, &cert)));
    assert_eq!(std::fs::read(&again).unwrap(), signed_bytes);

    assert_sbverify_ok(&cert, &signed);
    if let Some((ok, text)) = sbverify(&cert, &unsigned) {
        assert!(!ok, "sbverify accepts the unsigned UKI:\n{text}");
    }

    if let Some(t) = referee::tool("osslsigncode", "osslsigncode verify") {
        let (ok, text) = output(
            Command::new(t)
                .args(["verify", "-CAfile"])
                .arg(&cert)
                .arg("-in")
                .arg(&signed),
        );
        assert!(ok && text.contains("Signature verification: ok"), "{text}");
        assert!(text.contains("Number of verified signatures: 1"), "{text}");
        let line = |name: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(name))
                .and_then(|l| l.rsplit(':').next())
                .map(|v| v.trim().to_lowercase())
                .unwrap_or_else(|| panic!("osslsigncode prints no {name:?}:\n{text}"))
        };
        assert_eq!(line("Current message digest"), digest, "{text}");
        assert_eq!(line("Calculated message digest"), digest, "{text}");
        // osslsigncode prints one "PE checksum" line when the file's equals
        // the one it calculates, both and a warning when they differ.
        assert!(!text.contains("invalid PE checksum"), "{text}");
        let pe = mkimage::uki::Pe::parse(&signed_bytes, "signed").unwrap();
        assert_eq!(
            line("PE checksum"),
            format!("{:08x}", pe.checksum),
            "{text}"
        );
    }

    if let Some(t) = referee::tool("pesign", "pesign -S") {
        let (ok, text) = output(Command::new(&t).arg("-S").arg("-i").arg(&signed));
        assert!(ok && text.contains("certificate address is"), "{text}");
        assert!(text.contains("No signing time included."), "{text}");
        let (ok, text) = output(Command::new(&t).arg("-h").arg("-i").arg(&signed));
        assert!(ok && text.contains(&format!("hash: {digest}")), "{text}");
    }

    // The reference signer on the same image: a different signature (it
    // adds a signing time), the same image hash, and it verifies alike.
    if let Some(t) = referee::tool("sbsign", "sbsign as reference") {
        let theirs = inputs.dir.path().join("sbsign.efi");
        referee::run(
            Command::new(t)
                .arg("--key")
                .arg(&key)
                .arg("--cert")
                .arg(&cert)
                .arg("--output")
                .arg(&theirs)
                .arg(&unsigned),
        );
        let theirs_bytes = std::fs::read(&theirs).unwrap();
        assert_eq!(
            hex(&authenticode::image_digest(&theirs_bytes, "sbsign").unwrap()),
            digest
        );
        // Up to the certificate table the files are the same bytes but for
        // the checksum and the certificate entry.
        let table = |b: &[u8]| {
            let pe = mkimage::uki::Pe::parse(b, "t").unwrap();
            pe.data_directory(b, mkimage::uki::CERTIFICATE_TABLE)
                .unwrap()
        };
        let (ours, sbs) = (table(&signed_bytes), table(&theirs_bytes));
        assert_eq!(
            ours.address, sbs.address,
            "the table starts at the same offset"
        );
        assert_eq!(
            signed_bytes[..ours.address as usize].len(),
            theirs_bytes[..sbs.address as usize].len()
        );
        assert_sbverify_ok(&cert, &theirs);
        let entries = authenticode::certificate_table(&theirs_bytes, "sbsign").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].revision, authenticode::WIN_CERT_REVISION);
        assert_eq!(
            entries[0].certificate_type,
            authenticode::WIN_CERT_TYPE_PKCS_SIGNED_DATA
        );
    }

    // One flipped byte anywhere signed — the kernel, the command line, a
    // header — and the signature no longer verifies.
    let pe = mkimage::uki::Pe::parse(&signed_bytes, "signed").unwrap();
    for (what, at) in [
        (
            ".linux",
            pe.section(".linux").unwrap().raw_offset as usize + 0x500,
        ),
        (
            ".cmdline",
            pe.section(".cmdline").unwrap().raw_offset as usize,
        ),
        ("the DOS stub", 0x50),
    ] {
        let mut tampered = signed_bytes.clone();
        tampered[at] ^= 0x01;
        let path = inputs.dir.path().join("tampered.efi");
        std::fs::write(&path, &tampered).unwrap();
        if let Some((ok, text)) = sbverify(&cert, &path) {
            assert!(!ok, "sbverify accepts a flipped byte in {what}:\n{text}");
        }
    }
}

#[test]
fn keygen_keys_sign_what_sbverify_accepts() {
    if !have(SYSTEMD_BOOT, "keygen → sign → sbverify") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let made =
        phase_tools::secureboot::keygen(dir.path(), "db", "Phase Boot test", 2048, 30).unwrap();
    let signer = authenticode::Signer::load(&made.private_key, &made.certificate_der).unwrap();
    let signed = signer
        .sign(&std::fs::read(SYSTEMD_BOOT).unwrap(), "systemd-boot")
        .unwrap();
    let path = dir.path().join("systemd-bootx64.efi");
    std::fs::write(&path, &signed).unwrap();
    assert_sbverify_ok(&made.certificate, &path);
    // Another key's certificate does not verify it.
    if let Some((ok, text)) = sbverify(&testdata("secureboot-test.crt"), &path) {
        assert!(!ok, "sbverify accepts a signature by another key:\n{text}");
    }
}

/// Reads a file out of a FAT image with mtools.
fn fat_file(image: &Path, offset: u64, path: &str, out: &Path) -> Option<Vec<u8>> {
    let bytes = referee::mtools_read(image, offset, path)?;
    std::fs::write(out, &bytes).unwrap();
    Some(bytes)
}

#[test]
fn every_boot_file_of_a_signed_esp_usb_and_iso_verifies() {
    if !have(STUB, "signed images") || !have(SYSTEMD_BOOT, "signed images") {
        return;
    }
    let inputs = inputs();
    let (key, cert) = test_key();
    let dir = inputs.dir.path();
    let common = |format: &'static str, out: &Path| -> Vec<String> {
        [
            format,
            "--kernel",
            s(&inputs.kernel),
            "--initrd",
            s(&inputs.initrd),
            "--sign",
            s(&key),
            "--cert",
            s(&cert),
            "--out",
            s(out),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let cer = std::fs::read(&cert).unwrap();
    let cer_der = authenticode::Signer::load(&key, &cert)
        .unwrap()
        .certificate_der()
        .to_vec();
    assert!(cer.starts_with(b"-----BEGIN"));
    let check_esp = |image: &Path, offset: u64, shim: bool| {
        let got = dir.join("got.efi");
        let Some(boot) = fat_file(image, offset, "EFI/BOOT/BOOTX64.EFI", &got) else {
            return;
        };
        if shim {
            assert_eq!(
                boot,
                std::fs::read(SHIM).unwrap(),
                "BOOTX64.EFI is not shim"
            );
            fat_file(image, offset, "EFI/BOOT/grubx64.efi", &got).unwrap();
            assert_sbverify_ok(&cert, &got);
            let mm = fat_file(image, offset, "EFI/BOOT/mmx64.efi", &got).unwrap();
            assert_eq!(mm, std::fs::read("/usr/lib/shim/mmx64.efi.signed").unwrap());
        } else {
            assert_sbverify_ok(&cert, &got);
        }
        fat_file(image, offset, "EFI/phase/linux.efi", &got).unwrap();
        assert_sbverify_ok(&cert, &got);
        let on_esp = fat_file(image, offset, "EFI/phase/phase-boot.cer", &got).unwrap();
        assert_eq!(
            on_esp, cer_der,
            "the certificate on the ESP is not ours, as DER"
        );
    };

    let esp = dir.join("esp.img");
    mkimage(
        &common("esp", &esp)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    referee::fsck_fat(&esp);
    check_esp(&esp, 0, false);

    if have(SHIM, "--shim") {
        let mut args = common("esp", &esp);
        args.push("--shim".into());
        mkimage(&args.iter().map(String::as_str).collect::<Vec<_>>());
        check_esp(&esp, 0, true);
    }

    if have("/usr/bin/syslinux", "signed USB disk") {
        let usb = dir.join("usb.img");
        mkimage(
            &common("usb", &usb)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        check_esp(&usb, 1 << 20, false);
    }

    if have("/usr/lib/ISOLINUX/isolinux.bin", "signed ISO") {
        // The ISO's UKIs are signed while sparse (kernel and initramfs
        // stream from the inputs): signed, they must be the whole UKI's
        // signature, and two builds the same bytes.
        let iso = dir.join("phase.iso");
        let args = common("iso", &iso);
        mkimage(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let first = std::fs::read(&iso).unwrap();
        mkimage(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            std::fs::read(&iso).unwrap(),
            first,
            "the signed ISO differs"
        );
        if let Some(t) = referee::tool("bsdtar", "bsdtar -x (iso)") {
            let efi =
                referee::run(Command::new(t).arg("-xOf").arg(&iso).arg("EFI/EFIBOOT.IMG")).stdout;
            let img = dir.join("efiboot.img");
            std::fs::write(&img, efi).unwrap();
            check_esp(&img, 0, false);
        }
    }
}

#[test]
fn signing_options_name_what_is_wrong() {
    let inputs = inputs();
    let out = inputs.dir.path().join("x.efi");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let k = s(&inputs.kernel);
    let i = s(&inputs.initrd);
    // --sign without --cert, --shim without --sign.
    let e = run(&[
        "uki",
        "--kernel",
        k,
        "--initrd",
        i,
        "--sign",
        i,
        "-o",
        s(&out),
    ]);
    assert!(e.contains("--cert"), "{e}");
    let e = run(&["esp", "--kernel", k, "--initrd", i, "--shim", "-o", s(&out)]);
    assert!(e.contains("--sign"), "{e}");
    // A certificate for another key.
    let other = tempfile::tempdir().unwrap();
    let made = phase_tools::secureboot::keygen(other.path(), "o", "other", 2048, 1).unwrap();
    let (key, _) = test_key();
    let e = run(&[
        "uki",
        "--kernel",
        k,
        "--initrd",
        i,
        "--sign",
        s(&key),
        "--cert",
        s(&made.certificate),
        "-o",
        s(&out),
    ]);
    assert!(e.contains("does not belong to the certificate"), "{e}");
}
