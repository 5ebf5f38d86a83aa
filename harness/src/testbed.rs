//! kernel + fixtures + image + VM ──> a ready guest. Scenario runs, the
//! kernel's selftests, the benchmark and explore all get their guests
//! here, from a request rather than a scenario file.

use crate::cache::Cache;
use crate::fixture::{self, Fixture};
use crate::guest::{livepatch, snapshot, Guest};
use crate::kernel::behaviour::Profile;
use crate::kernel::{self, Kernel, KernelSpec};
use crate::project::Project;
use crate::settings::ClockChoice;
use crate::vm::{self, VmConfig};
use crate::{host, image};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

/// Bounds on waiting for the guest, from the environment or defaults
/// generous enough for TCG on a loaded two-core machine.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub boot: Duration,
    pub command: Duration,
    pub transition: Duration,
}

impl Timeouts {
    pub fn from_env() -> Self {
        let settings = crate::settings::get();
        Self {
            boot: settings.boot_timeout,
            command: settings.command_timeout,
            transition: settings.transition_timeout,
        }
    }
}

/// A kernel made ready for guests: built or downloaded, with what it has.
pub struct PreparedKernel {
    pub kernel: Kernel,
    pub profile: Profile,
    qemu: host::qemu::Qemu,
}

/// Build (or take from the cache) the kernel and the QEMU to run it.
pub fn prepare_kernel(spec: &KernelSpec, cache: &Cache) -> Result<PreparedKernel> {
    host::ensure(host::SCENARIO_TOOLS, &cache.root().join("locks"))?;
    let qemu = host::qemu::locate(cache, &spec.arch.record.qemu)?;
    let kernel = kernel::prepare(spec, cache)?;
    let profile = kernel.profile()?;
    Ok(PreparedKernel {
        kernel,
        profile,
        qemu,
    })
}

/// What guest to start.
pub struct Request<'a> {
    /// Built and copied into the guest as /klp/NAME.ko once it is up.
    pub fixtures: &'a [Fixture],
    pub cpus: u32,
    pub clock: Option<ClockChoice>,
    /// Boot rather than start from the kernel's saved state.
    pub fresh_boot: bool,
    /// The serial console goes to the terminal too (`shell`).
    pub interactive: bool,
    /// Where the console and QEMU logs go.
    pub log_dir: PathBuf,
}

impl<'a> Request<'a> {
    /// One CPU, the fixtures given, the saved state where it can be used.
    pub fn new(fixtures: &'a [Fixture], log_dir: PathBuf) -> Self {
        Request {
            fixtures,
            cpus: 1,
            clock: None,
            fresh_boot: false,
            interactive: false,
            log_dir,
        }
    }
}

/// A guest up and answering, with its fixtures in place.
pub struct Testbed {
    pub guest: Guest,
    pub accel: &'static str,
    pub clock: &'static str,
}

/// A testbed, or why the kernel cannot give the one asked for.
pub enum Ready {
    Up(Box<Testbed>),
    NotApplicable(String),
}

impl PreparedKernel {
    /// Build the fixtures and the image, and start the guest.
    pub fn start(&self, project: &Project, cache: &Cache, request: &Request) -> Result<Ready> {
        let kernel = &self.kernel;
        let (support, built) = fixture::build_all(project, request.fixtures, kernel, cache)?;
        let mut boot_modules = kernel.boot_modules.clone();
        boot_modules.push(support.ko.clone());
        // Fixtures are copied in once the guest is up, so that every guest
        // of a kernel boots the same image and can start from its saved state.
        let initramfs = image::build(
            cache,
            &host::guest_busybox(cache, &kernel.arch)?,
            crate::guest::INIT_SCRIPT,
            &boot_modules,
        )?;
        std::fs::create_dir_all(&request.log_dir)?;
        let timeouts = Timeouts::from_env();
        let accel = vm::choose_accel(
            &self.qemu,
            &kernel.image,
            &kernel.arch,
            &cache.root().join("probe"),
        );
        let clock = vm::clock::choose(accel, request.cpus, request.clock);
        let config = VmConfig {
            qemu: self.qemu.clone(),
            arch: kernel.arch.clone(),
            image: kernel.image.clone(),
            initramfs,
            log_dir: request.log_dir.clone(),
            memory_mb: 512,
            cpus: request.cpus,
            accel,
            clock,
            interactive: request.interactive,
            incoming: None,
            earlier_console: None,
        };
        let limits = snapshot::StartLimits {
            boot: timeouts.boot,
            command: timeouts.command,
        };
        let mut guest = if request.interactive
            || request.fresh_boot
            || !snapshot::enabled(&kernel.arch, &config.qemu, request.cpus)
        {
            snapshot::boot(&config, limits)?
        } else {
            snapshot::start(cache, &config, limits)?
        };
        if request.cpus > 1 {
            let online =
                livepatch::cpu_count(&guest.run_ok("cat /sys/devices/system/cpu/online")?)?;
            if online < request.cpus {
                guest.vm.kill();
                return Ok(Ready::NotApplicable(format!(
                    "the kernel brought up {online} of {} CPUs",
                    request.cpus
                )));
            }
        }
        for fixture in &built {
            let ko = fixture.guest_copy(&kernel.arch, cache)?;
            guest.push_file(&format!("/klp/{}.ko", fixture.name), &ko)?;
        }
        Ok(Ready::Up(Box::new(Testbed {
            guest,
            accel: accel.name(),
            clock: clock.name(),
        })))
    }
}

/// A guest of `spec` with `request`'s fixtures; an error where the kernel
/// cannot give it (too few CPUs).
pub fn start(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    request: &Request,
) -> Result<(Testbed, PreparedKernel)> {
    let prepared = prepare_kernel(spec, cache)?;
    match prepared.start(project, cache, request)? {
        Ready::Up(testbed) => Ok((*testbed, prepared)),
        Ready::NotApplicable(why) => anyhow::bail!("{}: {why}", spec.name),
    }
}
