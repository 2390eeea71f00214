//! The two architectures Phase Boot builds and boots.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// `uname -m`, and the name used on our command lines.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's architecture name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The Rust target the init is built for.
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// Machine and CPU. cortex-a57 because `-cpu max` is about four times
    /// slower under TCG (measured); a 16K-page kernel needs `max` or
    /// neoverse-n1 instead.
    pub fn machine_args(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["-machine", "q35"],
            Arch::Aarch64 => &["-machine", "virt", "-cpu", "cortex-a57"],
        }
    }

    /// What every kernel the harness boots gets first: the serial console,
    /// reboot instead of hanging on a panic, and on x86_64 `no_timer_check`
    /// — under TCG on a loaded host the kernel's check that the IO-APIC
    /// timer ticks can miss a tick and panic ("IO-APIC + timer doesn't
    /// work!") on a VM whose timer is fine.
    pub fn kernel_params(self) -> &'static str {
        match self {
            Arch::X86_64 => "console=ttyS0 panic=-1 no_timer_check",
            Arch::Aarch64 => "console=ttyAMA0 panic=-1",
        }
    }

    /// The serial console's name in the guest kernel.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(format!(
                "unknown architecture {s:?}: expected x86_64 or aarch64"
            )),
        }
    }
}
