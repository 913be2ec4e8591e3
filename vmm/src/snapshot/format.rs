//! vCPU and VM state: a small binary format of named sections, each the raw
//! bytes of one KVM structure (`#[repr(C)]`, converted with zerocopy), and
//! the FPU codec (kvm_fpu has padding, so it is written field by field).
//!
//! docs/ARCHITECTURE.md §5.

use std::collections::BTreeMap;

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_fpu,
    kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::VcpuFd;
use zerocopy::{FromBytes, IntoBytes};

use crate::VmmError;
use crate::kvm::Machine;

const VCPU_MAGIC: &[u8; 8] = b"PGKVCPU1";
const VM_MAGIC: &[u8; 8] = b"PGKVM001";

pub(crate) struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    fpu: kvm_fpu,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debugregs: kvm_debugregs,
    events: kvm_vcpu_events,
    mp_state: kvm_mp_state,
    cpuid: Vec<kvm_cpuid_entry2>,
    msrs: Vec<kvm_msr_entry>,
}

fn fpu_bytes(f: &kvm_fpu) -> Vec<u8> {
    let mut v = Vec::with_capacity(416);
    for r in &f.fpr {
        v.extend_from_slice(r);
    }
    v.extend_from_slice(&f.fcw.to_le_bytes());
    v.extend_from_slice(&f.fsw.to_le_bytes());
    v.push(f.ftwx);
    v.extend_from_slice(&f.last_opcode.to_le_bytes());
    v.extend_from_slice(&f.last_ip.to_le_bytes());
    v.extend_from_slice(&f.last_dp.to_le_bytes());
    for r in &f.xmm {
        v.extend_from_slice(r);
    }
    v.extend_from_slice(&f.mxcsr.to_le_bytes());
    v
}

fn fpu_from(b: &[u8]) -> Option<kvm_fpu> {
    if b.len() != 8 * 16 + 2 + 2 + 1 + 2 + 8 + 8 + 16 * 16 + 4 {
        return None;
    }
    let mut f = kvm_fpu::default();
    let mut at = 0;
    let mut take = |n: usize| {
        let s = &b[at..at + n];
        at += n;
        s
    };
    for r in &mut f.fpr {
        r.copy_from_slice(take(16));
    }
    f.fcw = u16::from_le_bytes(take(2).try_into().ok()?);
    f.fsw = u16::from_le_bytes(take(2).try_into().ok()?);
    f.ftwx = take(1)[0];
    f.last_opcode = u16::from_le_bytes(take(2).try_into().ok()?);
    f.last_ip = u64::from_le_bytes(take(8).try_into().ok()?);
    f.last_dp = u64::from_le_bytes(take(8).try_into().ok()?);
    for r in &mut f.xmm {
        r.copy_from_slice(take(16));
    }
    f.mxcsr = u32::from_le_bytes(take(4).try_into().ok()?);
    Some(f)
}

struct Sections(Vec<u8>);

impl Sections {
    fn new(magic: &[u8; 8]) -> Sections {
        Sections(magic.to_vec())
    }
    fn put(&mut self, name: &str, bytes: &[u8]) {
        let mut tag = [0u8; 8];
        tag[..name.len()].copy_from_slice(name.as_bytes());
        self.0.extend_from_slice(&tag);
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }
}

/// Sections by name; `None` if the framing is broken.
fn parse_sections<'a>(magic: &[u8; 8], b: &'a [u8]) -> Option<BTreeMap<String, &'a [u8]>> {
    let mut rest = b.strip_prefix(magic.as_slice())?;
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        if rest.len() < 16 {
            return None;
        }
        let name =
            String::from_utf8(rest[..8].iter().copied().filter(|&c| c != 0).collect()).ok()?;
        let len = usize::try_from(u64::from_le_bytes(rest[8..16].try_into().ok()?)).ok()?;
        rest = &rest[16..];
        if rest.len() < len {
            return None;
        }
        out.insert(name, &rest[..len]);
        rest = &rest[len..];
    }
    Some(out)
}

fn one<T: FromBytes>(s: &BTreeMap<String, &[u8]>, name: &str) -> Result<T, String> {
    let b = s
        .get(name)
        .ok_or_else(|| format!("section `{name}` is missing"))?;
    T::read_from_bytes(b).map_err(|_| {
        format!(
            "section `{name}` has {} bytes, expected {}",
            b.len(),
            std::mem::size_of::<T>()
        )
    })
}

fn many<T: FromBytes + zerocopy::Immutable>(
    s: &BTreeMap<String, &[u8]>,
    name: &str,
) -> Result<Vec<T>, String> {
    let b = s
        .get(name)
        .ok_or_else(|| format!("section `{name}` is missing"))?;
    let size = std::mem::size_of::<T>();
    if b.len() % size != 0 {
        return Err(format!("section `{name}` is not a whole number of entries"));
    }
    Ok(b.chunks_exact(size)
        .map(|c| T::read_from_bytes(c).expect("exact size"))
        .collect())
}

impl VcpuState {
    pub(crate) fn capture(
        vcpu: &VcpuFd,
        msr_index: &[u32],
        xsave2: usize,
    ) -> Result<VcpuState, VmmError> {
        if xsave2 > std::mem::size_of::<kvm_xsave>() {
            return Err(VmmError::Ioctl {
                ioctl: "KVM_GET_XSAVE",
                source: kvm_ioctls::Error::new(libc::E2BIG),
            });
        }
        Ok(VcpuState {
            regs: vcpu.get_regs().map_err(VmmError::ioctl("KVM_GET_REGS"))?,
            sregs: vcpu.get_sregs().map_err(VmmError::ioctl("KVM_GET_SREGS"))?,
            fpu: vcpu.get_fpu().map_err(VmmError::ioctl("KVM_GET_FPU"))?,
            xsave: vcpu.get_xsave().map_err(VmmError::ioctl("KVM_GET_XSAVE"))?,
            xcrs: vcpu.get_xcrs().map_err(VmmError::ioctl("KVM_GET_XCRS"))?,
            debugregs: vcpu
                .get_debug_regs()
                .map_err(VmmError::ioctl("KVM_GET_DEBUGREGS"))?,
            events: vcpu
                .get_vcpu_events()
                .map_err(VmmError::ioctl("KVM_GET_VCPU_EVENTS"))?,
            mp_state: vcpu
                .get_mp_state()
                .map_err(VmmError::ioctl("KVM_GET_MP_STATE"))?,
            cpuid: vcpu
                .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
                .map_err(VmmError::ioctl("KVM_GET_CPUID2"))?
                .as_slice()
                .to_vec(),
            msrs: read_msrs(vcpu, msr_index)?,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut s = Sections::new(VCPU_MAGIC);
        s.put("regs", self.regs.as_bytes());
        s.put("sregs", self.sregs.as_bytes());
        s.put("fpu", &fpu_bytes(&self.fpu));
        s.put("xsave", self.xsave.as_bytes());
        s.put("xcrs", self.xcrs.as_bytes());
        s.put("debug", self.debugregs.as_bytes());
        s.put("events", self.events.as_bytes());
        s.put("mpstate", self.mp_state.as_bytes());
        s.put("cpuid", self.cpuid.as_slice().as_bytes());
        s.put("msrs", self.msrs.as_slice().as_bytes());
        s.0
    }

    pub(crate) fn decode(b: &[u8]) -> Result<VcpuState, String> {
        let s = parse_sections(VCPU_MAGIC, b).ok_or("not a pgkraft vCPU state file")?;
        Ok(VcpuState {
            regs: one(&s, "regs")?,
            sregs: one(&s, "sregs")?,
            fpu: fpu_from(s.get("fpu").ok_or("section `fpu` is missing")?)
                .ok_or("section `fpu` has the wrong size")?,
            xsave: one(&s, "xsave")?,
            xcrs: one(&s, "xcrs")?,
            debugregs: one(&s, "debug")?,
            events: one(&s, "events")?,
            mp_state: one(&s, "mpstate")?,
            cpuid: many(&s, "cpuid")?,
            msrs: many(&s, "msrs")?,
        })
    }

    pub(crate) fn apply(&self, machine: &Machine, xsave2: usize) -> Result<(), VmmError> {
        let vcpu = machine.vcpu();
        // CPUID first: KVM checks CR4 and XCR0 bits against it.
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|_| VmmError::Ioctl {
            ioctl: "KVM_SET_CPUID2",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(VmmError::ioctl("KVM_SET_CPUID2"))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(VmmError::ioctl("KVM_SET_SREGS"))?;
        vcpu.set_regs(&self.regs)
            .map_err(VmmError::ioctl("KVM_SET_REGS"))?;
        vcpu.set_xcrs(&self.xcrs)
            .map_err(VmmError::ioctl("KVM_SET_XCRS"))?;
        vcpu.set_fpu(&self.fpu)
            .map_err(VmmError::ioctl("KVM_SET_FPU"))?;
        machine.set_xsave(&self.xsave, xsave2)?;
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(VmmError::ioctl("KVM_SET_DEBUGREGS"))?;
        let n = crate::vcpu::set_msrs(vcpu, &self.msrs)?;
        if n != self.msrs.len() {
            return Err(VmmError::Ioctl {
                ioctl: "KVM_SET_MSRS",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            })
            .inspect_err(|_| {
                log::error!(
                    "KVM refused MSR {:#x} ({} of {} restored)",
                    self.msrs[n].index,
                    n,
                    self.msrs.len()
                )
            });
        }
        vcpu.set_vcpu_events(&self.events)
            .map_err(VmmError::ioctl("KVM_SET_VCPU_EVENTS"))?;
        vcpu.set_mp_state(self.mp_state)
            .map_err(VmmError::ioctl("KVM_SET_MP_STATE"))?;
        Ok(())
    }
}

/// Every listed MSR KVM lets us read. KVM_GET_MSRS stops at the first one
/// it cannot read, so those are dropped one by one (snapshot time only).
fn read_msrs(vcpu: &VcpuFd, index: &[u32]) -> Result<Vec<kvm_msr_entry>, VmmError> {
    let mut want: Vec<u32> = index.to_vec();
    loop {
        let entries: Vec<kvm_msr_entry> = want
            .iter()
            .map(|&i| kvm_msr_entry {
                index: i,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| VmmError::Ioctl {
            ioctl: "KVM_GET_MSRS",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let n = vcpu
            .get_msrs(&mut msrs)
            .map_err(VmmError::ioctl("KVM_GET_MSRS"))?;
        if n == want.len() {
            return settable(vcpu, msrs.as_slice().to_vec());
        }
        log::debug!("vmm: MSR {:#x} is not readable; not saved", want[n]);
        want.remove(n);
    }
}

/// The MSRs KVM accepts back, found by writing them to the stopped vCPU
/// (same values, so nothing changes): KVM lists some it then refuses to
/// set (on PVM, e.g. MSR_KVM_ASYNC_PF_INT). A refused MSR at its reset
/// value 0 is dropped, since a fresh vCPU has it anyway; any other refusal
/// is an error, so resume can restore the list in one KVM_SET_MSRS.
fn settable(vcpu: &VcpuFd, mut list: Vec<kvm_msr_entry>) -> Result<Vec<kvm_msr_entry>, VmmError> {
    let mut from = 0;
    while from < list.len() {
        let n = crate::vcpu::set_msrs(vcpu, &list[from..])?;
        let at = from + n;
        if at == list.len() {
            break;
        }
        if list[at].data != 0 {
            log::error!(
                "KVM does not accept MSR {:#x} = {:#x} back; the snapshot could not be restored",
                list[at].index,
                list[at].data
            );
            return Err(VmmError::Ioctl {
                ioctl: "KVM_SET_MSRS",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            });
        }
        log::debug!(
            "vmm: MSR {:#x} (0) cannot be set; not saved",
            list[at].index
        );
        list.remove(at);
        from = at;
    }
    Ok(list)
}

pub(crate) fn encode_clock(c: &kvm_clock_data) -> Vec<u8> {
    let mut s = Sections::new(VM_MAGIC);
    s.put("clock", c.as_bytes());
    s.0
}

pub(crate) fn decode_clock(b: &[u8]) -> Result<kvm_clock_data, String> {
    let s = parse_sections(VM_MAGIC, b).ok_or("not a pgkraft VM state file")?;
    one(&s, "clock")
}

/// The MSRs to save and KVM's XSAVE size: the same for every VM of the
/// process, asked once.
pub(crate) fn vcpu_shape() -> Result<&'static (Vec<u32>, usize), VmmError> {
    static SHAPE: std::sync::OnceLock<(Vec<u32>, usize)> = std::sync::OnceLock::new();
    if let Some(s) = SHAPE.get() {
        return Ok(s);
    }
    let kvm = crate::boot::open_kvm()?;
    let msrs = kvm
        .get_msr_index_list()
        .map_err(VmmError::ioctl("KVM_GET_MSR_INDEX_LIST"))?
        .as_slice()
        .to_vec();
    let xsave2 = kvm.check_extension_int(kvm_ioctls::Cap::Xsave2).max(0) as usize;
    Ok(SHAPE.get_or_init(|| (msrs, xsave2)))
}
