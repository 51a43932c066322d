//! A tmpfs the test mounts (for a data directory whose disk fills):
//! mounting needs root or CAP_SYS_ADMIN, so callers skip, saying why,
//! when [`Tmpfs::mount`] fails.

use std::path::Path;
use std::process::{Command, Stdio};

/// A tmpfs mounted on a fresh temporary directory; unmounted on drop
/// (lazily if something still holds it), then the directory removed.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

/// Runs `program args`; its stderr on failure.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`40m`).
    ///
    /// # Errors
    /// Why it could not: not permitted, most likely.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::Builder::new()
            .prefix("dynokv-disk-full-")
            .tempdir()
            .map_err(|e| format!("cannot create a mount point: {e}"))?;
        let path = dir.path().to_string_lossy().into_owned();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path],
        )?;
        Ok(Tmpfs { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grows (or shrinks) the mounted tmpfs to `size`.
    pub fn resize(&self, size: &str) {
        let path = self.path().to_string_lossy().into_owned();
        run(
            "mount",
            &["-o", &format!("remount,size={size}"), "tmpfs", &path],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.path().to_string_lossy().into_owned();
        if let Err(e) = run("umount", &[&path]) {
            eprintln!("{e}; unmounting lazily");
            if let Err(e) = run("umount", &["-l", &path]) {
                eprintln!("{e}: {path} stays mounted");
            }
        }
    }
}
