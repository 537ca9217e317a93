//! The restore journal: a small private file that lists the folders a restore created and the
//! folders it wrote temporary files into, so that running the same command again after a kill
//! finishes the job: folders it made get their recorded mode (not the private 0700 they were
//! made with) and its temporary files are removed. Removed when a run completes.
//!
//! It lives in this user's cache folder (`<cache>/restores/`, 0700), named after the target,
//! never in the target: whoever can write to the target (a shared folder) must not be able to
//! make restore treat their folders as its own or write through a planted journal.
//!
//! Records, appended one `write` each (a kill leaves at most the last one torn): one byte
//! (`P`: about to be created, written before the `mkdir`; `C`: created by a restore; `E`:
//! entered, temporary files may be in it), a u32 LE length,
//! the folder's path below the target, components joined by `/` (each already checked by
//! `safe_name`, so none holds a `/`), and for `C` the folder's u64 LE device and inode, so that a
//! folder put in its place since is not taken for it.

use super::{safe_name, Error, Result};
use cap_std::fs::{Dir, MetadataExt};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The journals' folder below the cache folder.
pub const JOURNAL_DIR: &str = "restores";

/// A journal larger than this is not read (it lists folders; a restore of a million folders
/// of 64-byte paths writes 70 MB): the run then treats every folder as the user's own.
const MAX_JOURNAL: u64 = 256 << 20;

/// Longest path a record may hold.
const MAX_RECORD: usize = 64 * 1024;

/// The prefix and suffix of the temporary names restore writes files under, around 8 lower-case
/// hex digits.
pub const TMP_PREFIX: &str = ".vault-restore-";
pub const TMP_SUFFIX: &str = ".tmp";

pub struct Journal {
    /// `None`: no journal (no cache folder, `--no-cache`, or a library caller).
    file: Option<(PathBuf, Mutex<std::fs::File>)>,
    /// Folders an earlier, unfinished run created, was about to create, or only entered.
    earlier: HashMap<Vec<u8>, Earlier>,
}

/// What an earlier run recorded about one folder; a later record of a folder says more than an
/// earlier one (`Created` over `Pending` over `Entered`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Earlier {
    Entered,
    /// Killed between this record and the `C` one: the `mkdir` may or may not have happened.
    Pending,
    /// Created, with the device and inode it had.
    Created(u64, u64),
}

