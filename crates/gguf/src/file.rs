use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::{Gguf, GgufError};

/// A GGUF file mapped into memory (read-only), validated on open.
///
/// [`GgufFile::gguf`] hands out a [`Gguf`] that borrows the mapping, so tensor
/// data is never copied.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens, maps and validates the file at `path`.
    ///
    /// Every error names the path: a missing file, a directory, no permission,
    /// or any problem with the contents.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_error = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_error)?;
        if !meta.is_file() {
            return Err(GgufError::NotAFile {
                path: path.to_owned(),
                kind: if meta.is_dir() {
                    "a directory"
                } else {
                    "a special file"
                },
            });
        }
        let file = File::open(path).map_err(io_error)?;
        let map = crate::mmap::map_readonly(&file).map_err(io_error)?;
        let opened = GgufFile {
            path: path.to_owned(),
            map,
        };
        opened.gguf()?;
        Ok(opened)
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed file. Parsing is repeated on each call (it takes
    /// milliseconds even for large vocabularies); keep the result.
    pub fn gguf(&self) -> Result<Gguf<'_>, GgufError> {
        Gguf::parse(&self.map).map_err(|e| e.in_file(&self.path))
    }
}
