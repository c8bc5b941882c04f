//! WAL positions as PostgreSQL prints them (`16/B374D848`) and as numbers, and the names of
//! the WAL segment files that hold them (`000000010000001600000000`).

/// Parses `X/Y` (hex halves) into a byte position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Segments per 4 GiB "log id", the middle part of a segment file's name.
fn segments_per_id(segment_size: u64) -> u64 {
    0x1_0000_0000u64 / segment_size
}

/// The file name of WAL segment number `segno` (the segment holding `lsn` is
/// `lsn / segment_size`) on timeline `timeline`, for segments of `segment_size` bytes.
pub fn wal_file_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per_id = segments_per_id(segment_size);
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// `(timeline, segment number)` of a WAL segment file name (24 hex digits); `None` for any
/// other name (`00000002.history`, `….partial`).
pub fn parse_wal_file_name(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..], 16).ok()?;
    Some((tli, log * segments_per_id(segment_size) + seg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("0/3000028"), Some(0x300_0028));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(parse_lsn("1/XYZ"), None);
        assert_eq!(parse_lsn("100000000/0"), None, "a half is 32 bits");
    }

    #[test]
    fn segment_file_names() {
        let mb16 = 16 * 1024 * 1024;
        assert_eq!(
            wal_file_name(1, 0x300_0028 / mb16, mb16),
            "000000010000000000000003"
        );
        assert_eq!(
            wal_file_name(2, (1u64 << 32) / mb16 + 5, mb16),
            "000000020000000100000005"
        );
        assert_eq!(
            parse_wal_file_name("000000020000000100000005", mb16),
            Some((2, 256 + 5))
        );
        // 64 MiB segments: 64 of them per log id.
        let mb64 = 64 * 1024 * 1024;
        assert_eq!(wal_file_name(3, 64 + 2, mb64), "000000030000000100000002");
        assert_eq!(
            parse_wal_file_name("000000030000000100000002", mb64),
            Some((3, 66))
        );
        assert_eq!(parse_wal_file_name("00000002.history", mb16), None);
        assert_eq!(
            parse_wal_file_name("000000020000000100000005.partial", mb16),
            None
        );
        assert_eq!(parse_wal_file_name("00000002000000010000000G", mb16), None);
        for segno in [0, 1, 255, 256, 70_000] {
            let name = wal_file_name(7, segno, mb16);
            assert_eq!(parse_wal_file_name(&name, mb16), Some((7, segno)));
        }
    }
}
