//! Hibernation of a serving VM (`pgkraft serve --idle-timeout`): when no
//! client has been connected to its published ports for a while, the VM
//! stops in its next `hc::WAIT`, its RAM goes to a file and is unmapped,
//! and the VM and its threads end. What stays in the process is small:
//! the devices' host side (the published listeners, the volume's open
//! files, the virtqueues' positions) and the vCPU's registers. The next
//! connection ([`Hibernated::wait_for_wake`]) brings it back
//! ([`Hibernated::wake`]): the memory file is copied into fresh private
//! huge pages (see `wake` for why not mapped), the registers and the KVM
//! clock go back, and the devices serve the new RAM. The client's connection waits in
//! the listener's backlog meanwhile: nothing is refused or lost.
//!
//! Why the devices stay in the process instead of going to disk too:
//! they hold host objects a file cannot (the listening sockets, which
//! must stay bound for the wake, and the volume's fids, open host files
//! that PostgreSQL may have unlinked), and they are a few KiB. The guest
//! is stopped where it waits with nothing to do, its devices' workers
//! parked first, so guest RAM and device state are one consistent
//! moment.
//!
//! The guest's clock: as in a snapshot's resume, the KVM clock continues
//! from where it stopped (its timers do not see the time asleep) and its
//! wall clock is the host's again.
//!
//! docs/ARCHITECTURE.md §5.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_clock_data;
use serde::Serialize;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::format::{VcpuState, vcpu_shape};
use super::save::{Keep, write_memory};
use super::{MEMORY_FILE, MemoryInfo, SnapshotError, ms};
use crate::devices::Devices;
use crate::image::ImageId;
use crate::kvm::{Machine, VmShell};
use crate::net::Activity;
use crate::vm::{Paused, Rest, Vm};
use crate::{RunOutcome, VmmError};

/// While connections are open, a waiting guest looks at its idle timer at
/// least this often.
pub(crate) const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Hibernate a serving VM after `after` idle (as `policy` counts it), its
/// RAM into `dir` (`VmConfig::hibernate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HibernateConfig {
    pub after: Duration,
    pub dir: PathBuf,
    pub policy: IdlePolicy,
}

/// What idle means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdlePolicy {
    /// No client connection open.
    #[default]
    Connections,
    /// Also with clients connected, when no byte has moved and every
    /// session waits for its client's input (the guest says so at each
    /// `hc::WAIT`: `pgkraft_abi::hc::WAIT_SESSIONS`); a guest that does not
    /// say is never idle with clients connected.
    Idle,
}

/// The idle timer of a VM that hibernates, kept with its devices.
pub(crate) struct IdleClock {
    pub activity: Activity,
    after: Duration,
    policy: IdlePolicy,
    dir: PathBuf,
    /// Readable when a client connects to a published port.
    wake: Epoll,
}

/// A memory file left in `cfg.dir` by an earlier process (killed while
/// its VM was hibernated) is removed, never resumed: the devices' host
/// side (the volume's open files, the listeners) died with that process,
/// and the volume may have been used since. The VM boots cold instead and
/// PostgreSQL recovers from its WAL; the log says so.
pub(crate) fn forget_stale(cfg: &HibernateConfig) {
    let path = cfg.dir.join(MEMORY_FILE);
    if path.exists() {
        log::warn!(
            "{} is the hibernated RAM of an earlier run, whose process ended; it is not resumed \
             (the volume's open files and the published ports died with that process, and the \
             volume may have changed since): booting cold, PostgreSQL recovers from its WAL",
            path.display()
        );
        let _ = std::fs::remove_file(&path);
    }
}

impl IdleClock {
    pub(crate) fn new(activity: Activity, cfg: &HibernateConfig, wake: Epoll) -> IdleClock {
        IdleClock {
            activity,
            after: cfg.after,
            policy: cfg.policy,
            dir: cfg.dir.clone(),
            wake,
        }
    }

