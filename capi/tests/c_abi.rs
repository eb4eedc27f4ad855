//! A C program (`tests/c/roundtrip.c`), built here with `cc` against `libborealis.so` and
//! `include/borealis.h`, writes pages to a volume of a local six-node cluster and reads them
//! back through the C ABI, then checks the error codes and the takeover of a second writer.
//!
//! The test has its own `main` (`harness = false`): the storage nodes it starts are this very
//! executable run as `c_abi storaged ...`, as the `borealis` binary runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use tools::cluster::Launcher;
use tools::local::LocalCluster;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "storaged") {
        let code = storaged::cli_main(std::iter::once("storaged".into()).chain(args.into_iter().skip(2)));
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if args.iter().skip(1).any(|a| a == "--list") {
        // `cargo test -- --list` asks what tests there are.
        println!("a_c_program_writes_and_reads_back_through_the_c_abi: test");
        return ExitCode::SUCCESS;
    }
    // As libtest does: a name given on the command line filters.
    let name = "a_c_program_writes_and_reads_back_through_the_c_abi";
    let filters: Vec<String> = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .filter(|a| !a.starts_with('-'))
        .map(String::from)
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
        println!("running 0 tests");
        return ExitCode::SUCCESS;
    }
    a_c_program_writes_and_reads_back_through_the_c_abi();
    println!("test {name} ... ok");
    ExitCode::SUCCESS
}

/// The directory holding the `libborealis.so` this test was built with: the test executable's
/// own `deps/` (`cargo test` builds the library there; the copy one level up is only refreshed
/// by `cargo build`).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().expect("the test runs from target/PROFILE/deps").to_owned();
    assert!(dir.join("libborealis.so").exists(), "{} has no libborealis.so", dir.display());
    dir
}

fn a_c_program_writes_and_reads_back_through_the_c_abi() {
    let root = tempfile::tempdir().unwrap();
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = library_dir();
    let program = root.path().join("roundtrip");
    let built = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&program)
        .arg(crate_dir.join("tests/c/roundtrip.c"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg("-L")
        .arg(&lib_dir)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lborealis")
        .output()
        .expect("cc");
    assert!(built.status.success(), "cc: {}", String::from_utf8_lossy(&built.stderr));

    let dir = root.path().join("cluster");
    let cluster = LocalCluster::load_or_create(&dir).unwrap();
    let mut nodes = cluster.start_all(&Launcher::this_exe("storaged").unwrap()).unwrap();
    // Cargo's LD_LIBRARY_PATH (which outranks the rpath) lists target/PROFILE too, where
    // `cargo build` leaves a copy that `cargo test` does not refresh: the program gets only the
    // library this test was built with.
    let out = Command::new(&program)
        .arg(&dir)
        .arg("7")
        .env("LD_LIBRARY_PATH", &lib_dir)
        .output()
        .expect("the C program");
    tools::local::stop_all(&mut nodes);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("roundtrip ok"), "the C program failed:\n{text}");
}
