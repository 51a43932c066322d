//! The store's write-ahead log: one file per staged generation in the
//! store's `stage/` directory, named by the generation's number. Each
//! store batch is one entry (`stage::encode_log`) holding every op of the
//! batch, written with one `write` while the store holds its active
//! generation, so a file holds its generation's batches in the order they
//! were applied. Once a generation is ingested its file is deleted.
//!
//! These are plain files, not fjall keyspaces as before: a keyspace's
//! memtable kept a second in-memory copy of every staged write, 40-50 MiB
//! per node in the benchmarks, and new memory is dear on the machines we
//! measure on (docs/benchmarks.md, session 10). The write costs what
//! fjall's commit did: the kernel's page-cache and block allocation for
//! appended bytes.
//!
//! File, format version 1:
//!
//! ```text
//! bytes 0..8   magic "DKVSTAGE"
//! byte  8      format version (1)
//! then, per entry
//!              u32 big-endian body length,
//!              u32 big-endian checksum: the low 32 bits of the body's xxh3-64,
//!              body (a log entry)
//! ```
//!
//! Recovery reads the files in generation order and stops at the first
//! entry that is cut short or fails its checksum, in whichever file: a
//! write the machine lost before a sync covered it, and no sync covered
//! anything written after it either. What it returns is a prefix of the
//! writes, as Redis loads a truncated AOF.
//!
//! A failed write leaves nothing recovery would replay: the file is cut
//! back to its length before the entry and synced (as Redis truncates a
//! partly written AOF). Entries go at the file's known length (`pwrite`),
//! so the next one overwrites whatever a failed one left. If the cut
//! itself fails, every append fails until [`StageLog::repair`] manages
//! it.

use super::StoreError;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 8] = b"DKVSTAGE";
/// The file format this build writes and reads.
const FILE_FORMAT: u8 = 1;
const HEADER_BYTES: usize = MAGIC.len() + 1;
/// Length and checksum before each entry's body.
const ENTRY_HEADER_BYTES: usize = 8;
const EXTENSION: &str = "log";

fn checksum(body: &[u8]) -> u32 {
    let [.., a, b, c, d] = xxh3_64(body).to_be_bytes();
    u32::from_be_bytes([a, b, c, d])
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::StageLog { what, source }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the log files held when the store opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every entry's body, oldest first.
    pub entries: Vec<Vec<u8>>,
    /// The newest generation that had a file.
    pub last_generation: Option<u64>,
}

/// The open log: appends to the active generation's file, syncs, deletes.
#[derive(Debug)]
pub struct StageLog {
    dir: PathBuf,
    writer: Mutex<Writer>,
    to_sync: Mutex<ToSync>,
    /// Tests: the next write stops after this many bytes and fails as a
    /// full disk would.
    #[cfg(test)]
    fail_next_write: Mutex<Option<usize>>,
}

#[derive(Debug)]
struct Writer {
    file: Arc<File>,
    /// The file's length: where the next entry goes.
    bytes: u64,
    /// An entry being framed; kept to reuse its allocation.
    frame: Vec<u8>,
    /// A write failed and cutting it off the file failed too: the file
    /// may end in part of an entry, and anything appended after it would
    /// be lost to recovery. Every append fails until
    /// [`StageLog::repair`] cuts the file back to `bytes`.
    failed: bool,
}

/// Where an appended entry lies in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The file's length before the entry.
    pub start: u64,
    /// Its length after it.
    pub end: u64,
}

/// What the next sync must cover.
#[derive(Debug, Default)]
struct ToSync {
    /// Files written since the last sync, the active one last.
    files: Vec<Arc<File>>,
    /// A file was created or deleted: the directory must be synced too.
    dir: bool,
}

impl StageLog {
    /// Reads what the files in `dir` hold (creating `dir` if missing).
    ///
    /// # Errors
    /// [`StoreError::StageLog`] when the directory or a file cannot be
    /// read.
    pub fn recover(dir: &Path) -> Result<Recovered, StoreError> {
        std::fs::create_dir_all(dir).map_err(io("create the stage directory"))?;
        let mut recovered = Recovered::default();
        for (generation, path) in log_files(dir)? {
            recovered.last_generation = Some(generation);
            let content = std::fs::read(&path).map_err(io("read a stage log file"))?;
            if !read_entries(&content, &mut recovered.entries) {
                tracing::warn!(
                    file = %path.display(),
                    recovered = recovered.entries.len(),
                    "the stage log ends early (a write the machine lost before a sync); \
                     recovering the writes before it"
                );
                break;
            }
        }
        Ok(recovered)
    }

