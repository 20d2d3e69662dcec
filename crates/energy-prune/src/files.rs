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
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// [`write_atomic`] for a writer that streams: `write(file)` writes the whole
/// content into a buffered temporary file next to `path`, which then replaces
/// `path`; on any error the previous file is untouched and the temporary removed.
///
/// # Errors
/// [`Error::Io`] if the file cannot be written.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temporary_beside(path);
    let res = write_temporary(&tmp, write).and_then(|()| std::fs::rename(&tmp, path));
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// A file written by [`write_atomic_pair`]: its path and the writer of its content.
pub type StreamedFile<'a> = (
    &'a Path,
    &'a mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
);

/// [`write_atomic_with`] for two files that belong together (a model and the
/// side file of its weights): both are written completely into temporary files
/// before either replaces its target, `first` before `second`; on an error while
/// writing, both targets are untouched and the temporaries removed.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written.
pub fn write_atomic_pair(first: StreamedFile<'_>, second: StreamedFile<'_>) -> Result<()> {
    let (path1, write1) = first;
    let (path2, write2) = second;
    let (tmp1, tmp2) = (temporary_beside(path1), temporary_beside(path2));
    let cleanup = || {
        let _ = std::fs::remove_file(&tmp1);
        let _ = std::fs::remove_file(&tmp2);
    };
    if let Err(e) = write_temporary(&tmp1, |f| write1(f)) {
        cleanup();
        return Err(Error::io(path1, e));
    }
    if let Err(e) = write_temporary(&tmp2, |f| write2(f)) {
        cleanup();
        return Err(Error::io(path2, e));
    }
    for (tmp, path) in [(&tmp1, path1), (&tmp2, path2)] {
        if let Err(e) = std::fs::rename(tmp, path) {
            cleanup();
            return Err(Error::io(path, e));
        }
    }
    Ok(())
}

/// `NAME.PID.tmp-write` next to `path`: one writer's temporary file never
/// collides with another's, nor with a file of another extension.
fn temporary_beside(path: &Path) -> std::path::PathBuf {
    let mut tmp_name = path.file_name().map_or_else(
        || std::ffi::OsString::from("output"),
        std::ffi::OsStr::to_os_string,
    );
    tmp_name.push(format!(".{}.tmp-write", std::process::id()));
    path.with_file_name(tmp_name)
}

/// Write `tmp` through a buffer and flush it to the disk.
fn write_temporary(
    tmp: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(tmp)?);
    write(&mut f)?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The largest text file (JSON, CSV) the crate reads: 256 MiB.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Read at most `limit` bytes of a regular file: [`Error::Io`] if it cannot be
/// read, [`Error::CorruptData`] if it is not a regular file or is larger than
/// `limit` (checked before reading, and bounded while reading, so that a device
/// or a growing file cannot exhaust memory).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let corrupt = |reason: String| Error::CorruptData {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(corrupt("not a regular file".into()));
    }
    if meta.len() > limit {
        return Err(corrupt(format!(
            "{} bytes, more than the {limit} this reader accepts",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(corrupt(format!(
            "grew past the {limit} bytes this reader accepts while being read"
        )));
    }
    Ok(bytes)
}

/// Read a text file of at most [`MAX_TEXT_BYTES`]: [`Error::Io`] if it cannot be
/// read, [`Error::CorruptData`] if it is not a regular file, too large, or not
/// UTF-8 (with the offset of the first bad byte).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_bounded(path, MAX_TEXT_BYTES)?;
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

    #[test]
    fn a_pair_is_written_whole_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("ep-pair-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("m.onnx"), dir.join("m.onnx.data"));
        let put = |bytes: &'static [u8]| move |w: &mut dyn Write| w.write_all(bytes);
        write_atomic_pair((&b, &mut put(b"data1")), (&a, &mut put(b"model1"))).unwrap();
        // The second writer fails: both earlier files stay, no temporary is left.
        let e = write_atomic_pair(
            (&b, &mut put(b"data2")),
            (&a, &mut |_: &mut dyn Write| {
                Err(std::io::Error::other("disk full"))
            }),
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::Io { .. }) && e.to_string().contains("m.onnx"),
            "{e}"
        );
        assert_eq!(std::fs::read(&a).unwrap(), b"model1");
        assert_eq!(std::fs::read(&b).unwrap(), b"data1");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
