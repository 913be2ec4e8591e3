//! Where the runner's threads run on the host: with a pinned vCPU
//! ([`crate::VmConfig::vcpu_cpu`]) the vCPU thread has that CPU to itself
//! and the VM's device threads (the virtio workers, the volume's sync
//! threads) keep to the rest of the CPUs the process may use. The
//! caller's own threads (`pgkraft serve`'s main thread, its signal and
//! readiness threads, mostly asleep) and a resume's short-lived copy
//! threads, which finish before the vCPU runs, are left where they are.
//!
//! Why: on PVM a vCPU thread that the host preempts pays far more than
//! the time it waited. Its state is put away and loaded again (MSR reads,
//! CR4 writes: `kvm_sched_in`, `vcpu_load` in a `perf` profile), and each
//! move to another CPU makes KVM load it there. In 4-client pgbench TPC-B
//! on this 2-CPU host the vCPU thread was preempted ~1,200 times a second,
//! mostly by the workers' ring spins and by pgbench itself; with the vCPU
//! alone on CPU 0 and everything else on CPU 1 that fell to ~30 a second
//! and the guest's throughput rose by about a third (docs/ARCHITECTURE.md
//! §4 "Where the threads run"). It is a choice for a host that gives a
//! VM a CPU, not a default: many VMs pinned to one CPU would share it.

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use crate::VmmError;

/// The CPUs a VM's threads are kept to; the default leaves them where the
/// host puts them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Placement {
    pinned: Option<Pinned>,
}

#[derive(Clone, Debug)]
struct Pinned {
    vcpu: CpuSet,
    helpers: CpuSet,
}

impl Placement {
    /// The vCPU alone on `cpu`, if given. `cpu` must be one the calling
    /// thread may run on, and at least one other must remain for the
    /// helpers.
    pub(crate) fn new(cpu: Option<usize>) -> Result<Placement, VmmError> {
        let Some(cpu) = cpu else {
            return Ok(Placement::default());
        };
        let cpus = allowed_cpus().map_err(|e| VmmError::Placement {
            cpu,
            detail: format!("reading this thread's CPUs: {e}"),
        })?;
        let refuse = |detail: String| VmmError::Placement { cpu, detail };
        if !cpus.contains(&cpu) {
            return Err(refuse(format!(
                "this process may run on CPUs {}; give one of them",
                list(&cpus)
            )));
        }
        if cpus.len() < 2 {
            return Err(refuse(format!(
                "this process may run on CPU {cpu} only, which would leave the \
                 runner's device threads no CPU of their own; leave the vCPU unpinned"
            )));
        }
        let mut vcpu = CpuSet::new();
        let mut helpers = CpuSet::new();
        for &c in &cpus {
            let set = if c == cpu { &mut vcpu } else { &mut helpers };
            set.set(c).map_err(|e| refuse(e.to_string()))?;
        }
        Ok(Placement {
            pinned: Some(Pinned { vcpu, helpers }),
        })
    }

    /// Moves the calling thread, the vCPU's, to its CPU.
    pub(crate) fn enter_vcpu(&self) {
        if let Some(p) = &self.pinned {
            apply(&p.vcpu);
        }
    }

    /// Moves the calling thread, one of the VM's helpers, off the vCPU's CPU.
    pub(crate) fn enter_helper(&self) {
        if let Some(p) = &self.pinned {
            apply(&p.helpers);
        }
    }
}

/// Placement is a performance choice: a thread that could not be moved
/// (the CPU went offline, a cpuset changed since the check) still runs
/// correctly where it is, so the error is said and not fatal.
fn apply(set: &CpuSet) {
    if let Err(e) = sched_setaffinity(Pid::from_raw(0), set) {
        eprintln!("pgkraft: could not place a runner thread on its CPUs: {e}");
    }
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> nix::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0))?;
    Ok((0..CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .collect())
}

fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_cpu_the_process_may_not_use() {
        let e = Placement::new(Some(CpuSet::count() - 1)).unwrap_err();
        assert!(e.to_string().contains("give one of them"), "{e}");
    }

    #[test]
    fn splits_the_allowed_cpus_between_vcpu_and_helpers() {
        let cpus = allowed_cpus().unwrap();
        if cpus.len() < 2 {
            // One CPU: refused, with the reason.
            let e = Placement::new(Some(cpus[0])).unwrap_err();
            assert!(e.to_string().contains("unpinned"), "{e}");
            return;
        }
        let p = Placement::new(Some(cpus[0])).unwrap();
        let pinned = p.pinned.as_ref().unwrap();
        assert!(pinned.vcpu.is_set(cpus[0]).unwrap());
        assert!(!pinned.helpers.is_set(cpus[0]).unwrap());
        for &c in &cpus[1..] {
            assert!(pinned.helpers.is_set(c).unwrap());
            assert!(!pinned.vcpu.is_set(c).unwrap());
        }
        assert!(Placement::new(None).unwrap().pinned.is_none());
    }
}
