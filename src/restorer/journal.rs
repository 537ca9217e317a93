//! The restore journal: a small file in the target that lists the folders a restore created
//! and the folders it wrote temporary files into, so that running the same command again after
//! a kill finishes the job: folders it made get their recorded mode (not the private 0700 they
//! were made with) and its temporary files are removed. Removed when a run completes.
//!
//! Records, appended one `write` each (a kill leaves at most the last one torn): one byte
//! (`C`: created by a restore, `E`: entered, temporary files may be in it), a u32 LE length,
//! then the folder's path below the target, components joined by `/` (each already checked by
//! `safe_name`, so none holds a `/`).

use super::{safe_name, Error, Result};
use cap_std::fs::{Dir, OpenOptions};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

/// The journal's name in the target folder.
pub const JOURNAL_NAME: &str = ".vault-restore-journal";

/// A journal larger than this is not read (it lists folders; a restore of a million folders
/// of 64-byte paths writes 70 MB): the run then treats every folder as the user's own.
const MAX_JOURNAL: u64 = 256 << 20;

/// Longest path a record may hold.
const MAX_RECORD: usize = 64 * 1024;

/// The prefix and suffix of the temporary names restore writes files under.
pub const TMP_PREFIX: &str = ".vault-restore-";
pub const TMP_SUFFIX: &str = ".tmp";

pub struct Journal {
    file: Mutex<std::fs::File>,
    /// Folders an earlier, unfinished run created (true) or only entered (false).
    earlier: HashMap<Vec<u8>, bool>,
}

impl Journal {
    /// Open (or create) the journal in `root`, locked against a second restore into the same
    /// target, and clear what an earlier run left: temporary files in the folders it lists.
    pub fn open(root: &Dir, target: &std::path::Path) -> Result<Journal> {
        let mut opts = OpenOptions::new();
        opts.read(true).append(true).create(true);
        let f = cap_fs_ext::OpenOptionsFollowExt::follow(&mut opts, cap_fs_ext::FollowSymlinks::No);
        let file = root
            .open_with(JOURNAL_NAME, f)
            .map_err(|e| Error::io(format!("cannot open {}", target.display()), e))?
            .into_std();
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
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
            file: Mutex::new(file),
            earlier,
        })
    }

    /// Whether an earlier run of a restore into this target created the folder.
    pub fn created_earlier(&self, path: &[Vec<u8>]) -> bool {
        self.earlier.get(&join(path)).copied().unwrap_or(false)
    }

    /// Note a folder before this run creates it (`created`) or writes into it. Best effort: a
    /// journal that cannot be written costs only the repair of a later re-run.
    pub fn note(&self, path: &[Vec<u8>], created: bool) {
        let p = join(path);
        if !created && self.earlier.contains_key(&p) {
            return;
        }
        let mut rec = Vec::with_capacity(5 + p.len());
        rec.push(if created { b'C' } else { b'E' });
        rec.extend_from_slice(&(p.len() as u32).to_le_bytes());
        rec.extend_from_slice(&p);
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(&rec);
    }

    /// The run finished: nothing is left to repair.
    pub fn finish(self, root: &Dir) {
        let _ = root.remove_file(JOURNAL_NAME);
    }
}

fn join(path: &[Vec<u8>]) -> Vec<u8> {
    path.join(&b'/')
}

/// The records of an earlier run, up to the first torn or implausible one.
fn read_records(file: &std::fs::File) -> HashMap<Vec<u8>, bool> {
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
        if !matches!(kind, b'C' | b'E') || len > MAX_RECORD || rest.len() < 5 + len {
            break;
        }
        let p = rest[5..5 + len].to_vec();
        rest = &rest[5 + len..];
        let created = out.entry(p).or_insert(false);
        *created |= kind == b'C';
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
    b.starts_with(TMP_PREFIX.as_bytes())
        && b.ends_with(TMP_SUFFIX.as_bytes())
        && b.len() == TMP_PREFIX.len() + 8 + TMP_SUFFIX.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_torn_end_and_flags_merge() {
        let dir = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        {
            let j = Journal::open(&root, dir.path()).unwrap();
            j.note(&[b"a".to_vec()], false);
            j.note(&[b"a".to_vec(), b"b".to_vec()], true);
            j.note(&[b"a".to_vec()], true);
        }
        // A record cut short by a kill.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_NAME))
            .unwrap();
        f.write_all(&[b'C', 200, 0, 0, 0, b'x']).unwrap();
        let j = Journal::open(&root, dir.path()).unwrap();
        assert!(j.created_earlier(&[b"a".to_vec()]));
        assert!(j.created_earlier(&[b"a".to_vec(), b"b".to_vec()]));
        assert!(!j.created_earlier(&[b"c".to_vec()]));
        assert_eq!(j.earlier.len(), 2);
    }

    #[test]
    fn a_second_restore_into_the_same_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let _j = Journal::open(&root, dir.path()).unwrap();
        let e = Journal::open(&root, dir.path()).err().unwrap().to_string();
        assert!(e.contains("another restore"), "{e}");
    }

    #[test]
    fn temporaries_of_an_earlier_run_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        for n in [
            ".vault-restore-0123abcd.tmp",
            ".vault-restore-mine.tmp",
            "photo.jpg",
        ] {
            std::fs::write(dir.path().join("a").join(n), b"x").unwrap();
        }
        let root = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        Journal::open(&root, dir.path())
            .unwrap()
            .note(&[b"a".to_vec()], false);
        drop(Journal::open(&root, dir.path()).unwrap());
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".vault-restore-mine.tmp", "photo.jpg"]);
    }
}
