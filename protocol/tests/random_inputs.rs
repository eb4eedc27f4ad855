//! Every decoder, fed a few hundred thousand random and mutated inputs on stable Rust: the same
//! properties the cargo-fuzz targets check (`protocol/fuzz/src/checks.rs`), so CI exercises them
//! without a fuzzer. The seed is fixed for reproducibility; set `BOREALIS_RANDOM_SEED` to explore.

mod support;

#[path = "../fuzz/src/checks.rs"]
mod checks;

use protocol::patch::{self, PatchEdit};
use protocol::{frame_bytes, Epoch};
use rand::rngs::SmallRng;
use rand::Rng;

const INPUTS_PER_DECODER: usize = 100_000;

fn seed() -> u64 {
    std::env::var("BOREALIS_RANDOM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed)
}

/// Flips bits, overwrites bytes with boundary values, truncates or extends `input`.
fn mutate(rng: &mut SmallRng, input: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..5) {
            0 if !input.is_empty() => {
                let i = rng.random_range(0..input.len());
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !input.is_empty() => {
                let i = rng.random_range(0..input.len());
                input[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.random_range(0..5)];
            }
            2 => input.truncate(rng.random_range(0..=input.len())),
            3 => input.extend((0..rng.random_range(1..16)).map(|_| rng.random::<u8>())),
            _ if input.len() >= 4 => {
                let i = rng.random_range(0..input.len() - 3);
                input[i..i + 4].copy_from_slice(&rng.random::<u32>().to_le_bytes());
            }
            _ => {}
        }
    }
}

fn random_bytes(rng: &mut SmallRng) -> Vec<u8> {
    (0..rng.random_range(0..300)).map(|_| rng.random()).collect()
}

/// Runs `check` on random inputs and on mutations of inputs from `valid`.
fn hammer(salt: u64, valid: impl Fn(&mut SmallRng) -> Vec<u8>, check: fn(&[u8])) {
    let mut rng = support::rng(seed() ^ salt);
    for i in 0..INPUTS_PER_DECODER {
        let mut input = if i % 4 == 0 { random_bytes(&mut rng) } else { valid(&mut rng) };
        if i % 8 != 1 {
            mutate(&mut rng, &mut input);
        }
        check(&input);
    }
}

/// Prefixes a mode byte: odd asks the check to fix up checksums after mutation.
fn with_mode(rng: &mut SmallRng, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![rng.random::<u8>()];
    out.extend_from_slice(bytes);
    out
}

#[test]
fn frame_decoder_survives_random_and_mutated_frames() {
    hammer(
        1,
        |rng| {
            let message = support::message(rng, 200);
            let frame = frame_bytes(&message).unwrap();
            with_mode(rng, &frame)
        },
        checks::check_frame,
    );
}

#[test]
fn message_body_decoders_survive_random_and_mutated_bodies() {
    hammer(
        2,
        |rng| {
            let message = support::message(rng, 200);
            let frame = frame_bytes(&message).unwrap();
            let mut out = vec![message.type_code()];
            out.extend_from_slice(&frame[protocol::frame::FRAME_HEADER_BYTES..]);
            out
        },
        checks::check_message_body,
    );
}

#[test]
fn record_decoder_survives_random_and_mutated_records() {
    hammer(
        3,
        |rng| {
            let record = support::record_chain(rng, 1, Epoch(1), 200).remove(0);
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            with_mode(rng, &bytes)
        },
        checks::check_record,
    );
}

#[test]
fn patch_parser_survives_random_and_mutated_patches() {
    hammer(
        4,
        |rng| {
            let data: Vec<Vec<u8>> =
                (0..rng.random_range(1..5)).map(|_| vec![7u8; rng.random_range(1..64)]).collect();
            let edits: Vec<PatchEdit<'_>> =
                data.iter().map(|d| PatchEdit { offset: rng.random_range(0..4100), data: d }).collect();
            patch::encode(&edits).unwrap().to_vec()
        },
        checks::check_patch,
    );
}
