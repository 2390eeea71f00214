//! Reading a kernel module's own metadata from its `.modinfo` ELF section.
//!
//! Debian's kernel packages ship no `modules.dep` or `modules.alias`, so the
//! dependency closure and the alias table are computed from each `.ko` itself.
//! The section is a run of NUL-terminated `key=value` strings; the keys used
//! here are `name`, `depends` (comma-separated), `alias` (repeated) and
//! `softdep` (`pre: a b post: c`).
//!
//! The input comes from files on the build host, but it is still parsed as
//! untrusted: every offset is bounds-checked and nothing here panics.

use thiserror::Error;

/// Why a module's metadata could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModinfoError {
    #[error("not an ELF file (magic {0:02x?})")]
    NotElf([u8; 4]),
    #[error("unsupported ELF class {0} (only ELFCLASS64 and ELFCLASS32 are read)")]
    Class(u8),
    #[error("unsupported ELF data encoding {0}")]
    Encoding(u8),
    #[error("ELF {what} at offset {offset} with length {len} lies outside the {size}-byte file")]
    OutOfBounds {
        what: &'static str,
        offset: u64,
        len: u64,
        size: usize,
    },
    #[error("the ELF file has no .modinfo section")]
    NoModinfo,
    #[error("the .modinfo section has no name= entry")]
    NoName,
}

/// The metadata of one module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// Module name as the kernel knows it (`-` already normalised to `_`).
    pub name: String,
    /// Modules that must be loaded first (hard dependencies), normalised.
    pub depends: Vec<String>,
    /// Soft pre-dependencies: loaded first when available, not an error when not.
    pub softdep_pre: Vec<String>,
    /// Device aliases (`pci:v00001AF4d00001000sv*…`), globs as the kernel writes them.
    pub aliases: Vec<String>,
    /// `vermagic=`, which starts with the kernel release the module was built for.
    pub vermagic: Option<String>,
}

/// Kernel module names treat `-` and `_` as the same character; the kernel
/// reports them with `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Reads [`ModInfo`] from the bytes of an uncompressed `.ko` file.
pub fn parse(elf: &[u8]) -> Result<ModInfo, ModinfoError> {
    let section = find_section(elf, b".modinfo")?.ok_or(ModinfoError::NoModinfo)?;
    let mut info = ModInfo::default();
    let mut name = None;
    for entry in section.split(|&b| b == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "name" => name = Some(normalize(value)),
            "depends" => info
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(normalize)),
            "alias" => info.aliases.push(value.to_owned()),
            "softdep" => info.softdep_pre.extend(parse_softdep_pre(value)),
            "vermagic" => info.vermagic = Some(value.to_owned()),
            _ => {}
        }
    }
    info.name = name.ok_or(ModinfoError::NoName)?;
    Ok(info)
}

/// The `pre:` part of a `softdep=` value: `pre: crc32c post: foo` → `[crc32c]`.
fn parse_softdep_pre(value: &str) -> Vec<String> {
    let mut pre = Vec::new();
    let mut in_pre = false;
    for word in value.split_whitespace() {
        match word {
            "pre:" => in_pre = true,
            "post:" => in_pre = false,
            module if in_pre => pre.push(normalize(module)),
            _ => {}
        }
    }
    pre
}

/// Little- or big-endian field reader over a byte slice with bounds checks.
struct Elf<'a> {
    bytes: &'a [u8],
    big: bool,
    wide: bool,
}

