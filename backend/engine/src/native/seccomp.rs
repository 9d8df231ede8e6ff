//! Seccomp for container processes: translates the OCI profile (`linux.seccomp`) into a classic
//! BPF program with libseccomp, exports it once, and installs that program in each container
//! process (the main process and every exec) just before it execs.
//!
//! Why not libcontainer's own seccomp support: its tenant builder (exec) drops the profile, so
//! exec'd processes would run unconfined, and compiling in every container process costs about
//! 10 ms of CPU for Docker's default profile (mostly for the x86 and x32 compat ABIs), which
//! execs cannot afford. The shim compiles here instead, once (per shim and profile), and its
//! executor installs the cached program in the main process, its restarts and every exec
//! alike. The spec libcontainer sees has no `linux.seccomp`.
//!
//! The translation follows libcontainer 0.7's, with one deliberate difference: it fails closed.
//! A name libseccomp cannot resolve, a masked comparison without a mask, an action or flag that
//! cannot be honoured: each is an error that stops the start, never a rule silently skipped.
//! `SCMP_CMP_MASKED_EQ` is read as libcontainer reads it (see `native::spec`): `valueTwo` is
//! the mask, `value` the datum.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};
use sha2::{Digest, Sha256};

use crate::api::{EngineError, Result};

use super::sys;

/// Size of one classic BPF instruction (`struct sock_filter`).
pub const INSTRUCTION_BYTES: usize = 8;
/// The kernel refuses longer programs (BPF_MAXINSNS).
const MAX_INSTRUCTIONS: usize = 4096;
/// System calls take at most six arguments.
const MAX_ARGS: usize = 6;

