//! What a machine keeps between boots: its version floor, in a non-volatile
//! EFI variable when it booted by UEFI, else on a small partition of the
//! boot medium that the image names (`[state] partlabel`). Both hold the
//! same 64-byte [`Record`]; the partition holds two copies.
//!
//! ```text
//! offset  size
//!      0     8  magic "PHASEFLR"
//!      8     4  format, little-endian (1)
//!     12     4  reserved, zero
//!     16     8  floor, little-endian
//!     24     8  reserved, zero
//!     32    32  SHA-256 of bytes 0..32
//! ```
//!
//! The partition is written raw, not through a file system: copy A at
//! offset 0, copy B at [`SLOT_B`], each in a 4096-byte slot of its own (so
//! a device with 4 KiB sectors never tears both with one write). The init
//! writes A, syncs, then B, and syncs. Floors only rise, so the floor a
//! partition holds is the higher of its valid copies: a write torn in A
//! leaves B's old floor valid, one torn in B leaves A's new one. A slot of
//! zeros is an empty copy (a fresh partition holds floor 0).
//!
//! No I/O here: mkimage makes the partition, the init reads and writes it,
//! and tests read it back, all with these functions.

use thiserror::Error;

/// The EFI variable's vendor GUID, ours alone (generated for Phase Boot;
/// it names no one else's variables).
pub const EFI_VENDOR_GUID: &str = "f7f9e1c8-b161-470b-bc2e-a0edcb48c906";
/// The EFI variable's name.
pub const EFI_VARIABLE: &str = "PhaseBootFloor";
/// `EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS`: kept
/// across power cycles, readable and writable from the running OS.
pub const EFI_ATTRIBUTES: u32 = 0x7;
/// The GPT partition type of a state partition (generated for Phase Boot).
pub const PARTITION_TYPE_GUID: &str = "69d9ec85-6faa-4949-8889-66c9c4505110";
/// The partition label an image names by default.
pub const DEFAULT_PARTLABEL: &str = "PHASE-STATE";
/// The size mkimage gives a state partition: 1 MiB, the alignment unit.
pub const PARTITION_SIZE: u64 = 1 << 20;

/// The two copies' offsets in the partition.
pub const SLOT_A: u64 = 0;
pub const SLOT_B: u64 = 4096;
/// Bytes each copy is written as (the record, then zeros).
pub const SLOT_LEN: usize = 4096;

pub const RECORD_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"PHASEFLR";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    #[error("{len} bytes, shorter than a {RECORD_LEN}-byte record")]
    Short { len: usize },
    #[error("no record (the bytes are not a floor record)")]
    Magic,
    #[error("record format {found}, this init reads {FORMAT}")]
    Format { found: u32 },
    #[error("the record's checksum does not match (a torn or damaged write)")]
    Checksum,
}

/// One stored floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub floor: u64,
}

impl Record {
    /// The record's bytes.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        b[16..24].copy_from_slice(&self.floor.to_le_bytes());
        let digest = digest(&b[..32]);
        b[32..].copy_from_slice(&digest);
        b
    }

    /// A copy's whole slot: the record, then zeros.
    pub fn slot(&self) -> Vec<u8> {
        let mut slot = vec![0u8; SLOT_LEN];
        slot[..RECORD_LEN].copy_from_slice(&self.encode());
        slot
    }

    /// Reads a record from the start of `bytes` (a slot, or an EFI
    /// variable's data). Bytes after the record are not looked at.
    pub fn decode(bytes: &[u8]) -> Result<Record, StateError> {
        let b = bytes
            .get(..RECORD_LEN)
            .ok_or(StateError::Short { len: bytes.len() })?;
        if &b[..8] != MAGIC {
            return Err(StateError::Magic);
        }
        let format = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if format != FORMAT {
            return Err(StateError::Format { found: format });
        }
        if digest(&b[..32]) != b[32..] {
            return Err(StateError::Checksum);
        }
        let mut floor = [0u8; 8];
        floor.copy_from_slice(&b[16..24]);
        Ok(Record {
            floor: u64::from_le_bytes(floor),
        })
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// What one copy on the partition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copy {
    /// Never written (all zeros).
    Empty,
    Valid(Record),
    /// Not a record: torn, damaged, or another format.
    Bad(StateError),
}

