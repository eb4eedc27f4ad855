//! The machine's CPU ceilings for the data path, measured on the spot: AES-256-GCM sealing
//! and CRC32C over buffers of a given size, on one core.

use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

/// Bytes per second one core seals with AES-256-GCM, in `block_bytes` blocks.
pub fn aes_gcm_bytes_per_s(block_bytes: usize, duration: Duration) -> f64 {
    let cipher = Aes256Gcm::new(&[7u8; 32].into());
    let mut block = vec![0x5au8; block_bytes];
    let mut nonce = [0u8; 12];
    let mut counter = 0u64;
    rate(block_bytes, duration, || {
        counter += 1;
        nonce[..8].copy_from_slice(&counter.to_le_bytes());
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), b"borealis", block.as_mut_slice().into())
            .expect("a block under the AES-GCM length limit");
        std::hint::black_box(tag);
    })
}

/// Bytes per second one core checksums with CRC32C, in `block_bytes` blocks.
pub fn crc32c_bytes_per_s(block_bytes: usize, duration: Duration) -> f64 {
    let block = vec![0x5au8; block_bytes];
    rate(block_bytes, duration, || {
        std::hint::black_box(crc32c::crc32c(std::hint::black_box(&block)));
    })
}

/// Runs `once` repeatedly for `duration`; returns `block_bytes` per run per second.
fn rate(block_bytes: usize, duration: Duration, mut once: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < duration {
        for _ in 0..16 {
            once();
        }
        runs += 16;
    }
    runs as f64 * block_bytes as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_ceilings_measure_some_throughput() {
        let d = std::time::Duration::from_millis(20);
        assert!(super::aes_gcm_bytes_per_s(4096, d) > 1e6);
        assert!(super::crc32c_bytes_per_s(4096, d) > 1e6);
    }
}
