//! Step 3 of a move: the local originals read once more and hashed with every repository's key,
//! and whatever changes while being read kept.

use super::*;

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
