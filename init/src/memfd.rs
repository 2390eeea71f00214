//! Files that live only in memory and, once written, cannot change: the
//! artifacts handed to the next stage are written into a memfd (while being
//! hashed) and sealed, and the sealed descriptor is what kexec gets.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use thiserror::Error;

use crate::sys;

#[derive(Debug, Error)]
pub enum MemfdError {
    #[error("memfd_create({name:?}, MFD_CLOEXEC|MFD_ALLOW_SEALING)")]
    Create {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("writing memfd {name:?}")]
    Write {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("fcntl(F_ADD_SEALS) on memfd {name:?}")]
    Seal {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// A memfd being written; [`Writer::seal`] turns it into a read-only file.
pub struct Writer {
    name: String,
    file: File,
}

impl Writer {
    /// A new, empty memfd. The name shows in `/proc/<pid>/fd` as
    /// `/memfd:<name>`; a NUL in it is dropped.
    pub fn create(name: &str) -> Result<Writer, MemfdError> {
        let c = CString::new(name.replace('\0', "")).unwrap_or_default();
        let fd = sys::memfd_create(&c).map_err(|source| MemfdError::Create {
            name: name.to_owned(),
            source,
        })?;
        Ok(Writer {
            name: name.to_owned(),
            file: File::from(fd),
        })
    }

    /// Seals the file against writes, shrinking and growing, and returns it.
    pub fn seal(self) -> Result<OwnedFd, MemfdError> {
        sys::fcntl_seal_all(&self.file).map_err(|source| MemfdError::Seal {
            name: self.name.clone(),
            source,
        })?;
        Ok(OwnedFd::from(self.file))
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies everything `reader` yields into a new sealed memfd.
pub fn sealed_copy(name: &str, mut reader: impl Read) -> Result<OwnedFd, MemfdError> {
    let mut writer = Writer::create(name)?;
    io::copy(&mut reader, &mut writer).map_err(|source| MemfdError::Write {
        name: name.to_owned(),
        source,
    })?;
    writer.seal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    #[test]
    fn sealed_files_keep_their_bytes() {
        // SECURITY.md row 3: after sealing, the bytes cannot change.
        let fd = sealed_copy("kernel", &b"the hashed bytes"[..]).unwrap();
        let map = sys::mmap_sealed(&fd).unwrap();
        assert_eq!(&map[..], b"the hashed bytes");
        let mut file = File::from(fd.try_clone().unwrap());
        file.seek(SeekFrom::End(0)).unwrap();
        let grow = file.write(b"more").unwrap_err();
        assert_eq!(grow.raw_os_error(), Some(libc::EPERM));
        file.seek(SeekFrom::Start(0)).unwrap();
        let overwrite = file.write(b"THE").unwrap_err();
        assert_eq!(overwrite.raw_os_error(), Some(libc::EPERM));
        assert_eq!(
            file.set_len(3).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(&map[..], b"the hashed bytes");
    }

    #[test]
    fn unsealed_or_empty_files_are_not_mapped() {
        let open = Writer::create("open").unwrap();
        let fd = OwnedFd::from(open.file);
        assert_eq!(
            sys::mmap_sealed(&fd).err().and_then(|e| e.raw_os_error()),
            Some(libc::EPERM)
        );
        let empty = sealed_copy("empty", io::empty()).unwrap();
        assert_eq!(
            sys::mmap_sealed(&empty)
                .err()
                .and_then(|e| e.raw_os_error()),
            Some(libc::EINVAL)
        );
    }
}
