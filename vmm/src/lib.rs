//! pgkraft's KVM runner (docs/ARCHITECTURE.md, "The runner"): boots one pgkraft image
//! through its direct 64-bit entry and serves its console, exit and boot-phase
//! ports. The contract with the guest is `pgkraft_abi`.
//!
//! Boot: the image's PT_LOAD segments appear at their physical addresses in
//! guest RAM `[0, mem)` (mapped from the file where possible, see `memory`); a [`BootInfo`] goes where the boot note says;
//! the vCPU is put in long mode at CPL3 purely through KVM ioctls (the state
//! the image's PVH stub would leave), so not one guest instruction runs at
//! CPL0 — on PVM, where CPL0 is emulated, that is what keeps boot fast.
//!
//! **Command line placement.** [`BootInfo::cmdline_gpa`] points right after
//! the BootInfo, on the page the boot note reserves for it, when the text
//! (plus a NUL, not counted in `cmdline_len`) fits there. Longer command
//! lines go to the last pages of RAM below 4 GiB, page aligned; the guest
//! must copy the text out before it hands those pages to its allocator.
//!
//! The rest of guest RAM is anonymous `MAP_NORESERVE` memory: pages cost
//! nothing until the guest touches them; bss is not zeroed by us.
//!
//! **Port I/O on PVM.** PVM drops the IOPL=3 the runner puts in RFLAGS, so
//! CPL3 `in`/`out` work there only through the TSS I/O permission bitmap,
//! which the CPU reads only inside TR's limit. The image says that limit in
//! its boot note (`tss_limit`); one whose TSS has no bitmap dies on PVM at
//! its first port write (the Shutdown report says so).
//!
//! **Process-wide effects.** The vCPU runs on its own thread; a timeout
//! stops it with the real-time signal `SIGRTMIN() + 1`, whose handler `run`
//! installs once per process. After `run` returns, that thread still closes
//! the VM and unmaps guest RAM in the background.
#![deny(unsafe_code)]

#[allow(dead_code)] // Wired in step by step.
mod bus;
mod console;
mod error;
mod image;
mod kvm;
mod memory;
#[allow(dead_code)]
mod timeline;
pub mod snapshot;
mod uffd;
mod vcpu;
mod virtio;
mod workingset;

use std::collections::HashSet;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuExit};
use pgkraft_abi::{
    BOOT_FLAG_CONSOLE_TTY, BOOT_FLAG_HYPERCALL, BOOT_INFO_MAGIC, BOOT_INFO_VERSION, BootInfo,
    BootNote, PORT_COM1, PORT_EXIT, PORT_HYPERCALL, PORT_PHASE, Phase, hc,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use console::{ConsoleIn, ConsoleOut, NoIrq, Stopped, Uart};
pub use error::VmmError;
use kvm::Machine;

const MIB: u64 = 1 << 20;

pub struct VmConfig {
    pub mem_mib: u32,
    /// Shell-quoted program arguments passed via BootInfo.cmdline; empty = the image's baked-in args.
    pub cmdline: String,
    pub timeout: Option<Duration>,
    pub console: Console,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            mem_mib: 128,
            cmdline: String::new(),
            timeout: None,
            console: Console::Stdio,
        }
    }
}

pub enum Console {
    /// Guest output streamed to our stdout as it comes; guest input read from our stdin.
    Stdio,
    /// Guest output captured (returned in RunOutcome.console); guest input served from this buffer, then EOF.
    Capture { input: Vec<u8> },
}

#[derive(Debug)]
pub struct RunOutcome {
    pub exit: GuestExit,
    /// Captured output (empty with [`Console::Stdio`]).
    pub console: Vec<u8>,
    /// In order: "vmm_ready", then each guest [`Phase`] by name, then "exit".
    pub phases: Vec<PhaseMark>,
    /// Number of VM exits, for the benchmarks.
    pub exits: u64,
    /// With [`Console::Capture`]: after each console write, when it came and
    /// how many bytes had been captured by then (at most [`MAX_OUTPUT_MARKS`]),
    /// so a caller can tell when a given piece of output arrived.
    pub output_marks: Vec<OutputMark>,
    /// Guest RAM when the guest stopped; only with [`Console::Capture`] (the
    /// runs that report), as it means a pass over resident RAM.
    pub memory: Option<MemoryUse>,
}

