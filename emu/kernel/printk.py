"""The kernel log: one ring of records in guest memory, in event order.

Guest printk formats its text and hands it over by hypercall; Python-side
messages (the livepatch core, the loader, oops reports) are appended through
the same `append`, stamped with the virtual time of the event, so the log
reads in the order things happened.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from emu.arch.memory import Ram
from emu.time import VirtualClock

_HEADER = struct.Struct("<QQ")      # next free offset, records dropped
_RECORD = struct.Struct("<QHBB")    # timestamp ns, text length, level, pad


@dataclass(frozen=True)
class LogRecord:
    timestamp_ns: int
    level: int
    text: str

    def format(self) -> str:
        """As dmesg prints it: `[    1.234567] text`."""
        secs, ns = divmod(self.timestamp_ns, 1_000_000_000)
        return f"[{secs:5d}.{ns // 1000:06d}] {self.text}"


class LogBuffer:
    def __init__(self, ram: Ram, phys: int, size: int) -> None:
        self.ram = ram
        self.phys = phys
        self.size = size
        self._parsed: list[LogRecord] = []
        self._formatted: list[str] = []     # each parsed record as dmesg prints it, made once
        self._parsed_upto = _HEADER.size
        ram.write(phys, _HEADER.pack(_HEADER.size, 0))

    def append(self, timestamp_ns: int, level: int, text: str) -> None:
        """Add one record per line of `text` (a trailing newline is dropped)."""
        for line in text.rstrip("\n").split("\n"):
            self._append_line(timestamp_ns, level, line)

    def _append_line(self, timestamp_ns: int, level: int, line: str) -> None:
        data = line.encode("utf-8", "replace")[:0xFFFF]
        nxt, dropped = self.header()
        rec_size = (_RECORD.size + len(data) + 7) & ~7
        if nxt + rec_size > self.size:
            self.ram.write(self.phys, _HEADER.pack(nxt, dropped + 1))
            return
        self.ram.write(self.phys + nxt, _RECORD.pack(timestamp_ns, len(data), level & 0xFF, 0) + data)
        self.ram.write(self.phys, _HEADER.pack(nxt + rec_size, dropped))

    def header(self) -> tuple[int, int]:
        """(bytes the records take so far, records dropped because the buffer was full)."""
        return _HEADER.unpack(self.ram.read(self.phys, _HEADER.size))

    def records(self) -> list[LogRecord]:
        """Every record so far (parsed incrementally from guest memory)."""
        return list(self._parse())

    def count(self) -> int:
        """How many records there are so far (records() without the copy)."""
        return len(self._parse())

    def _parse(self) -> list[LogRecord]:
        nxt, _ = _HEADER.unpack(self.ram.read(self.phys, _HEADER.size))
        if nxt < self._parsed_upto:          # memory was restored to an earlier state
            self._parsed, self._formatted, self._parsed_upto = [], [], _HEADER.size
        off = self._parsed_upto
        while off < nxt:
            ts, length, level, _ = _RECORD.unpack(self.ram.read(self.phys + off, _RECORD.size))
            text = self.ram.read(self.phys + off + _RECORD.size, length).decode("utf-8", "replace")
            self._parsed.append(LogRecord(ts, level, text))
            off += (_RECORD.size + length + 7) & ~7
        self._parsed_upto = off
        return self._parsed

    def formatted(self, start: int = 0) -> list[str]:
        """records()[start:], each formatted as dmesg prints it (a record is
        formatted once: dmesg reads the whole log again and again)."""
        parsed = self._parse()
        for record in parsed[len(self._formatted):]:
            self._formatted.append(record.format())
        return self._formatted[start:]

    def text(self) -> str:
        return "".join(line + "\n" for line in self.formatted())


class KernelLog:
    """The log as its writers see it: one `log()` that stamps each message
    with the virtual time of the event (printk's local_clock)."""

    def __init__(self, buffer: LogBuffer, clock: VirtualClock) -> None:
        self.buffer = buffer
        self.clock = clock

    def log(self, text: str, level: int = 6) -> None:
        self.buffer.append(self.clock.ns, level, text)

    def records(self) -> list[LogRecord]:
        return self.buffer.records()

    def count(self) -> int:
        return self.buffer.count()

    def text(self) -> str:
        return self.buffer.text()

    def lines(self) -> list[str]:
        return [r.text for r in self.buffer.records()]
