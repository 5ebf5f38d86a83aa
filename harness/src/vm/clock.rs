//! The guest's clock. Under TCG, QEMU can count guest time in executed
//! instructions and skip the time every vCPU spends idle (`-icount
//! shift=0,sleep=off`; the option's entry in QEMU's qemu-options.hx): a
//! timer that fires while the guest waits for it fires at once.
//!
//! klp retries a transition a second after a failed try
//! (klp_transition_work_fn() in kernel/livepatch/transition.c); removing a
//! patch's ftrace handler waits for RCU-tasks grace periods that sleep
//! HZ/10 at a time (ftrace_shutdown() in kernel/trace/ftrace.c,
//! kernel/rcu/tasks.h); scenarios sleep. On the counted clock none of
//! those waits costs host time, and the kernel sees them take as long on
//! its own clock as on the real one. docs/performance.md, "Guest clock",
//! has the measurements.

use super::Accel;
use crate::settings::ClockChoice;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestClock {
    /// QEMU's virtual clock, running in real time (the default without
    /// `-icount`).
    Real,
    /// One nanosecond per guest instruction; idle time skipped.
    Counted,
}

/// One instruction per nanosecond: under TCG on the machines this was
/// measured on, a busy guest's clock then runs at 0.5 to 1 times real time
/// (debian-6.12 reached /init at 1.69 s on it, 2.4 s on the real clock),
/// so the guest's own timeouts keep their meaning.
const ICOUNT: &str = "shift=0,sleep=off";

/// Why a guest with more than one CPU keeps the real clock. Seen with
/// QEMU 7.2: debian-6.1, src-5.10 and src-6.1 stopped after "smp: Bringing
/// up secondary CPUs" and were not ready within 120 s; src-6.12 stopped
/// answering while klp_target's spinner ran on CPU 1.
pub const MANY_CPUS: &str = "QEMU's counted clock stalls guests with more than one CPU";

impl GuestClock {
    pub fn name(self) -> &'static str {
        match self {
            GuestClock::Real => "real",
            GuestClock::Counted => "counted",
        }
    }

    /// QEMU's arguments for this clock.
    pub fn qemu_args(self) -> Vec<String> {
        match self {
            GuestClock::Real => Vec::new(),
            GuestClock::Counted => vec!["-icount".to_string(), ICOUNT.to_string()],
        }
    }
}

/// The clock a guest runs on: counted, unless the scenario or
/// `KLP_HARNESS_CLOCK` asks for the real one, or the guest is one QEMU
/// cannot count (KVM runs the guest's instructions natively; more than
/// one CPU, see `MANY_CPUS`).
pub fn choose(accel: Accel, cpus: u32, scenario: Option<ClockChoice>) -> GuestClock {
    let asked = [scenario, Some(crate::settings::get().clock)];
    let counted = accel == Accel::Tcg && cpus == 1 && !asked.contains(&Some(ClockChoice::Real));
    match counted {
        true => GuestClock::Counted,
        false => GuestClock::Real,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_only_under_tcg_on_one_cpu_unless_real_is_asked() {
        assert_eq!(choose(Accel::Tcg, 1, None), GuestClock::Counted);
        assert_eq!(
            choose(Accel::Tcg, 1, Some(ClockChoice::Counted)),
            GuestClock::Counted
        );
        assert_eq!(
            choose(Accel::Tcg, 1, Some(ClockChoice::Real)),
            GuestClock::Real
        );
        assert_eq!(choose(Accel::Tcg, 2, None), GuestClock::Real);
        assert_eq!(choose(Accel::Kvm, 1, None), GuestClock::Real);
    }

    #[test]
    fn only_the_counted_clock_changes_qemus_arguments() {
        assert!(GuestClock::Real.qemu_args().is_empty());
        assert_eq!(GuestClock::Counted.qemu_args(), ["-icount", ICOUNT]);
    }
}