/// Guest RAM as the host sees it when the guest stops. The libOS never
/// gives pages back, so both are high-water marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUse {
    /// Host memory behind guest RAM: pages the guest (or the copied image)
    /// made the host allocate, huge pages counted whole. For a resumed
    /// guest, pages mapped from the snapshot count when they are in the
    /// host's page cache, shared or not.
    pub resident_bytes: u64,
    /// Of those, 4 KiB pages holding anything but zeros: what the guest
    /// actually used, image included.
    pub data_bytes: u64,
}

/// See [`RunOutcome::output_marks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputMark {
    /// Since `run()` was called.
    pub at: Duration,
    /// Bytes of console output captured up to and including this write.
    pub bytes: usize,
}

/// Bounds the marks' memory for guests that write a lot; later writes are
/// not marked.
pub const MAX_OUTPUT_MARKS: usize = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseMark {
    pub name: &'static str,
    /// Since `run()` was called.
    pub at: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest wrote this byte to `PORT_EXIT`.
    Status(u8),
    /// `VmConfig::timeout` passed first.
    Timeout,
    /// The guest died (triple fault, or `hlt` with interrupts off). `regs`
    /// starts with a line saying which, then a register dump.
    Shutdown { regs: String },
}

/// The boot note of an image, without booting it (`pgkraft inspect`).
pub fn read_boot_note(elf_bytes: &[u8]) -> Result<BootNote, VmmError> {
    read_boot_note_from(elf_bytes)
}

/// [`read_boot_note`] from any object reader (a file read on demand).
pub fn read_boot_note_from<'a, R: object::ReadRef<'a>>(elf: R) -> Result<BootNote, VmmError> {
    Ok(image::parse(elf)?.note)
}

/// Boots `image` and runs it until it exits, dies, or `cfg.timeout` passes.
pub fn run(image_path: &Path, cfg: &VmConfig) -> Result<RunOutcome, VmmError> {
    if let Some(resumed) = snapshot::redirected(image_path, cfg) {
        return resumed;
    }
    run_with(image_path, cfg, snapshot::Hooks::default())
}

/// [`run`], with the snapshot machinery's hooks (ready point, answer marks).
fn run_with(
    image_path: &Path,
    cfg: &VmConfig,
    hooks: snapshot::Hooks,
) -> Result<RunOutcome, VmmError> {
    settle();
    let t0 = Instant::now();
    // Started first so that creating and scheduling the thread overlaps
    // with the setup below instead of following it.
    let vcpu_thread = VcpuThread::spawn()?;
    let read_err = |source| VmmError::ReadImage {
        path: image_path.to_path_buf(),
        source,
    };
    let file = File::open(image_path).map_err(read_err)?;
    // Only headers and notes are read here; `memory::build` copies the
    // segments into guest RAM.
    let cache = object::ReadCache::new(&file);
    let img = image::parse(&cache).map_err(|e| e.with_path(image_path))?;
    drop(cache);
    if cfg.mem_mib == 0 {
        return Err(VmmError::Memory {
            mem_mib: 0,
            detail: "guest memory size must be at least 1 MiB".into(),
        });
    }
    img.check_fits(cfg.mem_mib)?;
    let mem_bytes = u64::from(cfg.mem_mib) * MIB;
    let cmdline_gpa = if cfg.cmdline.is_empty() {
        0
    } else {
        image::place_cmdline(&img.note, cfg.cmdline.len() as u64, mem_bytes).ok_or_else(|| {
            VmmError::TooBig {
                mem_mib: cfg.mem_mib,
                needed_mib: (img.note.image_end + cfg.cmdline.len() as u64 + 1).div_ceil(MIB) + 1,
                what: format!("the {}-byte command line", cfg.cmdline.len()),
                end: img.note.image_end + cfg.cmdline.len() as u64 + 1,
            }
        })?
    };
    let t_parse = t0.elapsed();

    let kvm = open_kvm()?;
    let vm = kvm::Vm::create(&kvm)?;
    let t_vm = t0.elapsed();

    let mem =
        memory::build(&file, &img, mem_bytes, cfg.mem_mib).map_err(|e| e.with_path(image_path))?;
    let t_load = t0.elapsed();
    let machine = Machine::new(vm, mem)?;
    let t_mem = t0.elapsed();

    write_boot_info(machine.mem(), &img.note, cfg, mem_bytes, cmdline_gpa)?;

    let tss_limit = img.note.tss_limit as u32;

    let features = vcpu::set_cpuid(&kvm, machine.vcpu())?;
    let cr4 = vcpu::setup(&kvm, machine.vcpu(), &img.note, &features, tss_limit)?;
    let t_vcpu = t0.elapsed();
    log::debug!(
        "vmm: setup took {t_vcpu:?}: spawn+parse {t_parse:?}, open+create_vm {:?}, \
         guest RAM+image {:?}, create_vcpu+memslots {:?}, vcpu state {:?} \
         (cr4 {cr4:#x}, TR limit {tss_limit}, {features:?})",
        t_vm - t_parse,
        t_load - t_vm,
        t_mem - t_load,
        t_vcpu - t_mem,
    );

    vcpu_thread.run(machine, cfg, mem_bytes, tss_limit > 103, t0, hooks)
}

