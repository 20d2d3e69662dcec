//! File helpers shared by every reader and writer of the crate: whole-file
//! writes that never leave a half-written file, and text reads that report
//! non-UTF-8 content as corrupt data.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Write `bytes` to `path` through a temporary file in the same directory and a
/// rename: on any error the previous file (if any) is untouched and the temporary
/// file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-write");
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Read a text file: [`Error::Io`] if it cannot be read, [`Error::CorruptData`] if
/// it is not UTF-8 (with the offset of the first bad byte).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| Error::CorruptData {
        path: path.to_path_buf(),
        reason: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_atomic_writes() {
        let dir = std::env::temp_dir().join(format!("ep-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.txt");
        write_atomic(&p, b"hello").unwrap();
        assert_eq!(read_text(&p).unwrap(), "hello");
        std::fs::write(&p, [b'o', b'k', 0xff]).unwrap();
        let e = read_text(&p).unwrap_err();
        assert!(matches!(e, Error::CorruptData { .. }), "{e}");
        assert!(e.to_string().contains("offset 2"), "{e}");
        assert!(matches!(
            read_text(&dir.join("missing")),
            Err(Error::Io { .. })
        ));
        // A write into a missing directory fails and leaves nothing behind.
        let bad = dir.join("no-such-dir").join("x.txt");
        assert!(matches!(write_atomic(&bad, b"x"), Err(Error::Io { .. })));
        assert!(!bad.with_extension("tmp-write").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
