"""Where the EFS file system is reached: a folder on this machine (``local``)
or a bastion that mounts it, over SSH (``bastion``). Both run the same shell
commands and the same rsync; only the way to the other side differs.

SSH always verifies the host key against a known_hosts file
(StrictHostKeyChecking=yes) and authenticates with a key only (BatchMode).
"""
from __future__ import annotations

import contextlib
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pipeline import proc
from pipeline.config import BastionConfig
from pipeline.errors import SyncError, SyncInterrupted

# what a user (Ctrl-C), a cancelled CI job or a container stop (SIGTERM) and a closed terminal (SIGHUP) send;
# SIGKILL cannot be caught: the next run takes over the lock of a holder that is provably gone (sync/efs.py)
INTERRUPTIONS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into SyncInterrupted inside the block, so ``finally`` clauses release
    what the sync holds. Python sets signal handlers in the main thread only; elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    seen: list[int] = []

    def raise_interrupted(signum, _frame):
        if seen:  # a second signal (CI sends SIGTERM again) must not cut short the release of the lock
            return
        seen.append(signum)
        raise SyncInterrupted(signum)

    previous = {sig: signal.signal(sig, raise_interrupted) for sig in INTERRUPTIONS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# rsync exit codes worth another try: socket/protocol I/O, timeouts, partial
# transfer from vanished connection, and ssh's 255 (connection dropped). Host
# key and authentication failures also exit 255: they are told apart by text.
RETRYABLE_RSYNC = {10, 11, 12, 20, 23, 30, 35, 255}
FATAL_SSH_TEXT = {
    "Host key verification failed": ("the bastion's host key does not match known_hosts", "check that you reach the right host; if its key really changed, update {known_hosts} (ssh-keygen -R host)"),
    "REMOTE HOST IDENTIFICATION HAS CHANGED": ("the bastion's host key changed", "verify the new key out of band, then update {known_hosts}"),
    "No ED25519 host key is known": ("the bastion is not in known_hosts", "add its key: ssh-keyscan -p PORT HOST >> {known_hosts} (after checking the fingerprint)"),
    "No ECDSA host key is known": ("the bastion is not in known_hosts", "add its key: ssh-keyscan -p PORT HOST >> {known_hosts} (after checking the fingerprint)"),
    "No RSA host key is known": ("the bastion is not in known_hosts", "add its key: ssh-keyscan -p PORT HOST >> {known_hosts} (after checking the fingerprint)"),
    "Permission denied": ("the bastion refused the key (or a path is not writable)", "check sync.bastion.user and identity_file, and that the user may write under efs_path"),
    "Could not resolve hostname": ("unknown host", "check sync.bastion.host"),
    "Connection refused": ("nothing listens on the bastion's SSH port", "check sync.bastion.host and port, and that sshd runs"),
    "No space left on device": ("the EFS side is full", "free space (invoke efs-gc) or check the file system's quota"),
}


def _fatal(text: str, known_hosts: str) -> tuple[str, str] | None:
    for needle, (what, fix) in FATAL_SSH_TEXT.items():
        if needle in text:
            return what, fix.format(known_hosts=known_hosts)
    return None


@dataclass
class Remote:
    """Runs commands and rsync on the EFS side."""

    bastion: BastionConfig | None = None
    retries: int = 4
    backoff_s: float = 1.0
    bwlimit_kbps: int = 0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    @property
    def label(self) -> str:
        return f"{self.bastion.user}@{self.bastion.host}:{self.bastion.port}" if self.bastion else "this machine"

    def ssh_command(self) -> list[str]:
        b = self.bastion
        assert b is not None
        return [
            "ssh", "-p", str(b.port), "-i", b.identity_file,
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={b.known_hosts}", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15",
            "-o", "LogLevel=ERROR",
        ]

    def run(self, script: str, stdin: str | None = None, check: bool = True) -> proc.CompletedProcess[str]:
        """A POSIX shell script on the EFS side; retried when the connection drops."""
        argv = self.ssh_command() + [f"{self.bastion.user}@{self.bastion.host}", "sh -c " + shlex.quote(script)] if self.bastion else ["sh", "-c", script]
        for attempt in range(self.retries + 1):
            out = proc.capture(argv, input=stdin)
            if out.returncode != 255 or not self.bastion or _fatal(out.stderr, self.bastion.known_hosts) or attempt == self.retries:
                break
            self.sleep(self.backoff_s * 2**attempt)
        if check and out.returncode != 0:
            raise self._error(out.returncode, out.stderr or out.stdout, f"command on {self.label}")
        return out

    def _error(self, code: int, text: str, what: str) -> SyncError:
        known = self.bastion.known_hosts if self.bastion else ""
        fatal = _fatal(text, known)
        tail = "\n".join("    " + line for line in text.strip().splitlines()[-12:])
        if fatal:
            return SyncError(f"{fatal[0]} ({what}, exit {code})\n{tail}", where=self.label, fix=fatal[1])
        return SyncError(f"{what} failed (exit {code})\n{tail}", where=self.label, fix="read the output above; run again to resume (what arrived is kept)")

    def path_arg(self, path: str) -> str:
        """A destination for rsync."""
        return f"{self.bastion.user}@{self.bastion.host}:{path}" if self.bastion else path

    def rsync(self, args: list[str], on_line=None) -> str:
        """rsync with retries and backoff; returns its output (with --stats)."""
        base = ["rsync"] + ([f"--bwlimit={self.bwlimit_kbps}"] if self.bwlimit_kbps else [])
        if self.bastion:
            base += ["-e", shlex.join(self.ssh_command())]
        last = ""

        def progress(line: str) -> None:
            if on_line and line.strip():
                on_line(line.strip())

        for attempt in range(self.retries + 1):
            # proc.run reads rsync's \r progress updates as lines, and kills rsync (and its ssh) when
            # interrupted, before the lock is released
            code, last = proc.run(base + args, what="rsync", where=self.label, fix="apt-get install rsync", on_line=progress, check=False)
            if code == 0:
                return last
            fatal = _fatal(last, self.bastion.known_hosts if self.bastion else "")
            if fatal or code not in RETRYABLE_RSYNC or attempt == self.retries:
                raise self._error(code, last, "rsync")
            if on_line:
                on_line(f"rsync exit {code}: retrying in {self.backoff_s * 2**attempt:.0f} s (attempt {attempt + 2} of {self.retries + 1})")
            self.sleep(self.backoff_s * 2**attempt)
        raise self._error(-1, last, "rsync")
