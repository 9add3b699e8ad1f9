"""x86 machine support: kernel loading, boot CPU state, CPUID/MSRs, firmware tables.

What the VMM calls, in boot order (DESIGN.md "boot"):

- ``cpuid.build_cpuid(supported, vcpu_index, num_vcpus, features)`` and
  ``cpuid.apply_cpuid(vcpu, entries)`` for every vCPU; ``cpufeatures.parse_cpu_features``
  turns ``--cpu-features`` into the ``features`` argument.
- ``msrs.apply_boot_msrs(vcpu, kvm.msr_index_list())`` for every vCPU.
- ``boot.load_kernel(memory, kernel, initrd, cmdline, num_vcpus=...)`` writes the MP
  table, the ACPI tables, the kernel, initrd and command line, and returns a
  ``bootplan.BootPlan``.
- ``cpu.apply_boot_state(bsp, plan.cpu_state())`` for the BSP only;
  ``cpu.initial_mp_state(i)`` says which vCPU is RUNNABLE.

``layout`` holds the guest-physical map and the ACPI PM I/O ports the VMM emulates.
"""
