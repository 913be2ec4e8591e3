/* The two entry points that the patched musl calls, implemented on the
 * Linux kernel, so that programs linked with the patched musl run natively.
 * pgkraft's tests use it to check the patch without the libOS; it is also the
 * shortest statement of the contract the libOS implements (see the header of
 * ../patches/0001-system-calls-are-function-calls.patch).
 *
 * Limitations, inherent in passing through to a kernel that knows nothing of
 * the call: vfork runs as fork, and a signal that interrupts a blocked
 * cancellation point reports the pc of the syscall below, not of musl's call
 * site, so pthread_cancel of a thread blocked there does not act until the
 * call returns.
 */
	.text

/* long __pgkraft_syscall(long n, long a1, ..., long a6): the C ABI puts
 * n, a1..a5 in rdi, rsi, rdx, rcx, r8, r9 and a6 on the stack. */
	.globl __pgkraft_syscall
	.type __pgkraft_syscall,@function
__pgkraft_syscall:
	mov %rdi,%rax
	mov %rsi,%rdi
	mov %rdx,%rsi
	mov %rcx,%rdx
	mov %r8,%r10
	mov %r9,%r8
	mov 8(%rsp),%r9
	syscall
	ret
	.size __pgkraft_syscall,.-__pgkraft_syscall

/* The syscall instruction's convention, entered by a call. */
	.globl __pgkraft_syscall_asm
	.type __pgkraft_syscall_asm,@function
__pgkraft_syscall_asm:
	cmp $15,%rax
	je .Lsigreturn
	cmp $56,%rax
	je .Lclone
	cmp $58,%rax
	je .Lvfork
	syscall
	ret

/* The signal frame starts at the caller's rsp, above our return address. */
.Lsigreturn:
	lea 8(%rsp),%rsp
	syscall
	ud2

/* The child starts on the stack in rsi, where our return address is not.
 * Put a copy on top of that stack so the child can return through it and
 * end up with rsp = rsi, as after a real syscall. */
.Lclone:
	test %rsi,%rsi
	jz .Lplain
	mov (%rsp),%rcx
	mov %rcx,-8(%rsi)
	lea -8(%rsi),%rsi
	syscall
	lea 8(%rsi),%rsi
	ret

/* Real vfork would let the child overwrite our return address before the
 * parent resumes; fork gives the child its own copy of the stack. */
.Lvfork:
	mov $57,%eax
.Lplain:
	syscall
	ret
	.size __pgkraft_syscall_asm,.-__pgkraft_syscall_asm

	.section .note.GNU-stack,"",@progbits