/// A compiled seccomp filter: the BPF program and the `seccomp(2)` flags to install it with.
#[derive(Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl Filter {
    /// Compiles a profile. Any problem with it is an internal error: the container must not
    /// start (or the exec run) with a weaker filter than the spec describes.
    pub fn compile(profile: &LinuxSeccomp) -> Result<Filter> {
        let flags = filter_flags(profile)?;
        let bytes = export_bpf(profile)?;
        let program = decode(&bytes)?;
        Ok(Filter { program, flags })
    }

    /// Compiles a profile, or loads what an earlier compile of the same profile (by the same
    /// porthole and libseccomp versions) left in `cache_dir`. Compiling costs ~10 ms, and every
    /// container start runs a fresh shim: the cache keeps that off the start path.
    pub fn compile_cached(profile: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter> {
        let flags = filter_flags(profile)?;
        let key = cache_key(profile)?;
        let path = cache_dir.join(format!("{key}.bpf"));
        if let Ok(bytes) = std::fs::read(&path) {
            match decode(&bytes) {
                Ok(program) => return Ok(Filter { program, flags }),
                Err(_) => tracing::warn!("ignoring a damaged seccomp cache entry {}", path.display()),
            }
        }
        let bytes = export_bpf(profile)?;
        let program = decode(&bytes)?;
        // Best effort: a cache that cannot be written only costs the next start a compile.
        let tmp = cache_dir.join(format!("{key}.{}.tmp", std::process::id()));
        let stored = std::fs::create_dir_all(cache_dir)
            .and_then(|_| std::fs::write(&tmp, &bytes))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = stored {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!("cannot cache the compiled seccomp filter: {e}");
        }
        Ok(Filter { program, flags })
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// Installs the filter in the calling thread (inherited by what it execs). Sets
    /// no_new_privs first: see [`sys::install_seccomp_filter`].
    pub fn install(&self) -> std::io::Result<()> {
        sys::install_seccomp_filter(&self.program, self.flags)
    }
}

/// What a compiled program depends on: the profile, the translation (this porthole's
/// version) and the compiler (libseccomp's version), and the architecture.
fn cache_key(profile: &LinuxSeccomp) -> Result<String> {
    let json =
        serde_json::to_vec(profile).map_err(|e| EngineError::internal("cannot encode the seccomp profile", e))?;
    let version = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .map_err(|e| libseccomp_error("cannot read libseccomp's version", e))?;
    let mut hasher = Sha256::new();
    hasher.update(&json);
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update(version.as_bytes());
    hasher.update(std::env::consts::ARCH.as_bytes());
    Ok(hex::encode(hasher.finalize()))
}

fn profile_error(what: impl Into<String>) -> EngineError {
    let what = what.into();
    EngineError::internal(format!("invalid seccomp profile: {what}"), what)
}

fn libseccomp_error(what: impl Into<String>, err: libseccomp::error::SeccompError) -> EngineError {
    EngineError::internal(format!("invalid seccomp profile: {}", what.into()), err)
}

/// Translates the profile with libseccomp and exports the BPF program (native byte order, a
/// whole number of `struct sock_filter`).
pub fn export_bpf(profile: &LinuxSeccomp) -> Result<Vec<u8>> {
    let ctx = filter_context(profile)?;
    let memfd = nix::sys::memfd::memfd_create(c"porthole-seccomp", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
        .map_err(|e| EngineError::internal("cannot create a memfd for the seccomp filter", e))?;
    ctx.export_bpf(&memfd).map_err(|e| EngineError::internal("cannot export the seccomp filter", e))?;
    let mut file = std::fs::File::from(memfd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| EngineError::internal("cannot read the exported seccomp filter", e))?;
    Ok(bytes)
}

/// Splits an exported program into instructions.
fn decode(bytes: &[u8]) -> Result<Vec<libc::sock_filter>> {
    if bytes.is_empty() || bytes.len() % INSTRUCTION_BYTES != 0 {
        return Err(EngineError::internal(
            "the exported seccomp filter is malformed",
            format!("{} bytes, not a non-zero multiple of {INSTRUCTION_BYTES}", bytes.len()),
        ));
    }
    let count = bytes.len() / INSTRUCTION_BYTES;
    if count > MAX_INSTRUCTIONS {
        return Err(profile_error(format!(
            "it compiles to {count} BPF instructions; the kernel accepts at most {MAX_INSTRUCTIONS}"
        )));
    }
    Ok(bytes
        .chunks_exact(INSTRUCTION_BYTES)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// The `seccomp(2)` flags a profile asks for.
fn filter_flags(profile: &LinuxSeccomp) -> Result<libc::c_ulong> {
    let mut flags = 0;
    for flag in profile.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            // Only meaningful with a user-space notifier, which is not supported.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(profile_error("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs SCMP_ACT_NOTIFY"))
            }
        };
    }
    Ok(flags)
}

fn filter_context(profile: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    if profile.listener_path().is_some() {
        return Err(profile_error("a seccomp notification listener is not supported"));
    }
    let default_action = translate_action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default_action)
        .map_err(|e| libseccomp_error(format!("default action {:?}", profile.default_action()), e))?;
    for &arch in profile.architectures().iter().flatten() {
        ctx.add_arch(translate_arch(arch)).map_err(|e| libseccomp_error(format!("architecture {arch:?}"), e))?;
    }
    for syscall in profile.syscalls().iter().flatten() {
        let action = translate_action(syscall.action(), syscall.errno_ret())?;
        // libseccomp rejects a rule whose action is the default one; such a rule changes
        // nothing, so leaving it out is exact.
        if action == default_action {
            continue;
        }
        let comparisons: Vec<ScmpArgCompare> =
            syscall.args().iter().flatten().map(translate_arg).collect::<Result<_>>()?;
        // A rule may compare each argument once. Comparisons of one argument repeated are
        // alternatives: add each as a rule of its own (runc and libcontainer do the same).
        let mut seen = HashSet::new();
        let repeated = syscall.args().iter().flatten().any(|a| !seen.insert(a.index()));
        let rules: Vec<&[ScmpArgCompare]> =
            if repeated { comparisons.chunks(1).collect() } else { vec![&comparisons[..]] };
        if syscall.names().is_empty() {
            return Err(profile_error("a syscall rule names no system call"));
        }
        for name in syscall.names() {
            let number = ScmpSyscall::from_name(name)
                .map_err(|e| libseccomp_error(format!("unknown system call {name:?}"), e))?;
            for rule in &rules {
                ctx.add_rule_conditional(action, number, rule)
                    .map_err(|e| libseccomp_error(format!("cannot add the rule for {name:?}"), e))?;
            }
        }
    }
    Ok(ctx)
}

fn translate_action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    let data = |what: &str, default: u32| -> Result<u16> {
        let value = errno.unwrap_or(default);
        u16::try_from(value).map_err(|_| profile_error(format!("{what} value {value} does not fit in 16 bits")))
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(data("errno", libc::EPERM as u32)?)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(data("trace", libc::EPERM as u32)?),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        // Needs an agent on the other end of a listener fd; without one the process would hang.
        LinuxSeccompAction::ScmpActNotify => return Err(profile_error("SCMP_ACT_NOTIFY is not supported")),
    })
}

fn translate_arg(arg: &oci_spec::runtime::LinuxSeccompArg) -> Result<ScmpArgCompare> {
    if arg.index() >= MAX_ARGS {
        return Err(profile_error(format!("argument index {} (system calls have {MAX_ARGS})", arg.index())));
    }
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // libcontainer's reading: valueTwo is the mask, value the datum. Without a mask the
        // comparison would be `arg & 0 == value`, which matches everything when value is 0:
        // refuse it rather than allow a call the profile meant to restrict.
        LinuxSeccompOperator::ScmpCmpMaskedEq => match arg.value_two() {
            Some(mask) => ScmpCompareOp::MaskedEqual(mask),
            None => {
                return Err(profile_error(format!(
                    "SCMP_CMP_MASKED_EQ on argument {} has no mask (valueTwo)",
                    arg.index()
                )))
            }
        },
    };
    Ok(ScmpArgCompare::new(arg.index() as u32, op, arg.value()))
}