impl Journal {
    /// Open (or create) the journal of the target `root` (at `target`) in `dir`, locked against
    /// a second restore into the same target, and clear what an earlier run left: temporary
    /// files in the folders it lists.
    pub fn open(dir: Option<&Path>, root: &Dir, target: &Path) -> Result<Journal> {
        let Some(dir) = dir else {
            return Ok(Journal {
                file: None,
                earlier: HashMap::new(),
            });
        };
        let place = |e| Error::io(format!("cannot create {}", dir.display()), e);
        std::fs::create_dir_all(dir).map_err(place)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(place)?;
        let md = root
            .dir_metadata()
            .map_err(|e| Error::io(format!("cannot open {}", target.display()), e))?;
        let canonical = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
        let mut h = blake3::Hasher::new();
        h.update(canonical.as_os_str().as_bytes());
        h.update(&md.dev().to_le_bytes());
        h.update(&md.ino().to_le_bytes());
        let path = dir.join(format!("{}.journal", &h.finalize().to_hex()[..32]));
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
                .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?
        };
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(Error::Invalid(format!(
                "another restore into {} is running; wait for it to finish",
                target.display()
            )));
        }
        let earlier = read_records(&file);
        for path in earlier.keys() {
            remove_temporaries(root, path);
        }
        Ok(Journal {
            file: Some((path, Mutex::new(file))),
            earlier,
        })
    }

    /// Whether an earlier run of a restore into this target created the folder now at `path`
    /// (`md`: its metadata).
    /// A folder an earlier run was about to create when it was killed counts as its own when it
    /// looks exactly as restore makes folders: mode 0700, owned by this user (a folder someone
    /// else put there is not taken for it; the user's own folder of that mode at that very path
    /// would get the snapshot's mode, which is what the restore was asked for).
    pub fn created_earlier(&self, path: &[Vec<u8>], md: &cap_std::fs::Metadata) -> bool {
        match self.earlier.get(&join(path)) {
            Some(Earlier::Created(dev, ino)) => (*dev, *ino) == (md.dev(), md.ino()),
            Some(Earlier::Pending) => {
                md.is_dir()
                    && md.mode() & 0o7777 == 0o700
                    && md.uid() == rustix::process::geteuid().as_raw()
            }
            _ => false,
        }
    }

    /// Note a folder this run is about to create, before the `mkdir`: a kill right after it
    /// must not leave a folder no record names.
    pub fn note_pending(&self, path: &[Vec<u8>]) {
        self.append(b'P', path, None);
    }

    /// Note a folder this run writes into (`created`: `None`) or created (its device and
    /// inode). Best effort: a journal that cannot be written costs only the repair of a re-run.
    pub fn note(&self, path: &[Vec<u8>], created: Option<(u64, u64)>) {
        if created.is_none() && self.earlier.contains_key(&join(path)) {
            return;
        }
        self.append(if created.is_some() { b'C' } else { b'E' }, path, created);
    }

    fn append(&self, kind: u8, path: &[Vec<u8>], created: Option<(u64, u64)>) {
        let Some((_, file)) = &self.file else {
            return;
        };
        let p = join(path);
        let mut rec = Vec::with_capacity(21 + p.len());
        rec.push(kind);
        rec.extend_from_slice(&(p.len() as u32).to_le_bytes());
        rec.extend_from_slice(&p);
        if let Some((dev, ino)) = created {
            rec.extend_from_slice(&dev.to_le_bytes());
            rec.extend_from_slice(&ino.to_le_bytes());
        }
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(&rec);
    }

    /// The run finished: nothing is left to repair.
    pub fn finish(self) {
        if let Some((path, _)) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn join(path: &[Vec<u8>]) -> Vec<u8> {
    path.join(&b'/')
}

/// The records of an earlier run, up to the first torn or implausible one.
fn read_records(file: &std::fs::File) -> HashMap<Vec<u8>, Earlier> {
    let mut out = HashMap::new();
    let mut data = Vec::new();
    if file.take(MAX_JOURNAL + 1).read_to_end(&mut data).is_err() || data.len() as u64 > MAX_JOURNAL
    {
        return out;
    }
    let mut rest = &data[..];
    while rest.len() >= 5 {
        let kind = rest[0];
        let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let extra = if kind == b'C' { 16 } else { 0 };
        if !matches!(kind, b'C' | b'E' | b'P') || len > MAX_RECORD || rest.len() < 5 + len + extra {
            break;
        }
        let p = rest[5..5 + len].to_vec();
        let n = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let rec = match kind {
            b'C' => Earlier::Created(n(5 + len), n(13 + len)),
            b'P' => Earlier::Pending,
            _ => Earlier::Entered,
        };
        rest = &rest[5 + len + extra..];
        let slot = out.entry(p).or_insert(Earlier::Entered);
        *slot = (*slot).max(rec);
    }
    out
}

/// Remove restore's temporary files from the folder at `path` below `root`, never following a
/// symlink and never leaving the target.
fn remove_temporaries(root: &Dir, path: &[u8]) {
    let mut dir = match root.try_clone() {
        Ok(d) => d,
        Err(_) => return,
    };
    if !path.is_empty() {
        for c in path.split(|b| *b == b'/') {
            let Ok(name) = safe_name(c) else { return };
            match cap_fs_ext::DirExt::open_dir_nofollow(&dir, name) {
                Ok(d) => dir = d,
                Err(_) => return,
            }
        }
    }
    let Ok(entries) = dir.entries() else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        if is_temporary(&name) && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = dir.remove_file(&name);
        }
    }
}

