//! Partitions on the wire: how many a topic may have, and where a key goes.
//!
//! A key lands on the same partition number here as on Kafka: Kafka's default partitioner
//! takes the 32-bit murmur2 hash of the key's bytes (its `Utils.murmur2`, seed `0x9747b28c`),
//! makes it positive by clearing the sign bit (`Utils.toPositive`), and takes it modulo the
//! partition count. So a producer moving from Kafka keeps every key's partition, and the
//! per-key order that rests on it.

/// The most partitions a topic may have (at creation or by growing).
pub const MAX_PARTITIONS: u32 = 10_000;

/// Kafka's murmur2: the 32-bit MurmurHash2 of `data` with seed `0x9747b28c`, reading 4-byte
/// little-endian words, as `org.apache.kafka.common.utils.Utils.murmur2` computes it.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka hashes with the length as a Java int; a key is far below 2^31 bytes, and the
    // truncation of a longer one is what Java's would be too.
    #[allow(clippy::cast_possible_truncation)]
    let mut h = SEED ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner gives `key` among `partitions` (at least 1):
/// `toPositive(murmur2(key)) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own vectors, from `UtilsTest.testMurmur2` (the hash as a Java `int`).
    #[test]
    fn murmur2_hashes_as_kafka_does() {
        let vectors: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (key, java) in vectors {
            #[allow(clippy::cast_possible_wrap)]
            let hash = murmur2(key) as i32;
            assert_eq!(hash, java, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn keys_go_where_kafka_puts_them() {
        // toPositive(-790332482) = 1357151166, and 1357151166 % 50 = 16.
        assert_eq!(partition_for_key(b"foobar", 50), 16);
        assert_eq!(partition_for_key(b"foobar", 1), 0);
        for key in [&b""[..], b"k", b"user-42", &[0xff; 37]] {
            for partitions in [1, 2, 3, 6, 32, MAX_PARTITIONS] {
                assert!(partition_for_key(key, partitions) < partitions);
            }
        }
        // A count of 0 never divides by zero.
        assert_eq!(partition_for_key(b"foobar", 0), 0);
    }
}
