//! The flow log file: one JSON object a line, rotated by size (`flows.log` -> `flows.log.1` ...
//! up to `keep` old files), written by one thread and flushed after every batch read from the
//! kernel.

use crate::os_error::OsError;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: BufWriter<File>,
    size: u64,
}

fn open(path: &Path) -> Result<(BufWriter<File>, u64), OsError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| OsError::io(format!("opening flow log {}", path.display()), &e))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((BufWriter::new(f), size))
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    crate::cell::files::suffixed(path, &format!(".{n}"))
}

impl FileSink {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<FileSink, OsError> {
        let (out, size) = open(path)?;
        Ok(FileSink {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            out,
            size,
        })
    }

    pub fn write_line(&mut self, line: &str) -> Result<(), OsError> {
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.max_bytes {
            self.rotate()?;
        }
        let write = |out: &mut BufWriter<File>| {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")
        };
        write(&mut self.out)
            .map_err(|e| OsError::io(format!("writing flow log {}", self.path.display()), &e))?;
        self.size += line.len() as u64 + 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), OsError> {
        self.out
            .flush()
            .map_err(|e| OsError::io(format!("writing flow log {}", self.path.display()), &e))
    }

    fn rotate(&mut self) -> Result<(), OsError> {
        self.flush()?;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            std::fs::rename(&self.path, rotated(&self.path, 1)).map_err(|e| {
                OsError::io(format!("rotating flow log {}", self.path.display()), &e)
            })?;
        }
        let (out, size) = open(&self.path)?;
        self.out = out;
        self.size = size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.log");
        let mut sink = FileSink::open(&path, 25, 2).unwrap();
        for i in 0..10 {
            sink.write_line(&format!("line number {i}")).unwrap();
        }
        sink.flush().unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(path.clone()), "line number 9\n");
        assert_eq!(read(rotated(&path, 1)), "line number 8\n");
        assert_eq!(read(rotated(&path, 2)), "line number 7\n");
        assert!(!rotated(&path, 3).exists());
    }
}
