//! `include/borealis.h` is what cbindgen makes of `src/lib.rs` today: a stale header fails here.
//! `BOREALIS_BLESS=1 cargo test -p borealis-capi --test header` writes it.

use std::path::Path;

#[test]
fn the_committed_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        // The sources alone: no `cargo metadata` of the whole workspace.
        .with_src(crate_dir.join("src/lib.rs"))
        .with_src(crate_dir.join("src/error.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen reads src/lib.rs")
        .write(&mut generated);
    let path = crate_dir.join("include/borealis.h");
    if std::env::var_os("BOREALIS_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run BOREALIS_BLESS=1 cargo test -p borealis-capi --test header",
        path.display()
    );
}
