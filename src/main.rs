use clap::Parser;

fn main() {
    let cli = whaleid::cli::Cli::parse();
    std::process::exit(whaleid::cli::main_exit_code(whaleid::cli::run(cli)));
}
