//! The operating system's random generator, the only source of randomness (keys, nonces,
//! object names, pack choice): below every other module, so that ids and crypto need not
//! depend on each other.

/// Fill `buf` from the operating system's random generator.
pub fn fill_random(buf: &mut [u8]) {
    // The OS generator failing is not recoverable and must never yield predictable keys.
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random generator failed: {e}");
    }
}

/// A uniformly random integer below `n` (n > 0).
pub fn random_below(n: usize) -> usize {
    let mut b = [0u8; 8];
    fill_random(&mut b);
    (u64::from_le_bytes(b) % n as u64) as usize
}
