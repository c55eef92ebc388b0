//! MD5 and BLAKE3 of many short messages at once, one message per SIMD lane.
//!
//! A chunk hashes the content of every item it holds ([`crate::item_hash::content_hash`], for
//! the unchanged-item lookup) and digests every catalog row it writes
//! ([`crate::item_hash::catalog_digest`]): ~11,000 messages of 400–1,200 bytes per chunk, and
//! the two hashes were a quarter of the worker's CPU. One hash is a chain of dependent steps
//! over 64-byte blocks, so it keeps the vector units idle; eight independent messages fill
//! them, each in its own 32-bit lane of an AVX2 register, going through the same steps.
//! Messages are grouped by length so that a group's lanes finish together.
//!
//! Without AVX2 (or off x86-64), each message goes through the `md-5` or `blake3` crate, as does
//! a BLAKE3 message longer than one BLAKE3 chunk (1,024 bytes: the lanes do not build the
//! tree). Property tests hold the lanes to those crates.

use md5::{Digest as _, Md5};

/// The MD5 digest of each message, in order.
pub fn md5_many(messages: &[&[u8]]) -> Vec<[u8; 16]> {
    let one = |message: &[u8]| Md5::digest(message).into();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return in_lanes(messages, usize::MAX, one, |lanes| {
            // SAFETY: AVX2 is available, as checked above.
            unsafe { x86::md5_x8(lanes) }
        });
    }
    messages.iter().map(|message| one(message)).collect()
}

/// The BLAKE3 hash of each message, in order.
pub fn blake3_many(messages: &[&[u8]]) -> Vec<[u8; 32]> {
    let one = |message: &[u8]| *blake3::hash(message).as_bytes();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return in_lanes(messages, x86::BLAKE3_CHUNK, one, |lanes| {
            // SAFETY: AVX2 is available, as checked above; `in_lanes` passes no message
            // longer than a chunk.
            unsafe { x86::blake3_x8(lanes) }
        });
    }
    messages.iter().map(|message| one(message)).collect()
}

