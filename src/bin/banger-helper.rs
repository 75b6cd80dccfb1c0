//! `banger-helper`: the privileged network helper a non-root banger runs
//! through `sudo -n` (see `banger::system::helper`).

fn main() -> std::process::ExitCode {
    banger::grant::helper::main()
}
