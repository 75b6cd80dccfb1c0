use std::process::ExitCode;

fn main() -> ExitCode {
    match banger::daemon::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bangerd: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
