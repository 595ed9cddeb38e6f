//! The crate's only unsafe code: mapping a file read-only.

use std::fs::File;

use memmap2::Mmap;

/// Maps `file` read-only into memory.
pub(crate) fn map_readonly(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private to this process. memmap2
    // cannot stop another process from truncating or rewriting the file while
    // it is mapped; that would change or invalidate bytes under us. Model files
    // are not modified while they are being read, which is the same assumption
    // every mmap-based model loader makes.
    unsafe { Mmap::map(file) }
}
