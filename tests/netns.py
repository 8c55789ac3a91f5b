"""Two hosts on one machine, for MPI across a real network: two network namespaces joined by
a veth pair, and an ``mpirun`` that puts one host's ranks in each.

Used by tests/test_lm_distributed.py and benchmarks/bench_mpi.py. Needs root (or
CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2's ``ip`` and util-linux's ``unshare``;
``NamespacePair.create`` raises ``Unavailable`` with the reason where they are missing.

How the job is launched without ssh (Open MPI 5 / PRRTE):

* ``mpirun`` itself runs in the first namespace, so that host (``HOSTS[0]``) is local;
* the hostfile names the two veth addresses, one slot each;
* ``--mca plm_ssh_agent AGENT``: PRRTE starts its daemon on the other host by running
  ``AGENT HOST COMMAND``; our agent runs COMMAND in that host's namespace
  (``ip netns exec``) instead of over ssh. The daemon and the ranks inherit mpirun's
  environment, since the agent is a local child of mpirun;
* ``btl_tcp_if_include`` and ``oob_tcp_if_include`` keep MPI's data and PRRTE's control
  traffic on the veth subnet;
* each namespace also gets a hostname of its own (``unshare --uts``): with the machine's one
  hostname on both sides Open MPI takes the ranks for one node and reduces through shared
  memory paths that do not work across the namespaces; an ``Allreduce`` of 1 and 2 then gave
  rank 0 the answer 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

SUBNET = "10.77.0.0/24"
HOSTS = ("10.77.0.1", "10.77.0.2")


class Unavailable(Exception):
    """Namespaces cannot be made here; the message says why."""


def _ip(*args):
    run = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        raise Unavailable(f"ip {' '.join(args)}: {run.stderr.strip() or 'failed'}")
    return run.stdout


class NamespacePair:
    """Namespaces ``<tag>a`` and ``<tag>b`` with veth ends ``<tag>a``/``<tag>b`` at
    ``HOSTS[0]``/``HOSTS[1]``. ``close()`` deletes both (the veth pair goes with them)."""

    def __init__(self, tag, workdir):
        self.names = (f"{tag}a", f"{tag}b")
        self.workdir = Path(workdir)
        self.created = []

    @classmethod
    def create(cls, workdir):
        for tool in ("ip", "unshare"):
            if shutil.which(tool) is None:
                raise Unavailable(f"needs the {tool!r} command (iproute2, util-linux)")
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            raise Unavailable("needs root to make network namespaces")
        pair = cls("ptx" + uuid.uuid4().hex[:8], workdir)   # unique: runs may overlap
        try:
            pair._make()
        except BaseException:
            pair.close()
            raise
        return pair

    def _make(self):
        a, b = self.names
        for name in self.names:
            _ip("netns", "add", name)
            self.created.append(name)
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        for name, host in zip(self.names, HOSTS, strict=True):
            _ip("link", "set", name, "netns", name)
            _ip("-n", name, "addr", "add", f"{host}/24", "dev", name)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", name, "up")
        self.hostfile = self.workdir / f"{a}.hosts"
        self.hostfile.write_text("".join(f"{host} slots=1\n" for host in HOSTS))
        self.agent = self.workdir / f"{a}.agent"
        cases = "".join(f"  {host}) ns={name} ;;\n"
                        for host, name in zip(HOSTS, self.names, strict=True))
        self.agent.write_text(
            "#!/bin/sh\n"
            "# PRRTE's launch agent in place of ssh: run COMMAND in HOST's namespace.\n"
            'host=$1; shift\ncase "$host" in\n' + cases +
            '  *) echo "no namespace for host $host" >&2; exit 1 ;;\nesac\n'
            'exec ip netns exec "$ns" unshare --uts /bin/sh -c "hostname $ns && $*"\n')
        self.agent.chmod(0o755)

    def mpirun(self, mpirun, n, *args):
        """argv: ``mpirun -n N ARGS...`` with the ranks spread over the two namespaces."""
        first = self.names[0]
        return ["ip", "netns", "exec", first, "unshare", "--uts", "/bin/sh", "-c",
                f'hostname {first} && exec "$@"', "sh",
                mpirun, "-n", str(n), "--hostfile", str(self.hostfile),
                "--mca", "plm_ssh_agent", str(self.agent),
                "--mca", "btl_tcp_if_include", SUBNET, "--mca", "oob_tcp_if_include", SUBNET,
                *args]

    def received_bytes(self, index=1):
        """Bytes the veth end in namespace ``index`` has received so far."""
        name = self.names[index]
        link = json.loads(_ip("-n", name, "-j", "-s", "link", "show", name))[0]
        return link["stats64"]["rx"]["bytes"]

    def close(self):
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self.created = []
