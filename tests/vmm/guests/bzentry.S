/*
 * A bzImage-style tiny guest: the protected-mode image whose 64-bit entry
 * point sits at offset 0x200 (Documentation/x86/boot.rst, "64-bit boot
 * protocol"). The loader enters it in long mode, on its own identity page
 * tables and GDT, with RSI = the zero page (struct boot_params).
 */
	.section .text.start, "ax"
	.code32
	.globl _start
_start:
	ud2			/* the 32-bit entry is not used by kvmlite */
	.org 0x200
	.code64
startup_64:
	cli
	lea	stack_top(%rip), %rsp
	mov	%rsi, %rdi
	call	main
	mov	$0x501, %dx
	out	%al, %dx
1:	hlt
	jmp	1b

	.section .stack, "aw", @nobits
	.balign 16
	.skip 16384
stack_top:
