//! A VM ready to run, as [`crate::boot`] and [`crate::snapshot::restore`]
//! return it, and the thread that runs its vCPU.
//!
//! The caller drives it: [`Vm::run`] runs the guest to its end;
//! [`Vm::run_to_ready`] stops it at its ready point instead and hands the
//! stopped VM back ([`Paused`]), which a snapshot saves. Nothing else
//! decides how a VM runs.
//!
//! **Threads.** The vCPU runs on its own thread, started while the VM is
//! set up so that creating and scheduling it overlaps the setup. A timeout
//! stops it with the real-time signal `SIGRTMIN() + 1`, whose handler is
//! installed once per process. After a run, that thread still closes the VM
//! and unmaps guest RAM in the background (0.3-1 ms, more for big guests);
//! the next VM of the process waits for it ([`settle`]) before its clock
//! starts, as that teardown holds the process's memory map lock.
//!
//! docs/ARCHITECTURE.md §4.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuExit;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::bus::Action;
use crate::console::{ConsoleIn, ConsoleOut};
use crate::devices::Devices;
use crate::devices::hypercall::HypercallState;
use crate::image::ImageId;
use crate::kvm::{self, Machine};
use crate::{GuestExit, MIB, MemoryUse, RunOutcome, VmmError, vcpu};

const RFLAGS_IF: u64 = 1 << 9;

/// A VM set up and not yet running.
pub struct Vm {
    machine: Machine,
    devices: Devices,
    thread: VcpuThread,
    stop: Arc<AtomicBool>,
    stop_evt: EventFd,
    timeout: Option<Duration>,
    t0: Instant,
    mem_bytes: u64,
    /// The program's arguments on the boot command line ("" = the image's).
    cmdline: String,
    /// The image it booted (none for a restored VM).
    image: Option<ImageId>,
    /// The TSS has an I/O permission bitmap (its limit reaches past 103).
    io_bitmap: bool,
    /// A resumed guest: the console read it waits in, answered before it runs.
    resume_read: Option<HypercallState>,
}

/// What [`Vm::run_to_ready`] ended with.
pub enum Ready {
    /// Stopped at its ready point.
    Paused(Box<Paused>),
    /// The guest ended (or failed, or timed out) before it got there.
    Ended(RunOutcome),
}

/// A VM stopped at its ready point (the guest waits in a console read),
/// or, serving, at an `hc::WAIT` to hibernate.
pub struct Paused {
    pub(crate) machine: Machine,
    pub(crate) devices: Devices,
    pub(crate) mem_bytes: u64,
    pub(crate) cmdline: String,
    pub(crate) image: Option<ImageId>,
    /// When it stopped, since the run's start.
    pub(crate) ready_at: Duration,
    /// What a VM made from it again needs (a hibernated VM's wake).
    pub(crate) rest: Rest,
}

/// The parts of a [`Vm`] a stopped VM keeps for running again.
pub(crate) struct Rest {
    pub controls: Controls,
    pub timeout: Option<Duration>,
    pub t0: Instant,
    pub io_bitmap: bool,
}

impl Rest {
    /// The VM again, on a new vCPU thread, from what a stopped one kept.
    pub(crate) fn into_vm(
        self,
        machine: Machine,
        devices: Devices,
        (mem_bytes, cmdline, image): (u64, String, Option<ImageId>),
    ) -> Result<Vm, VmmError> {
        Ok(Vm::new(Parts {
            machine,
            devices,
            thread: VcpuThread::spawn()?,
            stop: self.controls.stop,
            stop_evt: self.controls.stop_evt,
            timeout: self.timeout,
            t0: self.t0,
            mem_bytes,
            cmdline,
            image,
            io_bitmap: self.io_bitmap,
            resume_read: None,
        }))
    }
}

/// Why [`Vm::drive`] handed the VM back.
enum Driven {
    Ended(RunOutcome),
    /// At its ready point ([`Vm::run_to_ready`]).
    Ready(Box<Paused>),
    /// In an `hc::WAIT`, idle long enough to hibernate ([`Vm::serve`]).
    Idle(Box<Paused>),
}

