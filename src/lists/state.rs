//! Files in the state directory (`[state] dir`): written 0600 through a
//! temporary name created with `O_CREAT | O_EXCL | O_NOFOLLOW`, fsynced,
//! renamed over the final name, and the directory fsynced so that the rename
//! itself survives a crash; read with `O_NOFOLLOW`. A symlink planted at
//! either name is never followed: at the temporary name it is removed (the
//! link, not its target) and the create retried once; at the final name it
//! is replaced by the rename on write and refused on read.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use nix::fcntl::OFlag;

/// Writes `data` to `path` (see the module docs). Cost: two fsyncs.
pub fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&tmp)
    };
    let mut f = match create() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // a leftover of a crash, or something planted: remove the name
            // itself (never what a symlink points to) and try once more
            std::fs::remove_file(&tmp)?;
            create()?
        }
        Err(e) => return Err(e),
    };
    let written = f.write_all(data).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Appends `data` to `path` and fsyncs the file (not the directory: the
/// name already exists); creates it as [`write`] does when it does not
/// exist. The file is opened with `O_APPEND | O_NOFOLLOW` and must be a
/// regular file. Cost: one fsync of the appended bytes (three for a new file).
pub fn append(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return write(path, data),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"));
    }
    f.write_all(data)?;
    f.sync_data()
}

/// Removes `path` (the name, never a symlink's target) and fsyncs the
/// directory; a missing file is not an error.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// Reads `path`, refusing a symlink (`ELOOP`) and anything but a regular file.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"));
    }
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_0600_and_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let path = dir.path().join("l.list");
        std::os::unix::fs::symlink(&victim, dir.path().join("l.list.tmp")).unwrap();
        write(&path, b"a.test\n").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(std::fs::read(&path).unwrap(), b"a.test\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!dir.path().join("l.list.tmp").exists());

        let link = dir.path().join("link.list");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(read(&link).is_err(), "a symlink must be refused");
        assert_eq!(read(&path).unwrap(), b"a.test\n");

        // append: creates, then adds; never through a symlink
        let log = dir.path().join("l.log");
        append(&log, b"one\n").unwrap();
        append(&log, b"two\n").unwrap();
        assert_eq!(read(&log).unwrap(), b"one\ntwo\n");
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(append(&link, b"evil\n").is_err(), "appended through a symlink");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        remove(&log).unwrap();
        remove(&log).unwrap();
        assert!(!log.exists());
    }
}
