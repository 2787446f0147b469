//! Stable 64-bit hashing of request keys and endpoint identities.
//!
//! Consistent hashing only works if every gateway instance, on every platform and after every
//! upgrade, maps a key to the same number, so the hash is written out here (FNV-1a followed by
//! the MurmurHash3 64-bit finaliser) rather than taken from `std`, whose `Hasher` output may
//! change between releases. The finaliser gives FNV's weak low bits full avalanche, which matters
//! because Maglev reduces hashes modulo a prime and the ring sorts them.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `bytes` to a `u64` that is stable across runs, platforms and releases.
///
/// Feed it the consistent-hashing key (a header value, cookie or client IP) and pass the result
/// as [`PickContext::hash`](crate::PickContext::hash).
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_releases() {
        // Pinned values: changing them reshuffles every consistent-hashing deployment.
        assert_eq!(hash_key(b""), fmix64(FNV_OFFSET));
        assert_eq!(hash_key(b"a"), fmix64(0xaf63_dc4c_8601_ec8c));
        assert_eq!(hash_key(b"foobar"), fmix64(0x8594_4171_f739_67e8));
    }

    #[test]
    fn similar_keys_hash_far_apart() {
        let a = hash_key(b"user-1");
        let b = hash_key(b"user-2");
        assert!((a ^ b).count_ones() > 16, "{a:x} vs {b:x}");
    }
}
