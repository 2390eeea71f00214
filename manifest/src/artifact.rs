//! Checking an artifact's bytes as they stream past: never more than the
//! declared size, and the SHA-256 at the end. The caller stops reading at the
//! first error, so an endless or lying body costs at most `size + 1` bytes.

use sha2::{Digest, Sha256};

use crate::ManifestError;
use crate::encoding::hex;
use crate::schema::Artifact;

/// A running check of one artifact.
pub struct ArtifactCheck<'a> {
    artifact: &'a Artifact,
    hasher: Sha256,
    received: u64,
}

impl<'a> ArtifactCheck<'a> {
    pub fn new(artifact: &'a Artifact) -> Self {
        ArtifactCheck {
            artifact,
            hasher: Sha256::new(),
            received: 0,
        }
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        // `received` never exceeds `size`: `update` refuses before it would.
        self.artifact.size - self.received
    }

    /// Hashes the next chunk, refusing it whole if it would pass the declared
    /// size.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), ManifestError> {
        // A chunk is at most isize::MAX bytes, so it fits in u64.
        if chunk.len() as u64 > self.remaining() {
            return Err(ManifestError::ArtifactTooLong {
                path: self.artifact.path.clone(),
                declared: self.artifact.size,
            });
        }
        self.hasher.update(chunk);
        self.received += chunk.len() as u64;
        Ok(())
    }

    /// Checks the size and the digest.
    pub fn finish(self) -> Result<(), ManifestError> {
        if self.received != self.artifact.size {
            return Err(ManifestError::ArtifactTruncated {
                path: self.artifact.path.clone(),
                received: self.received,
                declared: self.artifact.size,
            });
        }
        let actual: [u8; 32] = self.hasher.finalize().into();
        if actual != self.artifact.digest() {
            return Err(ManifestError::ArtifactDigest {
                path: self.artifact.path.clone(),
                expected: self.artifact.sha256.clone(),
                actual: hex(&actual),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(data: &[u8]) -> Artifact {
        Artifact {
            path: "blobs/sha256/x".into(),
            sha256: hex(&Sha256::digest(data)),
            size: data.len() as u64,
        }
    }

    #[test]
    fn exact_bytes_pass_and_every_deviation_is_named() {
        let good = b"the kernel image".to_vec();
        let a = artifact(&good);
        let mut flipped = good.clone();
        flipped[3] ^= 0x20;
        let mut longer = good.clone();
        longer.push(b'!');
        let table: Vec<(Vec<u8>, Option<&str>)> = vec![
            (good.clone(), None),
            (flipped, Some("sha256 is")),
            (
                good[..good.len() - 1].to_vec(),
                Some("15 bytes, declared 16"),
            ),
            (longer, Some("more than the declared 16 bytes")),
        ];
        for (data, expected) in table {
            for chunk_size in [1, 5, 64] {
                let mut check = ArtifactCheck::new(&a);
                let result = data
                    .chunks(chunk_size)
                    .try_for_each(|c| check.update(c))
                    .and_then(|()| check.finish());
                match (result, expected) {
                    (Ok(()), None) => {}
                    (Err(e), Some(expected)) => {
                        assert!(e.to_string().contains(expected), "{e}");
                        assert!(e.to_string().contains("blobs/sha256/x"), "{e}");
                    }
                    (result, expected) => panic!("{result:?} vs {expected:?}"),
                }
            }
        }
    }
}
