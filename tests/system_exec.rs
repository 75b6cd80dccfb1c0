//! The exec point against real programs.

use std::time::{Duration, Instant};

use banger::system::exec::{Cmd, ExecError};

#[tokio::test]
async fn failure_carries_stderr_and_status() {
    let err = Cmd::new("ls")
        .arg("/definitely-missing")
        .run()
        .await
        .unwrap_err();
    let ExecError::Failed { status, stderr, .. } = &err else {
        panic!("expected Failed, got {err:?}");
    };
    assert!(!status.success());
    assert!(stderr.contains("/definitely-missing"), "{stderr}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("`ls /definitely-missing` exited with status 2: "),
        "{msg}"
    );
}

#[tokio::test]
async fn missing_program_is_named() {
    let err = Cmd::new("banger-no-such-tool").run().await.unwrap_err();
    assert!(matches!(err, ExecError::Spawn { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "`banger-no-such-tool` is not installed or not on PATH"
    );
}

#[tokio::test]
async fn timeout_kills_the_child() {
    let started = Instant::now();
    let err = Cmd::new("sleep")
        .arg("5")
        .timeout(Duration::from_millis(200))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::TimedOut { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().contains("`sleep 5` timed out"), "{err}");
}

#[tokio::test]
async fn stdin_reaches_the_child() {
    let out = Cmd::new("cat")
        .stdin_bytes(b"hello\nworld\n".to_vec())
        .run()
        .await
        .unwrap();
    assert_eq!(out.stdout, "hello\nworld\n");
    assert_eq!(out.code, 0);
}

#[tokio::test]
async fn env_and_ok_codes() {
    let out = Cmd::new("env")
        .env("BANGER_TEST_VAR", "42")
        .run()
        .await
        .unwrap();
    assert!(out.stdout.lines().any(|l| l == "BANGER_TEST_VAR=42"));

    let out = Cmd::new("false").ok_codes(&[0, 1]).run().await.unwrap();
    assert_eq!(out.code, 1);
}
