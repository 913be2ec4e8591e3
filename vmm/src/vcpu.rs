//! vCPU state for the pgkraft direct entry: the registers the image's PVH
//! stub would have left behind, written from the host so that no guest
//! instruction runs at CPL0 (emulated, ~1 µs each, on PVM).
//!
//! docs/ARCHITECTURE.md §4.

use std::sync::OnceLock;

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_msr_entry, kvm_regs, kvm_segment, kvm_xcrs,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};
use pgkraft_abi::{
    BootNote, MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK_NEW, USER_RFLAGS, cr, sel,
};

use super::VmmError;

const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSXSAVE: u64 = 1 << 18;
const XCR0_X87: u64 = 1;
const XCR0_SSE: u64 = 1 << 1;
const XCR0_AVX: u64 = 1 << 2;
/// KVM_FEATURE_CLOCKSOURCE2 in CPUID 0x4000_0001 EAX: the "new" kvmclock MSRs.
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;

/// What the host (and so the guest) CPU offers, as far as boot state goes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Features {
    pub xsave: bool,
    pub avx: bool,
    pub fsgsbase: bool,
    /// XCR0 bits the host lets a guest enable (CPUID 0xD.0 EAX).
    pub xcr0_supported: u64,
    pub kvmclock: bool,
}

/// What the host kernel enabled for its own processes: these work at CPL3
/// on this CPU whatever KVM advertises.
#[derive(Clone, Copy, Debug)]
struct HostFeatures {
    xsave: bool,
    avx: bool,
    fsgsbase: bool,
}

fn host_features() -> HostFeatures {
    // AT_HWCAP2 bit 1 (HWCAP2_FSGSBASE): the kernel set CR4.FSGSBASE, so
    // `wrfsbase` works in user mode.
    const HWCAP2_FSGSBASE: usize = 1 << 1;
    let (_, hwcap2) = rustix::param::linux_hwcap();
    HostFeatures {
        // std's detection checks OSXSAVE and XCR0, i.e. that the OS enabled them.
        xsave: std::arch::is_x86_feature_detected!("xsave"),
        avx: std::arch::is_x86_feature_detected!("avx"),
        fsgsbase: hwcap2 & HWCAP2_FSGSBASE != 0,
    }
}

/// KVM_GET_SUPPORTED_CPUID, with XSAVE/AVX/FSGSBASE added where the host
/// has them and KVM hides them. Computed once per process: it is the same
/// for every VM, and the ioctl costs ~150 µs.
///
/// Why add bits KVM does not advertise: PVM's supported CPUID drops XSAVE,
/// AVX and FSGSBASE (and SSE3..SSE4.2), yet guest CPL3 code runs natively
/// with the host's CR4 and XCR0, so AVX, `xgetbv` and `wrfsbase` work there
/// anyway. Without the bits, KVM_SET_SREGS refuses CR4.OSXSAVE/FSGSBASE and
/// the guest's `cpuid` shows OSXSAVE=0, so PostgreSQL's runtime checks would
/// skip its AVX code paths. On hardware KVM the supported list already has
/// every bit the host has, and nothing changes.
fn guest_cpuid(kvm: &Kvm) -> Result<CpuId, VmmError> {
    static CACHE: OnceLock<CpuId> = OnceLock::new();
    if let Some(c) = CACHE.get() {
        return Ok(c.clone());
    }
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmmError::ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    let host = host_features();
    for e in cpuid.as_mut_slice() {
        match (e.function, e.index) {
            (1, _) => {
                if host.xsave && e.ecx & CPUID1_XSAVE == 0 {
                    log::debug!("vmm: KVM hides XSAVE, the host has it: exposing it");
                    e.ecx |= CPUID1_XSAVE;
                }
                if host.avx && e.ecx & CPUID1_AVX == 0 {
                    log::debug!("vmm: KVM hides AVX, the host has it: exposing it");
                    e.ecx |= CPUID1_AVX;
                }
            }
            (7, 0) if host.fsgsbase && e.ebx & CPUID7_FSGSBASE == 0 => {
                log::debug!("vmm: KVM hides FSGSBASE, the host has it: exposing it");
                e.ebx |= CPUID7_FSGSBASE;
            }
            _ => {}
        }
    }
    Ok(CACHE.get_or_init(|| cpuid).clone())
}

const CPUID1_XSAVE: u32 = 1 << 26;
const CPUID1_AVX: u32 = 1 << 28;
const CPUID7_FSGSBASE: u32 = 1;