impl Paused {
    /// The console output so far (captured consoles only).
    pub fn console(&self) -> &[u8] {
        self.devices.console.captured().unwrap_or_default()
    }
}

/// What [`Vm`]'s constructors hand it.
pub(crate) struct Parts {
    pub machine: Machine,
    pub devices: Devices,
    pub thread: VcpuThread,
    pub stop: Arc<AtomicBool>,
    pub stop_evt: EventFd,
    pub timeout: Option<Duration>,
    pub t0: Instant,
    pub mem_bytes: u64,
    pub cmdline: String,
    pub image: Option<ImageId>,
    pub io_bitmap: bool,
    pub resume_read: Option<HypercallState>,
}

/// What the vCPU thread is started with.
struct Start {
    machine: Machine,
    devices: Devices,
    mem_bytes: u64,
    io_bitmap: bool,
    stop: Arc<AtomicBool>,
    resume_read: Option<HypercallState>,
    done: mpsc::Sender<Finished>,
}

/// What the vCPU thread hands back.
struct Finished {
    result: Result<Stop, VmmError>,
    devices: Devices,
    exits: u64,
    memory: Option<MemoryUse>,
    /// Handed back at the ready point; otherwise the thread drops it.
    machine: Option<Machine>,
}

enum Stop {
    Exit(GuestExit),
    Ready,
    /// The guest waits and its idle timer ran out (`crate::snapshot::hibernate`).
    Hibernate,
}

impl Vm {
    pub(crate) fn new(p: Parts) -> Vm {
        Vm {
            machine: p.machine,
            devices: p.devices,
            thread: p.thread,
            stop: p.stop,
            stop_evt: p.stop_evt,
            timeout: p.timeout,
            t0: p.t0,
            mem_bytes: p.mem_bytes,
            cmdline: p.cmdline,
            image: p.image,
            io_bitmap: p.io_bitmap,
            resume_read: p.resume_read,
        }
    }

    /// Marks the `input` and `first_answer` phases of this run: when the
    /// guest first got console input, and its first output after that.
    pub fn track_answers(&mut self) {
        self.devices.hypercall.watch.track = true;
    }

    /// Runs the guest until it exits, dies, or the timeout passes.
    pub fn run(mut self) -> Result<RunOutcome, VmmError> {
        // Only `serve` hibernates.
        self.devices.idle = None;
        match self.drive()? {
            Driven::Ended(outcome) => Ok(outcome),
            Driven::Ready(_) | Driven::Idle(_) => {
                unreachable!("only run_to_ready and serve stop the VM")
            }
        }
    }

    /// Runs the guest like [`Vm::run`], and when its idle timer runs out
    /// (`VmConfig::hibernate`) stops it in an `hc::WAIT` and hibernates it
    /// (`crate::snapshot::hibernate`): the VM is gone, its devices and its
    /// host sockets are kept.
    pub fn serve(self) -> Result<crate::Served, VmmError> {
        let mut vm = self;
        loop {
            match vm.drive()? {
                Driven::Ended(outcome) => return Ok(crate::Served::Ended(outcome)),
                Driven::Idle(paused) => match crate::snapshot::hibernate::hibernate(*paused)? {
                    crate::snapshot::hibernate::Hibernating::Done(h) => {
                        return Ok(crate::Served::Hibernated(h));
                    }
                    // A client came as it stopped: it runs on.
                    crate::snapshot::hibernate::Hibernating::Busy(again) => vm = *again,
                },
                Driven::Ready(_) => unreachable!("serve does not stop at the ready point"),
            }
        }
    }

    /// Runs the guest until its ready point: the first time it asks for
    /// console input and none is left (the console must be captured).
    /// A VM with a network device is refused: its network state would not
    /// be saved.
    pub fn run_to_ready(mut self) -> Result<Ready, VmmError> {
        if let Some(what) = self.devices.unsaved_state() {
            return Err(VmmError::NotSnapshottable { what });
        }
        self.devices.hypercall.stop_when_idle = true;
        self.devices.idle = None;
        Ok(match self.drive()? {
            Driven::Ended(outcome) => Ready::Ended(outcome),
            Driven::Ready(paused) => Ready::Paused(paused),
            Driven::Idle(_) => unreachable!("only serve hibernates"),
        })
    }

    fn drive(self) -> Result<Driven, VmmError> {
        let Vm {
            machine,
            devices,
            thread,
            stop,
            stop_evt,
            timeout,
            t0,
            mem_bytes,
            cmdline,
            image,
            io_bitmap,
            resume_read,
        } = self;
        let (done, done_rx) = mpsc::channel::<Finished>();
        let thread_gone = || VmmError::Thread {
            source: std::io::Error::other("the vCPU thread ended unexpectedly"),
        };
        thread
            .start
            .send(Start {
                machine,
                devices,
                mem_bytes,
                io_bitmap,
                stop: stop.clone(),
                resume_read,
                done,
            })
            .map_err(|_| thread_gone())?;
        let mut got = match timeout {
            None => done_rx
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            // The timeout counts from the run's start, setup included.
            Some(t) => done_rx.recv_timeout(t.saturating_sub(t0.elapsed())),
        };
        if let Err(mpsc::RecvTimeoutError::Timeout) = got {
            stop.store(true, Ordering::SeqCst);
            let _ = stop_evt.write(1);
            // Repeat the kick: a signal that lands between the vCPU thread's
            // stop check and its entry into KVM_RUN is otherwise lost.
            while let Err(mpsc::RecvTimeoutError::Timeout) = got {
                let _ = thread.handle.kill(kick_signal());
                got = done_rx.recv_timeout(Duration::from_millis(2));
            }
        }
        *TEARDOWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread.handle);
        let f = got.map_err(|_| thread_gone())?;
        let Finished {
            result,
            mut devices,
            exits,
            memory,
            machine,
        } = f;
        let rest = Rest {
            controls: Controls { stop, stop_evt },
            timeout,
            t0,
            io_bitmap,
        };
        let paused = |machine, devices: Devices| {
            Box::new(Paused {
                ready_at: devices
                    .timeline
                    .phases
                    .iter()
                    .rev()
                    .find(|p| p.name == "ready")
                    .map_or_else(|| t0.elapsed(), |p| p.at),
                machine,
                devices,
                mem_bytes,
                cmdline,
                image,
                rest,
            })
        };
        match (result, machine) {
            (Ok(Stop::Ready), Some(machine)) => Ok(Driven::Ready(paused(machine, devices))),
            (Ok(Stop::Hibernate), Some(machine)) => Ok(Driven::Idle(paused(machine, devices))),
            (Ok(Stop::Exit(exit)), _) => Ok(Driven::Ended(RunOutcome {
                exit,
                exits,
                memory,
                phases: std::mem::take(&mut devices.timeline.phases),
                output_marks: std::mem::take(&mut devices.timeline.output_marks),
                console: devices.console.out.into_captured(),
            })),
            (Ok(Stop::Ready | Stop::Hibernate), None) => Err(thread_gone()),
            (Err(VmmError::Guest { reason, regs, .. }), _) => Err(VmmError::Guest {
                reason,
                regs,
                console: devices.console.out.into_captured(),
            }),
            (Err(e), _) => Err(e),
        }
    }
}

/// How the caller's thread stops a running VM: the flag the exit loop
/// checks, and the event a blocking console read waits on too.
pub(crate) struct Controls {
    pub stop: Arc<AtomicBool>,
    pub stop_evt: EventFd,
}

impl Controls {
    pub(crate) fn new() -> Result<Controls, VmmError> {
        Ok(Controls {
            stop: Arc::new(AtomicBool::new(false)),
            stop_evt: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(|source| VmmError::Thread { source })?,
        })
    }
}

