//! The runner's `unsafe` code, with `uffd.rs`: handing guest RAM to KVM,
//! mapping file pages into guest RAM and advising the kernel about it, and
//! reading one `kvm_run` union field the safe kvm-ioctls API does not
//! decode.
//!
//! Why this is sound is written next to each block. Everything outside this
//! module and `uffd.rs` is safe Rust (`vmm` denies `unsafe_code`).
//!
//! docs/ARCHITECTURE.md §4.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::VmmError;

/// A VM with one vCPU and its guest RAM, owned together so that the RAM
/// mapping provably outlives KVM's use of it.
pub(crate) struct Machine {
    // Fields drop in declaration order: the vCPU fd, then the VM fd, then the
    // RAM mapping. Once both fds are closed KVM holds no reference to the host
    // addresses registered below, so unmapping them afterwards is safe. The
    // fields are private so nobody can move the RAM out and drop it early.
    vcpu: VcpuFd,
    vm: VmFd,
    mem: GuestMemoryMmap,
}

/// A VM and its vCPU before guest RAM exists: creating them needs nothing
/// else.
pub(crate) struct VmShell {
    // Same drop order as `Machine`.
    vcpu: VcpuFd,
    vm: VmFd,
}

impl VmShell {
    pub(crate) fn create(kvm: &kvm_ioctls::Kvm) -> Result<VmShell, VmmError> {
        let vm = kvm.create_vm().map_err(VmmError::ioctl("KVM_CREATE_VM"))?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(VmmError::ioctl("KVM_CREATE_VCPU"))?;
        Ok(VmShell { vcpu, vm })
    }

    pub(crate) fn vm(&self) -> &VmFd {
        &self.vm
    }
}

impl Machine {
    pub(crate) fn new(vm: VmShell, mem: GuestMemoryMmap) -> Result<Machine, VmmError> {
        // The vCPU exists before RAM is registered so that, should
        // registration fail, the `Machine` already exists and its drop order
        // applies to the half-registered state too.
        let VmShell { vcpu, vm } = vm;
        let m = Machine { vcpu, vm, mem };
        for (slot, region) in m.mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| VmmError::Memory {
                    mem_mib: (region.len() >> 20) as u32,
                    detail: e.to_string(),
                })?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `host` is the start of a live anonymous mapping of
            // exactly `region.len()` bytes owned by `m.mem`, which (see the
            // field order above) is unmapped only after the VM and vCPU fds
            // are closed. The regions of one GuestMemoryMmap never overlap,
            // and each gets its own slot.
            unsafe { m.vm.set_user_memory_region(r) }
                .map_err(VmmError::ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(m)
    }

    pub(crate) fn vcpu(&self) -> &VcpuFd {
        &self.vcpu
    }

    pub(crate) fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The VM, for VM-wide state (the KVM clock) in snapshots.
    pub(crate) fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// KVM_SET_XSAVE with the legacy 4 KiB `kvm_xsave`. `xsave2_size` is
    /// what `KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)` answered for this VM (0
    /// when the capability is missing): the number of bytes KVM copies in.
    pub(crate) fn set_xsave(
        &self,
        xsave: &kvm_bindings::kvm_xsave,
        xsave2_size: usize,
    ) -> Result<(), VmmError> {
        if xsave2_size > std::mem::size_of::<kvm_bindings::kvm_xsave>() {
            return Err(VmmError::Ioctl {
                ioctl: "KVM_SET_XSAVE",
                source: kvm_ioctls::Error::new(libc::E2BIG),
            });
        }
        // SAFETY: KVM reads at most max(4096, KVM_CAP_XSAVE2) bytes from the
        // pointer; the check above makes that at most the size of `xsave`,
        // which is a live, initialized `kvm_xsave`.
        unsafe { self.vcpu.set_xsave(xsave) }.map_err(VmmError::ioctl("KVM_SET_XSAVE"))
    }

    /// The vCPU to run and the RAM to serve its exits from, borrowed at once.
    pub(crate) fn parts(&mut self) -> (&mut VcpuFd, &GuestMemoryMmap) {
        (&mut self.vcpu, &self.mem)
    }

