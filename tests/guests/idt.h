/*
 * An IDT for tiny guests (Intel SDM vol. 3 §6.14.1): 64-bit interrupt gates on the
 * kernel code segment start.S sets up (0x08), and lidt. A guest that defines
 * struct interrupt_frame may do so after including this header.
 */
#ifndef IDT_H
#define IDT_H

#include "lib.h"

struct idt_entry {
	u16 off_lo, sel;
	u8 ist, type;
	u16 off_mid;
	u32 off_hi, zero;
} __attribute__((packed));

struct interrupt_frame;
static struct idt_entry idt[256] __attribute__((aligned(16)));

static void set_gate(int vec, void (*fn)(struct interrupt_frame *))
{
	u64 a = (u64)fn;
	/* Type 0xE (64-bit interrupt gate), present, DPL 0. */
	idt[vec] = (struct idt_entry){(u16)a, 0x08, 0, 0x8e, (u16)(a >> 16), (u32)(a >> 32), 0};
}

static void load_idt(void)
{
	struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (u64)idt};
	__asm__ volatile("lidt %0" : : "m"(idtr));
}

#endif
