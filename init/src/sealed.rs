//! Artifacts in sealed memfds: bytes go in once, while they are hashed, and
//! after sealing nobody — not even the init — can change or resize them. The
//! hand-off passes the same file descriptor to the kernel (`kexec_file_load`)
//! or reads it back (`kexec_load`), so the bytes booted are the bytes hashed
//! (SECURITY.md row 3). Nothing touches a disk.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use thiserror::Error;

use crate::sys;

#[derive(Debug, Error)]
pub enum SealedError {
    #[error("memfd_create({name:?}, MFD_CLOEXEC | MFD_ALLOW_SEALING)")]
    Create {
        name: String,
        #[source]
        error: io::Error,
    },
    #[error("writing {len} bytes at offset {offset} of memfd {name:?}")]
    Write {
        name: String,
        offset: u64,
        len: usize,
        #[source]
        error: io::Error,
    },
    #[error("fcntl(memfd {name:?}, F_ADD_SEALS, SEAL|SHRINK|GROW|WRITE)")]
    Seal {
        name: String,
        #[source]
        error: io::Error,
    },
}

/// A memfd being filled.
pub struct Unsealed {
    name: String,
    file: File,
    len: u64,
}

impl Unsealed {
    pub fn new(name: &str) -> Result<Unsealed, SealedError> {
        let cname = CString::new(name.replace('\0', "")).unwrap_or_default();
        let fd = sys::memfd_create(&cname).map_err(|error| SealedError::Create {
            name: name.to_owned(),
            error,
        })?;
        Ok(Unsealed {
            name: name.to_owned(),
            file: File::from(fd),
            len: 0,
        })
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SealedError> {
        self.file
            .write_all(bytes)
            .map_err(|error| SealedError::Write {
                name: self.name.clone(),
                offset: self.len,
                len: bytes.len(),
                error,
            })?;
        // A slice is at most isize::MAX bytes, so the length fits in u64.
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Seals the file against every change.
    pub fn seal(self) -> Result<Sealed, SealedError> {
        sys::fcntl_seal_all(&self.file).map_err(|error| SealedError::Seal {
            name: self.name.clone(),
            error,
        })?;
        Ok(Sealed {
            name: self.name,
            fd: OwnedFd::from(self.file),
            len: self.len,
        })
    }
}

/// A sealed memfd: read-only for everyone, forever.
#[derive(Debug)]
pub struct Sealed {
    pub name: String,
    fd: OwnedFd,
    pub len: u64,
}

impl Sealed {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Reads the whole contents back (for `kexec_load`, which takes bytes).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let file = File::from(self.fd.try_clone()?);
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Seek;

    use super::*;

    #[test]
    fn sealed_contents_cannot_change() {
        let mut m = Unsealed::new("kernel").unwrap();
        m.write(b"the bytes that were hashed").unwrap();
        let sealed = m.seal().unwrap();
        assert_eq!(sealed.read_all().unwrap(), b"the bytes that were hashed");
        let mut file = File::from(sealed.fd().try_clone_to_owned().unwrap());
        // Writing, growing and shrinking are all refused with EPERM.
        file.seek(io::SeekFrom::End(0)).unwrap();
        assert_eq!(
            file.write(b"x").unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(
            file.write_at(b"X", 0).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(
            file.set_len(3).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(
            file.set_len(100).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(sealed.read_all().unwrap(), b"the bytes that were hashed");
    }
}