impl Copy {
    pub fn read(slot: &[u8]) -> Copy {
        if slot.iter().take(SLOT_LEN).all(|&b| b == 0) && !slot.is_empty() {
            return Copy::Empty;
        }
        match Record::decode(slot) {
            Ok(r) => Copy::Valid(r),
            Err(e) => Copy::Bad(e),
        }
    }
}

/// The floor a partition holds, from its two copies: the higher valid one,
/// 0 when neither is valid.
pub fn partition_floor(a: &Copy, b: &Copy) -> u64 {
    [a, b]
        .into_iter()
        .filter_map(|c| match c {
            Copy::Valid(r) => Some(r.floor),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// An efivarfs file's contents for the variable: four bytes of attributes,
/// then the data.
pub fn efi_file(record: &Record) -> Vec<u8> {
    let mut bytes = EFI_ATTRIBUTES.to_le_bytes().to_vec();
    bytes.extend_from_slice(&record.encode());
    bytes
}

/// The record in an efivarfs file's contents (after the attributes).
pub fn from_efi_file(bytes: &[u8]) -> Result<Record, StateError> {
    Record::decode(bytes.get(4..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_bytes_are_as_documented() {
        let b = Record { floor: 0x0102 }.encode();
        assert_eq!(&b[..8], b"PHASEFLR"); // magic
        assert_eq!(b[8..12], [1, 0, 0, 0]); // format 1, LE
        assert_eq!(b[12..16], [0; 4]); // reserved
        assert_eq!(b[16..24], [0x02, 0x01, 0, 0, 0, 0, 0, 0]); // floor, LE
        assert_eq!(b[24..32], [0; 8]); // reserved
        use sha2::Digest;
        assert_eq!(b[32..], sha2::Sha256::digest(&b[..32])[..]); // checksum
        assert_eq!(Record::decode(&b), Ok(Record { floor: 0x0102 }));
    }

    #[test]
    fn every_damage_is_named_and_a_torn_copy_falls_back() {
        let good = Record { floor: 5 }.slot();
        let old = Record { floor: 3 }.slot();
        assert_eq!(
            Record::decode(&good[..10]),
            Err(StateError::Short { len: 10 })
        );
        let mut b = good.clone();
        b[0] ^= 1;
        assert_eq!(Record::decode(&b), Err(StateError::Magic));
        let mut b = good.clone();
        b[8] = 2;
        assert_eq!(Record::decode(&b), Err(StateError::Format { found: 2 }));
        for i in 12..64 {
            let mut b = good.clone();
            b[i] ^= 0x10;
            assert_eq!(Record::decode(&b), Err(StateError::Checksum), "byte {i}");
        }
        // A write torn in the first copy: the second still holds the old
        // floor. Torn in the second: the first holds the new one.
        let mut torn = good.clone();
        torn[20] ^= 0xff;
        let (torn, good, old) = (Copy::read(&torn), Copy::read(&good), Copy::read(&old));
        assert!(matches!(torn, Copy::Bad(StateError::Checksum)));
        assert_eq!(partition_floor(&torn, &old), 3);
        assert_eq!(partition_floor(&good, &torn), 5);
        assert_eq!(partition_floor(&good, &old), 5);
        let empty = Copy::read(&[0u8; SLOT_LEN]);
        assert_eq!(empty, Copy::Empty);
        assert_eq!(partition_floor(&empty, &empty), 0);
    }

    #[test]
    fn the_efi_file_carries_the_attributes_first() {
        let file = efi_file(&Record { floor: 9 });
        assert_eq!(file[..4], [7, 0, 0, 0]);
        assert_eq!(file.len(), 4 + RECORD_LEN);
        assert_eq!(from_efi_file(&file), Ok(Record { floor: 9 }));
        assert_eq!(from_efi_file(&file[..3]), Err(StateError::Short { len: 0 }));
    }
}
