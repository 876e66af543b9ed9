//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data` as 16-bit big-endian words, not yet folded.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 48) + ((w >> 32) & 0xffff) + ((w >> 16) & 0xffff) + (w & 0xffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit sum into 16 bits (without complementing).
pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum field value for `data` (checksum field itself zeroed or included: a packet whose
/// checksum is right sums to 0xffff, so `finish(sum(pkt)) == 0`).
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// Sum of the IPv4 pseudo header (RFC 793 §3.1, RFC 768).
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    sum(&src) + sum(&dst) + u32::from(proto) + u32::from(len)
}

/// Sum of the IPv6 pseudo header (RFC 8200 §8.1).
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], proto: u8, len: u32) -> u32 {
    sum(&src) + sum(&dst) + (len >> 16) + (len & 0xffff) + u32::from(proto)
}

/// Updates checksum `check` after a 16-bit word changed from `old` to `new` (RFC 1624 eq. 3).
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// Updates checksum `check` after the bytes `old` (even length) became `new`.
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let inv_old = 0xffff * (old.len() as u32 / 2) - sum(old);
    !fold(u32::from(!check) + fold(inv_old) as u32 + fold(sum(new)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_update_equals_recomputation() {
        let mut data = [0x45u8, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let c = finish(sum(&data));
        let old = [data[12], data[13], data[14], data[15]];
        data[12..16].copy_from_slice(&[192, 168, 7, 9]);
        assert_eq!(update_bytes(c, &old, &data[12..16]), finish(sum(&data)));
        let c2 = finish(sum(&data));
        let old16 = u16::from_be_bytes([data[8], data[9]]);
        data[8] = 0x3f;
        assert_eq!(update16(c2, old16, u16::from_be_bytes([data[8], data[9]])), finish(sum(&data)));
    }
}