    /// Time left before the VM may hibernate (zero: now); `None` while
    /// it is busy: a client connected (or, with [`IdlePolicy::Idle`], a
    /// session busy: `sessions` is what the guest's `hc::WAIT` said).
    pub(crate) fn due_in(&self, sessions: Option<u32>) -> Option<Duration> {
        let idle = match (self.activity.idle_for(), self.policy, sessions) {
            (Some(idle), _, _) => idle,
            (None, IdlePolicy::Idle, Some(0)) => self.activity.quiet_for(),
            (None, _, _) => return None,
        };
        Some(self.after.saturating_sub(idle))
    }

    /// Still due, looked at again with the devices parked (nothing moves):
    /// a client that connected or sent something meanwhile keeps the VM
    /// running. The guest has not run since its `hc::WAIT` said its
    /// sessions were idle.
    fn still_due(&self) -> bool {
        match (self.activity.idle_for(), self.policy) {
            (Some(idle), _) => idle >= self.after,
            (None, IdlePolicy::Idle) => self.activity.quiet_for() >= self.after,
            (None, IdlePolicy::Connections) => false,
        }
    }
}

/// How [`Vm::serve`] ended.
pub enum Served {
    /// The guest ended (or failed, or timed out).
    Ended(RunOutcome),
    /// Idle: hibernated; [`Hibernated::wake`] runs it again.
    Hibernated(Box<Hibernated>),
}

/// What [`hibernate`] made of a VM stopped to hibernate.
pub(crate) enum Hibernating {
    Done(Box<Hibernated>),
    /// A client connected as it stopped: here it is, to run on.
    Busy(Box<Vm>),
}

/// What a hibernation cost and left on disk.
#[derive(Clone, Debug, Serialize)]
pub struct HibernateReport {
    /// From the stop in `hc::WAIT` to the RAM unmapped.
    pub save_ms: f64,
    pub memory_file: PathBuf,
    /// Guest RAM.
    pub memory_bytes: u64,
    /// Of it, bytes in the file (its zero pages are holes).
    pub data_bytes: u64,
}

/// A hibernated VM: no guest RAM, no KVM VM in use, no threads of its
/// own; see the module doc.
pub struct Hibernated {
    devices: Devices,
    rest: Rest,
    vcpu: VcpuState,
    clock: kvm_clock_data,
    memory: MemoryInfo,
    file: File,
    /// The next VM and its vCPU, made ahead so that a wake does not wait
    /// for them.
    shell: Option<VmShell>,
    mem_bytes: u64,
    cmdline: String,
    image: Option<ImageId>,
    pub report: HibernateReport,
}

/// What ended [`Hibernated::wait_for_wake`], and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake {
    pub cause: WakeCause,
    pub at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeCause {
    /// A client connected to a published port.
    Connection,
    /// The host sent the guest a signal (`GuestSignals`).
    Signal,
}

/// The moments of one wake, filled in as the woken VM runs.
#[derive(Clone)]
pub struct WakeTimes(Arc<WakeInner>);

struct WakeInner {
    /// When the wake began (the client's connection seen).
    started: Instant,
    /// The VM ready to run again.
    restored: Instant,
    /// The guest's first VM exit after it.
    resumed: OnceLock<Instant>,
    activity: Activity,
}

impl WakeTimes {
    /// The wake's start to the VM restored.
    pub fn restore_ms(&self) -> f64 {
        ms(self.0.restored - self.0.started)
    }

    /// The wake's start to the guest running again (its first exit), once
    /// it did.
    pub fn resumed_ms(&self) -> Option<f64> {
        self.0.resumed.get().map(|t| ms(*t - self.0.started))
    }

    /// The wake's start to the guest's first bytes to a client, once they
    /// went.
    pub fn first_answer_ms(&self) -> Option<f64> {
        self.0
            .activity
            .last_answer()
            .filter(|t| *t > self.0.started)
            .map(|t| ms(t - self.0.started))
    }