/// Gives the vCPU the host's CPUID (see [`guest_cpuid`]), so the guest (and
/// PostgreSQL's CPUID-driven code paths) see SSE/AVX/FSGSBASE as the host does.
pub(crate) fn set_cpuid(kvm: &Kvm, vcpu: &VcpuFd) -> Result<Features, VmmError> {
    let cpuid = guest_cpuid(kvm)?;
    let mut f = Features::default();
    for e in cpuid.as_slice() {
        match (e.function, e.index) {
            (1, _) => {
                f.xsave = e.ecx & CPUID1_XSAVE != 0;
                f.avx = e.ecx & CPUID1_AVX != 0;
            }
            (7, 0) => f.fsgsbase = e.ebx & CPUID7_FSGSBASE != 0,
            (0xd, 0) => f.xcr0_supported = u64::from(e.eax) | (u64::from(e.edx) << 32),
            (0x4000_0001, _) => f.kvmclock = e.eax & KVM_FEATURE_CLOCKSOURCE2 != 0,
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(VmmError::ioctl("KVM_SET_CPUID2"))?;
    Ok(f)
}

fn user_segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        // 11 = execute/read, accessed; 3 = read/write, accessed.
        type_: if code { 11 } else { 3 },
        present: 1,
        dpl: 3,
        // A 64-bit code segment must have L=1 and D=0.
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Long mode at CPL3 with the image's own GDT/IDT/TSS/page tables, IOPL=3,
/// `%rdi` = BootInfo, and kvmclock pointed at the image's pvclock structs.
/// Returns the CR4 actually used (FSGSBASE/OSXSAVE dropped when absent).
pub(crate) fn setup(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    note: &BootNote,
    f: &Features,
    tss_limit: u32,
) -> Result<u64, VmmError> {
    let mut cr4 = cr::CR4;
    if !f.fsgsbase {
        cr4 &= !CR4_FSGSBASE;
    }
    if !f.xsave {
        cr4 &= !CR4_OSXSAVE;
    }

    let mut sregs = vcpu.get_sregs().map_err(VmmError::ioctl("KVM_GET_SREGS"))?;
    sregs.cr0 = cr::CR0;
    sregs.cr3 = note.pml4;
    sregs.cr4 = cr4;
    sregs.efer = cr::EFER;
    sregs.gdt.base = note.gdt;
    sregs.gdt.limit = note.gdt_limit as u16;
    sregs.idt.base = note.idt;
    sregs.idt.limit = 0xfff;
    sregs.cs = user_segment(sel::USER_CS, true);
    let ds = user_segment(sel::USER_DS, false);
    sregs.ds = ds;
    sregs.es = ds;
    sregs.fs = ds;
    sregs.gs = ds;
    sregs.ss = ds;
    sregs.tr = kvm_segment {
        base: note.tss,
        limit: tss_limit,
        selector: sel::TSS,
        type_: 11, // busy 64-bit TSS
        present: 1,
        s: 0,
        ..Default::default()
    };
    vcpu.set_sregs(&sregs)
        .map_err(VmmError::ioctl("KVM_SET_SREGS"))?;

    if f.xsave && kvm.check_extension(Cap::Xcrs) {
        let mut want = XCR0_X87 | XCR0_SSE;
        if f.avx {
            want |= XCR0_AVX;
        }
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = want & (f.xcr0_supported | XCR0_X87);
        vcpu.set_xcrs(&xcrs)
            .map_err(VmmError::ioctl("KVM_SET_XCRS"))?;
    }

    let regs = kvm_regs {
        rip: note.entry64,
        rsp: note.stack_top,
        rdi: note.boot_info,
        rflags: USER_RFLAGS,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(VmmError::ioctl("KVM_SET_REGS"))?;

    if f.kvmclock {
        let entries = [
            kvm_msr_entry {
                index: MSR_KVM_SYSTEM_TIME_NEW,
                data: note.pvclock | 1,
                ..Default::default()
            },
            kvm_msr_entry {
                index: MSR_KVM_WALL_CLOCK_NEW,
                data: note.wall_clock,
                ..Default::default()
            },
        ];
        let n = set_msrs(vcpu, &entries)?;
        if n != entries.len() {
            // Not fatal: the guest sees pvclock version 0 and can fall back
            // to the TSC. Say which MSR KVM refused.
            log::warn!(
                "KVM accepted only {n} of 2 kvmclock MSRs (refused {:#x}); the guest has no kvmclock",
                entries[n].index
            );
        }
    } else {
        log::warn!("KVM does not offer kvmclock (CPUID 0x40000001 lacks CLOCKSOURCE2)");
    }
    Ok(cr4)
}

/// KVM_SET_MSRS: how many of `entries` KVM took (it stops at the first one
/// it refuses).
pub(crate) fn set_msrs(vcpu: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<usize, VmmError> {
    let msrs = Msrs::from_entries(entries).map_err(|_| VmmError::Ioctl {
        ioctl: "KVM_SET_MSRS",
        source: kvm_ioctls::Error::new(libc::E2BIG),
    })?;
    vcpu.set_msrs(&msrs)
        .map_err(VmmError::ioctl("KVM_SET_MSRS"))
}

/// A register dump for a guest that died: enough to find the faulting
/// instruction (`addr2line -e image <rip>`) and the faulting address.
pub(crate) fn dump(vcpu: &VcpuFd) -> String {
    let mut s = String::new();
    match vcpu.get_regs() {
        Ok(r) => s.push_str(&format!(
            "rip={:#018x} rsp={:#018x} rflags={:#x}\n\
             rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}\n",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp
        )),
        Err(e) => s.push_str(&format!("(KVM_GET_REGS failed: {e})\n")),
    }
    match vcpu.get_sregs() {
        Ok(r) => s.push_str(&format!(
            "cs={:#x} (dpl {}) ss={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            r.cs.selector, r.cs.dpl, r.ss.selector, r.cr0, r.cr2, r.cr3, r.cr4, r.efer
        )),
        Err(e) => s.push_str(&format!("(KVM_GET_SREGS failed: {e})")),
    }
    if let Ok(ev) = vcpu.get_vcpu_events()
        && (ev.exception.injected != 0 || ev.exception.pending != 0)
    {
        s.push_str(&format!(
            "\npending exception: vector {} error code {:#x}",
            ev.exception.nr, ev.exception.error_code
        ));
    }
    s
}
