"""A real sshd on 127.0.0.1, started by the tests: throwaway host and user keys,
a non-default port, key authentication only."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    host_key_pub: str
    proc: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(workdir: Path) -> Sshd:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists() or not shutil.which("rsync"):
        raise RuntimeError("sshd and rsync are needed: apt-get install openssh-server rsync")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "user_key")], check=True)
    (workdir / "authorized_keys").write_text((workdir / "user_key.pub").read_text())
    (workdir / "authorized_keys").chmod(0o600)
    port = _free_port()
    (workdir / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host_key'}\nPidFile {workdir / 'sshd.pid'}\n"
        # the test's key for the user running the tests, and each user's own file (a non-root writer has its own home)
        f"AuthorizedKeysFile {workdir / 'authorized_keys'} .ssh/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    with open(workdir / "sshd.log", "w") as out:  # sshd keeps its own copy of the descriptor
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(workdir / "sshd_config")], stdout=out, stderr=subprocess.STDOUT)
    host_pub = (workdir / "host_key.pub").read_text().split()
    (workdir / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("sshd exited: " + (workdir / "sshd.log").read_text()) from None
            time.sleep(0.1)
    import getpass

    return Sshd(port=port, user=getpass.getuser(), identity_file=workdir / "user_key", known_hosts=workdir / "known_hosts", host_key_pub=" ".join(host_pub[:2]), proc=proc)


def writer_account(name: str, uid: int, home: Path, public_key: str) -> str:
    """A non-root login (the bastion's writer) with ``public_key`` authorized; created once, reused after."""
    import pwd

    try:
        existing = pwd.getpwnam(name)
        if existing.pw_uid != uid:
            raise RuntimeError(f"user {name} exists with uid {existing.pw_uid}, not {uid}")
        home = Path(existing.pw_dir)
    except KeyError:
        # '*' (no password) rather than '!' (locked): sshd without PAM refuses locked accounts even with a key
        subprocess.run(["useradd", "-u", str(uid), "-U", "-M", "-d", str(home), "-s", "/bin/sh", "-p", "*", name], check=True)
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(public_key)
    for path in (home, ssh, ssh / "authorized_keys"):
        os.chown(path, uid, uid)
    home.chmod(0o755)
    ssh.chmod(0o700)
    (ssh / "authorized_keys").chmod(0o600)
    return name