fn open_kvm() -> Result<Kvm, VmmError> {
    Kvm::new().map_err(|e| VmmError::kvm_open(e.errno()))
}

fn write_boot_info(
    mem: &GuestMemoryMmap,
    note: &BootNote,
    cfg: &VmConfig,
    mem_bytes: u64,
    cmdline_gpa: u64,
) -> Result<(), VmmError> {
    // The guest's fds 0-2 claim to be a terminal only when ours is one, as
    // a native process would see it.
    let tty = matches!(cfg.console, Console::Stdio) && std::io::stdout().is_terminal();
    let info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        version: BOOT_INFO_VERSION,
        flags: BOOT_FLAG_HYPERCALL | if tty { BOOT_FLAG_CONSOLE_TTY } else { 0 },
        mem_bytes,
        cmdline_gpa,
        cmdline_len: cfg.cmdline.len() as u64,
    };
    let fault = |e: vm_memory::GuestMemoryError| VmmError::BadImage {
        path: None,
        detail: format!("could not write the BootInfo: {e}"),
    };
    mem.write_slice(
        &image::encode_boot_info(&info),
        GuestAddress(note.boot_info),
    )
    .map_err(fault)?;
    if !cfg.cmdline.is_empty() {
        let mut text = cfg.cmdline.as_bytes().to_vec();
        text.push(0);
        mem.write_slice(&text, GuestAddress(cmdline_gpa))
            .map_err(fault)?;
    }
    Ok(())
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

/// What the vCPU thread hands back.
struct Finished {
    result: Result<GuestExit, VmmError>,
    memory: Option<MemoryUse>,
    console: Vec<u8>,
    phases: Vec<PhaseMark>,
    exits: u64,
    output_marks: Vec<OutputMark>,
}

/// What the vCPU thread is started with once setup is done.
struct Start {
    machine: Machine,
    devices: Devices,
    done: mpsc::Sender<Finished>,
    on_ready: Option<snapshot::OnReady>,
}

/// The thread that runs the vCPU, waiting for its [`Start`]. If `run` fails
/// before sending one, the dropped sender lets the thread end.
struct VcpuThread {
    handle: std::thread::JoinHandle<()>,
    start: mpsc::Sender<Start>,
}

impl VcpuThread {
    fn spawn() -> Result<VcpuThread, VmmError> {
        install_kick_handler()?;
        let (start, start_rx) = mpsc::channel::<Start>();
        let handle = std::thread::Builder::new()
            .name("pgkraft-vcpu".into())
            .spawn(move || {
                let Ok(Start {
                    mut machine,
                    mut devices,
                    done,
                    on_ready,
                }) = start_rx.recv()
                else {
                    return;
                };
                devices.mark("vmm_ready");
                let result = devices.run(&mut machine);
                let result = snapshot::after_run(result, &mut machine, &mut devices, on_ready);
                devices.mark("exit");
                let _ = devices.uart.writer_mut().flush();
                let _ = done.send(Finished {
                    result,
                    memory: devices
                        .uart
                        .writer_mut()
                        .captured_len()
                        .map(|_| kvm::memory_use(machine.mem())),
                    exits: devices.exits,
                    phases: devices.phases,
                    output_marks: devices.output_marks,
                    console: devices.uart.into_writer().into_captured(),
                });
                drop(machine);
            })
            .map_err(|source| VmmError::Thread { source })?;
        Ok(VcpuThread { handle, start })
    }