/// The console devices of a new VM.
pub(crate) fn console(cfg: &crate::Console, stop_evt: &EventFd) -> crate::console::Console {
    match cfg {
        crate::Console::Stdio => crate::console::Console {
            out: ConsoleOut::Stdout(std::io::stdout()),
            input: ConsoleIn::stdin(stop_evt),
        },
        crate::Console::Log(file) => crate::console::Console {
            out: match file.as_ref().and_then(|f| f.try_clone().ok()) {
                Some(f) => ConsoleOut::File(f),
                None => ConsoleOut::Stderr(std::io::stderr()),
            },
            input: ConsoleIn::Buffer {
                data: Vec::new(),
                pos: 0,
            },
        },
        crate::Console::Capture { input } => crate::console::Console {
            out: ConsoleOut::Capture(Vec::new()),
            input: ConsoleIn::Buffer {
                data: input.clone(),
                pos: 0,
            },
        },
    }
}

/// The real-time signal that knocks the vCPU thread out of KVM_RUN (or any
/// other blocking syscall) when the run must stop. Offset 1 leaves SIGRTMIN
/// itself to whatever else shares the process.
fn kick_signal() -> i32 {
    SIGRTMIN() + 1
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: being delivered (without SA_RESTART) is the point, it
    // makes KVM_RUN return EINTR.
}

fn install_kick_handler() -> Result<(), VmmError> {
    static INSTALLED: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| register_signal_handler(kick_signal(), on_kick).map_err(|e| e.errno()))
        .map_err(|errno| VmmError::Thread {
            source: std::io::Error::from_raw_os_error(errno),
        })
}

/// The last VM's vCPU thread, still tearing it down.
static TEARDOWN: std::sync::Mutex<Option<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(None);

/// Waits until the previous VM of this process is gone. Its teardown
/// unmaps guest RAM, holding the process's memory map lock for
/// milliseconds, which a new VM's memory setup would otherwise wait on
/// inside its own timed setup (benchmarks run many VMs in one process).
pub(crate) fn settle() {
    let last = TEARDOWN.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(handle) = last {
        let _ = handle.join();
    }
}

/// The thread that runs the vCPU, waiting for its [`Start`]. If setup fails
/// before sending one, the dropped sender lets the thread end.
pub(crate) struct VcpuThread {
    handle: std::thread::JoinHandle<()>,
    start: mpsc::Sender<Start>,
}

impl VcpuThread {
    pub(crate) fn spawn() -> Result<VcpuThread, VmmError> {
        install_kick_handler()?;
        let (start, start_rx) = mpsc::channel::<Start>();
        let handle = std::thread::Builder::new()
            .name("pgkraft-vcpu".into())
            .spawn(move || {
                if let Ok(start) = start_rx.recv() {
                    run_vcpu(start);
                }
            })
            .map_err(|source| VmmError::Thread { source })?;
        Ok(VcpuThread { handle, start })
    }
}

fn run_vcpu(start: Start) {
    let Start {
        mut machine,
        mut devices,
        mem_bytes,
        io_bitmap,
        stop,
        resume_read,
        done,
    } = start;
    devices.placement.enter_vcpu();
    devices.timeline.mark("vmm_ready");
    if let Some(state) = &resume_read {
        let (hypercall, mut ctx) = devices.hypercall_ctx(machine.mem());
        hypercall.answer_resumed(&mut ctx, state);
    }
    let mut exits = ExitLoop {
        devices: &mut devices,
        stop: &stop,
        mem_bytes,
        io_bitmap,
        exits: 0,
        seen_exit: false,
    };
    let mut result = exits.run(&mut machine);
    let exits = exits.exits;
    if let Ok(stop @ (Stop::Ready | Stop::Hibernate)) = result {
        result = finish_out(&mut machine).map(|()| stop);
    }
    let paused = matches!(result, Ok(Stop::Ready | Stop::Hibernate));
    if !matches!(result, Ok(Stop::Hibernate)) {
        devices.timeline.mark("exit");
    }
    devices.console.flush();
    // A pass over resident RAM: only for runs that report, and not for a
    // VM handed back to be saved.
    let memory = (!paused)
        .then(|| devices.console.captured())
        .flatten()
        .map(|_| kvm::memory_use(machine.mem()));
    let _ = done.send(Finished {
        result,
        devices,
        exits,
        memory,
        machine: paused.then_some(machine),
    });
}

