import os

from kvmlite.backends.char.pump import InputPump
from kvmlite.backends.char.stdio import StdioBackend
from kvmlite.devices.legacy.serial import UART_FCR, UART_LSR, UART_RBR, Serial16550
from kvmlite.testing.interrupts import RecordingInterrupt


def test_paste_reaches_guest_in_order_without_loss():
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    backend = StdioBackend(stdin_fd=r, stdout_fd=out_w)
    pump: InputPump
    uart = Serial16550(RecordingInterrupt(), lambda b: None, on_rx_room=lambda: pump.offer())
    uart.write(UART_FCR, b"\x01")
    pump = InputPump(backend, uart, limit=100)
    paste = bytes(range(256)) * 2
    os.write(w, paste)
    received = bytearray()
    while len(received) < len(paste):
        if pump.wants_read():
            pump.on_readable()
        assert pump.pending <= 100 + 4096
        while uart.read(UART_LSR, 1)[0] & 1:  # the guest's RX loop
            received += uart.read(UART_RBR, 1)
    assert bytes(received) == paste
    os.close(w)
    pump.on_readable()
    assert backend.eof and not pump.wants_read()
    for fd in (r, out_r, out_w):
        os.close(fd)
