//! kubectl as a user runs it: one kubeconfig and namespace, to its end or as a stream.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio::io::AsyncWriteExt;

/// How long [`Kubectl::run`] waits for kubectl to end.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// kubectl with one kubeconfig and namespace.
pub struct Kubectl {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
}

impl Kubectl {
    /// The command, stdin closed, killed when dropped.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--namespace={}", self.namespace))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl to its end (at most a minute), `stdin` written to it.
    pub async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", self.binary.display()))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().context("kubectl's stdin")?;
            pipe.write_all(input).await?;
        }
        tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("kubectl {args:?} did not end within {RUN_TIMEOUT:?}"))?
            .context("waiting for kubectl")
    }

    /// Standard output of a command that must succeed.
    pub async fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args, None).await?;
        ensure!(
            out.status.success(),
            "kubectl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }
}