    fn run(
        self,
        machine: Machine,
        cfg: &VmConfig,
        mem_bytes: u64,
        io_bitmap: bool,
        t0: Instant,
        hooks: snapshot::Hooks,
    ) -> Result<RunOutcome, VmmError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|source| VmmError::Thread { source })?;
        let (out, input) = match &cfg.console {
            Console::Stdio => (
                ConsoleOut::Stdout(std::io::stdout()),
                ConsoleIn::stdin(&stop_evt),
            ),
            Console::Capture { input } => (
                ConsoleOut::Capture(Vec::new()),
                ConsoleIn::Buffer {
                    data: input.clone(),
                    pos: 0,
                },
            ),
        };
        let mut devices = Devices {
            idle: snapshot::Idle::default(),
            uart: Uart::new(NoIrq, out),
            input,
            phases: Vec::with_capacity(8),
            exits: 0,
            output_marks: Vec::new(),
            t0,
            stop: stop.clone(),
            mem_bytes,
            io_bitmap,
            quiet_ports: HashSet::new(),
        };
        let (done, done_rx) = mpsc::channel::<Finished>();
        let thread_gone = || VmmError::Thread {
            source: std::io::Error::other("the vCPU thread ended unexpectedly"),
        };
        self.start
            .send(Start {
                on_ready: hooks.install(&mut devices),
                machine,
                devices,
                done,
            })
            .map_err(|_| thread_gone())?;

        let mut got = match cfg.timeout {
            None => done_rx
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            // The timeout counts from the call to `run`, setup included.
            Some(t) => done_rx.recv_timeout(t.saturating_sub(t0.elapsed())),
        };
        if let Err(mpsc::RecvTimeoutError::Timeout) = got {
            stop.store(true, Ordering::SeqCst);
            let _ = stop_evt.write(1);
            // Repeat the kick: a signal that lands between the vCPU thread's
            // stop check and its entry into KVM_RUN is otherwise lost.
            while let Err(mpsc::RecvTimeoutError::Timeout) = got {
                let _ = self.handle.kill(kick_signal());
                got = done_rx.recv_timeout(Duration::from_millis(2));
            }
        }
        // Not joined: the thread still closes the VM and unmaps guest RAM
        // (0.3-1 ms, more for big guests), which the caller need not wait
        // for; the next VM of this process waits for it (`settle`).
        *TEARDOWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.handle);
        let f = got.map_err(|_| thread_gone())?;
        match f.result {
            Ok(exit) => Ok(RunOutcome {
                exit,
                console: f.console,
                phases: f.phases,
                exits: f.exits,
                output_marks: f.output_marks,
                memory: f.memory,
            }),
            Err(VmmError::Guest { reason, regs, .. }) => Err(VmmError::Guest {
                reason,
                regs,
                console: f.console,
            }),
            Err(e) => Err(e),
        }
    }
}

/// Everything the vCPU thread serves exits with, apart from the VM itself.
struct Devices {
    /// Snapshot ready point, resumed console read, answer timing.
    idle: snapshot::Idle,
    uart: Uart,
    input: ConsoleIn,
    phases: Vec<PhaseMark>,
    exits: u64,
    output_marks: Vec<OutputMark>,
    t0: Instant,
    stop: Arc<AtomicBool>,
    mem_bytes: u64,
    /// The TSS has an I/O permission bitmap (its limit reaches past 103).
    io_bitmap: bool,
    /// Unhandled ports already logged, so a polling guest does not flood the log.
    quiet_ports: HashSet<u16>,
}

/// Largest chunk copied between guest RAM and the console per step.
const CHUNK: usize = 64 << 10;
const COM1_END: u16 = PORT_COM1 + 8;
const RFLAGS_IF: u64 = 1 << 9;

