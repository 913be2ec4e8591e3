//! Time from kvmclock (pvclock): the host publishes a TSC-to-nanoseconds
//! conversion in a page we own, so reading the clock is rdtsc plus arithmetic
//! at CPL3, with no VM exit. Both boot paths register that page.

use crate::arch::{cpu, image};

/// Nanoseconds since the VM's clock started.
pub fn monotonic_ns() -> u64 {
    let c = image::read_pvclock();
    if c.version == 0 || c.mul == 0 {
        return fallback_ns();
    }
    let mut delta = cpu::rdtsc().wrapping_sub(c.tsc_timestamp);
    if c.shift < 0 {
        delta >>= -c.shift as u32;
    } else {
        delta <<= c.shift as u32;
    }
    c.system_time + ((delta as u128 * c.mul as u128) >> 32) as u64
}

/// Nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    let (sec, nsec) = image::read_wall_clock();
    (sec as u64) * 1_000_000_000 + nsec as u64 + monotonic_ns()
}

/// Without kvmclock: the TSC at the frequency CPUID reports (leaf 0x15, then
/// 0x16), or 1 GHz if it reports none. Only reached under VMMs that hide
/// kvmclock; the wall clock then starts at the epoch.
fn fallback_ns() -> u64 {
    static KHZ: spin::Once<u64> = spin::Once::new();
    let khz = *KHZ.call_once(|| {
        let l15 = cpu::cpuid(0x15, 0);
        if l15.eax != 0 && l15.ebx != 0 && l15.ecx != 0 {
            return l15.ecx as u64 * l15.ebx as u64 / l15.eax as u64 / 1000;
        }
        let l16 = cpu::cpuid(0x16, 0);
        if l16.eax != 0 {
            return l16.eax as u64 * 1000;
        }
        1_000_000
    });
    ((cpu::rdtsc() as u128 * 1_000_000) / khz as u128) as u64
}
