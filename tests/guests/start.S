/*
 * Shared startup of kvmlite's tiny test guests.
 *
 * Entered in 32-bit protected mode with paging off, as the PVH boot protocol says
 * (Documentation/x86/boot.rst "PVH"; xen/include/public/arch-x86/hvm/start_info.h):
 * flat 4 GiB CS/DS/ES/SS, EBX = guest-physical address of struct hvm_start_info
 * (0 when a test enters the flat binary itself). It identity-maps the first 4 GiB
 * with 2 MiB pages (so MMIO at 0xd0000000 is reachable), enters long mode, and calls
 * main(start_info); main's return value leaves through the debug-exit port 0x501.
 * An IDT with limit 0 makes any exception a triple fault (KVM_EXIT_SHUTDOWN).
 * Integer instructions only: this must run on an instruction emulator (TEST-HOST.md).
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define CR0_PE_PG 0x80000001
#define CR4_PAE 0x20
#define PTE_P_RW 0x03
#define PDE_P_RW_PS 0x83
#define DEBUG_EXIT_PORT 0x501

	.section .note.Xen, "a", @note
	.balign 4
	.long 4				/* namesz: "Xen\0" */
	.long 4				/* descsz: a 32-bit physical entry point */
	.long XEN_ELFNOTE_PHYS32_ENTRY
	.asciz "Xen"
	.balign 4
	.long _start

	.section .text.start, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	mov	%ebx, %esi		/* start_info; kept for main() */
	lgdt	gdt_ptr
	lidt	idt_ptr
	mov	$0x10, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss

	/* .bss is not in the image: zero it (a loader need not have). */
	mov	$__bss_start, %edi
	mov	$__bss_end, %ecx
	sub	%edi, %ecx
	shr	$2, %ecx
	xor	%eax, %eax
	rep stosl

	/* PML4[0] -> PDPT, PDPT[0..3] -> PD0..PD3, PDn[i] -> 2 MiB page (n*512+i). */
	mov	$pdpt + PTE_P_RW, %eax
	mov	%eax, pml4
	mov	$pd + PTE_P_RW, %eax
	xor	%ecx, %ecx
1:	mov	%eax, pdpt(, %ecx, 8)
	add	$4096, %eax
	inc	%ecx
	cmp	$4, %ecx
	jne	1b
	mov	$PDE_P_RW_PS, %eax
	xor	%ecx, %ecx
2:	mov	%eax, pd(, %ecx, 8)
	add	$0x200000, %eax
	inc	%ecx
	cmp	$2048, %ecx
	jne	2b

	mov	$pml4, %eax
	mov	%eax, %cr3
	mov	%cr4, %eax
	or	$CR4_PAE, %eax
	mov	%eax, %cr4
	mov	$MSR_EFER, %ecx
	rdmsr
	or	$EFER_LME, %eax
	wrmsr
	mov	%cr0, %eax
	or	$CR0_PE_PG, %eax
	mov	%eax, %cr0
	ljmp	$0x08, $long_mode

	.code64
long_mode:
	mov	$0x10, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	$stack_top, %rsp
	mov	%esi, %edi		/* main(start_info), zero-extended */
	call	main
	mov	$DEBUG_EXIT_PORT, %dx
	out	%al, %dx
3:	hlt
	jmp	3b

	.section .rodata
	.balign 8
gdt:
	.quad 0				/* 0x00 null */
	.quad 0x00af9a000000ffff	/* 0x08 64-bit code */
	.quad 0x00cf92000000ffff	/* 0x10 flat data */
	.quad 0x00cf9a000000ffff	/* 0x18 flat 32-bit code */
gdt_end:
	.balign 8
gdt_ptr:
	.word gdt_end - gdt - 1
	.long gdt
	.balign 8
idt_ptr:
	.word 0
	.long 0

	.section .bss
	.balign 4096
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4 * 4096

	.section .stack, "aw", @nobits
	.balign 16
	.skip 16384
stack_top:
