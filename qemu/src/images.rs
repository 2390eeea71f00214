//! Bootable images for the firmware scenarios, made with mkimage's library
//! from the netboot bundle: an ESP whose boot file is the UKI, the hybrid
//! USB disk (and it as qcow2), and the hybrid ISO. Every entry's command line
//! ends in `phase.report panic=-1`, so each boot reports and powers off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};
use mkimage::arch::Arch as ImageArch;
use mkimage::esp::BootSet;
use mkimage::fat::{self, FatOptions};
use mkimage::profile::Profile;
use mkimage::sources::{self, BiosSources, Sources};

use crate::artifacts::{self, Variant};
use crate::{Arch, debian, paths};

/// What the command line of every image entry ends with.
pub const APPEND: &str = "phase.report panic=-1";

/// The images of one architecture.
#[derive(Debug, Clone)]
pub struct BootImages {
    /// A FAT ESP with the UKI as `EFI/BOOT/BOOT*.EFI` (direct, no menu).
    pub esp: PathBuf,
    /// GPT + ESP (systemd-boot menu) + syslinux on x86_64.
    pub usb: PathBuf,
    /// The USB disk as qcow2.
    pub qcow2: PathBuf,
    /// ISO9660 with El Torito and the isohybrid MBR.
    pub iso: PathBuf,
}

fn image_arch(arch: Arch) -> ImageArch {
    match arch {
        Arch::X86_64 => ImageArch::X86_64,
        Arch::Aarch64 => ImageArch::Aarch64,
    }
}

/// systemd-stub and systemd-boot for `arch`: the host's for x86_64, the
/// `systemd-boot-efi:arm64` package unpacked under target/debian for aarch64.
pub fn systemd_boot_efi(arch: Arch) -> Result<(PathBuf, PathBuf)> {
    let a = image_arch(arch);
    match arch {
        Arch::X86_64 => Ok((sources::default_stub(a), sources::default_systemd_boot(a))),
        Arch::Aarch64 => {
            let root = debian::unpack("systemd-boot-efi", arch)?;
            let strip = |p: PathBuf| {
                root.join(
                    p.strip_prefix("/")
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|_| p.clone()),
                )
            };
            Ok((
                strip(sources::default_stub(a)),
                strip(sources::default_systemd_boot(a)),
            ))
        }
    }
}