    /// Deletes every file in `dir` (what [`StageLog::recover`] read, now
    /// ingested) and starts `generation`'s.
    ///
    /// # Errors
    /// [`StoreError::StageLog`] when a file cannot be deleted or created.
    pub fn create(dir: &Path, generation: u64) -> Result<Self, StoreError> {
        remove_files(dir)?;
        let file = Arc::new(new_file(dir, generation)?);
        let log = Self {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                file: Arc::clone(&file),
                bytes: HEADER_BYTES as u64,
                frame: Vec::new(),
                failed: false,
            }),
            to_sync: Mutex::new(ToSync {
                files: vec![file],
                dir: true,
            }),
            #[cfg(test)]
            fail_next_write: Mutex::new(None),
        };
        log.sync()?;
        Ok(log)
    }

    /// Appends one entry, `encode` writing its body, to the active file;
    /// returns where it lies. In the OS (not synced) on return. A failed
    /// write is cut off the file before this returns (see the module's
    /// header).
    ///
    /// # Errors
    /// [`StoreError::BatchTooLarge`] for a body over 4 GiB (nothing is
    /// written); [`StoreError::StageLog`] when the write fails, and for
    /// every append after one whose cut failed too.
    pub fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<Appended, StoreError> {
        let mut writer = lock(&self.writer);
        let writer = &mut *writer;
        if writer.failed {
            return Err(StoreError::StageLog {
                what: "append after a failed write that could not be cut off",
                source: std::io::Error::other("an earlier write failed"),
            });
        }
        writer.frame.clear();
        writer.frame.resize(ENTRY_HEADER_BYTES, 0);
        encode(&mut writer.frame);
        let body = &writer.frame[ENTRY_HEADER_BYTES..];
        let len = u32::try_from(body.len())
            .map_err(|_| StoreError::BatchTooLarge { bytes: body.len() })?;
        let sum = checksum(body);
        writer.frame[..4].copy_from_slice(&len.to_be_bytes());
        writer.frame[4..8].copy_from_slice(&sum.to_be_bytes());
        let start = writer.bytes;
        if let Err(source) = self.write_at(&writer.file, &writer.frame, start) {
            // Part of the entry may be in the file: cut it off, so that
            // the file is what it was and the next entry goes here.
            writer.failed = cut(&writer.file, start).is_err();
            return Err(StoreError::StageLog {
                what: "write a stage log entry",
                source,
            });
        }
        writer.bytes += writer.frame.len() as u64;
        Ok(Appended {
            start,
            end: writer.bytes,
        })
    }

    fn write_at(&self, file: &File, frame: &[u8], at: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(written) = lock(&self.fail_next_write).take() {
            file.write_all_at(&frame[..written.min(frame.len())], at)?;
            return Err(std::io::ErrorKind::StorageFull.into());
        }
        file.write_all_at(frame, at)
    }

    /// Tests: the next append writes `written` bytes of its entry, then
    /// fails as a full disk would.
    #[cfg(test)]
    pub fn fail_next_write(&self, written: usize) {
        *lock(&self.fail_next_write) = Some(written);
    }

    /// After a failed write that could not be cut off the file: cuts it
    /// off now, and appends work again. Does nothing otherwise.
    ///
    /// # Errors
    /// [`StoreError::StageLog`] when the cut fails again.
    pub fn repair(&self) -> Result<(), StoreError> {
        let mut writer = lock(&self.writer);
        repair(&mut writer)
    }

    /// Starts `generation`'s file; appends go there from now on.
    ///
    /// # Errors
    /// [`StoreError::StageLog`] when the file cannot be created, or the
    /// active one ends in a failed write that cannot be cut off (recovery
    /// would stop there, and never reach the new file's entries).
    pub fn start(&self, generation: u64) -> Result<(), StoreError> {
        let mut writer = lock(&self.writer);
        repair(&mut writer)?;
        let file = Arc::new(new_file(&self.dir, generation)?);
        writer.file = Arc::clone(&file);
        writer.bytes = HEADER_BYTES as u64;
        let mut to_sync = lock(&self.to_sync);
        to_sync.files.push(file);
        to_sync.dir = true;
        Ok(())
    }

    /// Deletes `generation`'s file (its writes are in the data keyspace,
    /// synced), and syncs the directory: a file that came back after a
    /// crash would replay its old writes over newer ingested ones.
    ///
    /// # Errors
    /// [`StoreError::StageLog`] when the file cannot be deleted.
    pub fn remove(&self, generation: u64) -> Result<(), StoreError> {
        match std::fs::remove_file(file_path(&self.dir, generation)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::StageLog {
                    what: "delete a stage log file",
                    source,
                });
            }
        }
        sync_dir(&self.dir).map_err(io("sync the stage directory"))
    }

    /// Bytes the log's files take (for INFO); 0 for any it cannot read.
    pub fn disk_bytes(&self) -> u64 {
        log_files(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|(_, path)| std::fs::metadata(path).ok())
            .map(|metadata| metadata.len())
            .sum()
    }

    /// Syncs every file written since the last sync, and the directory
    /// if a file was created or deleted meanwhile.
    ///
    /// # Errors
    /// [`StoreError::StageLog`] when a sync fails.
    pub fn sync(&self) -> Result<(), StoreError> {
        let (files, dir) = {
            let mut to_sync = lock(&self.to_sync);
            (to_sync.files.clone(), std::mem::take(&mut to_sync.dir))
        };
        let synced = files
            .iter()
            .try_for_each(|file| file.sync_data())
            .and_then(|()| if dir { sync_dir(&self.dir) } else { Ok(()) });
        let mut to_sync = lock(&self.to_sync);
        if let Err(source) = synced {
            to_sync.dir |= dir;
            return Err(StoreError::StageLog {
                what: "sync the stage log",
                source,
            });
        }
        // The active file (the last) takes more writes; the others synced
        // here are done.
        let active = to_sync.files.last().cloned();
        to_sync.files.retain(|file| {
            active.as_ref().is_some_and(|a| Arc::ptr_eq(a, file))
                || !files.iter().any(|synced| Arc::ptr_eq(synced, file))
        });
        Ok(())
    }
}