    pub(crate) fn mark_resumed(&self) {
        let _ = self.0.resumed.set(Instant::now());
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VmmError + 'a {
    move |source| VmmError::Hibernate {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Hibernates `paused`, stopped in an `hc::WAIT` whose result (0) is
/// already written: its devices stop touching guest RAM, and unless a
/// client connected meanwhile, RAM goes to the memory file and the VM
/// ends.
pub(crate) fn hibernate(paused: Paused) -> Result<Hibernating, VmmError> {
    let t0 = Instant::now();
    let Paused {
        machine,
        mut devices,
        mem_bytes,
        cmdline,
        image,
        rest,
        ..
    } = paused;
    devices.park();
    let clock = devices
        .idle
        .as_ref()
        .expect("only a VM with an idle timer hibernates");
    // The workers are parked: nothing moves now. A connection accepted
    // (or, idle sessions connected, a byte moved) since the timer ran out
    // keeps the VM running.
    let saved = if clock.still_due() {
        save(&machine, mem_bytes, &clock.dir)
    } else {
        Err(None)
    };
    let (vcpu, kvm_clock, memory, path) = match saved {
        Ok(s) => s,
        Err(failed) => {
            if let Some(e) = failed {
                // The server is worth more than its sleep: it goes on, and
                // tries again after another idle period.
                log::warn!("vmm: the VM could not hibernate and keeps running: {e}");
                clock.activity.touch();
            }
            devices
                .unpark(machine.mem())
                .map_err(|source| VmmError::Thread { source })?;
            let vm = rest.into_vm(machine, devices, (mem_bytes, cmdline, image))?;
            return Ok(Hibernating::Busy(Box::new(vm)));
        }
    };
    let file = File::open(&path).map_err(io("open", &path))?;
    // The VM ends here: guest RAM is unmapped.
    drop(machine);
    crate::kvm::trim_host_heap();
    let report = HibernateReport {
        save_ms: ms(t0.elapsed()),
        memory_file: path,
        memory_bytes: mem_bytes,
        data_bytes: memory.data_bytes,
    };
    // Made now, while nobody waits: a wake then only maps RAM.
    let shell = crate::boot::open_kvm().and_then(|kvm| VmShell::create(&kvm));
    Ok(Hibernating::Done(Box::new(Hibernated {
        devices,
        rest,
        vcpu,
        clock: kvm_clock,
        memory,
        file,
        shell: shell.ok(),
        mem_bytes,
        cmdline,
        image,
        report,
    })))
}

/// The vCPU's state, the KVM clock and guest RAM (into `dir`'s memory
/// file, whose path comes back); nothing of the VM changes. `Err(Some)`:
/// it could not be saved (a full disk), and nothing is left half-written.
type Saved = (VcpuState, kvm_clock_data, MemoryInfo, PathBuf);

fn save(machine: &Machine, mem_bytes: u64, dir: &Path) -> Result<Saved, Option<VmmError>> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let (msrs, xsave2) = vcpu_shape()?;
    let vcpu = VcpuState::capture(machine.vcpu(), msrs, *xsave2)?;
    let kvm_clock = machine
        .vm()
        .get_clock()
        .map_err(VmmError::ioctl("KVM_GET_CLOCK"))?;
    // A new file each time, renamed over the last one: the RAM being saved
    // may still be a mapping of that one (after an earlier wake).
    let tmp = dir.join(format!(".{MEMORY_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = write_memory(machine.mem(), mem_bytes, &tmp, Keep::ForThisProcess)
        .map_err(|e| match e {
            SnapshotError::Io { what, path, source } => VmmError::Hibernate { what, path, source },
            other => VmmError::Hibernate {
                what: "write",
                path: tmp.clone(),
                source: std::io::Error::other(other.to_string()),
            },
        })
        .and_then(|(memory, _)| {
            let path = dir.join(MEMORY_FILE);
            std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
            Ok((memory, path))
        });
    match written {
        Ok((memory, path)) => Ok((vcpu, kvm_clock, memory, path)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(Some(e))
        }
    }
}

const CONNECTION: u64 = 1;
const SIGNAL: u64 = 2;

impl Hibernated {
    /// Blocks until a client connects to a published port (or a connected
    /// one sends something, or goes), or the host sends the guest a
    /// signal (`pgkraft serve`'s SIGTERM: the guest wakes to shut down).
    pub fn wait_for_wake(&self) -> Result<Wake, VmmError> {
        let clock = self.devices.idle.as_ref().expect("an idle timer");
        let setup = |e| VmmError::Thread { source: e };
        let epoll = Epoll::new().map_err(setup)?;
        epoll
            .ctl(
                ControlOperation::Add,
                clock.wake.as_raw_fd(),
                EpollEvent::new(EventSet::IN, CONNECTION),
            )
            .map_err(setup)?;
        if let Some(s) = self.devices.signals() {
            epoll
                .ctl(
                    ControlOperation::Add,
                    s.fd(),
                    EpollEvent::new(EventSet::IN, SIGNAL),
                )
                .map_err(setup)?;
        }
        let mut events = [EpollEvent::default(); 2];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(setup(e)),
            };
            let at = Instant::now();
            let cause = if events[..n].iter().any(|e| e.data() == SIGNAL) {
                WakeCause::Signal
            } else {
                WakeCause::Connection
            };
            if n > 0 {
                return Ok(Wake { cause, at });
            }
        }
    }

    /// The VM again, ready to [`Vm::serve`]: RAM mapped from the memory
    /// file, the vCPU's registers and the KVM clock put back, the devices
    /// serving the new RAM. `wake` is what [`Self::wait_for_wake`] said (its
    /// moment starts the returned times).
    pub fn wake(self, wake: Wake) -> Result<(Vm, WakeTimes), VmmError> {
        let Hibernated {
            mut devices,
            rest,
            vcpu,
            clock,
            memory,
            file,
            shell,
            mem_bytes,
            cmdline,
            image,
            report,
        } = self;
        crate::vm::settle();
        let shell = match shell {
            Some(s) => s,
            None => VmShell::create(&crate::boot::open_kvm()?)?,
        };
        let mem_mib = (mem_bytes >> 20) as u32;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_bytes as usize)]).map_err(
            |e| VmmError::Memory {
                mem_mib,
                detail: e.to_string(),
            },
        )?;
        let t_setup = wake.at.elapsed();
        // Copied, not mapped: a guest's first touch of a page of a file
        // mapping costs a shadow-MMU fault each (~25-36 µs on PVM), and a
        // wake touched enough of them to cost ~50 ms over a running
        // server's answer; private huge pages cost one fault per 2 MiB.
        super::restore::copy_data(&mem, &memory, &file).map_err(io("read", &report.memory_file))?;
        let t_copy = wake.at.elapsed();
        let machine = Machine::new(shell, mem)?;
        // As a snapshot's resume: the clock before the MSRs.
        machine
            .vm()
            .set_clock(&kvm_bindings::kvm_clock_data {
                clock: clock.clock,
                flags: 0,
                ..Default::default()
            })
            .map_err(VmmError::ioctl("KVM_SET_CLOCK"))?;
        let (_, xsave2) = vcpu_shape()?;
        vcpu.apply(&machine, *xsave2)?;
        let t_state = wake.at.elapsed();
        devices
            .unpark(machine.mem())
            .map_err(|source| VmmError::Thread { source })?;
        log::debug!(
            "hibernate: wake: setup {t_setup:?}, copy {:?}, memslot+state {:?}, devices {:?}",
            t_copy - t_setup,
            t_state - t_copy,
            wake.at.elapsed() - t_state
        );
        let activity = devices
            .idle
            .as_ref()
            .expect("an idle timer")
            .activity
            .clone();
        // Idle from now on, not from before the sleep.
        activity.touch();
        let times = WakeTimes(Arc::new(WakeInner {
            started: wake.at,
            restored: Instant::now(),
            resumed: OnceLock::new(),
            activity,
        }));
        devices.woke = Some(times.clone());
        let vm = rest.into_vm(machine, devices, (mem_bytes, cmdline, image))?;
        Ok((vm, times))
    }
}
