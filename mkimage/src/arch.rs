//! The two machine architectures images are built for, and telling a
//! kernel's architecture from its bytes.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArchError {
    #[error("unknown architecture {0:?}: expected x86_64 or aarch64")]
    Unknown(String),
    #[error(
        "{what} is neither an x86 bzImage nor an arm64 Image with an EFI stub (first bytes {head:02x?})"
    )]
    NotAKernel { what: String, head: Vec<u8> },
    #[error(
        "{what} is compressed ({format}); UEFI starts a kernel only as an x86 bzImage or an uncompressed arm64 Image (unpack it first)"
    )]
    Compressed { what: String, format: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The removable-media boot path UEFI firmware looks for (UEFI 2.10
    /// §3.5.1.1).
    pub fn efi_boot_file(self) -> &'static str {
        match self {
            Arch::X86_64 => "EFI/BOOT/BOOTX64.EFI",
            Arch::Aarch64 => "EFI/BOOT/BOOTAA64.EFI",
        }
    }

    /// The suffix systemd uses for its EFI binaries.
    pub fn efi_suffix(self) -> &'static str {
        match self {
            Arch::X86_64 => "x64",
            Arch::Aarch64 => "aa64",
        }
    }

    /// The PE/COFF machine type of EFI binaries for this architecture.
    pub fn pe_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 0x8664,
            Arch::Aarch64 => 0xAA64,
        }
    }

    pub fn from_pe_machine(machine: u16) -> Option<Arch> {
        match machine {
            0x8664 => Some(Arch::X86_64),
            0xAA64 => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// Debian's architecture name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Which architecture a kernel image is for: an x86 bzImage has the
    /// setup header magic "HdrS" at 0x202; an arm64 Image has "ARM\x64" at
    /// 0x38 (Documentation/arch/{x86/boot,arm64/booting}.rst).
    pub fn of_kernel(bytes: &[u8], what: &str) -> Result<Arch, ArchError> {
        if bytes.get(0x202..0x206) == Some(b"HdrS") {
            return Ok(Arch::X86_64);
        }
        if bytes.get(0x38..0x3C) == Some(b"ARM\x64") {
            return Ok(Arch::Aarch64);
        }
        let format = match bytes.get(..4) {
            Some([0x1F, 0x8B, ..]) => Some("gzip"),
            Some([0x28, 0xB5, 0x2F, 0xFD]) => Some("zstd"),
            Some([0xFD, b'7', b'z', b'X']) => Some("xz"),
            _ => None,
        };
        if let Some(format) = format {
            return Err(ArchError::Compressed {
                what: what.to_owned(),
                format,
            });
        }
        Err(ArchError::NotAKernel {
            what: what.to_owned(),
            head: bytes.iter().take(16).copied().collect(),
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

impl FromStr for Arch {
    type Err = ArchError;
    fn from_str(s: &str) -> Result<Self, ArchError> {
        match s {
            "x86_64" | "amd64" | "x64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" | "aa64" => Ok(Arch::Aarch64),
            _ => Err(ArchError::Unknown(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_by_magic() {
        let mut x86 = vec![0u8; 0x300];
        x86[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(Arch::of_kernel(&x86, "k"), Ok(Arch::X86_64));
        let mut arm = vec![0u8; 0x40];
        arm[0x38..0x3C].copy_from_slice(b"ARM\x64");
        assert_eq!(Arch::of_kernel(&arm, "k"), Ok(Arch::Aarch64));
        assert_eq!(
            Arch::of_kernel(&[0x1F, 0x8B, 8, 0], "vmlinuz.gz"),
            Err(ArchError::Compressed {
                what: "vmlinuz.gz".into(),
                format: "gzip"
            })
        );
        assert!(matches!(
            Arch::of_kernel(b"#!/bin/sh\n", "script"),
            Err(ArchError::NotAKernel { .. })
        ));
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Aarch64));
    }
}
