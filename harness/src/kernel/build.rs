//! The recipe of a kernel built from source: tinyconfig plus the config
//! fragments, checked after olddefconfig, then the image and modules in a
//! build directory of their own (the source tree stays clean).
//! `incremental` runs it in a definition's work directory.

use crate::arch::Arch;
use crate::cache::ContentHash;
use crate::event::{self, Event};
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bump when the build recipe changes, so old builds are not reused.
const RECIPE: &str = "tinyconfig+fragments+olddefconfig; image modules; v2";

/// A finished build directory (`make O=` output).
pub struct Built {
    pub dir: PathBuf,
    pub key: String,
    /// `make kernelrelease` and `make kernelversion`, recorded at build time.
    pub release: String,
    pub version: String,
    /// The source tree the build refers to, when it is not the definition's
    /// own (a build with replaced files has a tree of its own).
    pub source: Option<PathBuf>,
    /// What modules built against this kernel depend on (see `Kernel`).
    pub module_abi: String,
}

impl Built {
    pub(super) fn read(dir: PathBuf, key: String) -> Result<Self> {
        let marker = fs::read_to_string(dir.join(MARKER))?;
        let mut lines = marker.lines();
        let release = lines.next().unwrap_or_default().to_string();
        let version = lines.next().unwrap_or_default().to_string();
        let mut source = None;
        let mut module_abi = key.clone();
        for line in lines {
            match line.split_once('=') {
                Some(("source", path)) => source = Some(PathBuf::from(path)),
                Some(("module-abi", abi)) => module_abi = abi.to_string(),
                _ => {}
            }
        }
        Ok(Self {
            dir,
            key,
            release,
            version,
            source,
            module_abi,
        })
    }

    /// The marker's text: release, version, then `name=value` lines.
    pub(super) fn marker(
        release: &str,
        version: &str,
        source: Option<&Path>,
        module_abi: &str,
    ) -> String {
        let mut text = format!("{release}\n{version}\nmodule-abi={module_abi}\n");
        if let Some(source) = source {
            text += &format!("source={}\n", source.display());
        }
        text
    }
}

/// Written last: the build is complete. Holds the release and version.
pub(super) const MARKER: &str = ".klp-harness-complete";

/// The cache key of a build: recipe, sources, compiler and fragments.
pub(super) fn key(
    name: &str,
    source_identity: &str,
    fragments: &[PathBuf],
    arch: &Arch,
) -> Result<String> {
    let mut hash = ContentHash::new();
    hash.add("recipe", RECIPE)
        .add("source", source_identity)
        .add("arch", arch.identity())
        .add("compiler", compiler_version(arch)?);
    for fragment in fragments {
        hash.add_file(
            &fragment.file_name().unwrap_or_default().to_string_lossy(),
            fragment,
        )?;
    }
    Ok(format!("{name}-{}", hash.finish()))
}

/// tinyconfig, the fragments merged in, olddefconfig; then every option a
/// fragment sets must have survived.
pub(super) fn configure(
    tree: &Path,
    dir: &Path,
    fragments: &[PathBuf],
    arch: &Arch,
    log: &mut Log,
) -> Result<()> {
    let arch_args = arch.make_args();
    let with_arch = |target: &'static str| -> Vec<&str> {
        arch_args
            .iter()
            .map(String::as_str)
            .chain([target])
            .collect()
    };
    log.make(tree, dir, &with_arch("tinyconfig"), None)?;
    let merge = crate::host::stop_with_harness(&mut Command::new(
        tree.join("scripts/kconfig/merge_config.sh"),
    ))
    .arg("-m")
    .arg("-O")
    .arg(dir)
    .arg(dir.join(".config"))
    .args(fragments)
    .current_dir(dir)
    .env("ARCH", &arch.record.kernel_arch)
    .output()
    .context("cannot run merge_config.sh")?;
    log.file.write_all(&merge.stdout)?;
    log.file.write_all(&merge.stderr)?;
    if !merge.status.success() {
        bail!("merge_config.sh failed; see {}", log.path.display());
    }
    log.make(tree, dir, &with_arch("olddefconfig"), None)?;
    let config = fs::read_to_string(dir.join(".config"))?;
    let mut lost = Vec::new();
    for fragment in fragments {
        let text = fs::read_to_string(fragment)?;
        lost.extend(lost_options(&text, &config).into_iter().map(|option| {
            format!(
                "{option} (from {})",
                fragment.file_name().unwrap_or_default().to_string_lossy()
            )
        }));
    }
    if !lost.is_empty() {
        bail!("these config options did not survive olddefconfig (missing dependencies, or unknown to this kernel):\n  {}", lost.join("\n  "));
    }
    Ok(())
}