impl<'a> Elf<'a> {
    fn slice(&self, what: &'static str, offset: u64, len: u64) -> Result<&'a [u8], ModinfoError> {
        let out = || ModinfoError::OutOfBounds {
            what,
            offset,
            len,
            size: self.bytes.len(),
        };
        let start = usize::try_from(offset).map_err(|_| out())?;
        let len_usize = usize::try_from(len).map_err(|_| out())?;
        let end = start.checked_add(len_usize).ok_or_else(out)?;
        self.bytes.get(start..end).ok_or_else(out)
    }

    fn uint(&self, what: &'static str, offset: u64, width: u64) -> Result<u64, ModinfoError> {
        let raw = self.slice(what, offset, width)?;
        let mut value = 0u64;
        for i in 0..raw.len() {
            let byte = if self.big {
                raw[i]
            } else {
                raw[raw.len() - 1 - i]
            };
            value = (value << 8) | u64::from(byte);
        }
        Ok(value)
    }

    /// A word-sized field: 8 bytes in ELF64, 4 in ELF32.
    fn word(&self, what: &'static str, offset: u64) -> Result<u64, ModinfoError> {
        self.uint(what, offset, if self.wide { 8 } else { 4 })
    }
}

/// Returns the contents of the named section, `None` if absent.
pub fn find_section<'a>(bytes: &'a [u8], wanted: &[u8]) -> Result<Option<&'a [u8]>, ModinfoError> {
    let magic: [u8; 4] = bytes
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .unwrap_or_default();
    if magic != *b"\x7fELF" {
        return Err(ModinfoError::NotElf(magic));
    }
    let class = bytes.get(4).copied().unwrap_or(0);
    let data = bytes.get(5).copied().unwrap_or(0);
    let wide = match class {
        1 => false,
        2 => true,
        other => return Err(ModinfoError::Class(other)),
    };
    let big = match data {
        1 => false,
        2 => true,
        other => return Err(ModinfoError::Encoding(other)),
    };
    let elf = Elf { bytes, big, wide };
    // Offsets of e_shoff, e_shentsize, e_shnum and e_shstrndx in the ELF header.
    let (shoff_at, shentsize_at) = if wide { (0x28, 0x3a) } else { (0x20, 0x2e) };
    let shoff = elf.word("section header offset", shoff_at)?;
    let shentsize = elf.uint("section header size", shentsize_at, 2)?;
    let shnum = elf.uint("section count", shentsize_at + 2, 2)?;
    let shstrndx = elf.uint("section name table index", shentsize_at + 4, 2)?;
    // Within a section header: sh_name at 0, sh_offset and sh_size after the
    // flags and address words.
    let (offset_at, size_at) = if wide { (0x18, 0x20) } else { (0x10, 0x14) };
    let header = |index: u64| -> Result<(u64, u64, u64), ModinfoError> {
        // index < 2^16 and shentsize < 2^16, so the product fits in u64; the
        // sum is checked because shoff comes from the file.
        let at = shoff
            .checked_add(index * shentsize)
            .ok_or(ModinfoError::OutOfBounds {
                what: "section header",
                offset: shoff,
                len: index * shentsize,
                size: bytes.len(),
            })?;
        let name = elf.uint("section name offset", at, 4)?;
        let offset = elf.word("section offset", at + offset_at)?;
        let size = elf.word("section size", at + size_at)?;
        Ok((name, offset, size))
    };
    let (_, names_offset, names_size) = header(shstrndx)?;
    let names = elf.slice("section name table", names_offset, names_size)?;
    for index in 0..shnum {
        let (name_at, offset, size) = header(index)?;
        let name = usize::try_from(name_at)
            .ok()
            .and_then(|at| names.get(at..))
            .and_then(|rest| rest.split(|&b| b == 0).next());
        if name == Some(wanted) {
            return elf.slice("section", offset, size).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal little-endian ELF64 file with the given sections, the
    /// way a linker lays them out: header, section bodies, name table, headers.
    pub(crate) fn elf64(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut body = Vec::new();
        let mut headers = vec![[0u8; 64]]; // SHN_UNDEF
        let mut records = Vec::new();
        for (name, data) in sections {
            records.push((
                names.len() as u32,
                64 + body.len() as u64,
                data.len() as u64,
            ));
            names.extend_from_slice(name.as_bytes());
            names.push(0);
            body.extend_from_slice(data);
        }
        let shstr_name = names.len() as u32;
        names.extend_from_slice(b".shstrtab\0");
        records.push((shstr_name, 64 + body.len() as u64, names.len() as u64));
        body.extend_from_slice(&names);
        for (name, offset, size) in &records {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&offset.to_le_bytes());
            h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            headers.push(h);
        }
        let mut out = vec![0u8; 64];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // ELFDATA2LSB
        out[0x28..0x30].copy_from_slice(&(64 + body.len() as u64).to_le_bytes()); // e_shoff
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        out[0x3c..0x3e].copy_from_slice(&(headers.len() as u16).to_le_bytes()); // e_shnum
        out[0x3e..0x40].copy_from_slice(&((headers.len() - 1) as u16).to_le_bytes()); // e_shstrndx
        out.extend_from_slice(&body);
        for h in headers {
            out.extend_from_slice(&h);
        }
        out
    }

    #[test]
    fn reads_name_depends_aliases_and_softdeps() {
        let modinfo = b"alias=pci:v00001AF4d*sv*sd*bc*sc*i*\0depends=virtio_ring,net-failover\0\
softdep=pre: crc32c post: foo\0vermagic=6.1.0-56-amd64 SMP mod_unload\0name=virtio-net\0\0\0";
        let elf = elf64(&[(".text", b"\x90\x90"), (".modinfo", modinfo)]);
        let info = parse(&elf).unwrap();
        assert_eq!(info.name, "virtio_net");
        assert_eq!(info.depends, ["virtio_ring", "net_failover"]);
        assert_eq!(info.softdep_pre, ["crc32c"]);
        assert_eq!(info.aliases, ["pci:v00001AF4d*sv*sd*bc*sc*i*"]);
        assert_eq!(
            info.vermagic.as_deref(),
            Some("6.1.0-56-amd64 SMP mod_unload")
        );
    }

    #[test]
    fn empty_depends_gives_no_dependencies() {
        let elf = elf64(&[(".modinfo", b"depends=\0name=failover\0")]);
        assert!(parse(&elf).unwrap().depends.is_empty());
    }

    #[test]
    fn refuses_malformed_files_without_panicking() {
        let table: &[(&[u8], ModinfoError)] = &[
            (b"", ModinfoError::NotElf([0; 4])),
            (b"MZ\x90\x00", ModinfoError::NotElf(*b"MZ\x90\x00")),
            (b"\x7fELF\x03\x01", ModinfoError::Class(3)),
            (b"\x7fELF\x02\x07", ModinfoError::Encoding(7)),
        ];
        for (input, want) in table {
            assert_eq!(parse(input).unwrap_err(), *want);
        }
        let no_modinfo = elf64(&[(".text", b"x")]);
        assert_eq!(parse(&no_modinfo).unwrap_err(), ModinfoError::NoModinfo);
        let no_name = elf64(&[(".modinfo", b"depends=a\0")]);
        assert_eq!(parse(&no_name).unwrap_err(), ModinfoError::NoName);
        // A truncated file is an error, never a panic; only the unused tail
        // of the last section header (sh_addralign, sh_entsize) may go.
        let good = elf64(&[(".modinfo", b"name=x\0")]);
        for len in 0..good.len() {
            match parse(&good[..len]) {
                Ok(info) => assert!(
                    len >= good.len() - 24 && info.name == "x",
                    "truncated to {len}"
                ),
                Err(_) => assert!(len < good.len() - 24, "truncated to {len}"),
            }
        }
        // A section header offset near u64::MAX must not overflow.
        let mut huge = good.clone();
        huge[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse(&huge),
            Err(ModinfoError::OutOfBounds { .. })
        ));
    }
}