fn translate_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSyscall};

    use super::super::spec::default_seccomp;
    use super::*;
    use crate::api::ErrorKind;

    fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
        let mut s = LinuxSyscall::default();
        s.set_names(names.iter().map(|n| n.to_string()).collect());
        s.set_action(action);
        s
    }

    fn profile(syscalls: Vec<LinuxSyscall>) -> LinuxSeccomp {
        let mut p = LinuxSeccomp::default();
        p.set_default_action(LinuxSeccompAction::ScmpActErrno);
        p.set_default_errno_ret(Some(1));
        p.set_syscalls(Some(syscalls));
        p
    }

    #[test]
    fn the_default_profile_compiles() {
        let profile = default_seccomp();
        let filter = Filter::compile(&profile).unwrap();
        assert!(!filter.is_empty());
        assert!(filter.len() <= MAX_INSTRUCTIONS);
        assert_eq!(filter.flags, 0);
    }

    #[test]
    fn exported_bpf_is_whole_instructions() {
        let bytes = export_bpf(&default_seccomp()).unwrap();
        assert!(!bytes.is_empty());
        assert_eq!(bytes.len() % INSTRUCTION_BYTES, 0);
        assert_eq!(decode(&bytes).unwrap().len(), bytes.len() / INSTRUCTION_BYTES);
        // The default profile checks the architecture, then the syscall number, and ends with
        // the default action: one allow-list, hundreds of instructions.
        assert!(bytes.len() / INSTRUCTION_BYTES > 100);
        // The same profile always compiles to the same program.
        assert_eq!(export_bpf(&default_seccomp()).unwrap(), bytes);
    }

    #[test]
    fn unknown_system_calls_are_an_error() {
        let p = profile(vec![rule(&["read", "no_such_syscall_at_all"], LinuxSeccompAction::ScmpActAllow)]);
        let err = Filter::compile(&p).err().expect("an unknown name must not be skipped");
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(err.message().contains("unknown system call \"no_such_syscall_at_all\""), "{}", err.detail());
    }

    #[test]
    fn masked_equal_needs_a_mask_and_notify_is_refused() {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(0u64)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .unwrap();
        let mut clone = rule(&["clone"], LinuxSeccompAction::ScmpActAllow);
        clone.set_args(Some(vec![arg]));
        let err = Filter::compile(&profile(vec![clone])).err().unwrap();
        assert!(err.message().contains("no mask"), "{}", err.detail());

        let err = Filter::compile(&profile(vec![rule(&["ioctl"], LinuxSeccompAction::ScmpActNotify)])).err().unwrap();
        assert!(err.message().contains("SCMP_ACT_NOTIFY"), "{}", err.detail());

        let mut big_errno = rule(&["read"], LinuxSeccompAction::ScmpActErrno);
        big_errno.set_errno_ret(Some(70_000));
        assert!(Filter::compile(&profile(vec![big_errno])).is_err());
    }

    /// Runs a seccomp BPF program on one system call, as the kernel would: a small classic-BPF
    /// interpreter over `struct seccomp_data` (nr, arch, instruction pointer, six arguments).
    fn run(program: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&(nr as i32).to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let word = |k: u32| u32::from_ne_bytes(data[k as usize..k as usize + 4].try_into().unwrap());
        let (mut a, mut x, mut mem, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
        loop {
            let insn = program[pc];
            pc += 1;
            let (code, k) = (insn.code as u32, insn.k);
            let src = if code & 0x08 != 0 { x } else { k };
            match code & 0x07 {
                0x00 => match code & 0xe0 {
                    0x00 => a = k,
                    0x20 => a = word(k),
                    0x60 => a = mem[k as usize],
                    m => panic!("unexpected BPF load mode {m:#x}"),
                },
                0x01 => match code & 0xe0 {
                    0x00 => x = k,
                    0x60 => x = mem[k as usize],
                    m => panic!("unexpected BPF load mode {m:#x}"),
                },
                0x02 => mem[k as usize] = a,
                0x03 => mem[k as usize] = x,
                0x04 => match code & 0xf0 {
                    0x00 => a = a.wrapping_add(src),
                    0x10 => a = a.wrapping_sub(src),
                    0x40 => a |= src,
                    0x50 => a &= src,
                    0x60 => a <<= src,
                    0x70 => a >>= src,
                    0xa0 => a ^= src,
                    op => panic!("unexpected BPF ALU op {op:#x}"),
                },
                0x05 => {
                    let taken = match code & 0xf0 {
                        0x00 => {
                            pc += k as usize;
                            continue;
                        }
                        0x10 => a == src,
                        0x20 => a > src,
                        0x30 => a >= src,
                        0x40 => a & src != 0,
                        op => panic!("unexpected BPF jump {op:#x}"),
                    };
                    pc += if taken { insn.jt } else { insn.jf } as usize;
                }
                0x06 => return if code & 0x10 != 0 { a } else { k },
                _ => match code & 0xf8 {
                    0x00 => x = a,
                    0x80 => a = x,
                    op => panic!("unexpected BPF misc op {op:#x}"),
                },
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_default_filter_allows_and_refuses_what_the_profile_says() {
        const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        const X32_BIT: i64 = 0x4000_0000;
        const ALLOW: u32 = 0x7fff_0000;
        const EPERM: u32 = 0x0005_0000 | 1;
        const ENOSYS: u32 = 0x0005_0000 | 38;
        let filter = Filter::compile(&default_seccomp()).unwrap();
        let call = |nr: i64, arg0: u64| run(&filter.program, AUDIT_ARCH_X86_64, nr, [arg0, 0, 0, 0, 0, 0]);

        assert_eq!(call(libc::SYS_read, 0), ALLOW);
        assert_eq!(call(libc::SYS_execve, 0), ALLOW);
        assert_eq!(call(libc::SYS_unshare, libc::CLONE_NEWUSER as u64), EPERM);
        assert_eq!(call(libc::SYS_mount, 0), EPERM);
        assert_eq!(call(libc::SYS_setns, 0), EPERM);
        assert_eq!(call(libc::SYS_clone3, 0), ENOSYS);
        // clone: threads and plain forks pass, any namespace flag is refused. This is where
        // valueTwo (the mask) and value (the datum) must not be swapped.
        let thread = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID;
        assert_eq!(call(libc::SYS_clone, thread as u64), ALLOW);
        assert_eq!(call(libc::SYS_clone, libc::SIGCHLD as u64), ALLOW);
        for ns in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWPID, libc::CLONE_NEWNET] {
            assert_eq!(call(libc::SYS_clone, (ns | libc::SIGCHLD) as u64), EPERM, "clone with {ns:#x}");
        }
        // personality: only the execution domains moby allows.
        assert_eq!(call(libc::SYS_personality, 0x20000), ALLOW);
        assert_eq!(call(libc::SYS_personality, 0xffff_ffff), ALLOW);
        assert_eq!(call(libc::SYS_personality, 0x0040_0000), EPERM);
        // The compat ABIs are covered too: 32-bit read (3) and unshare (310), x32 read.
        assert_eq!(run(&filter.program, AUDIT_ARCH_I386, 3, [0; 6]), ALLOW);
        assert_eq!(run(&filter.program, AUDIT_ARCH_I386, 310, [0; 6]), EPERM);
        assert_eq!(call(X32_BIT | libc::SYS_read, 0), ALLOW);
        // An architecture the profile does not name is killed.
        assert_eq!(run(&filter.program, 0x1234_5678, 0, [0; 6]) & 0xffff_0000, 0);
    }

    #[test]
    fn rules_with_the_default_action_and_repeated_arguments_compile() {
        let same_as_default = rule(&["mount"], LinuxSeccompAction::ScmpActErrno);
        let mut personality = rule(&["personality"], LinuxSeccompAction::ScmpActAllow);
        let eq = |v: u64| {
            LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(v)
                .op(LinuxSeccompOperator::ScmpCmpEq)
                .build()
                .unwrap()
        };
        personality.set_args(Some(vec![eq(0), eq(8)]));
        let mut p = profile(vec![rule(&["read"], LinuxSeccompAction::ScmpActAllow), same_as_default, personality]);
        p.set_default_errno_ret(None);
        assert!(!Filter::compile(&p).unwrap().is_empty());
    }

    #[test]
    fn a_cached_filter_is_the_compiled_one_and_a_damaged_entry_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let profile = crate::native::spec::default_seccomp();
        let fresh = Filter::compile(&profile).unwrap();
        let first = Filter::compile_cached(&profile, dir.path()).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.path()).collect();
        assert_eq!(entries.len(), 1, "one cache entry, no temporary file left");
        let second = Filter::compile_cached(&profile, dir.path()).unwrap();
        let words = |f: &Filter| f.program.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect::<Vec<_>>();
        assert_eq!(words(&first), words(&fresh));
        assert_eq!(words(&second), words(&fresh));
        std::fs::write(&entries[0], b"garbage").unwrap();
        let third = Filter::compile_cached(&profile, dir.path()).unwrap();
        assert_eq!(words(&third), words(&fresh));
    }
}
