//! The manifest: which Parquet files make up the store, up to which log
//! sequence they hold the appended rows, and which (probe, sequence)
//! batches they hold. A flush writes its Parquet files first, then a new
//! manifest (a single atomic rename), and only then trims the log: whatever
//! the crash point, the files listed plus the log records past
//! `flushed_through` are exactly the acknowledged rows. Files not listed
//! are leftovers of a flush that did not finish.
//!
//! File layout: a header (`FGMAN` magic, format version u16, 3 reserved
//! bytes), then `[len u32 LE][crc32 u32 LE][body]`, the body being:
//! generation u64, flushed_through u64, the files (u32 count; each a u16
//! length-prefixed path relative to the store, partition start i64, rows
//! u64, bytes u64), the probes (u32 count; each a u16 length-prefixed id,
//! then a u32 count of inclusive `(start u64, end u64)` sequence ranges).
//! Integers are little-endian.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::delivered::{Delivered, SeqSet};

const MAGIC: &[u8; 5] = b"FGMAN";
const VERSION: u16 = 1;
const HEADER: usize = 10;
pub(crate) const FILE_NAME: &str = "manifest";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {path}: {op}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a flowgate manifest (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: manifest format version {found} is not supported (expected {VERSION})")]
    Version { path: PathBuf, found: u16 },
    #[error("manifest {path} is damaged: {problem}")]
    Damaged {
        path: PathBuf,
        problem: &'static str,
    },
}

/// One Parquet file of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileEntry {
    /// Relative to the store's directory.
    pub path: String,
    pub partition_start_ns: i64,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Grows by one with every manifest written.
    pub generation: u64,
    /// Every log record up to this sequence is in `files`.
    pub flushed_through: u64,
    pub files: Vec<FileEntry>,
    /// The batches `files` hold, by probe.
    pub delivered: Delivered,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ManifestError + 'a {
    move |source| ManifestError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Manifest {
    /// Reads `dir/manifest`; `None` when there is none.
    pub(crate) fn read(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = dir.join(FILE_NAME);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        decode(&data).map(Some).map_err(|problem| match problem {
            Problem::Magic => ManifestError::BadMagic { path: path.clone() },
            Problem::Version(found) => ManifestError::Version {
                path: path.clone(),
                found,
            },
            Problem::Damaged(problem) => ManifestError::Damaged {
                path: path.clone(),
                problem,
            },
        })
    }

    /// Replaces `dir/manifest` in one atomic rename, synced.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(&self.encode()).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync the directory of", &path))
    }

    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.generation.to_le_bytes());
        body.extend_from_slice(&self.flushed_through.to_le_bytes());
        body.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for f in &self.files {
            put_str(&mut body, &f.path);
            body.extend_from_slice(&f.partition_start_ns.to_le_bytes());
            body.extend_from_slice(&f.rows.to_le_bytes());
            body.extend_from_slice(&f.bytes.to_le_bytes());
        }
        body.extend_from_slice(&(self.delivered.probes() as u32).to_le_bytes());
        for (probe, set) in self.delivered.iter() {
            put_str(&mut body, probe);
            let ranges: Vec<_> = set.ranges().collect();
            body.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
            for (start, end) in ranges {
                body.extend_from_slice(&start.to_le_bytes());
                body.extend_from_slice(&end.to_le_bytes());
            }
        }
        let mut out = Vec::with_capacity(HEADER + 8 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// Probe ids and paths are short; longer ones are cut at a char boundary
/// (the ingest refuses such probe ids before they get here).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

enum Problem {
    Magic,
    Version(u16),
    Damaged(&'static str),
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Problem> {
        if self.data.len() < n {
            return Err(Problem::Damaged("it ends early"));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, Problem> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, Problem> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, Problem> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<String, Problem> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| Problem::Damaged("a name is not UTF-8"))
    }
}

fn decode(data: &[u8]) -> Result<Manifest, Problem> {
    if data.len() < HEADER || &data[..5] != MAGIC {
        return Err(Problem::Magic);
    }
    let found = u16::from_le_bytes([data[5], data[6]]);
    if found != VERSION {
        return Err(Problem::Version(found));
    }
    let mut r = Reader {
        data: &data[HEADER..],
    };
    let len = r.u32()? as usize;
    let crc = r.u32()?;
    let body = r.take(len)?;
    if crc32fast::hash(body) != crc {
        return Err(Problem::Damaged("checksum mismatch"));
    }
    let mut r = Reader { data: body };
    let mut m = Manifest {
        generation: r.u64()?,
        flushed_through: r.u64()?,
        ..Manifest::default()
    };
    for _ in 0..r.u32()? {
        m.files.push(FileEntry {
            path: r.str()?,
            partition_start_ns: r.u64()? as i64,
            rows: r.u64()?,
            bytes: r.u64()?,
        });
    }
    for _ in 0..r.u32()? {
        let probe = r.str()?;
        let n = r.u32()?;
        let mut ranges = Vec::new();
        for _ in 0..n {
            ranges.push((r.u64()?, r.u64()?));
        }
        m.delivered.set(probe, SeqSet::from_ranges(ranges));
    }
    if !r.data.is_empty() {
        return Err(Problem::Damaged("bytes after the last entry"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut delivered = Delivered::default();
        for seq in [1, 2, 3, 7] {
            delivered.insert("node-a/12-3", seq);
        }
        delivered.insert("replay", 9);
        Manifest {
            generation: 4,
            flushed_through: 120,
            files: vec![FileEntry {
                path: "flows/3600/00000000000000000120.parquet".into(),
                partition_start_ns: 3600,
                rows: 6,
                bytes: 4096,
            }],
            delivered,
        }
    }

    #[test]
    fn round_trips_and_refuses_damage_by_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), None);
        sample().write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(sample()));
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is damaged: checksum mismatch"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ends early"), "{err}");
        std::fs::write(&path, b"FGMAN\x09\x00\0\0\0").unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("version 9 is not supported"), "{err}");
    }
}
