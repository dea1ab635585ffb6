//! The command-line contract of `virtualcluster-syncer`.

use std::process::Command;

fn syncer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_virtualcluster-syncer"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn host_name_prints_the_documented_name() {
    let out = syncer(&[
        "host-name",
        "--instance",
        "default-namespace-sync",
        "some-other-namespace",
        "nginx-from-other-namespace",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "nginx-from-other-namespace-x-some-other-namespace-x--4b96e8f948\n"
    );
    let out = syncer(&[
        "host-name",
        "--instance",
        "my-vcluster",
        "my-namespace",
        "test",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "test-x-my-namespace-x-my-vcluster\n"
    );
}

#[test]
fn host_name_needs_the_instance() {
    let out = syncer(&["host-name", "ns", "name"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--instance"));
}