/// Frames of `content` (a whole file) appended to `entries`; false if
/// the file ends early or holds a bad entry.
fn read_entries(content: &[u8], entries: &mut Vec<Vec<u8>>) -> bool {
    if content.len() < HEADER_BYTES
        || &content[..MAGIC.len()] != MAGIC
        || content[MAGIC.len()] != FILE_FORMAT
    {
        return false;
    }
    let mut rest = &content[HEADER_BYTES..];
    while !rest.is_empty() {
        let Some((header, after)) = rest.split_first_chunk::<ENTRY_HEADER_BYTES>() else {
            return false;
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let sum = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = after.get(..len) else {
            return false;
        };
        if checksum(body) != sum {
            return false;
        }
        entries.push(body.to_vec());
        rest = &after[len..];
    }
    true
}

/// Cuts `file` back to `len` bytes and syncs it.
fn cut(file: &File, len: u64) -> std::io::Result<()> {
    file.set_len(len)?;
    file.sync_data()
}

fn repair(writer: &mut Writer) -> Result<(), StoreError> {
    if writer.failed {
        cut(&writer.file, writer.bytes).map_err(io("cut a failed write off the stage log"))?;
        writer.failed = false;
    }
    Ok(())
}

fn file_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:020}.{EXTENSION}"))
}

/// The log files in `dir`, by generation, oldest first. Other files are
/// not the log's and are left alone.
fn log_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list the stage directory"))? {
        let path = entry.map_err(io("list the stage directory"))?.path();
        let generation = (path.extension().and_then(|e| e.to_str()) == Some(EXTENSION))
            .then(|| path.file_stem()?.to_str()?.parse::<u64>().ok())
            .flatten();
        if let Some(generation) = generation {
            files.push((generation, path));
        }
    }
    files.sort_unstable();
    Ok(files)
}

fn remove_files(dir: &Path) -> Result<(), StoreError> {
    for (_, path) in log_files(dir)? {
        std::fs::remove_file(&path).map_err(io("delete a stage log file"))?;
    }
    Ok(())
}