/// A name restore writes a file under before moving it into place.
pub fn is_temporary(name: &OsStr) -> bool {
    let b = name.as_bytes();
    let Some(mid) = b
        .strip_prefix(TMP_PREFIX.as_bytes())
        .and_then(|r| r.strip_suffix(TMP_SUFFIX.as_bytes()))
    else {
        return false;
    };
    mid.len() == 8 && mid.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Dir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        let root =
            Dir::open_ambient_dir(dir.path().join("target"), cap_std::ambient_authority()).unwrap();
        let jd = dir.path().join("journals");
        (dir, root, jd)
    }

    #[test]
    fn records_survive_a_torn_end_and_a_folder_put_in_place_is_not_taken() {
        let (dir, root, jd) = setup();
        let target = dir.path().join("target");
        std::fs::create_dir(target.join("a")).unwrap();
        std::fs::create_dir(target.join("b")).unwrap();
        let md = |n: &str| root.symlink_metadata(n).unwrap();
        {
            let j = Journal::open(Some(&jd), &root, &target).unwrap();
            j.note(&[b"a".to_vec()], Some((md("a").dev(), md("a").ino())));
            j.note(&[b"b".to_vec()], Some((md("b").dev(), md("b").ino())));
        }
        // A record cut short by a kill.
        let journal = std::fs::read_dir(&jd)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap();
        f.write_all(&[b'C', 200, 0, 0, 0, b'x']).unwrap();
        // "b" replaced by another folder since (made while "b" still exists, so that the
        // filesystem cannot hand it the same inode number).
        std::fs::create_dir(target.join("x")).unwrap();
        std::fs::remove_dir(target.join("b")).unwrap();
        std::fs::rename(target.join("x"), target.join("b")).unwrap();
        let j = Journal::open(Some(&jd), &root, &target).unwrap();
        assert!(j.created_earlier(&[b"a".to_vec()], &md("a")));
        assert!(!j.created_earlier(&[b"b".to_vec()], &md("b")));
        j.finish();
        assert_eq!(std::fs::read_dir(&jd).unwrap().count(), 0);
    }

    /// Regression: a kill between `mkdir` and the `C` record left a 0700 folder no record named,
    /// and the re-run kept it 0700 (often: a `mkdir` on a slow filesystem is most of the window).
    #[test]
    fn a_folder_a_killed_run_was_about_to_create_is_its_own_if_it_looks_as_made() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, root, jd) = setup();
        let target = dir.path().join("target");
        {
            let j = Journal::open(Some(&jd), &root, &target).unwrap();
            j.note_pending(&[b"made".to_vec()]);
            j.note_pending(&[b"changed".to_vec()]);
        }
        for n in ["made", "changed"] {
            std::fs::create_dir(target.join(n)).unwrap();
            std::fs::set_permissions(target.join(n), std::fs::Permissions::from_mode(0o700))
                .unwrap();
        }
        // Someone opened it up since: not as restore makes folders.
        std::fs::set_permissions(
            target.join("changed"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let md = |n: &str| root.symlink_metadata(n).unwrap();
        let j = Journal::open(Some(&jd), &root, &target).unwrap();
        assert!(j.created_earlier(&[b"made".to_vec()], &md("made")));
        assert!(!j.created_earlier(&[b"changed".to_vec()], &md("changed")));
        assert!(!j.created_earlier(&[b"other".to_vec()], &md("made")));
    }

    #[test]
    fn a_second_restore_into_the_same_target_is_refused() {
        let (dir, root, jd) = setup();
        let target = dir.path().join("target");
        let _j = Journal::open(Some(&jd), &root, &target).unwrap();
        let e = Journal::open(Some(&jd), &root, &target)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("another restore"), "{e}");
    }

    #[test]
    fn temporaries_of_an_earlier_run_are_removed_and_nothing_else() {
        let (dir, root, jd) = setup();
        let target = dir.path().join("target");
        std::fs::create_dir(target.join("a")).unwrap();
        for n in [
            ".vault-restore-0123abcd.tmp",
            ".vault-restore-mine.tmp",
            ".vault-restore-myphotos.tmp",
            "photo.jpg",
        ] {
            std::fs::write(target.join("a").join(n), b"x").unwrap();
        }
        Journal::open(Some(&jd), &root, &target)
            .unwrap()
            .note(&[b"a".to_vec()], None);
        drop(Journal::open(Some(&jd), &root, &target).unwrap());
        let mut left: Vec<String> = std::fs::read_dir(target.join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".vault-restore-mine.tmp",
                ".vault-restore-myphotos.tmp",
                "photo.jpg"
            ]
        );
    }
}