impl Devices {
    fn mark(&mut self, name: &'static str) {
        self.phases.push(PhaseMark {
            name,
            at: self.t0.elapsed(),
        });
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn guest_error(&self, machine: &Machine, reason: String) -> VmmError {
        VmmError::Guest {
            reason,
            regs: vcpu::dump(machine.vcpu()),
            console: Vec::new(),
        }
    }

    fn run(&mut self, machine: &mut Machine) -> Result<GuestExit, VmmError> {
        self.answer_resumed_read(machine.mem());
        loop {
            if self.stopping() {
                return Ok(GuestExit::Timeout);
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
            self.note_exit();
            match exit {
                VcpuExit::IoOut(PORT_EXIT, data) => {
                    return Ok(GuestExit::Status(data.first().copied().unwrap_or(0)));
                }
                VcpuExit::IoOut(PORT_PHASE, data) => {
                    let byte = data.first().copied().unwrap_or(0);
                    match Phase::from_u8(byte) {
                        Some(p) => self.mark(p.name()),
                        None => log::debug!("vmm: guest reported unknown phase {byte}"),
                    }
                }
                VcpuExit::IoOut(PORT_HYPERCALL, data) => {
                    if let Ok(gpa) = <[u8; 4]>::try_from(data) {
                        self.hypercall(mem, u64::from(u32::from_le_bytes(gpa)));
                        if self.idle.stopped() {
                            return Ok(GuestExit::Status(0));
                        }
                    } else {
                        log::warn!(
                            "vmm: {}-byte write to the hypercall port ignored; it takes a 32-bit gpa",
                            data.len()
                        );
                    }
                }
                VcpuExit::IoOut(port @ PORT_COM1..COM1_END, data) => {
                    for &b in data.iter() {
                        if let Err(e) = self.uart.write((port - PORT_COM1) as u8, b) {
                            log::debug!("vmm: serial output failed: {e:?}");
                        }
                    }
                }
                VcpuExit::IoIn(port @ PORT_COM1..COM1_END, data) => {
                    let offset = (port - PORT_COM1) as u8;
                    if offset == LSR {
                        self.refill_uart();
                    }
                    for b in data.iter_mut() {
                        *b = self.uart.read(offset);
                    }
                }
                VcpuExit::IoOut(port, _) => self.unhandled_port(port, "write to"),
                VcpuExit::IoIn(port, data) => {
                    data.fill(0xff);
                    self.unhandled_port(port, "read from");
                }
                VcpuExit::MmioRead(addr, data) => {
                    let reason = self.mmio_reason("read of", addr, data.len());
                    return Err(self.guest_error(machine, reason));
                }
                VcpuExit::MmioWrite(addr, data) => {
                    let reason = self.mmio_reason("write of", addr, data.len());
                    return Err(self.guest_error(machine, reason));
                }
                VcpuExit::Shutdown => {
                    return Ok(GuestExit::Shutdown {
                        regs: format!(
                            "KVM_EXIT_SHUTDOWN: the guest triple-faulted (an exception it \
                             could not deliver){}\n{}",
                            self.port_io_hint(machine),
                            vcpu::dump(machine.vcpu())
                        ),
                    });
                }
                VcpuExit::Hlt => {
                    let rflags = machine.vcpu().get_regs().map_or(0, |r| r.rflags);
                    if rflags & RFLAGS_IF == 0 {
                        return Ok(GuestExit::Shutdown {
                            regs: format!(
                                "KVM_EXIT_HLT with interrupts disabled: the guest stopped for \
                                 good\n{}",
                                vcpu::dump(machine.vcpu())
                            ),
                        });
                    }
                    // No interrupt source exists yet to wake it; yield a
                    // little instead of spinning, then let it run on.
                    std::thread::sleep(Duration::from_millis(1));
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

    fn unhandled_port(&mut self, port: u16, what: &str) {
        if self.quiet_ports.insert(port) {
            log::debug!("vmm: guest {what} port {port:#x}: no device there (reads give 0xff)");
        }
    }

    /// Moves input that is available right now into an empty UART FIFO, so a
    /// guest polling the line status register sees "data ready".
    fn refill_uart(&mut self) {
        if self.uart.read(LSR) & LSR_DATA_READY != 0 {
            return;
        }
        let mut buf = [0u8; 64];
        let room = self.uart.fifo_capacity().min(buf.len());
        let n = self.input.read_now(&mut buf[..room]);
        if n > 0 {
            let _ = self.uart.enqueue_raw_bytes(&buf[..n]);
        }
    }

    /// Serves the [`pgkraft_abi::Hypercall`] block at `gpa` and writes its `ret`.
    fn hypercall(&mut self, mem: &GuestMemoryMmap, gpa: u64) {
        let mut block = [0u8; HC_SIZE];
        if mem.read_slice(&mut block, GuestAddress(gpa)).is_err() {
            log::warn!("vmm: hypercall block at {gpa:#x} is outside guest RAM; ignored");
            return;
        }
        let op = u32::from_le_bytes(block[0..4].try_into().unwrap());
        let arg = |i: usize| u64::from_le_bytes(block[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let ret = match op {
            hc::CONSOLE_WRITE => self.console_write(mem, arg(0), arg(1)),
            hc::CONSOLE_READ if self.stop_at_ready_point(gpa, arg(0), arg(1)) => return,
            hc::CONSOLE_READ => self.console_read(mem, arg(0), arg(1)),
            hc::LOG => self.log(mem, arg(0), arg(1)),
            hc::SLEEP_NS => {
                self.sleep(Duration::from_nanos(arg(0)));
                0
            }
            _ => -i64::from(libc::ENOSYS),
        };
        let _ = mem.write_slice(&ret.to_le_bytes(), GuestAddress(gpa + HC_RET_OFFSET));
    }

    fn console_write(&mut self, mem: &GuestMemoryMmap, gpa: u64, len: u64) -> i64 {
        if !in_ram(mem, gpa, len) {
            return -i64::from(libc::EFAULT);
        }
        let mut buf = vec![0u8; (len as usize).min(CHUNK)];
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) as usize).min(CHUNK);
            if mem
                .read_slice(&mut buf[..n], GuestAddress(gpa + done))
                .is_err()
            {
                return -i64::from(libc::EFAULT);
            }
            if self.uart.writer_mut().write_all(&buf[..n]).is_err() {
                return -i64::from(libc::EIO);
            }
            done += n as u64;
        }
        let _ = self.uart.writer_mut().flush();
        self.note_output(mem);
        if let Some(bytes) = self.uart.writer_mut().captured_len()
            && self.output_marks.len() < MAX_OUTPUT_MARKS
        {
            self.output_marks.push(OutputMark {
                at: self.t0.elapsed(),
                bytes,
            });
        }
        len as i64
    }

    /// libOS diagnostics go to our stderr, never into the guest's console.
    fn log(&mut self, mem: &GuestMemoryMmap, gpa: u64, len: u64) -> i64 {
        const MAX: u64 = 64 << 10;
        if !in_ram(mem, gpa, len) {
            return -i64::from(libc::EFAULT);
        }
        let mut buf = vec![0u8; len.min(MAX) as usize];
        if mem.read_slice(&mut buf, GuestAddress(gpa)).is_err() {
            return -i64::from(libc::EFAULT);
        }
        if !buf.ends_with(b"\n") {
            buf.push(b'\n');
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"guest: ").and_then(|()| err.write_all(&buf));
        len as i64
    }

    fn console_read(&mut self, mem: &GuestMemoryMmap, gpa: u64, cap: u64) -> i64 {
        if cap == 0 {
            return 0;
        }
        if !in_ram(mem, gpa, cap) {
            return -i64::from(libc::EFAULT);
        }
        // A prompt the guest wrote must be visible before we wait for the answer.
        let _ = self.uart.writer_mut().flush();
        let mut buf = vec![0u8; (cap as usize).min(CHUNK)];
        match self.input.read_blocking(&mut buf) {
            Ok(n) => {
                if mem.write_slice(&buf[..n], GuestAddress(gpa)).is_err() {
                    return -i64::from(libc::EFAULT);
                }
                self.note_input(n);
                n as i64
            }
            Err(Stopped) => -i64::from(libc::EINTR),
        }
    }

    /// Sleeps, but wakes within a few milliseconds of a stop request.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= end || self.stopping() {
                return;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(5)));
        }
    }
}

const LSR: u8 = 5;
const LSR_DATA_READY: u8 = 1;
const HC_SIZE: usize = std::mem::size_of::<pgkraft_abi::Hypercall>();
const HC_RET_OFFSET: u64 = std::mem::offset_of!(pgkraft_abi::Hypercall, ret) as u64;
/// `args[3]` of the block: where a resumed read is flagged.
const HC_RESUMED_OFFSET: u64 = std::mem::offset_of!(pgkraft_abi::Hypercall, args) as u64 + 3 * 8;

fn in_ram(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> bool {
    usize::try_from(len).is_ok_and(|len| mem.check_range(GuestAddress(gpa), len))
}