/// Hashes groups of eight messages of similar length with `x8`, and each message longer than
/// `longest` with `one`.
#[cfg(target_arch = "x86_64")]
fn in_lanes<const N: usize>(
    messages: &[&[u8]],
    longest: usize,
    one: impl Fn(&[u8]) -> [u8; N],
    x8: impl Fn(&[&[u8]; x86::LANES]) -> [[u8; N]; x86::LANES],
) -> Vec<[u8; N]> {
    let mut digests = vec![[0u8; N]; messages.len()];
    let mut by_length: Vec<usize> = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        if message.len() <= longest {
            by_length.push(i);
        } else {
            digests[i] = one(message);
        }
    }
    by_length.sort_unstable_by_key(|&i| messages[i].len());
    for group in by_length.chunks(x86::LANES) {
        let mut lanes: [&[u8]; x86::LANES] = [&[]; x86::LANES];
        for (lane, &i) in lanes.iter_mut().zip(group) {
            *lane = messages[i];
        }
        for (&i, digest) in group.iter().zip(x8(&lanes)) {
            digests[i] = digest;
        }
    }
    digests
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub const LANES: usize = 8;

    const INIT: [u32; 4] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476];

    /// The sine table of RFC 1321.
    #[rustfmt::skip]
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
        0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
        0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
        0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
        0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
        0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
        0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
    ];

    /// A lane's message as 64-byte blocks: its whole blocks, then one or two padded ones.
    struct Padded<'a> {
        message: &'a [u8],
        whole: usize,
        blocks: usize,
        tail: [u8; 128],
    }

    impl<'a> Padded<'a> {
        fn new(message: &'a [u8]) -> Self {
            let whole = message.len() / 64;
            // The 0x80 byte and the 8-byte bit length follow the message.
            let blocks = (message.len() + 9).div_ceil(64);
            let mut tail = [0u8; 128];
            let rest = &message[whole * 64..];
            tail[..rest.len()].copy_from_slice(rest);
            tail[rest.len()] = 0x80;
            let end = (blocks - whole) * 64;
            tail[end - 8..end].copy_from_slice(&((message.len() as u64) << 3).to_le_bytes());
            Self {
                message,
                whole,
                blocks,
                tail,
            }
        }

        /// Block `j`; past the message's last block, any block (the lane's result is taken
        /// already).
        fn block(&self, j: usize) -> &[u8] {
            if j < self.whole {
                &self.message[j * 64..j * 64 + 64]
            } else {
                let at = (j - self.whole).min(1) * 64;
                &self.tail[at..at + 64]
            }
        }
    }

    macro_rules! add {
        ($x:expr, $y:expr) => {
            _mm256_add_epi32($x, $y)
        };
    }
    /// Rotates each lane left by `$s` bits (BLAKE3 rotates right by `32 - $s`).
    macro_rules! rotl {
        ($x:expr, $s:expr) => {{
            let x = $x;
            _mm256_or_si256(
                _mm256_slli_epi32::<{ $s }>(x),
                _mm256_srli_epi32::<{ 32 - ($s) }>(x),
            )
        }};
    }
    macro_rules! f {
        ($x:expr, $y:expr, $z:expr) => {
            _mm256_xor_si256($z, _mm256_and_si256($x, _mm256_xor_si256($y, $z)))
        };
    }
    macro_rules! g {
        ($x:expr, $y:expr, $z:expr) => {
            _mm256_xor_si256($y, _mm256_and_si256($z, _mm256_xor_si256($x, $y)))
        };
    }
    macro_rules! h {
        ($x:expr, $y:expr, $z:expr) => {
            _mm256_xor_si256($x, _mm256_xor_si256($y, $z))
        };
    }
    macro_rules! i {
        ($x:expr, $y:expr, $z:expr) => {
            _mm256_xor_si256(
                $y,
                _mm256_or_si256($x, _mm256_xor_si256($z, _mm256_set1_epi32(-1))),
            )
        };
    }
    /// One step: `a = b + rotl(a + fun(b, c, d) + K[n] + M[word], s)`.
    macro_rules! step {
        ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:ident, $n:expr, $word:expr, $s:literal) => {
            $a = add!(
                $b,
                rotl!(
                    add!(
                        add!($a, $fun!($b, $c, $d)),
                        add!(_mm256_set1_epi32(K[$n] as i32), $m[$word])
                    ),
                    $s
                )
            );
        };
    }

    /// The sixteen steps of one of the four functions, from step `$first`; step `n` takes the
    /// message word `$word(n)`, and the shifts repeat every four steps.
    macro_rules! round {
        ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:ident, $first:literal, $word:expr,
         $s0:literal, $s1:literal, $s2:literal, $s3:literal) => {
            let word = $word;
            for q in 0..4 {
                let n = $first + 4 * q;
                step!($fun, $a, $b, $c, $d, $m, n, word(n), $s0);
                step!($fun, $d, $a, $b, $c, $m, n + 1, word(n + 1), $s1);
                step!($fun, $c, $d, $a, $b, $m, n + 2, word(n + 2), $s2);
                step!($fun, $b, $c, $d, $a, $m, n + 3, word(n + 3), $s3);
            }
        };
    }

    /// MD5 of eight messages, one per lane.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn md5_x8(messages: &[&[u8]; LANES]) -> [[u8; 16]; LANES] {
        let padded: [Padded<'_>; LANES] = std::array::from_fn(|lane| Padded::new(messages[lane]));
        let most = padded.iter().map(|p| p.blocks).max().unwrap_or(0);
        let mut state = INIT.map(|word| _mm256_set1_epi32(word as i32));
        let mut digests = [[0u8; 16]; LANES];
        let mut words = [[0u32; LANES]; 16];
        for j in 0..most {
            for (lane, p) in padded.iter().enumerate() {
                for (k, word) in p.block(j).chunks_exact(4).enumerate() {
                    words[k][lane] = u32::from_le_bytes(word.try_into().expect("4 bytes"));
                }
            }
            // SAFETY: each row of `words` is 8 u32s, 32 bytes; unaligned loads.
            let m: [__m256i; 16] =
                std::array::from_fn(|k| unsafe { _mm256_loadu_si256(words[k].as_ptr().cast()) });
            let [mut a, mut b, mut c, mut d] = state;
            round!(f, a, b, c, d, m, 0, |n| n, 7, 12, 17, 22);
            round!(g, a, b, c, d, m, 16, |n| (5 * n + 1) % 16, 5, 9, 14, 20);
            round!(h, a, b, c, d, m, 32, |n| (3 * n + 5) % 16, 4, 11, 16, 23);
            round!(i, a, b, c, d, m, 48, |n| (7 * n) % 16, 6, 10, 15, 21);
            state = [
                add!(state[0], a),
                add!(state[1], b),
                add!(state[2], c),
                add!(state[3], d),
            ];
            if padded.iter().any(|p| p.blocks == j + 1) {
                let mut lanes = [[0u32; LANES]; 4];
                for (out, v) in lanes.iter_mut().zip(state) {
                    // SAFETY: `out` is 8 u32s, 32 bytes; an unaligned store.
                    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
                }
                for (lane, p) in padded.iter().enumerate() {
                    if p.blocks == j + 1 {
                        for (w, word) in lanes.iter().enumerate() {
                            digests[lane][4 * w..4 * w + 4]
                                .copy_from_slice(&word[lane].to_le_bytes());
                        }
                    }
                }
            }
        }
        digests
    }

    /// The longest message one BLAKE3 chunk holds: a longer one is a tree of chunks.
    pub const BLAKE3_CHUNK: usize = 1024;

    const BLAKE3_IV: [u32; 8] = [
        0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
        0x5BE0CD19,
    ];
    const CHUNK_START: u32 = 1;
    const CHUNK_END: u32 = 2;
    const ROOT: u32 = 8;

    /// The message word each round's `G` calls take: round `r + 1` permutes round `r`'s.
    const SCHEDULE: [[usize; 16]; 7] = {
        const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
        let mut schedule = [[0; 16]; 7];
        let mut i = 0;
        while i < 16 {
            schedule[0][i] = i;
            i += 1;
        }
        let mut r = 1;
        while r < 7 {
            let mut i = 0;
            while i < 16 {
                schedule[r][i] = schedule[r - 1][PERMUTATION[i]];
                i += 1;
            }
            r += 1;
        }
        schedule
    };

    macro_rules! quarter {
        ($v:ident, $a:literal, $b:literal, $c:literal, $d:literal, $x:expr, $y:expr) => {
            $v[$a] = add!(add!($v[$a], $v[$b]), $x);
            $v[$d] = rotl!(_mm256_xor_si256($v[$d], $v[$a]), 32 - 16);
            $v[$c] = add!($v[$c], $v[$d]);
            $v[$b] = rotl!(_mm256_xor_si256($v[$b], $v[$c]), 32 - 12);
            $v[$a] = add!(add!($v[$a], $v[$b]), $y);
            $v[$d] = rotl!(_mm256_xor_si256($v[$d], $v[$a]), 32 - 8);
            $v[$c] = add!($v[$c], $v[$d]);
            $v[$b] = rotl!(_mm256_xor_si256($v[$b], $v[$c]), 32 - 7);
        };
    }

    /// BLAKE3 of eight messages of at most one chunk each, one per lane: the chunk's blocks
    /// compressed in turn, the last one as the root.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    ///
    /// # Panics
    /// If a message is longer than [`BLAKE3_CHUNK`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn blake3_x8(messages: &[&[u8]; LANES]) -> [[u8; 32]; LANES] {
        assert!(messages.iter().all(|m| m.len() <= BLAKE3_CHUNK));
        let blocks: [usize; LANES] = messages.map(|m| m.len().div_ceil(64).max(1));
        let most = blocks.iter().copied().max().unwrap_or(1);
        let mut cv = BLAKE3_IV.map(|word| _mm256_set1_epi32(word as i32));
        let mut digests = [[0u8; 32]; LANES];
        let mut words = [[0u32; LANES]; 16];
        let (mut lengths, mut flags) = ([0u32; LANES], [0u32; LANES]);
        for j in 0..most {
            for lane in 0..LANES {
                let message = messages[lane];
                let start = (j * 64).min(message.len());
                let bytes = &message[start..(start + 64).min(message.len())];
                let mut block = [0u8; 64];
                block[..bytes.len()].copy_from_slice(bytes);
                for (k, word) in block.chunks_exact(4).enumerate() {
                    words[k][lane] = u32::from_le_bytes(word.try_into().expect("4 bytes"));
                }
                lengths[lane] = bytes.len() as u32;
                flags[lane] = if j == 0 { CHUNK_START } else { 0 }
                    | if j + 1 == blocks[lane] {
                        CHUNK_END | ROOT
                    } else {
                        0
                    };
            }
            // SAFETY: each row of `words`, `lengths` and `flags` is 8 u32s, 32 bytes; unaligned
            // loads.
            let m: [__m256i; 16] =
                std::array::from_fn(|k| unsafe { _mm256_loadu_si256(words[k].as_ptr().cast()) });
            let mut v = [
                cv[0],
                cv[1],
                cv[2],
                cv[3],
                cv[4],
                cv[5],
                cv[6],
                cv[7],
                _mm256_set1_epi32(BLAKE3_IV[0] as i32),
                _mm256_set1_epi32(BLAKE3_IV[1] as i32),
                _mm256_set1_epi32(BLAKE3_IV[2] as i32),
                _mm256_set1_epi32(BLAKE3_IV[3] as i32),
                // The chunk counter (0: each message is the first chunk), low and high words.
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
                unsafe { _mm256_loadu_si256(lengths.as_ptr().cast()) },
                unsafe { _mm256_loadu_si256(flags.as_ptr().cast()) },
            ];
            for s in &SCHEDULE {
                quarter!(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
                quarter!(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
                quarter!(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
                quarter!(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
                quarter!(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
                quarter!(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
                quarter!(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
                quarter!(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
            }
            cv = std::array::from_fn(|i| _mm256_xor_si256(v[i], v[i + 8]));
            if blocks.contains(&(j + 1)) {
                let mut lanes = [[0u32; LANES]; 8];
                for (out, word) in lanes.iter_mut().zip(cv) {
                    // SAFETY: `out` is 8 u32s, 32 bytes; an unaligned store.
                    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), word) };
                }
                for lane in (0..LANES).filter(|&lane| blocks[lane] == j + 1) {
                    for (w, word) in lanes.iter().enumerate() {
                        digests[lane][4 * w..4 * w + 4].copy_from_slice(&word[lane].to_le_bytes());
                    }
                }
            }
        }
        digests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_by_one(messages: &[&[u8]]) -> Vec<[u8; 16]> {
        messages.iter().map(|m| Md5::digest(m).into()).collect()
    }

    #[test]
    fn every_length_around_the_padding_boundaries() {
        let bytes: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        let messages: Vec<&[u8]> = (0..=300).map(|len| &bytes[..len]).collect();
        assert_eq!(md5_many(&messages), one_by_one(&messages));
        assert_eq!(
            hex::encode(md5_many(&[b"abc"])[0]),
            "900150983cd24fb0d6963f7d28e17f72",
            "RFC 1321's test vector"
        );
        assert!(md5_many(&[]).is_empty());
    }

    #[test]
    fn blake3_every_length_up_to_two_chunks() {
        let bytes: Vec<u8> = (0..2100u32).map(|i| (i * 13 + 5) as u8).collect();
        let messages: Vec<&[u8]> = (0..=2050).map(|len| &bytes[..len]).collect();
        let expected: Vec<[u8; 32]> = messages
            .iter()
            .map(|m| *blake3::hash(m).as_bytes())
            .collect();
        assert_eq!(blake3_many(&messages), expected);
        assert!(blake3_many(&[]).is_empty());
    }

    proptest::proptest! {
        /// Any mix of lengths, in any order, in groups of any size.
        #[test]
        fn lanes_agree_with_one_message_at_a_time(
            messages in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1_300), 0..40),
        ) {
            let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(md5_many(&messages), one_by_one(&messages));
            let blake3: Vec<[u8; 32]> =
                messages.iter().map(|m| *blake3::hash(m).as_bytes()).collect();
            proptest::prop_assert_eq!(blake3_many(&messages), blake3);
        }
    }
}
