//! Realistic, compressible record payloads: rows of text, not random bytes.

/// A payload of exactly `len` bytes for record `lsn`: repeated CSV-like rows.
pub fn row_payload(lsn: u64, len: usize) -> Vec<u8> {
    let row = format!(
        "{lsn},customer-{:05},order,{:08},shipped,2026-11-29T04:{:02}:00Z\n",
        lsn % 50_000,
        lsn * 7 % 99_999_999,
        lsn % 60
    );
    row.into_bytes().into_iter().cycle().take(len).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn payloads_have_the_asked_length_and_differ_by_lsn() {
        assert_eq!(super::row_payload(1, 1024).len(), 1024);
        assert_ne!(super::row_payload(1, 64), super::row_payload(2, 64));
    }
}
