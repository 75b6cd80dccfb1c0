fn main() -> std::process::ExitCode {
    banger::cli::main()
}
