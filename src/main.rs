//! The `sst` command line; see `sst --help` and the README.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