/// At the ready point the vCPU is inside an I/O exit; a KVM_RUN with
/// `immediate_exit` set lets KVM finish the instruction (on some paths KVM
/// advances RIP only on re-entry) without running guest code, so the saved
/// registers are those right after the `out`.
fn finish_out(machine: &mut Machine) -> Result<(), VmmError> {
    let (vcpu, _) = machine.parts();
    vcpu.set_kvm_immediate_exit(1);
    let r = vcpu.run().map(|_| ());
    vcpu.set_kvm_immediate_exit(0);
    match r {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        Ok(()) => Err(VmmError::Ioctl {
            ioctl: "KVM_RUN (immediate_exit)",
            source: kvm_ioctls::Error::new(libc::EBUSY),
        }),
        Err(source) => Err(VmmError::Ioctl {
            ioctl: "KVM_RUN (immediate_exit)",
            source,
        }),
    }
}

/// The exit loop: KVM_RUN, then the exit to the bus or to a verdict.
struct ExitLoop<'a> {
    devices: &'a mut Devices,
    stop: &'a AtomicBool,
    mem_bytes: u64,
    io_bitmap: bool,
    exits: u64,
    seen_exit: bool,
}

impl ExitLoop<'_> {
    fn guest_error(&self, machine: &Machine, reason: String) -> VmmError {
        VmmError::Guest {
            reason,
            regs: vcpu::dump(machine.vcpu()),
            console: Vec::new(),
        }
    }

    fn run(&mut self, machine: &mut Machine) -> Result<Stop, VmmError> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Stop::Exit(GuestExit::Timeout));
            }
            let (vcpu, mem) = machine.parts();
            let exit = match vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(source) => {
                    return Err(VmmError::Ioctl {
                        ioctl: "KVM_RUN",
                        source,
                    });
                }
            };
            self.exits += 1;
            if let Some(w) = self.devices.woke.take() {
                w.mark_resumed();
            }
            if self.devices.hypercall.watch.resumed && !self.seen_exit {
                self.seen_exit = true;
                self.devices.timeline.mark("first_exit");
            }
            let action = match exit {
                VcpuExit::IoOut(port, data) => self.devices.pio_write(mem, port, data),
                VcpuExit::IoIn(port, data) => {
                    self.devices.pio_read(mem, port, data);
                    Action::Continue
                }
                VcpuExit::MmioRead(addr, data) => {
                    let len = data.len();
                    if self.devices.mmio_read(mem, addr, data).is_none() {
                        let reason = self.mmio_reason("read of", addr, len);
                        return Err(self.guest_error(machine, reason));
                    }
                    Action::Continue
                }
                VcpuExit::MmioWrite(addr, data) => {
                    let len = data.len();
                    match self.devices.mmio_write(mem, addr, data) {
                        Some(action) => action,
                        None => {
                            let reason = self.mmio_reason("write of", addr, len);
                            return Err(self.guest_error(machine, reason));
                        }
                    }
                }
                VcpuExit::Shutdown => {
                    return Ok(Stop::Exit(GuestExit::Shutdown {
                        regs: format!(
                            "KVM_EXIT_SHUTDOWN: the guest triple-faulted (an exception it \
                             could not deliver){}\n{}",
                            self.port_io_hint(machine),
                            vcpu::dump(machine.vcpu())
                        ),
                    }));
                }
                VcpuExit::Hlt => {
                    let rflags = machine.vcpu().get_regs().map_or(0, |r| r.rflags);
                    if rflags & RFLAGS_IF == 0 {
                        return Ok(Stop::Exit(GuestExit::Shutdown {
                            regs: format!(
                                "KVM_EXIT_HLT with interrupts disabled: the guest stopped for \
                                 good\n{}",
                                vcpu::dump(machine.vcpu())
                            ),
                        }));
                    }
                    // No interrupt source exists yet to wake it; yield a
                    // little instead of spinning, then let it run on.
                    std::thread::sleep(Duration::from_millis(1));
                    Action::Continue
                }
                VcpuExit::InternalError => {
                    let (sub, data) = machine.internal_error();
                    let reason = format!(
                        "KVM_EXIT_INTERNAL_ERROR, suberror {sub} ({}), data {data:x?}",
                        match sub {
                            1 => "KVM could not emulate an instruction",
                            2 => "simultaneous exceptions",
                            3 => "unexpected event during exception delivery",
                            _ => "see KVM_INTERNAL_ERROR_* in linux/kvm.h",
                        }
                    );
                    return Err(self.guest_error(machine, reason));
                }
                VcpuExit::FailEntry(reason, cpu) => {
                    let reason = format!(
                        "KVM_EXIT_FAIL_ENTRY: KVM could not enter the guest \
                         (hardware_entry_failure_reason {reason:#x} on host cpu {cpu})"
                    );
                    return Err(self.guest_error(machine, reason));
                }
                other => {
                    let reason = format!("unexpected KVM exit reason {other:?}");
                    return Err(self.guest_error(machine, reason));
                }
            };
            match action {
                Action::Continue => {}
                Action::Exit(status) => return Ok(Stop::Exit(GuestExit::Status(status))),
                Action::Pause => return Ok(Stop::Ready),
                Action::Wait {
                    timeout,
                    ret_at,
                    sessions,
                } => {
                    if self.devices.wait(machine.mem(), timeout, ret_at, sessions) {
                        return Ok(Stop::Hibernate);
                    }
                }
            }
        }
    }

    /// The classic way to die on PVM: an `in`/`out` at CPL3 with no I/O
    /// bitmap in the TSS (PVM ignores IOPL), faulting with an empty IDT.
    fn port_io_hint(&self, machine: &Machine) -> &'static str {
        if self.io_bitmap {
            return "";
        }
        let Ok(regs) = machine.vcpu().get_regs() else {
            return "";
        };
        let mut insn = [0u8; 2];
        if machine
            .mem()
            .read_slice(&mut insn, GuestAddress(regs.rip))
            .is_err()
        {
            return "";
        }
        let op = if insn[0] == 0x66 { insn[1] } else { insn[0] };
        if matches!(op, 0xe4..=0xe7 | 0xec..=0xef) {
            ". It died on a port I/O instruction and TR covers no I/O permission \
             bitmap: this KVM (PVM) ignores RFLAGS.IOPL, so CPL3 port I/O needs one. Put \
             it right after the TSS (I/O map base 104, 128 zero bytes, then 0xff) and the \
             runner sizes TR to cover it"
        } else {
            ""
        }
    }

    fn mmio_reason(&self, what: &str, addr: u64, len: usize) -> String {
        format!(
            "MMIO {what} {len} bytes at guest physical {addr:#x}: there is no RAM or device \
             there (guest RAM is [0, {:#x}), {} MiB). A stray pointer, or the guest needs more \
             --mem",
            self.mem_bytes,
            self.mem_bytes / MIB
        )
    }
}

// Accessor for `pgkraft fleet status` (src/fleet/): kept apart from the
// rest of the runner, it only reports.
impl Vm {
    /// Where guest RAM lies in this process's address space, one range per
    /// region. A caller that hands the VM to [`Vm::serve`] can still tell
    /// how much of it is resident (from /proc/self/smaps) while it runs;
    /// the ranges mean nothing once the VM hibernated or ended.
    pub fn ram_host_ranges(&self) -> Vec<std::ops::Range<usize>> {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
        self.machine
            .mem()
            .iter()
            .filter_map(|region| {
                let start = region.get_host_address(MemoryRegionAddress(0)).ok()? as usize;
                Some(start..start + region.len() as usize)
            })
            .collect()
    }
}
