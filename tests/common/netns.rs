//! Running test code inside network namespaces: a thread of its own with a
//! fresh namespace (`unshare`), or joined to a named one (`setns`). Sockets
//! the thread opens and processes it spawns live in that namespace.
#![allow(dead_code)]

use std::future::Future;

/// Runs `body` on a new thread in a brand-new network namespace (only `lo`,
/// brought up), on a current-thread tokio runtime.
pub fn in_fresh_netns<T: Send + 'static>(body: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: CLONE_NEWNET changes only this thread's network
        // namespace; no memory or file descriptor state is shared or lost.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .expect("unshare(CLONE_NEWNET): needs root");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            banger::system::exec::Cmd::new("ip")
                .args(["link", "set", "lo", "up"])
                .run()
                .await
                .unwrap();
            body.await
        })
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A test's body, run as [`in_fresh_netns`] runs it; skipped (saying so)
/// unless root.
pub fn test_in_fresh_netns(body: impl Future<Output = ()> + Send + 'static) {
    if !is_root() {
        super::skip("needs root for network namespaces");
        return;
    }
    in_fresh_netns(body);
}

/// Moves the calling thread into the named namespace `/run/netns/NAME`.
pub fn enter_named_netns(name: &str) {
    let fd = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    use std::os::fd::AsFd;
    rustix::thread::move_into_link_name_space(
        fd.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap();
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