/// The boot set for `arch` from the netboot bundle.
pub fn boot_set(arch: Arch, direct: bool) -> Result<BootSet> {
    let bundle = artifacts::bundle(arch, "netboot", Variant::Release)?;
    let (stub, systemd_boot) = systemd_boot_efi(arch)?;
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    Ok(Sources {
        kernels: vec![("linux".into(), bundle.kernel.image.clone())],
        initrd: bundle.initrd.clone(),
        stub: Some(stub),
        systemd_boot: Some(systemd_boot),
        append: APPEND.into(),
        direct,
        ..Sources::default()
    }
    .load(Profile::Qemu, &build_time.to_string())?)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn make(arch: Arch) -> Result<BootImages> {
    let dir = paths::phase().join(arch.name()).join("images");
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let seed = |kind: &str| format!("phase-boot scenario {kind} {arch} {build_time}").into_bytes();

    let direct = boot_set(arch, true)?;
    let mut files = fat::Files::new();
    direct.add_uefi(&mut files)?;
    let esp = fat::build(
        &files,
        &FatOptions {
            label: Some("PHASE-ESP".into()),
            time: build_time,
            ..FatOptions::default()
        },
    )?;
    let out = BootImages {
        esp: dir.join("esp.img"),
        usb: dir.join("usb.img"),
        qcow2: dir.join("usb.qcow2"),
        iso: dir.join("phase.iso"),
    };
    write(&out.esp, &esp.bytes)?;

    let menu = boot_set(arch, false)?;
    let bios = BiosSources::default();
    let usb_bios = match arch {
        Arch::X86_64 => Some(bios.usb(false)?),
        Arch::Aarch64 => None,
    };
    let usb = mkimage::usb::build(
        &menu,
        usb_bios.as_ref(),
        &mkimage::usb::UsbOptions {
            seed: seed("usb"),
            time: build_time,
            ..Default::default()
        },
    )?;
    write(&out.usb, &usb.bytes)?;
    write(&out.qcow2, &mkimage::qcow2::from_raw(&usb.bytes)?)?;

    let iso_bios = match arch {
        Arch::X86_64 => Some(bios.iso()?),
        Arch::Aarch64 => None,
    };
    let iso_options = mkimage::cdrom::CdromOptions {
        seed: seed("iso"),
        time: build_time,
        root_image: None,
    };
    let iso = mkimage::cdrom::build(&menu, iso_bios.as_ref(), &iso_options)?;
    write(&out.iso, &iso.to_vec())?;
    eprintln!(
        "images: {arch}: esp {} KiB, usb {} KiB, qcow2 {} KiB, iso {} KiB in {}",
        esp.bytes.len() >> 10,
        usb.bytes.len() >> 10,
        std::fs::metadata(&out.qcow2)?.len() >> 10,
        iso.len >> 10,
        dir.display()
    );
    Ok(out)
}

/// A live ISO (x86_64): the netboot bundle's kernel and initramfs with
/// `root_image` stored as the ISO's live root, every entry booting
/// `root=live:CDLABEL=…` with `append` after it, as `mkimage iso
/// --root-image` writes it.
pub fn live_iso(arch: Arch, root_image: &Path, append: &str, out: &Path) -> Result<()> {
    let bundle = artifacts::bundle(arch, "netboot", Variant::Release)?;
    scenario_iso(
        arch,
        Sources {
            kernels: vec![("linux".into(), bundle.kernel.image.clone())],
            initrd: bundle.initrd.clone(),
            append: format!("root=live:CDLABEL={} {append}", mkimage::cdrom::VOLUME_ID),
            ..Sources::default()
        },
        format!("phase-boot live iso {arch}"),
        Some(std::fs::read(root_image)?),
        out,
    )
}

/// The hybrid ISO of `boot`'s kernel, initramfs and command line, with
/// systemd-boot for UEFI and isolinux for BIOS on x86_64, written to `out`.
fn scenario_iso(
    arch: Arch,
    boot: Sources,
    seed: String,
    root_image: Option<Vec<u8>>,
    out: &Path,
) -> Result<()> {
    let (stub, systemd_boot) = systemd_boot_efi(arch)?;
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let boot = Sources {
        stub: Some(stub),
        systemd_boot: Some(systemd_boot),
        ..boot
    }
    .load(Profile::Qemu, &build_time.to_string())?;
    let bios = match arch {
        Arch::X86_64 => Some(BiosSources::default().iso()?),
        Arch::Aarch64 => None,
    };
    let options = mkimage::cdrom::CdromOptions {
        seed: seed.into_bytes(),
        time: build_time,
        root_image,
    };
    let iso = mkimage::cdrom::build(&boot, bios.as_ref(), &options)?;
    write(out, &iso.to_vec())
}

/// Builds the mkimage binary (release, as `cargo xtask` itself) and returns it.
pub fn mkimage_binary() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    crate::cmd::run(
        std::process::Command::new(cargo)
            .current_dir(paths::root())
            .args([
                "build",
                "--quiet",
                "--release",
                "--package",
                "mkimage",
                "--bin",
                "mkimage",
            ]),
    )?;
    Ok(paths::target().join("release/mkimage"))
}

