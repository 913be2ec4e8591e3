//! A cold boot: guest RAM with the image in it, the BootInfo, and the vCPU
//! put in long mode at CPL3 purely through KVM ioctls (the state the
//! image's PVH stub would leave), so not one guest instruction runs at CPL0
//! — on PVM, where CPL0 is emulated, that is what keeps boot fast.
//!
//! **Command line placement.** [`BootInfo::cmdline_gpa`] points right after
//! the BootInfo, on the page the boot note reserves for it, when the text
//! (plus a NUL, not counted in `cmdline_len`) fits there. Longer command
//! lines go to the last pages of RAM below 4 GiB, page aligned; the guest
//! must copy the text out before it hands those pages to its allocator.
//!
//! **Port I/O on PVM.** PVM drops the IOPL=3 the runner puts in RFLAGS, so
//! CPL3 `in`/`out` work there only through the TSS I/O permission bitmap,
//! which the CPU reads only inside TR's limit. The image says that limit in
//! its boot note (`tss_limit`); one whose TSS has no bitmap dies on PVM at
//! its first port write (the Shutdown report says so).
//!
//! docs/ARCHITECTURE.md §4.

use std::io::IsTerminal;
use std::time::Instant;

use pgkraft_abi::{
    BOOT_FLAG_CONSOLE_TTY, BOOT_FLAG_HYPERCALL, BOOT_INFO_MAGIC, BOOT_INFO_VERSION, BootInfo,
    BootNote, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOT_SIZE, VOLUME_MMIO_SLOT,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::Devices;
use crate::devices::hypercall::Hypercall;
use crate::devices::uart::Uart;
use crate::image::{self, BootImage};
use crate::kvm::{self, Machine};
use crate::net::NetError;
use crate::net::tap::TapNet;
use crate::net::user::UserNet;
use crate::placement::Placement;
use crate::timeline::Timeline;
use crate::virtio::mmio::MmioTransport;
use crate::virtio::net::{GUEST_MAC, VirtioNet};
use crate::virtio::p9::VirtioP9;
use crate::virtio::worker::Worked;
use crate::vm::{self, Parts, VcpuThread, Vm};
use crate::{Console, MIB, VmConfig, VmmError, VolumeError, memory, vcpu};

/// Sets up a VM that boots `image` as `cfg` says; [`Vm::run`] runs it.
/// The run's clock starts here, counting the image's open and parse as if
/// they had just happened: a run of the image file pays them.
pub fn boot(image: &BootImage, cfg: &VmConfig) -> Result<Vm, VmmError> {
    vm::settle();
    let now = Instant::now();
    let t0 = now.checked_sub(image.opened_in).unwrap_or(now);
    // Checked first: a CPU the vCPU cannot have fails the boot before
    // any thread or device exists.
    let placement = Placement::new(cfg.vcpu_cpu)?;
    // Started first so that creating and scheduling the thread overlaps
    // with the setup below instead of following it.
    let thread = VcpuThread::spawn()?;
    let img = &image.parsed;
    // Bound before anything else: a published port in use fails the boot
    // before a VM exists.
    let activity = cfg.hibernate.as_ref().map(|_| crate::net::Activity::new());
    let net = cfg
        .net
        .as_ref()
        .map(|n| open_net(n, activity.clone()))
        .transpose()?;
    let idle = match (&cfg.hibernate, &net, activity) {
        (None, _, _) => None,
        (Some(h), Some(Backend::User(user)), Some(activity)) => {
            let wake = user
                .wake_set()
                .map_err(|e| VmmError::Net(NetError::Setup(e)))?;
            crate::snapshot::hibernate::forget_stale(h);
            Some(crate::snapshot::hibernate::IdleClock::new(
                activity, h, wake,
            ))
        }
        (Some(_), _, _) => return Err(VmmError::HibernateNeedsPublish),
    };
    // Opened as early: a missing volume fails the boot before a VM exists.
    let volume = cfg
        .volume
        .as_ref()
        .map(|v| VirtioP9::new(&v.dir, &v.tag, &placement))
        .transpose()?;
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
    let shell = kvm::VmShell::create(&kvm)?;
    let t_vm = t0.elapsed();

    let mem = memory::build(image.file(), img, mem_bytes, cfg.mem_mib)
        .map_err(|e| e.with_path(image.path()))?;
    let t_load = t0.elapsed();
    let machine = Machine::new(shell, mem)?;
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
    let vm::Controls { stop, stop_evt } = vm::Controls::new()?;
    let mut devices = Devices::new(
        Uart::new(),
        Hypercall::new(stop.clone()),
        vm::console(&cfg.console, &stop_evt),
        Timeline::new(t0),
        &stop_evt,
    )
    .map_err(|source| VmmError::Thread { source })?;
    if let Some(net) = net {
        attach_net(&mut devices, net, machine.mem(), &placement)?;
    }
    if let Some(volume) = volume {
        attach_volume(&mut devices, volume, machine.mem(), &placement)?;
    }
    devices.placement = placement;
    if let Some(s) = &cfg.signals {
        devices
            .listen_signals(s.clone())
            .map_err(|source| VmmError::Thread { source })?;
    }
    devices.idle = idle;
    Ok(Vm::new(Parts {
        machine,
        devices,
        thread,
        stop,
        stop_evt,
        timeout: cfg.timeout,
        t0,
        mem_bytes,
        cmdline: cfg.cmdline.clone(),
        image: Some(image.id()),
        io_bitmap: tss_limit > 103,
        resume_read: None,
    }))
}

/// The network's backend: the tap device if one is named, else the
/// user-mode network with its published ports.
fn open_net(
    cfg: &crate::NetConfig,
    activity: Option<crate::net::Activity>,
) -> Result<Backend, NetError> {
    match &cfg.tap {
        Some(_) if !cfg.publish.is_empty() => Err(NetError::TapWithPublish),
        Some(name) => Ok(Backend::Tap(TapNet::open(name)?)),
        None => Ok(Backend::User(Box::new(UserNet::new(
            &cfg.publish,
            activity,
        )?))),
    }
}

enum Backend {
    User(Box<UserNet>),
    Tap(TapNet),
}

/// The network device: virtio-net on its backend, in the first
/// virtio-mmio slot.
fn attach_net(
    devices: &mut Devices,
    backend: Backend,
    mem: &GuestMemoryMmap,
    placement: &Placement,
) -> Result<(), VmmError> {
    let setup = |e: std::io::Error| VmmError::Net(NetError::Setup(e));
    let device: Box<dyn crate::bus::MmioDevice> = match backend {
        Backend::User(b) => Box::new(
            Worked::start(
                transport(VirtioNet::new(*b, GUEST_MAC))?,
                mem.clone(),
                "pgkraft-net",
                placement,
            )
            .map_err(setup)?,
        ),
        Backend::Tap(b) => Box::new(
            Worked::start(
                transport(VirtioNet::new(b, GUEST_MAC))?,
                mem.clone(),
                "pgkraft-net",
                placement,
            )
            .map_err(setup)?,
        ),
    };
    devices
        .attach_mmio(
            VIRTIO_MMIO_BASE..VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOT_SIZE,
            device,
        )
        .map_err(|e| VmmError::Net(NetError::Setup(std::io::Error::other(e.to_string()))))
}

/// The volume's virtio-9p device, in its own virtio-mmio slot, served on
/// a notify's exit and by a worker thread (`virtio/p9.rs`).
fn attach_volume(
    devices: &mut Devices,
    dev: VirtioP9,
    mem: &GuestMemoryMmap,
    placement: &Placement,
) -> Result<(), VmmError> {
    let other = |e: String| VmmError::Volume(VolumeError::Device(e));
    let t = MmioTransport::new(dev.worked()).map_err(|e| other(e.to_string()))?;
    let worked =
        Worked::start(t, mem.clone(), "pgkraft-9p", placement).map_err(|e| other(e.to_string()))?;
    let base = VIRTIO_MMIO_BASE + VOLUME_MMIO_SLOT * VIRTIO_MMIO_SLOT_SIZE;
    devices
        .attach_mmio(base..base + VIRTIO_MMIO_SLOT_SIZE, Box::new(worked))
        .map_err(|e| other(e.to_string()))
}

fn transport<B: crate::net::NetBackend>(
    dev: VirtioNet<B>,
) -> Result<MmioTransport<VirtioNet<B>>, VmmError> {
    MmioTransport::new(dev)
        .map_err(|e| VmmError::Net(NetError::Setup(std::io::Error::other(e.to_string()))))
}

pub(crate) fn open_kvm() -> Result<kvm_ioctls::Kvm, VmmError> {
    kvm_ioctls::Kvm::new().map_err(|e| VmmError::kvm_open(e.errno()))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use pgkraft_abi::VOLUME_TAG;
    use vmm_sys_util::eventfd::EventFd;

    use super::*;

    #[test]
    fn the_volume_sits_in_its_slot_and_is_not_snapshotted() {
        let t = tempfile::tempdir().unwrap();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut d = crate::devices::tests::test_devices(Arc::new(AtomicBool::new(false)), &evt);
        assert!(d.unsaved_state().is_none());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let placed = Placement::default();
        attach_volume(
            &mut d,
            VirtioP9::new(t.path(), VOLUME_TAG, &placed).unwrap(),
            &mem,
            &placed,
        )
        .unwrap();
        let slot = VIRTIO_MMIO_BASE + VOLUME_MMIO_SLOT * VIRTIO_MMIO_SLOT_SIZE;
        let mut word = [0u8; 4];
        // DeviceID at 0x008: 9, virtio-9p.
        d.mmio_read(&mem, slot + 8, &mut word).unwrap();
        assert_eq!(u32::from_le_bytes(word), 9);
        // Slot 0 (the network's) stays empty without a network.
        d.mmio_read(&mem, VIRTIO_MMIO_BASE + 8, &mut word).unwrap();
        assert_eq!(u32::from_le_bytes(word), 0);
        assert!(d.unsaved_state().is_some());
    }
}