fn new_file(dir: &Path, generation: u64) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(file_path(dir, generation))
        .map_err(io("create a stage log file"))?;
    let mut header = [0; HEADER_BYTES];
    header[..MAGIC.len()].copy_from_slice(MAGIC);
    header[MAGIC.len()] = FILE_FORMAT;
    file.write_all(&header)
        .map_err(io("write a stage log header"))?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn append(log: &StageLog, body: &[u8]) {
        log.append(|out| out.extend_from_slice(body))
            .expect("append");
    }

    #[test]
    fn entries_come_back_in_order_across_files_and_removed_files_are_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = StageLog::create(dir.path(), 4).expect("create");
        append(&log, b"one");
        append(&log, b"");
        log.start(5).expect("start");
        append(&log, b"two");
        log.sync().expect("sync");
        let recovered = StageLog::recover(dir.path()).expect("recover");
        assert_eq!(recovered.entries, [&b"one"[..], b"", b"two"]);
        assert_eq!(recovered.last_generation, Some(5));
        log.remove(4).expect("remove");
        let recovered = StageLog::recover(dir.path()).expect("recover");
        assert_eq!(recovered.entries, [b"two"]);
        // Creating deletes what was there.
        drop(log);
        let log = StageLog::create(dir.path(), 0).expect("create");
        append(&log, b"zero");
        let recovered = StageLog::recover(dir.path()).expect("recover");
        assert_eq!(recovered.entries, [b"zero"]);
    }

    #[test]
    fn the_file_layout_is_pinned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = StageLog::create(dir.path(), 1).expect("create");
        assert_eq!(
            log.append(|out| out.extend_from_slice(b"ab"))
                .expect("append"),
            Appended { start: 9, end: 19 }
        );
        let content = std::fs::read(dir.path().join("00000000000000000001.log")).expect("read");
        let sum = (xxh3_64(b"ab") & 0xFFFF_FFFF).to_be_bytes();
        let mut expected = b"DKVSTAGE\x01\0\0\0\x02".to_vec();
        expected.extend_from_slice(&sum[4..]);
        expected.extend_from_slice(b"ab");
        assert_eq!(content, expected);
    }

    /// A torn or corrupt entry ends recovery: the writes before it come
    /// back, none after it, in this file or a later one.
    #[test]
    fn recovery_stops_at_the_first_bad_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = StageLog::create(dir.path(), 1).expect("create");
        append(&log, b"kept");
        append(&log, b"lost");
        log.start(2).expect("start");
        append(&log, b"after");
        drop(log);
        let first = dir.path().join("00000000000000000001.log");
        let content = std::fs::read(&first).expect("read");
        // A flipped byte in the second body, then a cut in it.
        let mut flipped = content.clone();
        *flipped.last_mut().expect("byte") ^= 1;
        for bad in [
            flipped,
            content[..content.len() - 1].to_vec(),
            content[..HEADER_BYTES + 12 + 3].to_vec(),
        ] {
            std::fs::write(&first, &bad).expect("write");
            let recovered = StageLog::recover(dir.path()).expect("recover");
            assert_eq!(recovered.entries, [b"kept"]);
        }
        std::fs::write(&first, &content[..5]).expect("write");
        let recovered = StageLog::recover(dir.path()).expect("recover");
        assert!(recovered.entries.is_empty(), "a cut header");
    }

    // Proves a write that fails part way (a full disk) leaves nothing in
    // the file: it is cut back, the next entry goes where the failed one
    // began, and recovery reads exactly the entries that were appended.
    #[test]
    fn a_failed_write_is_cut_off_and_the_next_entry_takes_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000001.log");
        let log = StageLog::create(dir.path(), 1).expect("create");
        append(&log, b"before");
        let length = std::fs::metadata(&path).expect("metadata").len();
        for written in [0, 3, ENTRY_HEADER_BYTES + 2] {
            log.fail_next_write(written);
            match log.append(|out| out.extend_from_slice(b"failed")) {
                Err(StoreError::StageLog { source, .. }) => {
                    assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
                }
                other => panic!("expected a failed write, got {other:?}"),
            }
            assert_eq!(
                std::fs::metadata(&path).expect("metadata").len(),
                length,
                "{written} bytes written, then cut off"
            );
        }
        let after = log
            .append(|out| out.extend_from_slice(b"after"))
            .expect("appends work again");
        assert_eq!(after.start, length);
        assert_eq!(
            StageLog::recover(dir.path()).expect("recover").entries,
            [&b"before"[..], b"after"]
        );
    }

    proptest! {
        #[test]
        fn reading_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut with_header = b"DKVSTAGE\x01".to_vec();
            with_header.extend_from_slice(&bytes);
            for content in [&bytes, &with_header] {
                let mut entries = Vec::new();
                let _ = read_entries(content, &mut entries);
            }
        }
    }
}