/// An ESP made by `mkimage esp --profile <name> --direct` (the binary, so
/// its kernel check runs as a user's would) from the profile kernel and its
/// image; every boot reports and powers off. Returns the image and what
/// mkimage said on stderr (its verdict on the kernel).
pub fn profile_esp(name: &str) -> Result<(PathBuf, String)> {
    let bundle = artifacts::profile_bundle(name, Variant::Release)?;
    let (stub, _) = systemd_boot_efi(bundle.arch)?;
    let out = paths::phase()
        .join(bundle.arch.name())
        .join("images")
        .join(format!("esp-{name}.img"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut c = std::process::Command::new(mkimage_binary()?);
    c.args(["esp", "--profile", name, "--direct"])
        .arg("--kernel")
        .arg(&bundle.kernel.image)
        .arg("--initrd")
        .arg(&bundle.initrd)
        .arg("--stub")
        .arg(&stub)
        .args([
            "--append",
            &format!("console={} {APPEND}", bundle.arch.console()),
        ])
        .arg("--out")
        .arg(&out);
    eprintln!("$ {}", crate::cmd::display(&c));
    let o = c
        .output()
        .with_context(|| format!("starting {}", crate::cmd::display(&c)))?;
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    eprint!("{said}");
    if !o.status.success() {
        anyhow::bail!(
            "mkimage esp --profile {name} failed ({}):\n{said}",
            o.status
        );
    }
    Ok((out, said))
}

/// The images for `arch`, made once per process.
pub fn boot_images(arch: Arch) -> Result<BootImages> {
    static MEMO: OnceLock<Mutex<HashMap<Arch, BootImages>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    // Held while building, so two scenarios never write the same files.
    let mut map = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(images) = map.get(&arch) {
        return Ok(images.clone());
    }
    let images = make(arch)?;
    map.insert(arch, images.clone());
    Ok(images)
}

/// The images the Secure Boot scenarios boot, signed with the snakeoil key
/// that Debian's Secure Boot variable stores (`*_VARS*.snakeoil.fd`) hold
/// in `db`.
#[derive(Debug, Clone)]
pub struct SecureBootImages {
    /// The direct ESP with the UKI signed.
    pub signed: PathBuf,
    /// That signed UKI on its own, for the referees.
    pub uki: PathBuf,
    /// The same ESP unsigned (the firmware matrix's).
    pub unsigned: PathBuf,
    /// The signed ESP with one byte of the UKI's kernel flipped.
    pub tampered: PathBuf,
    /// The systemd-boot menu behind Debian's shim, signed (x86_64: shim
    /// comes from the host's shim-signed).
    pub shim: Option<PathBuf>,
    /// The snakeoil key (decrypted) and certificate.
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// OVMF's public test key, its certificate, and the passphrase Debian's
/// README gives for the key.
const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
const SNAKEOIL_PASS: &str = "pass:snakeoil";

/// The snakeoil key, decrypted once with openssl (mkimage reads only
/// unencrypted keys).
pub fn snakeoil_key() -> Result<(PathBuf, PathBuf)> {
    let dir = paths::phase().join("secureboot");
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("snakeoil.key");
    if !key.exists() {
        let partial = dir.join("snakeoil.key.partial");
        crate::cmd::run(
            std::process::Command::new("openssl")
                .args([
                    "pkcs8",
                    "-in",
                    SNAKEOIL_KEY,
                    "-passin",
                    SNAKEOIL_PASS,
                    "-out",
                ])
                .arg(&partial),
        )?;
        std::fs::rename(&partial, &key)?;
    }
    Ok((key, PathBuf::from(SNAKEOIL_CERT)))
}

fn make_secure_boot(arch: Arch) -> Result<SecureBootImages> {
    let plain = boot_images(arch)?;
    let (key, cert) = snakeoil_key()?;
    let signer = mkimage::authenticode::Signer::load(&key, &cert)?;
    let dir = paths::phase().join(arch.name()).join("images");
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let esp = |boot: &BootSet| -> Result<fat::FatImage> {
        let mut files = fat::Files::new();
        boot.add_uefi(&mut files)?;
        Ok(fat::build(
            &files,
            &FatOptions {
                label: Some("PHASE-ESP".into()),
                time: build_time,
                ..FatOptions::default()
            },
        )?)
    };
    let mut direct = boot_set(arch, true)?;
    direct.secure_boot = Some(mkimage::secureboot::SecureBoot {
        signer: signer.clone(),
        shim: None,
    });
    let signed = esp(&direct)?;
    let out = SecureBootImages {
        signed: dir.join("esp-signed.img"),
        uki: dir.join("uki-signed.efi"),
        unsigned: plain.esp,
        tampered: dir.join("esp-tampered.img"),
        shim: None,
        key,
        cert,
    };
    write(&out.signed, &signed.bytes)?;
    // One byte inside the kernel the UKI carries: the signature still
    // parses, the hash no longer matches.
    let boot_file = ImageArch::efi_boot_file(image_arch(arch));
    let extent = signed.files[boot_file];
    let at = extent.offset as usize;
    let uki = &signed.bytes[at..at + extent.len as usize];
    let pe = mkimage::uki::Pe::parse(uki, "the signed UKI")?;
    let linux = pe.section(".linux").context("the UKI has no .linux")?;
    write(&out.uki, uki)?;
    let mut tampered = signed.bytes.clone();
    tampered[at + linux.raw_offset as usize + 0x1000] ^= 0x01;
    write(&out.tampered, &tampered)?;

    let shim_dir = Path::new(mkimage::secureboot::DEBIAN_SHIM_DIR);
    let shim = match arch {
        Arch::X86_64 => Some(mkimage::secureboot::Shim::load(shim_dir, image_arch(arch))?),
        Arch::Aarch64 => None,
    };
    let out = match shim {
        Some(shim) => {
            let mut menu = boot_set(arch, false)?;
            menu.secure_boot = Some(mkimage::secureboot::SecureBoot {
                signer,
                shim: Some(shim),
            });
            let path = dir.join("esp-shim.img");
            write(&path, &esp(&menu)?.bytes)?;
            SecureBootImages {
                shim: Some(path),
                ..out
            }
        }
        None => out,
    };
    Ok(out)
}

/// The Secure Boot images for `arch`, made once per process.
pub fn secure_boot_images(arch: Arch) -> Result<SecureBootImages> {
    static MEMO: OnceLock<Mutex<HashMap<Arch, SecureBootImages>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    let mut map = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(images) = map.get(&arch) {
        return Ok(images.clone());
    }
    let images = make_secure_boot(arch)?;
    map.insert(arch, images.clone());
    Ok(images)
}

/// A direct ESP whose UKI — `kernel`, `initrd` and the qemu profile's
/// command line plus `append` — is signed with the snakeoil key, written to
/// `out` (for scenarios whose command line names a provider started first).
pub fn signed_direct_esp(
    arch: Arch,
    kernel: &Path,
    initrd: &Path,
    append: &str,
    out: &Path,
) -> Result<()> {
    direct_esp(arch, kernel, initrd, append, true, out)
}

/// A direct ESP whose UKI holds `kernel`, `initrd` and the qemu profile's
/// command line plus `append`, signed with the snakeoil key if `signed`,
/// written to `out`.
pub fn direct_esp(
    arch: Arch,
    kernel: &Path,
    initrd: &Path,
    append: &str,
    signed: bool,
    out: &Path,
) -> Result<()> {
    let (stub, systemd_boot) = systemd_boot_efi(arch)?;
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let mut boot = Sources {
        kernels: vec![("linux".into(), kernel.to_owned())],
        initrd: initrd.to_owned(),
        stub: Some(stub),
        systemd_boot: Some(systemd_boot),
        append: append.into(),
        direct: true,
        ..Sources::default()
    }
    .load(Profile::Qemu, &build_time.to_string())?;
    if signed {
        let (key, cert) = snakeoil_key()?;
        boot.secure_boot = Some(mkimage::secureboot::SecureBoot {
            signer: mkimage::authenticode::Signer::load(&key, &cert)?,
            shim: None,
        });
    }
    let mut files = fat::Files::new();
    boot.add_uefi(&mut files)?;
    let esp = fat::build(
        &files,
        &FatOptions {
            label: Some("PHASE-ESP".into()),
            time: build_time,
            ..FatOptions::default()
        },
    )?;
    write(out, &esp.bytes)
}

/// The hybrid USB disk of `kernel` and `initrd` with `append` on every menu
/// entry (syslinux for BIOS on x86_64) and the entry of `default_mode` as
/// the menus' default (`mkimage usb --default-mode`; the first entry when
/// `None`), written to `out`. Returns where its state partition is (offset
/// and length in bytes), if the initramfs names one.
pub fn usb_disk(
    arch: Arch,
    kernel: &Path,
    initrd: &Path,
    append: &str,
    default_mode: Option<&str>,
    out: &Path,
) -> Result<Option<(u64, u64)>> {
    let (stub, systemd_boot) = systemd_boot_efi(arch)?;
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let boot = Sources {
        kernels: vec![("linux".into(), kernel.to_owned())],
        initrd: initrd.to_owned(),
        stub: Some(stub),
        systemd_boot: Some(systemd_boot),
        append: append.into(),
        direct: false,
        default_mode: default_mode.map(Into::into),
        ..Sources::default()
    }
    .load(Profile::Qemu, &build_time.to_string())?;
    let bios = match arch {
        Arch::X86_64 => Some(BiosSources::default().usb(false)?),
        Arch::Aarch64 => None,
    };
    let usb = mkimage::usb::build(
        &boot,
        bios.as_ref(),
        &mkimage::usb::UsbOptions {
            seed: format!("phase-boot scenario usb-disk {arch} {build_time}").into_bytes(),
            time: build_time,
            ..Default::default()
        },
    )?;
    write(out, &usb.bytes)?;
    Ok(usb.state)
}

/// The hybrid ISO of `kernel` and `initrd` with `append` on every menu
/// entry and the entry of `default_mode` as the menus' default (`mkimage
/// iso --default-mode`), isolinux for BIOS on x86_64, written to `out`.
pub fn menu_iso(
    arch: Arch,
    kernel: &Path,
    initrd: &Path,
    append: &str,
    default_mode: &str,
    out: &Path,
) -> Result<()> {
    scenario_iso(
        arch,
        Sources {
            kernels: vec![("linux".into(), kernel.to_owned())],
            initrd: initrd.to_owned(),
            append: append.into(),
            default_mode: Some(default_mode.into()),
            ..Sources::default()
        },
        format!("phase-boot scenario menu iso {arch} {default_mode}"),
        None,
        out,
    )
}

/// `kernel` with its signature replaced by one with the snakeoil key, the
/// key the snakeoil variable store holds in db — so a kernel locked down by
/// Secure Boot trusts it for `kexec_file_load` (the platform keyring).
pub fn snakeoil_resigned(kernel: &Path, out: &Path) -> Result<()> {
    let (key, cert) = snakeoil_key()?;
    let signer = mkimage::authenticode::Signer::load(&key, &cert)?;
    let what = kernel.display().to_string();
    let bytes = std::fs::read(kernel).with_context(|| format!("reading {what}"))?;
    let unsigned = mkimage::authenticode::strip(&bytes, &what)?;
    write(out, &signer.sign(&unsigned, &what)?)
}

/// `distro` (a distribution's ISO) remastered with the x86_64 netboot
/// bundle's kernel and initramfs, as `mkimage iso --into` writes it; with
/// `phase_default` the menus boot the Phase Boot internet entry.
pub fn remastered_iso(distro: &Path, phase_default: bool, out: &Path) -> Result<()> {
    let boot = boot_set(Arch::X86_64, false)?;
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let what = distro.display().to_string();
    let src = std::fs::File::open(distro).with_context(|| format!("opening {what}"))?;
    let volume = mkimage::isoread::read(&src, &what)?;
    let embed = mkimage::remaster::Embed {
        kernels: boot
            .variants
            .iter()
            .map(|v| (v.name.clone(), &v.kernel[..]))
            .collect(),
        initrd: &boot.initrd,
        menu: &boot.menu,
        entry_only: false,
        phase_default,
        time: build_time,
    };
    let (image, edited) = mkimage::remaster::embed(&volume, &src, &embed, &what)?;
    let mut bytes = Vec::with_capacity(usize::try_from(image.len)?);
    image.write_to(&src, &mut bytes)?;
    write(out, &bytes)?;
    eprintln!(
        "images: {} remastered into {} ({} KiB), menus edited: {}",
        distro.display(),
        out.display(),
        image.len >> 10,
        edited.join(", ")
    );
    Ok(())
}
