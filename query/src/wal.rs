//! The write-ahead log: what `append` made durable and Parquet does not
//! hold yet.
//!
//! The log is a series of segment files (the store rotates to a new one
//! when a flush starts, and deletes the old ones once the manifest says
//! their records are in Parquet). A segment's layout: a header (`FGWAL`
//! magic, format version u16, 3 reserved bytes), then records of
//! `[len u32 LE][crc32 u32 LE][seq u64 LE][origin][payload]` where `len`
//! counts everything after the CRC and the CRC covers it too. The origin
//! (version 2) is the batch's sender: a u16 length-prefixed probe id (empty
//! for rows without one) and its u64 sequence, so that which batches are
//! stored survives a crash with them; version 1 records have no origin. The
//! payload is the appended rows as an Arrow IPC stream (compact, and cheap
//! to write on the ingest path). A torn tail (crash mid-write) ends the
//! replay at the last whole record and is cut off.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

const MAGIC: &[u8; 5] = b"FGWAL";
const VERSION: u16 = 2;
/// Version 1 logs (no origin) are still read, so an upgrade keeps them.
const VERSION_WITHOUT_ORIGIN: u16 = 1;
const HEADER: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {op}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a flowgate write-ahead log (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: write-ahead log format version {found} is not supported (expected {VERSION})")]
    Version { path: PathBuf, found: u16 },
}

/// One replayed record.
#[derive(Debug)]
pub struct Record {
    pub seq: u64,
    /// The probe and its batch sequence, when the rows came in one.
    pub origin: Option<(String, u64)>,
    pub batch: RecordBatch,
}

#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    bytes: u64,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Wal {
    /// Opens (or creates) the log and returns its whole records; a torn
    /// tail is cut off, and how many bytes were cut is reported.
    pub fn open(path: &Path) -> Result<(Wal, Vec<Record>, u64), WalError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io("open", path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io("read", path))?;
        if data.is_empty() {
            let mut header = Vec::with_capacity(HEADER);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&VERSION.to_le_bytes());
            header.extend_from_slice(&[0; 3]);
            file.write_all(&header).map_err(io("write header", path))?;
            file.sync_all().map_err(io("sync", path))?;
            return Ok((
                Wal {
                    file,
                    path: path.to_path_buf(),
                    bytes: HEADER as u64,
                },
                Vec::new(),
                0,
            ));
        }
        if data.len() < HEADER || &data[..5] != MAGIC {
            return Err(WalError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        let found = u16::from_le_bytes([data[5], data[6]]);
        if found != VERSION && found != VERSION_WITHOUT_ORIGIN {
            return Err(WalError::Version {
                path: path.to_path_buf(),
                found,
            });
        }
        let (records, good) = decode(&data[HEADER..], found == VERSION);
        let good = (HEADER + good) as u64;
        let torn = data.len() as u64 - good;
        if torn > 0 {
            tracing::warn!(path = %path.display(), bytes = torn, "write-ahead log ends in a torn record: cut off (it was never acknowledged)");
            file.set_len(good).map_err(io("truncate", path))?;
            file.seek(SeekFrom::End(0)).map_err(io("seek", path))?;
        }
        Ok((
            Wal {
                file,
                path: path.to_path_buf(),
                bytes: good,
            },
            records,
            torn,
        ))
    }

    /// Appends one record and syncs it to disk.
    pub fn append(
        &mut self,
        seq: u64,
        origin: Option<(&str, u64)>,
        batch: &RecordBatch,
    ) -> Result<(), WalError> {
        let mut body = Vec::with_capacity(8 + batch.get_array_memory_size());
        body.extend_from_slice(&seq.to_le_bytes());
        let (probe, probe_seq) = origin.unwrap_or(("", 0));
        // Probe ids are short (the ingest refuses long ones); cut, never panic.
        let mut n = probe.len().min(u16::MAX as usize);
        while !probe.is_char_boundary(n) {
            n -= 1;
        }
        body.extend_from_slice(&(n as u16).to_le_bytes());
        body.extend_from_slice(&probe.as_bytes()[..n]);
        body.extend_from_slice(&probe_seq.to_le_bytes());
        {
            let mut w =
                StreamWriter::try_new(&mut body, &batch.schema()).expect("IPC writer on a Vec");
            w.write(batch).expect("IPC write to a Vec");
            w.finish().expect("IPC finish on a Vec");
        }
        let mut rec = Vec::with_capacity(8 + body.len());
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        rec.extend_from_slice(&body);
        self.file
            .write_all(&rec)
            .map_err(io("append", &self.path))?;
        self.file.sync_data().map_err(io("sync", &self.path))?;
        self.bytes += rec.len() as u64;
        Ok(())
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.bytes == HEADER as u64
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Whole records from the start of `data`, and how many bytes they span.
fn decode(data: &[u8], with_origin: bool) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while data.len() - pos >= 8 {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        let Some(body) = data.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if len < 8 || crc32fast::hash(body) != crc {
            break;
        }
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap());
        let (origin, payload) = if with_origin {
            match split_origin(&body[8..]) {
                Some(split) => split,
                None => break,
            }
        } else {
            (None, &body[8..])
        };
        let Some(batch) = StreamReader::try_new(payload, None)
            .ok()
            .and_then(|mut r| r.next())
            .and_then(Result::ok)
        else {
            break;
        };
        out.push(Record { seq, origin, batch });
        pos += 8 + len;
    }
    (out, pos)
}

type Origin = Option<(String, u64)>;

/// The origin at the start of a version 2 record body, and the payload.
fn split_origin(body: &[u8]) -> Option<(Origin, &[u8])> {
    let n = u16::from_le_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let probe = std::str::from_utf8(body.get(2..2 + n)?).ok()?;
    let seq = u64::from_le_bytes(body.get(2 + n..10 + n)?.try_into().ok()?);
    let origin = (!probe.is_empty()).then(|| (probe.to_owned(), seq));
    Some((origin, &body[10 + n..]))
}
