//! File I/O behind a small trait, so tests can inject faults.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod fault;

pub use fault::FaultStorage;

/// A flat directory of files: where one log keeps its segments and indexes.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Opens the file `name`, creating it (empty) if `create` and it does not exist.
    ///
    /// # Errors
    /// `NotFound` if it does not exist and `create` is false; any other I/O error.
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes the file `name`. Handles already open may go on reading it.
    ///
    /// # Errors
    /// Any I/O error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// The names of every file in the directory.
    ///
    /// # Errors
    /// Any I/O error.
    fn list(&self) -> io::Result<Vec<String>>;
}

/// One open file: appends at its end, reads anywhere.
// `len` is fallible, an `is_empty` beside it would add nothing.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + Debug {
    /// Appends `buf` at the end of the file. On error, part of `buf` may have been written.
    ///
    /// # Errors
    /// Any I/O error (`StorageFull` when the disk is full).
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Fills `buf` from position `pos`.
    ///
    /// # Errors
    /// `UnexpectedEof` if the file ends before `buf` is full; any other I/O error.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Flushes the file's data to stable storage.
    ///
    /// # Errors
    /// Any I/O error; after a failed sync what is on disk is unknown.
    fn sync(&self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    ///
    /// # Errors
    /// Any I/O error.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// The file's length in bytes.
    ///
    /// # Errors
    /// Any I/O error.
    fn len(&self) -> io::Result<u64>;
}

/// The real storage: files in a directory, through `std::fs`.
#[derive(Debug, Clone)]
pub struct FsStorage {
    dir: PathBuf,
}

impl FsStorage {
    /// Storage in `dir`, created if missing.
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn sync_dir(&self) -> io::Result<()> {
        // Makes a created or removed name durable; not possible (nor needed) on every platform.
        #[cfg(unix)]
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

impl Storage for FsStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let path = self.dir.join(name);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .open(&path)?;
        if create && !existed {
            self.sync_dir()?;
        }
        Ok(Arc::new(FsFile { file }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))?;
        self.sync_dir()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }
}

#[derive(Debug)]
struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        // Opened with O_APPEND: every write goes to the end, whatever the cursor.
        (&self.file).write_all(buf)
    }

    #[cfg(unix)]
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, pos)
    }

    #[cfg(windows)]
    fn read_at(&self, mut pos: u64, mut buf: &mut [u8]) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match self.file.seek_read(buf, pos)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}
