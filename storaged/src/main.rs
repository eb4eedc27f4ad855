//! `storaged`: see `storaged::cli_main`.

fn main() {
    std::process::exit(storaged::cli_main(std::env::args_os()));
}