/// `make <image> modules`, reporting make's lines as events.
pub(super) fn compile(
    name: &str,
    tree: &Path,
    dir: &Path,
    arch: &Arch,
    log: &mut Log,
) -> Result<()> {
    let jobs = format!(
        "-j{}",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    let arch_args = arch.make_args();
    let args: Vec<&str> = arch_args
        .iter()
        .map(String::as_str)
        .chain([jobs.as_str(), &arch.record.image.target, "modules"])
        .collect();
    event::emit(Event::KernelBuildStarted {
        kernel: name.to_string(),
    });
    let result = log.make(tree, dir, &args, Some(name));
    event::emit(Event::KernelBuildFinished {
        kernel: name.to_string(),
    });
    result
}

/// A build's log file; make's output and errors go there.
pub(super) struct Log {
    pub path: PathBuf,
    pub file: fs::File,
}

impl Log {
    pub fn create(path: PathBuf) -> Result<Self> {
        let file =
            fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, file })
    }

    pub fn make(
        &mut self,
        tree: &Path,
        dir: &Path,
        args: &[&str],
        progress: Option<&str>,
    ) -> Result<()> {
        make(tree, dir, args, &mut self.file, progress)
            .map_err(|err| anyhow::anyhow!("{err:#}\n(full log: {})", self.path.display()))
    }
}

/// Options set by a fragment (`CONFIG_X=v` or `# CONFIG_X is not set`)
/// that the final .config does not have as written.
fn lost_options(fragment: &str, config: &str) -> Vec<String> {
    let value_of = |name: &str| -> Option<String> {
        config.lines().find_map(|line| {
            if let Some(value) = line
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
            {
                return Some(value.to_string());
            }
            (line == format!("# {name} is not set")).then(|| "n".to_string())
        })
    };
    fragment
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if let Some((name, wanted)) =
                line.split_once('=').filter(|_| line.starts_with("CONFIG_"))
            {
                let found = value_of(name).unwrap_or_else(|| "n".to_string());
                return (found != wanted).then(|| format!("{name}={wanted} (is {found})"));
            }
            let name = line.strip_prefix("# ")?.strip_suffix(" is not set")?;
            let found = value_of(name).unwrap_or_else(|| "n".to_string());
            (found != "n").then(|| format!("{name} unset (is {found})"))
        })
        .collect()
}

fn make(
    src: &Path,
    out: &Path,
    args: &[&str],
    log: &mut fs::File,
    // The kernel whose build progress to report, line by line.
    progress: Option<&str>,
) -> Result<()> {
    let mut child = Command::new("make")
        .arg("-C")
        .arg(src)
        .arg(format!("O={}", out.display()))
        .args(args)
        .env_remove("MAKEFLAGS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run make")?;
    // Interleave stderr into the same log by reading it on a thread.
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        writeln!(log, "{line}")?;
        if let Some(kernel) = progress {
            event::emit(Event::KernelBuildOutput {
                kernel: kernel.to_string(),
                line: line.clone(),
            });
        }
    }
    let status = child.wait()?;
    let errors = errors.join().unwrap_or_default();
    log.write_all(errors.as_bytes())?;
    if !status.success() {
        bail!(
            "make {} failed:\n{}",
            args.join(" "),
            crate::kbuild::compiler_messages(&errors)
        );
    }
    Ok(())
}

/// The first line of `--version` of the compiler that builds for `arch`.
pub(super) fn compiler_version(arch: &Arch) -> Result<String> {
    let (compiler, package) = arch.compiler();
    let output = Command::new(&compiler)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {compiler} (package {package})"))?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// `make kernelrelease` / `make kernelversion` of a finished build.
pub(super) fn query(tree: &Path, dir: &Path, target: &str, arch: &Arch) -> Result<String> {
    let text = crate::host::run_checked(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(tree)
            .arg(format!("O={}", dir.display()))
            .args(arch.make_args())
            .arg(target)
            .env_remove("MAKEFLAGS"),
    )?;
    Ok(text.lines().last().unwrap_or_default().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_lost_by_olddefconfig_are_named() {
        let fragment = "# comment\nCONFIG_LIVEPATCH=y\nCONFIG_UNWINDER_ORC=y\n# CONFIG_DEBUG_INFO is not set\nCONFIG_NR_CPUS=4\n";
        let config = "CONFIG_LIVEPATCH=y\n# CONFIG_UNWINDER_ORC is not set\nCONFIG_DEBUG_INFO=y\nCONFIG_NR_CPUS=4\n";
        assert_eq!(
            lost_options(fragment, config),
            [
                "CONFIG_UNWINDER_ORC=y (is n)",
                "CONFIG_DEBUG_INFO unset (is y)"
            ]
        );
    }

    #[test]
    fn an_option_absent_from_config_counts_as_unset() {
        assert_eq!(
            lost_options("CONFIG_NO_SUCH_THING=y\n", ""),
            ["CONFIG_NO_SUCH_THING=y (is n)"]
        );
        assert!(lost_options("# CONFIG_NO_SUCH_THING is not set\n", "").is_empty());
    }
}
