"""``Kvm``: the /dev/kvm system file descriptor (api.rst 4.1-4.5, 4.14, 4.46).

Opening it checks the API version (must be 12) and learns the size of each vCPU's
kvm_run mapping; it answers capability and CPUID/MSR questions and creates VMs.
"""

from __future__ import annotations

import errno
import os

from kvmlite.errors import KvmError
from kvmlite.kvm import ioctls as nr
from kvmlite.kvm._ioctl import KvmIoctlError, ioctl
from kvmlite.kvm.constants import KVM_API_VERSION
from kvmlite.kvm.structs import KvmCpuid2, KvmCpuidEntry2, KvmMsrList, flex
from kvmlite.kvm.vm import Vm


class Kvm:
    """An open /dev/kvm."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise KvmError(
                f"{path} does not exist: load the KVM module (modprobe kvm_intel or "
                "modprobe kvm_amd) and check that virtualization is enabled in the firmware"
            ) from e
        except PermissionError as e:
            raise KvmError(
                f"no permission to open {path}: add your user to the 'kvm' group "
                "(usermod -aG kvm $USER, then log in again)"
            ) from e
        except OSError as e:
            raise KvmError(f"cannot open {path}: {e.strerror}") from e
        self.path = path
        try:
            try:
                version = ioctl(self.fd, nr.KVM_GET_API_VERSION)
            except KvmError as e:
                raise KvmError(f"{path} is not a KVM device ({e})") from e
            if version != KVM_API_VERSION:
                raise KvmError(
                    f"{path} speaks KVM API version {version}, kvmlite needs "
                    f"{KVM_API_VERSION}: use a newer kernel"
                )
            self.vcpu_mmap_size: int = ioctl(self.fd, nr.KVM_GET_VCPU_MMAP_SIZE)
        except BaseException:
            os.close(self.fd)
            raise

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION: 0 if ``cap`` is unsupported, else a cap-specific value."""
        return ioctl(self.fd, nr.KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self) -> list[KvmCpuidEntry2]:
        """KVM_GET_SUPPORTED_CPUID: copies of the entries this host can offer a guest."""
        n = 64
        while True:
            buf = flex(KvmCpuid2, n)(nent=n)
            try:
                ioctl(self.fd, nr.KVM_GET_SUPPORTED_CPUID, buf)
            except KvmIoctlError as e:
                # E2BIG: our array was too small (api.rst 4.46); try a bigger one.
                if e.errno == errno.E2BIG and n < 4096:
                    n *= 2
                    continue
                raise
            return [KvmCpuidEntry2.from_buffer_copy(e) for e in buf.entries[: buf.nent]]

    def msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST: the MSRs a VMM should save and restore."""
        probe = KvmMsrList(nmsrs=0)
        try:
            ioctl(self.fd, nr.KVM_GET_MSR_INDEX_LIST, probe)
        except KvmIoctlError as e:
            if e.errno != errno.E2BIG:  # E2BIG is the answer "you need nmsrs entries"
                raise
        n = probe.nmsrs
        buf = flex(KvmMsrList, n)(nmsrs=n)
        ioctl(self.fd, nr.KVM_GET_MSR_INDEX_LIST, buf)
        return list(buf.indices[: buf.nmsrs])

    def create_vm(self) -> Vm:
        """KVM_CREATE_VM (machine type 0, the default x86 VM)."""
        return Vm(self, ioctl(self.fd, nr.KVM_CREATE_VM, 0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Kvm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
