//! What restore gives back besides content, and what it says when a filesystem refuses: owners
//! (through descriptors, never names), permissions read back, times, and the errors of FAT and
//! exFAT cards explained.

use super::*;

/// A failed write in words, with the likely reason where the bare error would puzzle: a video
/// of 4 GiB or more restored onto a FAT32 card or stick fails with "File too large".
pub(super) fn describe_write_error(what: &str, e: &std::io::Error) -> String {
    if os_error_in(e, &[Errno::FBIG]) {
        format!("{what}: {e} (FAT32 cannot hold a file of 4 GiB or more: restore it onto exFAT, NTFS or another filesystem)")
    } else {
        format!("{what}: {e}")
    }
}

/// Why creating `name` may have failed: FAT and exFAT refuse some characters that Linux and
/// macOS allow (a phone's `12:30 lunch.jpg`). Appended to the error of a name that has them.
pub(super) fn name_hint(name: &[u8]) -> &'static str {
    if name.iter().any(|c| b"\"*:<>?\\|".contains(c) || *c < 0x20) {
        " (FAT and exFAT do not allow \" * : < > ? \\ | in names: restore it onto another \
         filesystem, or rename it after restoring it elsewhere)"
    } else {
        ""
    }
}

/// The filesystem cannot do this at all: chmod (FAT and exFAT through the kernel give EPERM for
/// any mode their mount options do not already give, FAT through FUSE ENOSYS) or symlinks (FAT
/// EPERM, FUSE ENOSYS). A refused mode does not fail the file: `check_mode` counts it from the
/// mode read back.
pub(super) fn unsupported_here(e: &std::io::Error) -> bool {
    os_error_in(e, &[Errno::PERM, Errno::NOSYS, Errno::OPNOTSUPP])
}

/// Permissions wanted and read back differ; `(differs, private item exposed)`.
pub(super) fn mode_mismatch(wanted: u32, actual: u32) -> (bool, bool) {
    let (wanted, actual) = (wanted & 0o777, actual & 0o777);
    (wanted != actual, wanted & 0o077 == 0 && actual & 0o077 != 0)
}

/// How much of its recorded metadata a folder gets back.
#[derive(Clone, Copy)]
pub(super) enum DirUpdate {
    All,
    /// All, but the owner keeps the right to add to it (a restore that stopped early).
    AllButWritable,
    /// Only the modification time (a folder that was there before).
    Mtime,
}

pub(super) fn set_dir_meta(
    ctx: &Ctx<'_>,
    root: &Dir,
    d: &DirMeta,
    how: DirUpdate,
) -> std::io::Result<()> {
    let Some((last, parents)) = d.path.split_last() else {
        return Ok(());
    };
    let mut cur = root.try_clone()?;
    for c in parents {
        cur = cur.open_dir_nofollow(OsStr::from_bytes(c))?;
    }
    let name = OsStr::from_bytes(last);
    let md = cur.symlink_metadata(name)?;
    if !md.is_dir() {
        return Err(std::io::Error::other("no longer a folder"));
    }
    let mtime = || set_mtime_at(&cur, name, d.mtime, d.mtime_nanos);
    let wanted = match how {
        DirUpdate::Mtime => return mtime(),
        // Sticky and setgid mean something on a folder (`/tmp` is 1777); setuid does not.
        DirUpdate::All => d.mode & 0o3777,
        DirUpdate::AllButWritable => d.mode & 0o3777 | 0o700,
    };
    let mode = cap_std::fs::Permissions::from_std(std::fs::Permissions::from_mode(wanted));
    if d.ancestor {
        // Only the permission bits were recorded for folders above the backed-up paths.
        return match cur.set_permissions(name, mode) {
            Err(e) if !unsupported_here(&e) => Err(e),
            _ => Ok(()),
        };
    }
    // Owner before mode: a change of owner may clear mode bits. On the opened folder, not its
    // name: see `chown_fd`.
    ctx.set_owner(|| {
        // A descriptor fchown accepts (cap-std's folder handles are O_PATH on Linux).
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&cur, name, flags, rustix::fs::Mode::empty())?;
        chown_fd(&fd, d.uid, d.gid)
    });
    mtime()?;
    match cur.set_permissions(name, mode) {
        Err(e) if !unsupported_here(&e) => return Err(e),
        _ => {}
    }
    ctx.check_mode(
        wanted,
        cur.symlink_metadata(name)
            .map(|m| cap_std::fs::PermissionsExt::mode(&m.permissions())),
    );
    Ok(())
}

pub(super) fn owner_ids(uid: u32, gid: u32) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    // All ones means "leave unchanged" to chown(2), never an owner.
    (
        (uid != u32::MAX).then(|| rustix::fs::Uid::from_raw(uid)),
        (gid != u32::MAX).then(|| rustix::fs::Gid::from_raw(gid)),
    )
}

/// Owners are set through a descriptor of what this restore created, never through a name: as
/// root, a name in a folder another user can write to could be swapped, between our write and
/// the chown, for a hard link to a file of theirs choosing (which root would then give away).
pub(super) fn chown_fd(fd: impl std::os::fd::AsFd, uid: u32, gid: u32) -> std::io::Result<()> {
    let (u, g) = owner_ids(uid, gid);
    rustix::fs::fchown(fd, u, g).map_err(std::io::Error::from)
}

/// A symlink cannot be opened for writing: open the link itself (`O_PATH`), check that it still
/// is a symlink, and chown that descriptor. Elsewhere than Linux symlinks keep root as owner
/// (their owner matters only in sticky folders).
#[cfg(target_os = "linux")]
pub(super) fn chown_symlink(dir: &Dir, name: &OsStr, uid: u32, gid: u32) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::Symlink {
        return Err(std::io::Error::other("no longer a symlink"));
    }
    let (u, g) = owner_ids(uid, gid);
    rustix::fs::chownat(&fd, "", u, g, AtFlags::EMPTY_PATH).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn chown_symlink(_: &Dir, _: &OsStr, _: u32, _: u32) -> std::io::Result<()> {
    Ok(())
}