    /// `kvm_run.internal` after a `KVM_EXIT_INTERNAL_ERROR`: the sub-error
    /// (1 = emulation failure, 2 = simultaneous exceptions, 3 = unexpected
    /// delivery event) and its data words, for the error message.
    pub(crate) fn internal_error(&mut self) -> (u32, Vec<u64>) {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: only called right after KVM_RUN returned
        // KVM_EXIT_INTERNAL_ERROR, for which the kernel fills the `internal`
        // member of the union. Every bit pattern is a valid u32/u64, and
        // `ndata` is clamped to the array length.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        (internal.suberror, internal.data[..n].to_vec())
    }
}

/// Replaces guest RAM `[gpa, gpa + len)` with a private (copy-on-write)
/// mapping of `file` from `offset`, in place: the pages stay inside the one
/// RAM mapping, so KVM still sees a single memory slot (each extra slot
/// costs an SRCU grace period to install). Must be called before
/// [`Machine::new`] registers `mem` with KVM.
pub(crate) fn map_file_into(
    mem: &GuestMemoryMmap,
    gpa: u64,
    len: u64,
    file: &File,
    offset: u64,
) -> io::Result<()> {
    const PAGE: u64 = 4096;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    if len == 0
        || !gpa.is_multiple_of(PAGE)
        || !len.is_multiple_of(PAGE)
        || !offset.is_multiple_of(PAGE)
    {
        return Err(bad("file mapping not page aligned"));
    }
    let (region, at) = mem
        .to_region_addr(GuestAddress(gpa))
        .ok_or_else(|| bad("file mapping outside guest RAM"))?;
    let end =
        at.0.checked_add(len)
            .ok_or_else(|| bad("file mapping overflows"))?;
    if end > region.len() {
        return Err(bad("file mapping crosses the end of a RAM region"));
    }
    let host = region
        .get_host_address(at)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let off = libc::off_t::try_from(offset).map_err(|_| bad("file offset too large"))?;
    // SAFETY: `[host, host + len)` lies inside one live anonymous mapping
    // owned by `mem` (checked just above), so MAP_FIXED replaces only pages
    // of that mapping, never memory Rust owns elsewhere; `mem` unmaps the
    // whole range, these pages included, when it is dropped. Guest RAM is
    // only ever accessed through raw/volatile pointers (vm-memory), never
    // through Rust references, so swapping the pages underneath is not
    // observable as aliasing. KVM does not know `mem` yet (see above).
    let p = unsafe {
        libc::mmap(
            host.cast(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ask for transparent huge pages behind guest RAM's anonymous parts.
///
/// Why: on PVM every first guest touch of a 4 KiB page the shadow MMU has
/// not seen is a VM exit, ~25 µs measured here, whether or not the host
/// has the page already (MADV_POPULATE does not help). With 2 MiB host
/// pages the shadow MMU maps 2 MiB at a time, and PostgreSQL's first answer
/// came twice as fast (80 -> 37 ms on an uncompressed-rootfs image, see
/// README "Design notes"). Without THP (`never`) the call is a no-op.
pub(crate) fn use_huge_pages(mem: &GuestMemoryMmap) {
    for region in mem.iter() {
        if let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) {
            // SAFETY: the range is exactly one live mapping owned by `mem`;
            // MADV_HUGEPAGE only changes how future faults are served and
            // never the contents of memory.
            unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
        }
    }
}

/// Asks for huge pages (or, `huge` false, for none) behind guest RAM
/// `[gpa, gpa + len)`. For a file mapping, `huge` also makes each page-cache
/// miss read one 2 MiB folio, which the host then maps whole; random-access
/// advice keeps readahead from adding smaller folios after it.
pub(crate) fn advise_huge(mem: &GuestMemoryMmap, gpa: u64, len: u64, huge: bool) -> io::Result<()> {
    let host = host_range(mem, gpa, len)?;
    let advice: &[i32] = if huge {
        &[libc::MADV_HUGEPAGE, libc::MADV_RANDOM]
    } else {
        &[libc::MADV_NOHUGEPAGE]
    };
    for &a in advice {
        // SAFETY: the range lies inside one live mapping owned by `mem`
        // (host_range checked it); the advice changes how later faults are
        // served, never what memory holds.
        if unsafe { libc::madvise(host.cast(), len as usize, a) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Drops `file`'s clean, unmapped pages from the page cache (advice only;
/// pages other processes map stay).
pub(crate) fn drop_cache(file: &File) {
    // SAFETY: fadvise takes an fd and integers and only advises the kernel.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn host_range(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> io::Result<*mut u8> {
    let (region, at) = mem
        .to_region_addr(GuestAddress(gpa))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "outside guest RAM"))?;
    if at.0.checked_add(len).is_none_or(|end| end > region.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "crosses the end of a RAM region",
        ));
    }
    region
        .get_host_address(at)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Faults guest RAM `[gpa, gpa + len)` in ahead of use with `madvise`
/// (`MADV_POPULATE_WRITE` if `write`, else `MADV_POPULATE_READ`).
pub(crate) fn populate(mem: &GuestMemoryMmap, gpa: u64, len: u64, write: bool) -> io::Result<()> {
    let host = host_range(mem, gpa, len)?;
    let advice = if write {
        libc::MADV_POPULATE_WRITE
    } else {
        libc::MADV_POPULATE_READ
    };
    // SAFETY: the range lies inside one live mapping owned by `mem` (checked
    // above). Populating faults pages in as a read or write access would;
    // it never changes what the memory holds (a write fault on a private
    // file mapping copies the page, same bytes), so nothing Rust can
    // observe changes.
    let r = unsafe { libc::madvise(host.cast(), len as usize, advice) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the host pages behind guest RAM `[gpa, gpa + len)` back: they
/// read as zeroes at the next touch. Only for anonymous RAM (a file
/// mapping would read its file's bytes again): Unsupported otherwise.
pub(crate) fn discard(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> io::Result<()> {
    let (region, _) = mem
        .to_region_addr(GuestAddress(gpa))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "outside guest RAM"))?;
    if region.file_offset().is_some() {
        return Err(io::ErrorKind::Unsupported.into());
    }
    let host = host_range(mem, gpa, len)?;
    // SAFETY: the range lies inside one live anonymous private mapping
    // owned by `mem` (checked above); MADV_DONTNEED replaces its pages by
    // zero-fill-on-demand ones. Guest RAM is only ever reached through
    // vm-memory's volatile accessors and the guest itself, never through
    // Rust references, so no reference sees the bytes change.
    if unsafe { libc::madvise(host.cast(), len as usize, libc::MADV_DONTNEED) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What guest RAM costs the host when asked: see [`super::MemoryUse`].
pub(crate) fn memory_use(mem: &GuestMemoryMmap) -> super::MemoryUse {
    const PAGE: usize = 4096;
    let mut used = super::MemoryUse::default();
    let mut zero = [0u8; PAGE];
    let empty = [0u8; PAGE];
    for region in mem.iter() {
        let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) else {
            continue;
        };
        let pages = region.len() as usize / PAGE;
        let mut resident = vec![0u8; pages];
        // SAFETY: `host` starts a live mapping of `region.len()` bytes owned
        // by `mem`, and `resident` has one byte per page of it, as mincore
        // requires. mincore only reports; it changes nothing.
        let r = unsafe { libc::mincore(host.cast(), pages * PAGE, resident.as_mut_ptr()) };
        if r != 0 {
            continue;
        }
        for (i, _) in resident.iter().enumerate().filter(|(_, r)| **r & 1 != 0) {
            used.resident_bytes += PAGE as u64;
            let at = region.start_addr().0 + (i * PAGE) as u64;
            if mem.read_slice(&mut zero, GuestAddress(at)).is_ok() && zero != empty {
                used.data_bytes += PAGE as u64;
            }
        }
    }
    used
}

/// Gives the process's free heap memory back to the host (glibc keeps
/// freed memory below the heap's top for reuse). A hibernated VM's process
/// then holds what it uses, not what setup once needed: ~14 MiB of the
/// serving process's private memory was such free heap when measured.
pub(crate) fn trim_host_heap() {
    // SAFETY: malloc_trim takes an integer and only returns free memory.
    unsafe { libc::malloc_trim(0) };
}
