//! Step 2 of a move, and `copy --verify`: what a snapshot's trees hold under the move's roots, each
//! file read back from the repository and checked against its whole-file hash; and step 3: the
//! local originals read once more and hashed with every repository's key.

use super::*;

/// Readers follow folders only down to [`MAX_DEPTH`] (a hostile snapshot could nest them
/// without end).
fn too_deep(tree: &Id, path: &Comps) -> Result<()> {
    if path.len() > MAX_DEPTH {
        return Err(Error::corrupt(
            format!("tree {}", tree.short()),
            format!("a folder nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// Every file and symlink under the move's roots, from the snapshot's trees as stored (each tree
/// is read back from the repository, not taken from memory).
pub(super) fn collect(
    repo: &Repository,
    root: &Id,
    roots: &[Comps],
    readers: &mut PackReaders,
) -> Result<HashMap<Comps, Stored>> {
    let mut out = HashMap::new();
    let mut stack: Vec<(Id, Comps)> = vec![(*root, Vec::new())];
    while let Some((t, path)) = stack.pop() {
        too_deep(&t, &path)?;
        let mut cursor = FolderCursor::new(t);
        while let Some(n) = cursor.next(&mut repo.trees(readers))? {
            let mut c = path.clone();
            c.push(n.name.clone());
            let under = roots.iter().any(|r| c.starts_with(r));
            let above = roots.iter().any(|r| r.starts_with(&c) && r.len() > c.len());
            if !under && !above {
                continue;
            }
            match n.kind {
                NodeKind::Dir { subtree } => stack.push((subtree, c)),
                NodeKind::File { blobs, hash } if under => {
                    out.insert(
                        c,
                        Stored {
                            size: n.size,
                            content: StoredContent::File { blobs, hash },
                        },
                    );
                }
                NodeKind::Symlink { target } if under => {
                    out.insert(
                        c,
                        Stored {
                            size: n.size,
                            content: StoredContent::Symlink { target },
                        },
                    );
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Read every file's blobs back from the repository and check the whole-file hash. Adds what
/// verified to `ok`; returns what did not, with the reason.
pub(super) fn read_back(
    repo: &Repository,
    stored: &HashMap<Comps, Stored>,
    threads: usize,
    progress: &Progress,
    ok: &mut HashSet<Comps>,
) -> Result<Vec<(Comps, String)>> {
    let items: Vec<(&Comps, &Stored)> = stored.iter().collect();
    progress
        .total_files
        .store(items.len() as u64, Ordering::Relaxed);
    progress
        .total_bytes
        .store(items.iter().map(|(_, s)| s.size).sum(), Ordering::Relaxed);
    progress.files_done.store(0, Ordering::Relaxed);
    progress.bytes_done.store(0, Ordering::Relaxed);
    let next = AtomicUsize::new(0);
    let good = Mutex::new(Vec::new());
    let bad = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..crate::worker_count(threads) {
            scope.spawn(|| {
                let mut readers = PackReaders::default();
                // One blob buffer per worker, reused: no allocation per chunk read back.
                let mut blob = Vec::new();
                loop {
                    if crate::interrupt::requested() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((c, s)) = items.get(i) else { return };
                    let r = match &s.content {
                        StoredContent::File { blobs, hash } => {
                            let file = (blobs.as_slice(), hash, s.size);
                            verify_file(repo, file, &mut readers, &mut blob, progress)
                        }
                        // The target is in the tree, which was read back already.
                        StoredContent::Symlink { .. } => Ok(()),
                    };
                    progress.files_done.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(()) => good
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((*c).clone()),
                        Err(e) => bad
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(((*c).clone(), e.to_string())),
                    }
                }
            });
        }
    });
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    ok.extend(good.into_inner().unwrap_or_else(|p| p.into_inner()));
    Ok(bad.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn verify_file(
    repo: &Repository,
    (blobs, hash, size): (&[Id], &Id, u64),
    readers: &mut PackReaders,
    data: &mut Vec<u8>,
    progress: &Progress,
) -> Result<()> {
    let mut h = repo.keys().file_hash.hasher();
    let mut total = 0u64;
    for b in blobs {
        repo.read_blob_into(b, BlobType::Data, readers, data)?;
        total += data.len() as u64;
        progress
            .bytes_done
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        h.update(data);
    }
    if total != size || h.finalize() != *hash {
        return Err(Error::corrupt(
            "file",
            "content read back does not match the hash recorded at backup",
        ));
    }
    Ok(())
}

/// Read each local item once, hashing files with every repository's key; what cannot be read,
/// or changes while being read, goes to `kept`.
pub(super) fn read_local(
    items: &[Comps],
    keys: &[Arc<crate::keys::Keys>],
    threads: usize,
    kept: &mut BTreeMap<Comps, String>,
) -> Result<HashMap<Comps, Local>> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(HashMap::new());
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..crate::worker_count(threads) {
            scope.spawn(|| loop {
                if crate::interrupt::requested() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = items.get(i) else { return };
                match read_one(c, keys) {
                    Ok(l) => {
                        out.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(c.clone(), l);
                    }
                    Err(why) => failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((c.clone(), why)),
                }
            });
        }
    });
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    kept.extend(failed.into_inner().unwrap_or_else(|p| p.into_inner()));
    Ok(out.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn read_one(c: &Comps, keys: &[Arc<crate::keys::Keys>]) -> std::result::Result<Local, String> {
    let path = path_of(c);
    let before = std::fs::symlink_metadata(&path).map_err(|e| format!("cannot read: {e}"))?;
    if before.file_type().is_symlink() {
        let target = std::fs::read_link(&path).map_err(|e| format!("cannot read: {e}"))?;
        let after = std::fs::symlink_metadata(&path).map_err(|e| format!("cannot read: {e}"))?;
        if FileStat::of(&before) != FileStat::of(&after) {
            return Err("changed while being verified; run the move again".into());
        }
        return Ok(Local {
            path,
            stat: FileStat::of(&after),
            hashes: Vec::new(),
            target: Some(target.as_os_str().as_bytes().to_vec()),
        });
    }
    if !before.is_file() {
        return Err("no longer a regular file".into());
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let at_open = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    let mut hashers: Vec<_> = keys.iter().map(|k| k.file_hash.hasher()).collect();
    let mut buf = vec![0u8; 1 << 20];
    crate::crypto::hash_reader(&mut f, &mut buf, &mut hashers)
        .map_err(|e| format!("cannot read: {e}"))?;
    let after = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    let stat = FileStat::of(&after);
    if FileStat::of(&at_open) != stat || FileStat::of(&before) != stat {
        return Err("changed while being verified; run the move again".into());
    }
    Ok(Local {
        path,
        stat,
        hashes: hashers.into_iter().map(|h| h.finalize()).collect(),
        target: None,
    })
}

/// Read back from `repo` every file of the snapshot tree `root` under `paths` (absolute, as a
/// snapshot records them): trees, blobs and whole-file hashes. Returns the number of files and
/// symlinks that verified and, for the others, the path and the reason.
pub fn verify_tree(
    repo: &Repository,
    root: &Id,
    paths: &[Vec<u8>],
    threads: usize,
    progress: &Progress,
) -> Result<(u64, Vec<(String, String)>)> {
    let roots: Vec<Comps> = paths
        .iter()
        .map(|p| comps_of(Path::new(OsStr::from_bytes(p))))
        .collect();
    let mut readers = PackReaders::default();
    let stored = collect(repo, root, &roots, &mut readers)?;
    let mut ok = HashSet::new();
    let bad = read_back(repo, &stored, threads, progress, &mut ok)?;
    Ok((
        ok.len() as u64,
        bad.into_iter().map(|(c, e)| (show_path(&c), e)).collect(),
    ))
}
